"""Speed benchmark: training steps, batch assembly and evaluation.

Run from the repository root. main.py's flags choose one configuration;
without any, the default set below is run (each configuration in its own
process, so that peak memory is measured cleanly):

    python bench/bench.py --offline                       # default set, offline data
    python bench/bench.py --offline --model mnist_svhn --obj dreg --K 30 --looser \\
        --learn-prior --batch-size 128                    # the paper's configuration
    python bench/bench.py --offline ... --released        # also the released computation, alternating
    python bench/bench.py --offline ... --amp             # bf16 autocast (or --compile)

Per configuration it prints:
- training step: median (and min) wall time of forward + backward + Adam
  step + loss.item() over --steps steps, on real batches of the training
  data, and the pairs (items) per second;
- FLOPs of one step (forward + backward) counted by torch's FlopCounterMode
  (matrix products and convolutions; elementwise work is not counted), the
  achieved FLOP/s and its fraction of this machine's matmul peak, measured
  here with a large float32 (with --amp: bfloat16) matrix product;
- batch assembly: time to gather one batch with BatchLoader/TensorData;
- peak memory during the training steps (CPU: the peak resident set size
  above the size before them, from /proc/self/status after resetting the
  peak, or getrusage; GPU: torch.cuda.max_memory_allocated);
- evaluation: the per-epoch test pass (the test objective with the training
  K) and the K = 1000 log-likelihood objective (m_iwae / iwae, chunked), in
  items per second with their peak memory;
- with --released: the same steps with the released computation (the SVHN
  decoder as nn.Sequential on z viewed as (N, D, 1, 1), and torch's log_prob
  for the likelihood term), alternating with the optimised one on the same
  batches, samples and initial weights: both medians, the speed-up, and the
  largest relative difference of the losses.

Timings on a shared machine are noisy: compare within one run (--released
alternates the two) and look at the medians.
"""
import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
import types

import torch
from torch.utils.flop_counter import FlopCounterMode

from src import objectives
from src.cli import build_parser, explicit_flags, validate
from src.data import BatchLoader
from src.distributed import default_device
from src.errors import UserError
from src.files import save_json
from src.models import MODELS, svhn
from src.objectives import chunk_size
from src.train import build_optimizer, compile_networks, setup_training, training_numerics

PAPER = ['--model', 'mnist_svhn', '--learn-prior', '--batch-size', '128']
DEFAULT_CONFIGS = [
    ('paper: dreg K=30 looser', PAPER + ['--obj', 'dreg', '--K', '30', '--looser']),
    ('dreg K=5 looser', PAPER + ['--obj', 'dreg', '--K', '5', '--looser']),
    ('elbo K=1', PAPER + ['--obj', 'elbo', '--K', '1']),
]
# main.py flags that only say where data come from: they do not pick a configuration
DATA_FLAGS = ('data_dir', 'offline', 'pair_multiplier', 'no_cuda', 'amp', 'compile')


def bench_parser():
    p = build_parser()
    p.description = 'Benchmark a training configuration (main.py flags) or, without any, the default set.'
    g = p.add_argument_group('benchmark')
    g.add_argument('--steps', type=int, default=5, help='timed training steps')
    g.add_argument('--warmup', type=int, default=1, help='untimed training steps first (more with --compile)')
    g.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    g.add_argument('--released', action='store_true',
                   help='also time the released computation (SVHN decoder, likelihood term), alternating with '
                        'the optimised one')
    g.add_argument('--assembly-batches', type=int, default=200, help='batches timed for batch assembly')
    g.add_argument('--test-batches', type=int, default=4,
                   help='test batches timed for the per-epoch test pass (0: skip)')
    g.add_argument('--eval-K', type=int, default=1000, help='K of the log-likelihood evaluation')
    g.add_argument('--eval-items', type=int, default=32, help='test items of the K = eval-K evaluation (0: skip)')
    g.add_argument('--json', default='', help='also write the results to this JSON file')
    g.add_argument('--one', default='', help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    return p


# ---------------------------------------------------------------- measuring

def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def mem_reset(device):
    """Start a peak-memory window; returns the current usage in bytes."""
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:  # Linux: writing 5 resets the peak resident set size (VmHWM) to the current size
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        pass
    return _rss('VmRSS')


def mem_peak(device):
    """Peak bytes since mem_reset (CPU: without the reset, since the process started)."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device)
    return _rss('VmHWM')


def _rss(field):
    try:
        with open('/proc/self/status') as f:
            return int(re.search(rf'{field}:\s+(\d+) kB', f.read()).group(1)) * 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def matmul_peak(device, dtype=torch.float32):
    """Best FLOP/s of a large square matrix product on this device."""
    n = 2048 if device.type == 'cpu' else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float('inf')
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def released_svhn_dec_forward(self, z):
    """The released computation: the nn.Sequential on z viewed as (N, D, 1, 1), default layout."""
    out = self.dec(z.reshape(-1, z.size(-1), 1, 1))
    return out.view(*z.shape[:-1], *svhn.DATA_SIZE), torch.tensor(svhn.LIKELIHOOD_SCALE, device=z.device)


def released_log_px_z(px_z, x, scaling):
    """The released likelihood term: torch's log_prob for every pixel, then the sum."""
    return px_z.log_prob(x).view(*px_z.batch_shape[:2], -1).sum(-1) * scaling


def use_released_decoders(model):
    """Swap in the released computation for every SVHN decoder of `model` (same parameters)."""
    for m in model.modules():
        if isinstance(m, svhn.Dec):
            m.forward = types.MethodType(released_svhn_dec_forward, m)


def cycle(loader):
    while True:
        yield from loader


# ---------------------------------------------------------------- one configuration

def run_one(args, label):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = default_device(args.no_cuda)
    with training_numerics(device):
        return measure(args, label, device)


def measure(args, label, device):
    run = setup_training(args, device)  # as main.py: seed, model, data, objectives, optimiser
    train_data, test_data = run['train_data'], run['test_data']
    res = {'label': label, 'device': str(device), 'device_name': device_name(device),
           'threads': torch.get_num_threads(), 'data': train_data.source, 'batch_size': args.batch_size,
           'flags': {k: getattr(args, k) for k in ('model', 'obj', 'K', 'looser', 'learn_prior', 'batch_size',
                                                   'dreg_estimator', 'amp', 'compile')},
           'train_items': len(train_data), 'test_items': len(test_data),
           'matmul_peak_flops': matmul_peak(device, torch.bfloat16 if args.amp else torch.float32),
           'assembly_ms': assembly_ms(train_data, args, device)}
    batches = cycle(BatchLoader(train_data, args.batch_size, shuffle=True, seed=args.seed + 1, drop_last=True))
    res.update(training_steps(run, args, device, batches))
    res.update(step_flops(run['model'], run['objective'], next(batches)[0], args.K, res))
    run['model'].eval()
    with torch.no_grad():
        res.update(test_pass(run['model'], run['test_objective'], test_data, args, device))
        res.update(eval_pass(run['model'], run['test_objective'], test_data, args, device))
    return res


def assembly_ms(train_data, args, device):
    """Median time to gather one batch with BatchLoader/TensorData."""
    it = iter(BatchLoader(train_data, args.batch_size, shuffle=True, seed=args.seed))
    times = []
    for _ in range(min(args.assembly_batches, len(train_data) // args.batch_size)):
        sync(device)
        t0 = time.perf_counter()
        next(it)
        sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def timed_step(model, opt, objective, x, K, device, released=False):
    """(wall s, CPU s, loss) of one training step; released: with the released likelihood term."""
    fast_log_px_z = objectives._log_px_z
    if released:
        objectives._log_px_z = released_log_px_z
    try:
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss = -objective(model, x, K)
        loss.backward()
        opt.step()
        value = loss.item()
        return time.perf_counter() - t0, time.process_time() - c0, value
    finally:
        objectives._log_px_z = fast_log_px_z


def training_steps(run, args, device, batches):
    """Step times, peak memory and (--released) the released computation alternating on the same batches."""
    models, opts = {'optimised': run['model']}, {'optimised': run['optimizer']}
    if args.released:
        ref = MODELS[args.model](args).to(device)
        ref.load_state_dict(run['model'].state_dict())
        use_released_decoders(ref)
        if args.compile:
            compile_networks(ref)
        models['released'], opts['released'] = ref, build_optimizer(args, ref)
    for m in models.values():
        m.train()
    wall, cpu, peak = ({k: [] for k in models} for _ in range(3))
    rel_diff = 0.0
    for i in range(args.warmup + args.steps):
        x, _ = next(batches)
        values = {}
        for name in models:
            torch.manual_seed(1000 + i)  # the same samples for both computations
            base = mem_reset(device)
            t, c, values[name] = timed_step(models[name], opts[name], run['objective'], x, args.K, device,
                                            released=name == 'released')
            peak[name].append(mem_peak(device) - base)
            if i >= args.warmup:
                wall[name].append(t)
                cpu[name].append(c)
        if 'released' in values:
            rel_diff = max(rel_diff, abs(values['optimised'] - values['released']) / abs(values['released']))
    res = {'train_peak_bytes': max(peak['optimised']), 'step_ms': 1e3 * statistics.median(wall['optimised']),
           'step_ms_min': 1e3 * min(wall['optimised']), 'step_ms_all': [round(1e3 * t) for t in wall['optimised']],
           'step_cpu_ms': 1e3 * statistics.median(cpu['optimised'])}
    res['pairs_per_s'] = args.batch_size / (res['step_ms'] / 1e3)
    res['epoch_s'] = len(run['train_data']) / res['pairs_per_s']  # training steps only, at the median step time
    if args.released:
        res.update(released_step_ms=1e3 * statistics.median(wall['released']),
                   released_step_cpu_ms=1e3 * statistics.median(cpu['released']),
                   released_step_ms_all=[round(1e3 * t) for t in wall['released']],
                   released_train_peak_bytes=max(peak['released']), loss_rel_diff=rel_diff)
        res['speedup'] = res['released_step_ms'] / res['step_ms']
    return res


def step_flops(model, objective, x, K, res):
    """FLOPs of one step (forward + backward; Adam's elementwise work is not counted), and their rate."""
    with FlopCounterMode(display=False) as counter:
        (-objective(model, x, K)).backward()
    model.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    per_s = flops / (res['step_ms'] / 1e3)
    return {'step_flops': flops, 'flops_per_s': per_s, 'peak_fraction': per_s / res['matmul_peak_flops']}


def test_pass(model, test_obj, test_data, args, device):
    """Throughput and peak memory of the per-epoch test pass (the training K), on --test-batches batches."""
    if not args.test_batches:
        return {}
    n, t, base = 0, 0.0, mem_reset(device)
    for j, (x, _) in enumerate(BatchLoader(test_data, args.batch_size)):
        if j == args.test_batches:
            break
        sync(device)
        t0 = time.perf_counter()
        test_obj(model, x, args.K).item()
        sync(device)
        t += time.perf_counter() - t0
        n += (x[0] if model.multimodal else x).size(0)
    return {'test_items_per_s': n / t, 'test_pass_s': len(test_data) * t / n,
            'test_peak_bytes': mem_peak(device) - base}


def eval_pass(model, test_obj, test_data, args, device):
    """Throughput and peak memory of the K = --eval-K log-likelihood objective on --eval-items items."""
    if not args.eval_items:
        return {}
    x = test_data.gather(torch.arange(min(args.eval_items, len(test_data)), device=device))
    n = (x[0] if model.multimodal else x).size(0)
    base = mem_reset(device)
    sync(device)
    t0 = time.perf_counter()
    test_obj(model, x, args.eval_K).item()
    sync(device)
    return {'eval_chunk': chunk_size(x, args.eval_K), 'eval_items_per_s': n / (time.perf_counter() - t0),
            'eval_peak_bytes': mem_peak(device) - base}


def device_name(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    try:
        with open('/proc/cpuinfo') as f:
            name = re.search(r'model name\s*:\s*(.*)', f.read()).group(1).strip()
    except (OSError, AttributeError):
        name = 'CPU'
    return f'{name}, {os.cpu_count()} cores'


# ---------------------------------------------------------------- reporting

def gib(b):
    return f'{b / 2 ** 30:.2f} GiB'


def describe(f):
    """A configuration's flags (a dict) as a short line."""
    s = f"{f['model']} {f['obj']} K={f['K']}{' --looser' if f['looser'] else ''}" \
        f"{' --learn-prior' if f['learn_prior'] else ''} batch {f['batch_size']}"
    if f['obj'] == 'dreg' and f['dreg_estimator'] != 'released':
        s += f" --dreg-estimator {f['dreg_estimator']}"
    return s + (' --amp' if f['amp'] else '') + (' --compile' if f['compile'] else '')


def report(r, args):
    print(f"== {r['label']}: {describe(r['flags'])}")
    print(f"   {r['device_name']} ({r['device']}, {r['threads']} threads); data: {r['data']}")
    print(f"   training step     {r['step_ms']:9,.0f} ms median (min {r['step_ms_min']:,.0f}; "
          f"{len(r['step_ms_all'])} steps: {r['step_ms_all']})   {r['pairs_per_s']:,.1f} pairs/s; "
          f"CPU time {r['step_cpu_ms']:,.0f} ms")
    print(f"   FLOPs per step    {r['step_flops'] / 1e9:9,.1f} GFLOP -> {r['flops_per_s'] / 1e9:,.1f} GFLOP/s = "
          f"{100 * r['peak_fraction']:.0f}% of the measured matmul peak ({r['matmul_peak_flops'] / 1e9:,.0f} GFLOP/s)")
    print(f"   peak memory       {gib(r['train_peak_bytes'])} during the training steps")
    print(f"   one epoch         {r['epoch_s'] / 60:9,.1f} min of training steps for the {r['train_items']:,} "
          f"training items here")
    print(f"   batch assembly    {r['assembly_ms']:9.3f} ms per batch of {r['batch_size']} "
          f"({r['batch_size'] / r['assembly_ms'] * 1e3:,.0f} pairs/s)")
    if 'test_items_per_s' in r:
        print(f"   test pass (K={r['flags']['K']})  {r['test_items_per_s']:9,.1f} items/s: the {r['test_items']:,} "
              f"test items in {r['test_pass_s'] / 60:,.1f} min; peak memory {gib(r['test_peak_bytes'])}")
    if 'eval_items_per_s' in r:
        print(f"   eval K={args.eval_K}       {r['eval_items_per_s']:9,.2f} items/s (chunks of {r['eval_chunk']} "
              f"items); peak memory {gib(r['eval_peak_bytes'])}")
    if 'released_step_ms' in r:
        print(f"   released code     {r['released_step_ms']:9,.0f} ms median ({r['released_step_ms_all']}; CPU time "
              f"{r['released_step_cpu_ms']:,.0f} ms) -> speed-up {r['speedup']:.2f}x "
              f"(CPU time {r['released_step_cpu_ms'] / r['step_cpu_ms']:.2f}x); peak memory "
              f"{gib(r['released_train_peak_bytes'])}; "
              f"losses equal within {r['loss_rel_diff']:.1e} (relative)")
    sys.stdout.flush()


def summary(results, args):
    """One markdown table row per configuration (the README's performance table)."""
    released = any('speedup' in r for r in results)
    head = ['configuration', 'ms/step', 'pairs/s', 'CPU ms/step', 'GFLOP/step', '% of matmul peak',
            'batch assembly (ms)', 'train peak mem', 'test items/s', f'K={args.eval_K} items/s']
    if released:
        head += ['released ms/step', 'released CPU ms/step', 'speed-up (wall)', 'speed-up (CPU time)']
    print('\n| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    for r in results:
        row = [r['label'], f"{r['step_ms']:,.0f}", f"{r['pairs_per_s']:,.1f}", f"{r['step_cpu_ms']:,.0f}",
               f"{r['step_flops'] / 1e9:,.1f}", f"{100 * r['peak_fraction']:.0f}", f"{r['assembly_ms']:.3f}",
               gib(r['train_peak_bytes']), f"{r.get('test_items_per_s', float('nan')):,.1f}",
               f"{r.get('eval_items_per_s', float('nan')):,.2f}"]
        if released:
            row += [f"{r['released_step_ms']:,.0f}", f"{r['released_step_cpu_ms']:,.0f}", f"{r['speedup']:.2f}x",
                    f"{r['released_step_cpu_ms'] / r['step_cpu_ms']:.2f}x"] if 'speedup' in r else [''] * 4
        print('| ' + ' | '.join(row) + ' |')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = bench_parser()
    args = parser.parse_args(argv)
    try:
        validate(args)
        if args.one:
            print('RESULT ' + json.dumps(run_one(args, args.one)))
            return
        chosen = [k for k in explicit_flags(bench_parser(), argv) if k in vars(build_parser().parse_args([]))
                  and k not in DATA_FLAGS]
        if chosen:
            results = [run_one(args, 'given flags')]
            report(results[0], args)
        else:  # the default set, each in a fresh process
            results = []
            for label, flags in DEFAULT_CONFIGS:
                out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, *flags, '--one', label],
                                     stdout=subprocess.PIPE, text=True)
                lines = [ln for ln in out.stdout.splitlines() if ln.startswith('RESULT ')]
                if out.returncode or not lines:
                    sys.exit(f'error: configuration {label!r} failed (exit code {out.returncode})')
                results.append(json.loads(lines[-1][len('RESULT '):]))
                report(results[-1], args)
        summary(results, args)
        if args.json:
            save_json(results, args.json)  # atomic; a full disk is a WriteError: one error line
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    main()
