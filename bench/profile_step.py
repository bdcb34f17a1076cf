"""Where the time of a training step goes, per layer and phase, against a roofline (torch.profiler).

Run from the repository root, with main.py's flags (default: the paper step):

    python bench/profile_step.py --offline                     # paper step, float32
    python bench/profile_step.py --offline --amp               # the same under --amp
    python bench/profile_step.py --offline --model cmnist_oscn --obj dreg --K 20 --batch-size 128 \\
        --num-hidden-layers 4 --pair-multiplier 2         # the number-sense MMVAE step

After --warmup untimed steps it profiles --steps training steps (forward, backward,
Adam) and attributes every operation to a scope: the network layer (module) it runs
in, or the part of the objective (the encoders' distributions, sampling, the
likelihood term, the prior and posterior densities, the weights and the
reduction), or Adam; a backward operation belongs to the scope of the forward
operation that made its autograd node (the profiler's sequence numbers). Per
scope and phase it prints the time per step, the FLOPs (matrix products and
convolutions; a backward pass counted as twice its forward), the bytes its
operations read (input shapes x element size: 2 for a bfloat16 scope under
--amp, else 4; a lower bound of the traffic) and where that puts it on the
roofline: min(matmul peak, FLOP/byte x memory bandwidth),
both measured here (bench/bench.py's measurements). --json FILE writes the rows.
"""
import collections
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import machine, matmul_peak, memory_bandwidth  # noqa: E402
from src import objectives  # noqa: E402
from src.cli import build_parser, validate  # noqa: E402
from src.data import BatchLoader  # noqa: E402
from src.distributed import default_device  # noqa: E402
from src.files import save_json  # noqa: E402
from src.train import setup_training, training_numerics  # noqa: E402

PAPER = ['--model', 'mnist_svhn', '--obj', 'dreg', '--K', '30', '--looser', '--learn-prior', '--batch-size', '128']
# the objective's parts that run outside the networks: name -> (module, function)
PARTS = {'likelihood': (objectives, '_log_px_z')}
SCOPE = 'scope:'


def scoped(fn, name):
    def wrapper(*a, **kw):
        with record_function(SCOPE + name):
            return fn(*a, **kw)
    return wrapper


def instrument(model):
    """record_function scopes around every layer (leaf module) and the likelihood term; returns an undo."""
    handles = []
    for name, m in model.named_modules():
        if name and not isinstance(m, (torch.nn.Sequential, torch.nn.ModuleList)):
            handles.append(m.register_forward_pre_hook(lambda m, a, n=name: enter(n)))
            handles.append(m.register_forward_hook(lambda m, a, o: leave()))
    saved = {k: getattr(mod, f) for k, (mod, f) in PARTS.items()}
    for k, (mod, f) in PARTS.items():
        setattr(mod, f, scoped(saved[k], k))

    def undo():
        for h in handles:
            h.remove()
        for k, (mod, f) in PARTS.items():
            setattr(mod, f, saved[k])
    return undo


_open = []


def enter(name):
    _open.append(torch.ops.profiler._record_function_enter_new(SCOPE + name))


def leave():
    torch.ops.profiler._record_function_exit._RecordFunction(_open.pop())


def scope_of(e):
    """The innermost scope range around event e (None outside every scope)."""
    p = e.cpu_parent
    while p is not None:
        if p.name.startswith(SCOPE):
            return p.name[len(SCOPE):]
        p = p.cpu_parent
    return None


def top_level(e, stop):
    """Whether e is the outermost operator under its scope (or phase) range: its time is not counted twice
    (a custom autograd Function's range, e.g. SumDiff, is not an operator)."""
    p = e.cpu_parent
    while p is not None and not p.name.startswith(stop):
        if p.name.startswith(('aten::', 'autograd::', 'Optimizer.')):
            return False
        p = p.cpu_parent
    return True


def descendants(e):
    for c in e.cpu_children:
        yield c
        yield from descendants(c)


def attribute(events, amp):
    """{(scope, phase): [time us, flops, bytes read]} over the profiled steps."""
    rows = collections.defaultdict(lambda: [0.0, 0, 0])
    fwd_scope, fwd_flops = {}, {}
    for e in events:
        if e.sequence_nr >= 0 and not e.name.startswith('autograd::') and 'Backward' not in e.name:
            fwd_scope.setdefault(e.sequence_nr, layer_of(e))
            # an operation's own FLOPs: nested operations may share its sequence number (linear, t)
            own = e.flops or transposed_conv_flops(e)
            fwd_flops[e.sequence_nr] = max(own, fwd_flops.get(e.sequence_nr, 0))
    for e in events:
        if e.name.startswith(('autograd::engine::evaluate_function', 'Optimizer.step')) or (
                e.name.startswith('aten::') and top_level(e, (SCOPE, 'phase:'))):
            if e.name.startswith('Optimizer.step'):
                key = ('Adam', 'optimizer')
            elif e.name.startswith('autograd::'):
                key = (fwd_scope.get(e.sequence_nr, OTHER), 'backward')
            elif e.cpu_parent is not None and e.cpu_parent.name == 'phase:backward':
                continue  # the engine's own small ops
            else:
                key = (layer_of(e), 'forward')
            ops = [e, *descendants(e)]
            size = 2 if bf16_scope(key[0], amp) else 4
            if key[1] == 'backward':  # the gradients for the input and for the weights: 2 x forward
                flops = 2 * fwd_flops.get(e.sequence_nr, 0) if 'ConvolutionBackward' in e.name or \
                    'mmBackward' in e.name else 0  # (casts and transposes share the product's number)
            else:
                flops = counted_flops(e) or transposed_conv_flops(e)
            rows[key][0] += e.cpu_time_total
            rows[key][1] += flops
            rows[key][2] += sum(size * _numel(s) for o in ops if o.name.startswith('aten::') and not (
                o.cpu_parent is not None and o.cpu_parent.name.startswith('aten::')) for s in o.input_shapes if s)
    return rows


OTHER = 'objective (weights, reductions)'
LAYER_OPS = ('aten::conv_transpose2d', 'aten::conv2d', 'aten::linear', 'aten::addmm', 'aten::mm')


def layer_of(e):
    """An operation's scope; a network's own convolutions and products (svhn.Dec calls them directly,
    not through its submodules) named by their weight's shape."""
    scope = scope_of(e) or OTHER
    op = e
    while op is not None and op.name.startswith('aten::'):  # the outermost operator
        if op.name in LAYER_OPS and len(op.input_shapes) > 1 and op.input_shapes[1]:
            layer = op
        op = op.cpu_parent
    found = locals().get('layer')
    if found is not None and scope != OTHER and not scope.split('.')[-1].isdigit():
        return f"{scope} {found.name[6:]} {'x'.join(map(str, found.input_shapes[1]))}"
    return scope


def counted_flops(e):
    """The profiler's FLOPs of an operation, each nested operation counted once."""
    return e.flops or sum(counted_flops(c) for c in e.cpu_children)


def transposed_conv_flops(e):
    """2 N H W C_in C_out k^2 of aten::conv_transpose2d (every input pixel scatters a k x k x C_out patch)."""
    if e.name != 'aten::conv_transpose2d' or len(e.input_shapes) < 2 or len(e.input_shapes[0]) != 4:
        return 0
    (n, c_in, h, w), (_, c_out, kh, kw) = e.input_shapes[0], e.input_shapes[1]
    return 2 * n * h * w * c_in * c_out * kh * kw


def bf16_scope(scope, amp):
    """Whether a scope computes in bfloat16: under --amp, the decoders' layers."""
    return amp and '.dec' in scope


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = build_parser()
    p.add_argument('--steps', type=int, default=3, help='profiled training steps')
    p.add_argument('--warmup', type=int, default=3, help='untimed steps first')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    p.add_argument('--json', default='', help='write the rows to this JSON file')
    p.add_argument('--top', type=int, default=25, help='rows printed')
    args = p.parse_args(argv if any(a.startswith('--model') for a in argv) else PAPER + argv)
    validate(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = default_device(args.no_cuda)
    with training_numerics(device, args.ieee_denormals, args.return_host_memory):
        run = setup_training(args, device)
        model, opt, objective = run['model'], run['optimizer'], run['objective']
        batches = iter(BatchLoader(run['train_data'], args.batch_size, shuffle=True, seed=args.seed, drop_last=True))

        def step():
            x, _ = next(batches)
            opt.zero_grad(set_to_none=True)
            with record_function('phase:forward'):
                loss = -objective(model, x, args.K)
            with record_function('phase:backward'):
                loss.backward()
            opt.step()

        for _ in range(args.warmup):
            step()
        undo = instrument(model)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
            for _ in range(args.steps):
                step()
        undo()
        peaks = {'float32': matmul_peak(device), 'bfloat16': matmul_peak(device, torch.bfloat16),
                 'bandwidth': memory_bandwidth(device)}
    rows = attribute(prof.events(), args.amp)
    table = roofline(rows, args, peaks)
    print_table(table, args, peaks)
    if args.json:
        save_json({**machine(device), 'flags': vars(args), 'peaks': peaks, 'rows': table}, args.json)


def roofline(rows, args, peaks):
    out = []
    for (scope, phase), (us, flops, nbytes) in rows.items():
        s = us / 1e6 / args.steps
        bf16 = bf16_scope(scope, args.amp)
        peak = peaks['bfloat16' if bf16 else 'float32']
        intensity = flops / nbytes if nbytes else 0.0
        bound = min(peak, intensity * peaks['bandwidth']) if flops else peaks['bandwidth']
        achieved = flops / args.steps / s if flops and s else (nbytes / args.steps / s if s else 0.0)
        out.append({'scope': scope, 'phase': phase, 'ms': 1e3 * s, 'gflop': flops / args.steps / 1e9,
                    'gbytes_read': nbytes / args.steps / 1e9, 'flop_per_byte': intensity,
                    'achieved': achieved, 'roofline': bound, 'fraction_of_roofline': achieved / bound if bound else 0,
                    'kind': 'matmul' if flops else 'memory', 'dtype': 'bfloat16' if bf16 else 'float32'})
    return sorted(out, key=lambda r: -r['ms'])


def print_table(table, args, peaks):
    total = sum(r['ms'] for r in table)
    print(f"{total:,.0f} ms per step profiled ({args.steps} steps); matmul peak float32 "
          f"{peaks['float32'] / 1e9:,.0f} GFLOP/s, bfloat16 {peaks['bfloat16'] / 1e9:,.0f} GFLOP/s; memory "
          f"{peaks['bandwidth'] / 1e9:,.1f} GB/s; {torch.get_num_threads()} threads")
    print(f"{'scope':44s} {'phase':9s} {'ms':>8s} {'%':>5s} {'GFLOP':>7s} {'GB read':>8s} {'FLOP/B':>7s} "
          f"{'achieved':>16s} {'of roofline':>11s}")
    for r in table[:args.top]:
        unit = 'GFLOP/s' if r['kind'] == 'matmul' else 'GB/s'
        print(f"{r['scope'][:44]:44s} {r['phase']:9s} {r['ms']:8.1f} {100 * r['ms'] / total:5.1f} {r['gflop']:7.2f} "
              f"{r['gbytes_read']:8.3f} {r['flop_per_byte']:7.1f} {r['achieved'] / 1e9:8.1f} {unit:7s} "
              f"{100 * r['fraction_of_roofline']:10.0f}%")


if __name__ == '__main__':
    main()
