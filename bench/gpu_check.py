"""The GPU check, for the first machine with a GPU: the gpu test tier, then bench/bench.py on the paper's
step and the number-sense steps in float32, with --amp and with --compile, and one table with the card's
name and the epoch and study times those step times imply.

    python bench/gpu_check.py                      # everything (about 10 minutes on one GPU)
    python bench/gpu_check.py --skip-tier          # the benchmark only
    python bench/gpu_check.py --modes float32 amp  # fewer modes

Implied times are step time x steps, the training steps alone (no evaluation, no analyses):
- the paper's MNIST-SVHN run: 30 epochs of the 1,682,040 real pairs (pair multiplier 30) in batches of
  128, 13,141 steps an epoch, 394,230 in all (docs/baselines.md);
- the number-sense study at the authors' protocol (configs/numbersense_noda2024.yaml; its steps from
  src/report/numbersense/budget.py): 20 seeds x (a CMNIST VAE and an OSCN VAE of 46,900 steps each, and
  an MMVAE of 93,750 steps), one run after another on one GPU.
The benchmark runs on the offline data (--offline): the same shapes as the real data, so the same step time.

MMVAE_TEST_DEVICE=cpu runs the same on the CPU (a check of this script, not figures for a GPU).
"""
import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from src.report.numbersense.budget import protocol_steps  # noqa: E402

PAPER_PAIRS, PAPER_EPOCHS = 1_682_040, 30
PAPER_STEPS_PER_EPOCH = math.ceil(PAPER_PAIRS / 128)
STUDY_SEEDS = 20
PAPER = ['--model', 'mnist_svhn', '--obj', 'dreg', '--K', '30', '--looser', '--learn-prior', '--batch-size', '128']


def numbersense_flags(model):
    """main.py flags of the protocol's run of `model` (configs/numbersense_noda2024.yaml)."""
    with open(os.path.join(REPO, 'configs', 'numbersense_noda2024.yaml')) as f:
        cfg = yaml.safe_load(f)
    flags = ['--model', model]
    for key, value in cfg.items():
        if key in ('epochs', 'pair-multiplier'):
            continue  # not a property of one step (the offline data keep their own multiplier below)
        flag = '--' + key
        if isinstance(value, bool):
            flags += [flag] if value else []
        else:
            flags += [flag, str(value)]
    return flags + ['--pair-multiplier', str(cfg['pair-multiplier'])]


def protocol():
    with open(os.path.join(REPO, 'configs', 'numbersense_noda2024.yaml')) as f:
        cfg = yaml.safe_load(f)
    return {'epochs': cfg['epochs'], 'batch_size': cfg['batch-size'], 'pair_multiplier': cfg['pair-multiplier'],
            'numbersense_data': cfg['numbersense-data']}


CONFIGS = {  # name: (main.py flags, steps of the run it stands for)
    'paper: mnist_svhn dreg K=30 looser, batch 128': (PAPER, PAPER_STEPS_PER_EPOCH * PAPER_EPOCHS),
    'number sense: cmnist_oscn MMVAE': (numbersense_flags('cmnist_oscn'), protocol_steps('cmnist_oscn', protocol())[1]),
    'number sense: cmnist VAE': (numbersense_flags('cmnist'), protocol_steps('cmnist', protocol())[1]),
    'number sense: oscn VAE': (numbersense_flags('oscn'), protocol_steps('oscn', protocol())[1]),
}
MODES = {'float32': [], 'amp': ['--amp'], 'compile': ['--compile']}


def device_info(device):
    info = {'torch': torch.__version__, 'python': platform.python_version(), 'device': str(device)}
    if device.type == 'cuda':
        p = torch.cuda.get_device_properties(device)
        info.update(name=p.name, capability=f'{p.major}.{p.minor}', memory_gib=round(p.total_memory / 2 ** 30, 1),
                    count=torch.cuda.device_count(), cuda=torch.version.cuda,
                    native_bf16=torch.cuda.is_bf16_supported() and p.major >= 8)
    else:
        info.update(name=f'CPU ({platform.processor() or platform.machine()}), dry run', count=0)
    return info


def run_tier(env):
    """The gpu test tier; returns (exit status, its last line)."""
    t0 = time.time()
    r = subprocess.run([sys.executable, '-m', 'pytest', '-m', 'gpu', '-q', '-rs', '-p', 'no:cacheprovider'],
                       cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(r.stdout, flush=True)
    last = (r.stdout.strip().splitlines() or [''])[-1]
    return r.returncode, f'{last} ({time.time() - t0:.0f} s)'


def bench(flags, mode, args, env):
    """One bench.py configuration in its own process; its result dict, or None if it failed."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'bench.json')
        warmup = args.warmup + (3 if mode == 'compile' else 0)  # the first steps of --compile compile
        cmd = [sys.executable, os.path.join(REPO, 'bench', 'bench.py'), '--offline', '--data-dir', args.data_dir,
               *flags, *MODES[mode], '--steps', str(args.steps), '--warmup', str(warmup), '--test-batches', '0',
               '--eval-items', '0', '--assembly-batches', '10', '--json', out]
        r = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode or not os.path.isfile(out):
            print(f'   failed (exit {r.returncode}):\n' + '\n'.join(r.stdout.splitlines()[-15:]), flush=True)
            return None
        with open(out) as f:
            return json.load(f)[0]


def step_ms(result):
    """The steady-state step time when bench.py reports one, else its median."""
    return result.get('steady_step_ms', result['step_ms']) if result else None


def hours(ms, steps):
    return None if ms is None else ms * steps / 3.6e6


def table(info, results, modes):
    cell = lambda v, fmt: '' if v is None else fmt.format(v)  # noqa: E731
    lines = [f"GPU check on {info['name']} ({info.get('count', 0)} device(s), compute capability "
             f"{info.get('capability', '-')}, {info.get('memory_gib', '-')} GiB; native bfloat16: "
             f"{info.get('native_bf16', '-')}); torch {info['torch']}, CUDA {info.get('cuda', '-')}", '',
             '| step | ' + ' | '.join(f'{m} ms/step' for m in modes) + ' | implies (' + ', '.join(modes) + ') |',
             '|---|' + '---|' * len(modes) + '---|']
    for name, (_, steps) in CONFIGS.items():
        ms = [step_ms(results.get((name, m))) for m in modes]
        h = ', '.join(cell(hours(v, steps), '{:,.1f} h') or '-' for v in ms)
        what = 'the paper run (394,230 steps)' if name.startswith('paper') else f'one run of {steps:,} steps'
        lines.append(f'| {name} | ' + ' | '.join(cell(v, '{:,.1f}') or 'failed' for v in ms) + f' | {what}: {h} |')
    paper = [step_ms(results.get((next(iter(CONFIGS)), m))) for m in modes]
    lines.append('')
    lines.append('one epoch of the paper run (13,141 steps): ' + ', '.join(
        f'{m} {cell(hours(v, PAPER_STEPS_PER_EPOCH), "{:,.2f} h") or "-"}' for m, v in zip(modes, paper, strict=True)))
    study = []
    for m in modes:
        parts = [hours(step_ms(results.get((name, m))), steps) for name, (_, steps) in list(CONFIGS.items())[1:]]
        study.append(None if None in parts else STUDY_SEEDS * sum(parts))
    lines.append(f'the number-sense study ({STUDY_SEEDS} seeds x 3 runs, training steps only, one GPU): ' + ', '.join(
        f'{m} {cell(h, "{:,.1f} h") or "-"}' for m, h in zip(modes, study, strict=True)))
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--skip-tier', action='store_true', help='the benchmark only')
    p.add_argument('--modes', nargs='+', choices=list(MODES), default=list(MODES))
    p.add_argument('--steps', type=int, default=20, help='timed steps per configuration')
    p.add_argument('--warmup', type=int, default=3, help='untimed steps first (3 more with --compile)')
    p.add_argument('--data-dir', default=os.path.join(REPO, 'data'))
    p.add_argument('--out', default='gpu_check.json', help='the results as JSON')
    args = p.parse_args(argv)
    device = torch.device(os.environ.get('MMVAE_TEST_DEVICE', 'cuda'))
    if device.type == 'cuda' and not torch.cuda.is_available():
        print('error: no CUDA GPU here (torch.cuda.is_available() is False): nothing to check.\n'
              '  fix: run this on a machine with a GPU and a CUDA build of torch', file=sys.stderr)
        return 2
    env = dict(os.environ, PYTHONPATH=REPO)
    info = device_info(device)
    print(f"device: {info}", flush=True)
    tier = (None, 'skipped') if args.skip_tier else run_tier(env)
    results = {}
    for name, (flags, _) in CONFIGS.items():
        for mode in args.modes:
            print(f'== {name}, {mode}', flush=True)
            results[(name, mode)] = bench(flags + (['--no-cuda'] if device.type == 'cpu' else []), mode, args, env)
            if results[(name, mode)]:
                print(f'   {step_ms(results[(name, mode)]):,.1f} ms/step', flush=True)
    text = table(info, results, args.modes)
    print(f'\ngpu tier: {tier[1]}\n\n{text}')
    from src.files import save_json
    save_json({'device': info, 'tier': {'exit_status': tier[0], 'summary': tier[1]},
               'results': [{'config': n, 'mode': m, 'flags': CONFIGS[n][0], 'result': r}
                           for (n, m), r in results.items()], 'table': text}, args.out)
    return 0 if tier[0] in (None, 0) and all(results.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
