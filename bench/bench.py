"""Speed benchmark: training steps, batch assembly and evaluation.

Run from the repository root. main.py's flags choose one configuration;
without any, the default set below is run (each configuration in its own
process, so that peak memory is measured cleanly):

    python bench/bench.py --offline                       # default set, offline data
    python bench/bench.py --offline --model mnist_svhn --obj dreg --K 30 --looser \\
        --learn-prior --batch-size 128                    # the paper's configuration
    python bench/bench.py --offline ... --released        # also the released computation, alternating
    python bench/bench.py --offline ... --amp --released  # bf16 autocast against the released float32 step

Per configuration it prints:
- the device: the CPU's or GPU's name, whether it computes bfloat16 natively
  (CPU flags amx_bf16 / avx512_bf16; GPU compute capability >= 8.0), the
  threads, and the load average when the configuration started;
- training steps (forward + backward + Adam step + loss.item()), on real
  batches of the training data, wall time and CPU time (of all threads): the
  first --first-steps steps each (they differ: weights and subnormal numbers
  change fastest early in training; --compile compiles then), then, after
  --warmup untimed steps, the steady state: median (and min) of --steps steps,
  and the pairs (items) per second;
- FLOPs of one step (forward + backward) counted by torch's FlopCounterMode
  on the released computation (matrix products and convolutions; elementwise
  work is not counted; this code's faster forms compute some zeros), the
  achieved FLOP/s and its fraction of this machine's matmul peak, measured
  here with a large float32 and bfloat16 matrix product, and the memory
  bandwidth (a large copy): the roofline's two numbers;
- batch assembly: time to gather one batch with BatchLoader/TensorData;
- peak memory during the training steps (CPU: the peak resident set size
  above the size before them, from /proc/self/status after resetting the
  peak, or getrusage; GPU: torch.cuda.max_memory_allocated);
- evaluation: the per-epoch test pass (the test objective with the training
  K) and the K = 1000 log-likelihood objective (m_iwae / iwae, chunked), in
  items per second with their peak memory;
- with --released: the same steps with the released computation (the SVHN
  decoder as nn.Sequential on z viewed as (N, D, 1, 1), and torch's log_prob
  for the likelihood term), alternating with this code's on the same batches,
  samples and initial weights: both medians, the speed-up, and the largest
  relative difference of the losses. The released computation runs as the
  released code's users run it (--released-numerics users: float32, IEEE
  subnormals, glibc's malloc returning freed memory, not compiled), whatever
  --amp, --compile, --ieee-denormals or --return-host-memory say;
  --released-numerics same runs it with this code's numerics.

Timings on a shared machine are noisy: compare within one run (--released
alternates the two) and look at the medians.
"""
import argparse
import datetime
import json
import os
import re
import resource
import shlex
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
from src.numerics import cpu_denormals, host_memory, native_bf16
from src.objectives import chunk_size, get_objective
from src.train import build_optimizer, compile_networks, setup_training, training_numerics

PAPER = ['--model', 'mnist_svhn', '--learn-prior', '--batch-size', '128']
DEFAULT_CONFIGS = [
    ('paper: dreg K=30 looser', PAPER + ['--obj', 'dreg', '--K', '30', '--looser']),
    ('dreg K=5 looser', PAPER + ['--obj', 'dreg', '--K', '5', '--looser']),
    ('elbo K=1', PAPER + ['--obj', 'elbo', '--K', '1']),
]
# main.py flags that only say where data come from: they do not pick a configuration
DATA_FLAGS = ('data_dir', 'offline', 'pair_multiplier', 'no_cuda', 'amp', 'compile', 'ieee_denormals',
              'return_host_memory')


def bench_parser():
    p = build_parser()
    p.description = 'Benchmark a training configuration (main.py flags) or, without any, the default set.'
    g = p.add_argument_group('benchmark')
    g.add_argument('--first-steps', type=int, default=4, help='first training steps, timed and reported each')
    g.add_argument('--warmup', type=int, default=0,
                   help='untimed training steps after the first ones (more with --compile)')
    g.add_argument('--steps', type=int, default=5, help='timed training steps of the steady state')
    g.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    g.add_argument('--released', action='store_true',
                   help='also time the released computation (SVHN decoder, likelihood term), alternating with '
                        'the optimised one')
    g.add_argument('--float32', action='store_true',
                   help="with --amp: also time this code's float32 step (the same flags without --amp), alternating")
    g.add_argument('--released-numerics', default='users', choices=['users', 'same'],
                   help="the released computation's numerics: users: as the released code's users run it (float32, "
                        "IEEE subnormals, memory returned, not compiled); same: this run's (--amp, --compile, "
                        "--ieee-denormals, --return-host-memory)")
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


def best_time(fn, device, repeats=5):
    best = float('inf')
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(device, dtype=torch.float32):
    """Best FLOP/s of a large square matrix product on this device."""
    n = 2048 if device.type == 'cpu' else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n ** 3 / best_time(lambda: a @ b, device)


def memory_bandwidth(device):
    """Best bytes/s of copying a large float32 tensor (read and write counted)."""
    n = (64 if device.type == 'cpu' else 256) * 2 ** 20
    a, b = torch.ones(n, device=device), torch.empty(n, device=device)
    return 2 * 4 * n / best_time(lambda: b.copy_(a), device)


def machine(device):
    """What a figure needs beside it: the device, its native bf16, threads, load, date, software."""
    bf16, why = native_bf16(device)
    return {'device': str(device), 'device_name': device_name(device), 'native_bf16': bf16, 'native_bf16_why': why,
            'threads': torch.get_num_threads(), 'load_avg': [round(x, 2) for x in os.getloadavg()],
            'date': datetime.datetime.now().isoformat(timespec='seconds'), 'torch': torch.__version__,
            'command': shlex.join(['python', os.path.relpath(sys.argv[0]), *sys.argv[1:]])}


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
    with training_numerics(device, args.ieee_denormals, args.return_host_memory):
        return measure(args, label, device)


def measure(args, label, device):
    run = setup_training(args, device)  # as main.py: seed, model, data, objectives, optimiser
    train_data, test_data = run['train_data'], run['test_data']
    res = {'label': label, **machine(device), 'data': train_data.source, 'batch_size': args.batch_size,
           'flags': {k: getattr(args, k) for k in ('model', 'obj', 'K', 'looser', 'learn_prior', 'batch_size',
                                                   'dreg_estimator', 'num_hidden_layers', 'amp', 'compile',
                                                   'ieee_denormals', 'return_host_memory')},
           'train_items': len(train_data), 'test_items': len(test_data),
           'matmul_peak_flops_float32': matmul_peak(device, torch.float32),
           'matmul_peak_flops_bfloat16': matmul_peak(device, torch.bfloat16),
           'memory_bandwidth': memory_bandwidth(device),
           'assembly_ms': assembly_ms(train_data, args, device)}
    res['matmul_peak_flops'] = res['matmul_peak_flops_bfloat16' if args.amp else 'matmul_peak_flops_float32']
    batches = cycle(BatchLoader(train_data, args.batch_size, shuffle=True, seed=args.seed + 1, drop_last=True))
    res.update(training_steps(run, args, device, batches))
    res.update(step_flops(*released_computation(run, args, device), next(batches)[0], args.K, res))
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


def numerics(args, device):
    """(IEEE subnormals, host memory kept) of this run, as training_numerics sets them."""
    return args.ieee_denormals, device.type == 'cpu' and not args.return_host_memory


def released_model(run, args, device):
    """The released computation (same initial weights), its objective, optimiser and numerics: as the
    released code's users run it (float32, IEEE subnormals, glibc's malloc returning freed memory, not
    compiled), or (--released-numerics same) with this run's --amp, --compile, --ieee-denormals and
    --return-host-memory."""
    ref, objective = released_computation(run, args, device)
    if args.released_numerics == 'same':
        if args.compile:
            compile_networks(ref)
        return ref, run['objective'], build_optimizer(args, ref), numerics(args, device)
    return ref, objective, build_optimizer(args, ref), (True, False)


def model_copy(run, args, device):
    """A model with the run's initial weights, and its float32 training objective."""
    ref = MODELS[args.model](args).to(device)
    ref.load_state_dict(run['model'].state_dict())
    return ref, get_objective(ref.training_objectives(args), args.obj, args.looser, args.dreg_estimator == 'true')


def released_computation(run, args, device):
    """A model with the released SVHN decoder and the same weights, and its float32 training objective."""
    ref, objective = model_copy(run, args, device)
    use_released_decoders(ref)
    return ref, objective


def float32_model(run, args, device):
    """This code's float32 step (same initial weights, flags and numerics, without --amp)."""
    ref, objective = model_copy(run, args, device)
    if args.compile:
        compile_networks(ref)
    return ref, objective, build_optimizer(args, ref), numerics(args, device)


def training_steps(run, args, device, batches):
    """Step times (the first steps, then the steady state), peak memory and the reference computations
    (--released, --float32) alternating with this one on the same batches and samples."""
    steps = {'optimised': (run['model'], run['objective'], run['optimizer'], numerics(args, device))}
    if args.released:
        steps['released'] = released_model(run, args, device)
    if args.float32:
        steps['float32'] = float32_model(run, args, device)
    for model, *_ in steps.values():
        model.train()
    first, wall, cpu, peak, values = ({k: [] for k in steps} for _ in range(5))
    for i in range(args.first_steps + args.warmup + args.steps):
        x, _ = next(batches)
        for name, (model, objective, opt, (ieee, keep)) in steps.items():
            torch.manual_seed(1000 + i)  # the same samples for every computation
            with cpu_denormals(ieee), host_memory(keep):
                base = mem_reset(device)
                t, c, value = timed_step(model, opt, objective, x, args.K, device, released=name == 'released')
                peak[name].append(mem_peak(device) - base)
            values[name].append(value)
            if i < args.first_steps:
                first[name].append((t, c))
            elif i >= args.first_steps + args.warmup:
                wall[name].append(t)
                cpu[name].append(c)
    res = {}
    for name in steps:
        key = '' if name == 'optimised' else f'{name}_'
        res.update(step_stats(key, first[name], wall[name], cpu[name], peak[name]))
        if key:  # the speed-ups of this code over the reference, and how far the losses are apart
            res.update({f'{key}loss_rel_diff': max(abs(a - b) / abs(b) for a, b in zip(values['optimised'],
                                                                                       values[name], strict=True)),
                        f'{key}speedup': res[f'{key}step_ms'] / res['step_ms'],
                        f'{key}speedup_cpu': res[f'{key}step_cpu_ms'] / res['step_cpu_ms']})
            if res.get('first_step_ms'):
                res[f'{key}first_speedup'] = res[f'{key}first_step_ms'] / res['first_step_ms']
    res['pairs_per_s'] = args.batch_size / (res['step_ms'] / 1e3)
    res['epoch_s'] = len(run['train_data']) / res['pairs_per_s']  # training steps only, at the median step time
    if args.released:  # the names earlier versions of this script wrote
        res.update(loss_rel_diff=res['released_loss_rel_diff'], speedup=res['released_speedup'],
                   speedup_cpu=res['released_speedup_cpu'], released_numerics=args.released_numerics)
        if 'released_first_speedup' in res:
            res['first_speedup'] = res['released_first_speedup']
    return res


def step_stats(key, first, wall, cpu, peak):
    """Medians and all times (ms) of the first steps and of the steady state; keys prefixed by `key`."""
    out = {f'{key}train_peak_bytes': max(peak),
           f'{key}first_step_ms_all': [round(1e3 * t) for t, _ in first],
           f'{key}first_step_cpu_ms_all': [round(1e3 * c) for _, c in first]}
    if first:
        out[f'{key}first_step_ms'] = 1e3 * statistics.median(t for t, _ in first)
        out[f'{key}first_step_cpu_ms'] = 1e3 * statistics.median(c for _, c in first)
    if wall:
        out.update({f'{key}step_ms': 1e3 * statistics.median(wall), f'{key}step_ms_min': 1e3 * min(wall),
                    f'{key}step_ms_all': [round(1e3 * t) for t in wall],
                    f'{key}step_cpu_ms': 1e3 * statistics.median(cpu),
                    f'{key}step_cpu_ms_all': [round(1e3 * c) for c in cpu]})
    return out


def step_flops(model, objective, x, K, res):
    """FLOPs of one step (forward + backward; Adam's elementwise work is not counted), and their rate. Counted
    on the released computation: what the step computes, not the zero taps of this code's faster forms
    (src/models/svhn.py, PhaseConvTranspose)."""
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
    if f.get('num_hidden_layers', 1) != 1:
        s += f" --num-hidden-layers {f['num_hidden_layers']}"
    return s + ''.join(f' --{k.replace("_", "-")}' for k in ('amp', 'compile', 'ieee_denormals', 'return_host_memory')
                   if f.get(k))


def report(r, args):
    print(f"== {r['label']}: {describe(r['flags'])}")
    print(f"   {r['device_name']} ({r['device']}, {r['threads']} threads); native bfloat16: "
          f"{'yes' if r['native_bf16'] else 'no'} ({r['native_bf16_why']}); load average {r['load_avg']} at "
          f"{r['date']}; data: {r['data']}")
    print(f"   first steps       {r['first_step_ms_all']} ms (CPU time {r['first_step_cpu_ms_all']} ms)")
    print(f"   training step     {r['step_ms']:9,.0f} ms median (min {r['step_ms_min']:,.0f}; "
          f"{len(r['step_ms_all'])} steps: {r['step_ms_all']})   {r['pairs_per_s']:,.1f} pairs/s; "
          f"CPU time {r['step_cpu_ms']:,.0f} ms")
    print(f"   FLOPs per step    {r['step_flops'] / 1e9:9,.1f} GFLOP -> {r['flops_per_s'] / 1e9:,.1f} GFLOP/s = "
          f"{100 * r['peak_fraction']:.0f}% of the measured {'bfloat16' if r['flags']['amp'] else 'float32'} "
          f"matmul peak (float32 {r['matmul_peak_flops_float32'] / 1e9:,.0f}, bfloat16 "
          f"{r['matmul_peak_flops_bfloat16'] / 1e9:,.0f} GFLOP/s; memory {r['memory_bandwidth'] / 1e9:,.1f} GB/s)")
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
        how = "this run's numerics" if r['released_numerics'] == 'same' else \
            'float32, IEEE subnormals, freed memory returned, as its users run it'
        print(f"   released code     ({how}) first steps {r['released_first_step_ms_all']} ms (CPU time "
              f"{r['released_first_step_cpu_ms_all']} ms)")
        print(f"   released code     {r['released_step_ms']:9,.0f} ms median ({r['released_step_ms_all']}; CPU time "
              f"{r['released_step_cpu_ms']:,.0f} ms) -> speed-up {r['speedup']:.2f}x "
              f"(CPU time {r['speedup_cpu']:.2f}x; first steps {r.get('first_speedup', float('nan')):.2f}x); "
              f"peak memory {gib(r['released_train_peak_bytes'])}; "
              f"losses equal within {r['loss_rel_diff']:.1e} (relative)")
        if r['released_numerics'] == 'users' and r['device'] == 'cpu' and not r['flags']['return_host_memory']:
            print('   note: the released steps reuse the host memory that this code keeps, which makes them faster '
                  'than in a process of their own; the released time as its users get it is that of a run with '
                  '--return-host-memory (docs/performance.md)')
    if 'float32_step_ms' in r:
        print(f"   float32 (ours)    {r['float32_step_ms']:9,.0f} ms median ({r['float32_step_ms_all']}; CPU time "
              f"{r['float32_step_cpu_ms']:,.0f} ms; first steps {r['float32_first_step_ms_all']} ms) -> speed-up "
              f"{r['float32_speedup']:.2f}x (CPU time {r['float32_speedup_cpu']:.2f}x); losses equal within "
              f"{r['float32_loss_rel_diff']:.1e} (relative)")
    sys.stdout.flush()


def summary(results, args):
    """One markdown table row per configuration (the README's performance table)."""
    released = any('speedup' in r for r in results)
    head = ['configuration', 'first steps ms (median)', 'ms/step', 'pairs/s', 'CPU ms/step', 'GFLOP/step',
            '% of matmul peak', 'batch assembly (ms)', 'train peak mem', 'test items/s', f'K={args.eval_K} items/s']
    if released:
        head += ['released ms/step', 'released CPU ms/step', 'speed-up (wall)', 'speed-up (CPU time)']
    print('\n| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    for r in results:
        row = [r['label'] + (' --amp' if r['flags']['amp'] else ''), f"{r.get('first_step_ms', float('nan')):,.0f}",
               f"{r['step_ms']:,.0f}", f"{r['pairs_per_s']:,.1f}", f"{r['step_cpu_ms']:,.0f}",
               f"{r['step_flops'] / 1e9:,.1f}", f"{100 * r['peak_fraction']:.0f}", f"{r['assembly_ms']:.3f}",
               gib(r['train_peak_bytes']), f"{r.get('test_items_per_s', float('nan')):,.1f}",
               f"{r.get('eval_items_per_s', float('nan')):,.2f}"]
        if released:
            row += [f"{r['released_step_ms']:,.0f}", f"{r['released_step_cpu_ms']:,.0f}", f"{r['speedup']:.2f}x",
                    f"{r['speedup_cpu']:.2f}x"] if 'speedup' in r else [''] * 4
        print('| ' + ' | '.join(row) + ' |')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = bench_parser()
    args = parser.parse_args(argv)
    try:
        validate(args)
        for flag in ('steps', 'threads', 'first_steps', 'warmup'):
            if getattr(args, flag) < (1 if flag == 'steps' else 0):
                raise UserError(f"--{flag.replace('_', '-')} must be {'>= 1' if flag == 'steps' else '>= 0'}, "
                                f"got {getattr(args, flag)}")
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
