"""Where subnormal numbers arise in training: counts per operation over the first steps.

Run from the repository root, with main.py's flags (default: the paper step):

    python bench/denormals.py --offline --steps 6 --json denormals.json
    python bench/denormals.py --offline --model cmnist_oscn --obj dreg --K 20 --batch-size 128 \\
        --num-hidden-layers 4 --pair-multiplier 2
    python bench/denormals.py --offline --compare 300 --json flush.json   # flushed against IEEE

Trains --steps steps in float32 with IEEE behaviour (subnormals kept) and counts,
in every step, the subnormal values (0 < |x| < 1.18e-38) in the output of every
operation of the forward pass and of the backward pass (torch's dispatcher: one
entry per operation and output shape), in every parameter's gradient, and in
Adam's state (exp_avg, exp_avg_sq, max_exp_avg_sq) after its step. Prints the
operations that produce the most, per step, and with --json writes all counts
(summed over the calls of an operation with the same output shape).

--compare N instead trains N steps twice from the same initial weights, on the
same batches and samples, alternating step by step: with subnormals flushed to
zero (the default) and with IEEE behaviour (--ieee-denormals); it records each
step's loss, wall time and CPU time of both.
"""
import collections
import json
import os
import sys
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from src.cli import build_parser, validate
from src.data import BatchLoader
from src.distributed import default_device
from src.files import save_json
from src.train import setup_training, training_numerics

PAPER = ['--model', 'mnist_svhn', '--obj', 'dreg', '--K', '30', '--looser', '--learn-prior', '--batch-size', '128']
TINY = torch.finfo(torch.float32).tiny


def subnormals(t):
    """Number of float32 subnormals in t."""
    if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or t.is_sparse:
        return 0
    a = t.detach().abs()
    return int(((a > 0) & (a < TINY)).sum())


class CountSubnormals(TorchDispatchMode):
    """Counts subnormals in the outputs of every operation, by (phase, operation, output shape)."""

    def __init__(self):
        super().__init__()
        self.phase = 'forward'
        self.counts = collections.Counter()
        self.sizes = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if 'empty' in func.overloadpacket.__name__:  # uninitialised memory: its bits mean nothing
            return out
        for t in tree_flatten(out)[0]:
            n = subnormals(t)
            if n:
                key = (self.phase, str(func.overloadpacket.__name__), tuple(t.shape))
                self.counts[key] += n
                self.sizes[key] = t.numel()
        return out


def state_counts(model, opt):
    """Subnormals in the gradients and in Adam's state, per tensor kind, summed over the parameters."""
    out = collections.Counter()
    names = {p: n for n, p in model.named_parameters()}
    for p in model.parameters():
        if p.grad is not None:
            out[f'grad {names[p]}'] += subnormals(p.grad)
        for k, v in opt.state.get(p, {}).items():
            out[f'adam {k}'] += subnormals(v)
    return +out  # the non-zero ones


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = build_parser()
    p.add_argument('--steps', type=int, default=6, help='training steps counted')
    p.add_argument('--json', default='', help='write the counts to this JSON file')
    p.add_argument('--compare', type=int, default=0, metavar='N',
                   help='train N steps flushed and N with IEEE subnormals, alternating; record losses and times')
    args = p.parse_args(argv if any(a.startswith('--model') for a in argv) else PAPER + argv)
    validate(args)
    device = default_device(args.no_cuda)
    if args.compare:
        compare(args, device)
        return
    with training_numerics(device, ieee_denormals=True, return_host_memory=args.return_host_memory):
        run = setup_training(args, device)
        model, opt, objective = run['model'], run['optimizer'], run['objective']
        batches = iter(BatchLoader(run['train_data'], args.batch_size, shuffle=True, seed=args.seed, drop_last=True))
        steps = []
        for i in range(args.steps):
            x, _ = next(batches)
            mode = CountSubnormals()
            with mode:
                opt.zero_grad(set_to_none=True)
                loss = -objective(model, x, args.K)
                mode.phase = 'backward'
                loss.backward()
            grads = state_counts(model, opt)
            opt.step()
            adam = {k: v for k, v in state_counts(model, opt).items() if k.startswith('adam')}
            ops = [{'phase': ph, 'op': op, 'shape': list(shape), 'subnormals': n, 'numel': mode.sizes[ph, op, shape]}
                   for (ph, op, shape), n in mode.counts.most_common()]
            steps.append({'step': i + 1, 'loss': loss.item(), 'ops': ops,
                          'grads': {k: v for k, v in grads.items() if k.startswith('grad')}, 'adam': adam})
            report(steps[-1])
    if args.json:
        save_json({'flags': vars(args), 'steps': steps}, args.json)


def compare(args, device):
    """Per-step loss, wall and CPU time (s) of training flushed and with IEEE subnormals, alternating."""
    runs, out = {}, {'flags': vars(args), 'threads': torch.get_num_threads(),
                     'load_avg_start': [round(x, 2) for x in os.getloadavg()]}
    for name in ('flushed', 'ieee'):
        runs[name] = setup_training(args, device)  # seeded: the same initial weights
        runs[name]['batches'] = iter(BatchLoader(runs[name]['train_data'], args.batch_size, shuffle=True,
                                                 seed=args.seed, drop_last=True))
        out[name] = {'loss': [], 'wall': [], 'cpu': []}
    for i in range(args.compare):
        for name, r in runs.items():
            x, _ = next(r['batches'])
            with training_numerics(device, ieee_denormals=name == 'ieee', return_host_memory=args.return_host_memory):
                torch.manual_seed(1000 + i)  # the same samples
                t0, c0 = time.perf_counter(), time.process_time()
                r['optimizer'].zero_grad(set_to_none=True)
                loss = -r['objective'](r['model'], x, args.K)
                loss.backward()
                r['optimizer'].step()
                out[name]['loss'].append(loss.item())
                out[name]['wall'].append(round(time.perf_counter() - t0, 4))
                out[name]['cpu'].append(round(time.process_time() - c0, 4))
        if i % 10 == 0 or i == args.compare - 1:
            f, e = out['flushed'], out['ieee']
            print(f"step {i + 1}: loss {f['loss'][-1]:.3f} flushed, {e['loss'][-1]:.3f} IEEE; "
                  f"CPU time {f['cpu'][-1]:.2f} s, {e['cpu'][-1]:.2f} s", flush=True)
            out['load_avg_end'] = [round(x, 2) for x in os.getloadavg()]
            if args.json:  # also the steps so far: a long comparison can be stopped
                save_json(out, args.json)
    return out


def report(s, top=8):
    total = collections.Counter()
    for o in s['ops']:
        total[o['phase']] += o['subnormals']
    print(f"step {s['step']}: loss {s['loss']:.1f}; subnormals in op outputs: forward {total['forward']:,}, "
          f"backward {total['backward']:,}; in gradients {sum(s['grads'].values()):,}; "
          f"in Adam's state {json.dumps(s['adam'])}")
    for o in s['ops'][:top]:
        print(f"   {o['phase']:8s} {o['op']:28s} {str(o['shape']):22s} {o['subnormals']:>11,} of {o['numel']:,}")
    for k, v in sorted(s['grads'].items(), key=lambda kv: -kv[1])[:4]:
        print(f"   {k:60s} {v:>11,}")
    sys.stdout.flush()


if __name__ == '__main__':
    main()
