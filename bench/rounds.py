"""The float32 paper step against the released code and MultiVae, in rounds: each run in its own process.

    python bench/rounds.py --rounds 4 --out /tmp/rounds --multivae-python /path/to/venv/bin/python

Each round runs, one after the other, on the same machine:
- this code's step as its users run it: `bench/bench.py` with the paper flags;
- the released computation as its users run it: the same with `--released --return-host-memory` (with
  memory returned in the whole process, so that the released steps do not reuse what this code keeps);
- MultiVae 1.0.3 as its users run it: `bench/peer_multivae.py --return-host-memory`, in the environment
  given by --multivae-python (skipped without it).
Each run writes its JSON into --out; the summary prints every round's medians and the ratios of each
round, so that a reader sees how far the machine's noise moves them. Speeds on a machine with other work
running mean little: run this alone.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = ['--offline', '--model', 'mnist_svhn', '--obj', 'dreg', '--K', '30', '--looser', '--learn-prior',
         '--batch-size', '128']


def commands(args, i):
    """{name: (command, JSON file, the step's median wall time in ms from the JSON)} of round i."""
    bench = [sys.executable, 'bench/bench.py', *PAPER, '--threads', str(args.threads), '--steps', str(args.steps),
             '--test-batches', '0', '--eval-items', '0']
    out = {'this code': (bench, f'ours_{i}.json', lambda r: r[0]['step_ms']),
           'released': (bench + ['--released', '--return-host-memory'], f'released_{i}.json',
                        lambda r: r[0]['released_step_ms'])}
    if args.multivae_python:
        out['MultiVae'] = ([args.multivae_python, 'bench/peer_multivae.py', '--offline', '--threads',
                            str(args.threads), '--steps', str(args.steps), '--return-host-memory'],
                           f'multivae_{i}.json', lambda r: r['median']['multivae']['wall_ms'])
    return out


def run(cmd, path):
    subprocess.run(cmd + ['--json', path], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(path) as f:
        return json.load(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rounds', type=int, default=4)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--steps', type=int, default=10, help='timed steps of each run')
    p.add_argument('--out', required=True, help='directory for the runs\' JSON files (created)')
    p.add_argument('--multivae-python', default='', help="python of an environment with multivae 1.0.3")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    table = []
    for i in range(1, args.rounds + 1):
        row = {}
        for name, (cmd, path, median_ms) in commands(args, i).items():
            row[name] = median_ms(run(cmd, os.path.join(os.path.abspath(args.out), path)))
        table.append(row)
        print(f'round {i}: ' + ', '.join(f'{k} {v:,.0f} ms' for k, v in row.items()) + '; ' +
              ', '.join(f'{k} / this code {v / row["this code"]:.2f}x' for k, v in row.items() if k != 'this code'),
              flush=True)
    for name in table[0]:
        if name != 'this code':
            ratios = [r[name] / r['this code'] for r in table]
            print(f'{name} / this code: median {statistics.median(ratios):.2f}x, '
                  f'rounds {min(ratios):.2f}x to {max(ratios):.2f}x')


if __name__ == '__main__':
    main()
