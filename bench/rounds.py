"""This code's training step against the released code (and MultiVae), in rounds: each run in its own process.

    python bench/rounds.py --rounds 4 --out DIR --multivae-python VENV/bin/python    # the float32 targets
    python bench/rounds.py --rounds 3 --out DIR --amp --threads 1 --metric cpu        # the bfloat16 targets
    python bench/rounds.py --rounds 3 --out DIR --amp --threads 1 --metric cpu --config numbersense

Each round runs, one after the other, on the same machine, each as its users run it:
- this code's step: `bench/bench.py` with the configuration's flags (--amp: with `--amp --float32`, so
  that the run alternates this code's bfloat16 and float32 steps);
- the released computation: the same with `--released --return-host-memory`, float32 (memory returned in
  the whole process, so that the released steps do not reuse what this code keeps);
- MultiVae 1.0.3 (the paper configuration in float32 only): `bench/peer_multivae.py --return-host-memory`,
  in the environment given by --multivae-python (skipped without it).
Each run writes its JSON into --out. The summary prints every round's medians (wall or CPU time, --metric)
and each one's ratio to this code's step (its --amp step with --amp), so that a reader sees how far the
machine's noise moves them. Speeds on a machine with other work running mean little: run this alone.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    'paper': ['--model', 'mnist_svhn', '--obj', 'dreg', '--K', '30', '--looser', '--learn-prior',
              '--batch-size', '128'],
    'numbersense': ['--model', 'cmnist_oscn', '--obj', 'dreg', '--K', '20', '--batch-size', '128',
                    '--num-hidden-layers', '4', '--pair-multiplier', '2'],
}


def commands(args, i):
    """{name: (command, JSON file, the step's median in ms from the JSON)} of round i; the first is the base."""
    t, mv = ('cpu_ms', 'cpu_ms') if args.metric == 'cpu' else ('ms', 'wall_ms')  # bench.py's, peer_multivae.py's
    bench = [sys.executable, 'bench/bench.py', '--offline', *CONFIGS[args.config], '--threads', str(args.threads),
             '--steps', str(args.steps), '--test-batches', '0', '--eval-items', '0']
    if args.amp:
        out = {'this code --amp': (bench + ['--amp', '--float32'], f'ours_{i}.json', lambda r: r[0][f'step_{t}']),
               'this code float32': (None, f'ours_{i}.json', lambda r: r[0][f'float32_step_{t}'])}
    else:
        out = {'this code': (bench, f'ours_{i}.json', lambda r: r[0][f'step_{t}'])}
    out['released'] = (bench + ['--released', '--return-host-memory'], f'released_{i}.json',
                       lambda r: r[0][f'released_step_{t}'])
    if args.multivae_python and args.config == 'paper' and not args.amp:
        out['MultiVae'] = ([args.multivae_python, 'bench/peer_multivae.py', '--offline', '--threads',
                            str(args.threads), '--steps', str(args.steps), '--return-host-memory'],
                           f'multivae_{i}.json', lambda r: r['median']['multivae'][mv])
    return out


def run(cmd, path):
    """Runs cmd with --json path (None: a run made earlier in the round wrote path) and reads path."""
    if cmd is not None:
        subprocess.run(cmd + ['--json', path], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(path) as f:
        return json.load(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=4)
    p.add_argument('--config', choices=sorted(CONFIGS), default='paper',
                   help='paper: mnist_svhn dreg K=30 --looser, batch 128; numbersense: cmnist_oscn dreg K=20, '
                        'MLP 4 x 400')
    p.add_argument('--amp', action='store_true', help="this code's step with --amp (and its float32 step)")
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--metric', choices=['wall', 'cpu'], default='wall',
                   help='wall time, or CPU time of all threads, per step')
    p.add_argument('--steps', type=int, default=10, help='timed steps of each run')
    p.add_argument('--out', required=True, help="directory for the runs' JSON files (created)")
    p.add_argument('--multivae-python', default='', help="python of an environment with multivae 1.0.3")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    table = []
    for i in range(1, args.rounds + 1):
        row = {}
        for name, (cmd, path, median_ms) in commands(args, i).items():
            row[name] = median_ms(run(cmd, os.path.join(os.path.abspath(args.out), path)))
        table.append(row)
        base, *others = row
        print(f'round {i} ({args.metric} time): ' + ', '.join(f'{k} {v:,.0f} ms' for k, v in row.items()) + '; ' +
              ', '.join(f'{k} / {base} {row[k] / row[base]:.2f}x' for k in others), flush=True)
    base, *others = table[0]
    for name in others:
        ratios = [r[name] / r[base] for r in table]
        print(f'{name} / {base}: median {statistics.median(ratios):.2f}x, '
              f'rounds {min(ratios):.2f}x to {max(ratios):.2f}x')


if __name__ == '__main__':
    main()
