"""--amp's accuracy against float32: the same runs trained both ways, analysed, compared.

    python bench/amp_accuracy.py run --out /work/speed-runs/amp --offline      # train and analyse (resumable)
    python bench/amp_accuracy.py summarise --out /work/speed-runs/amp --results docs/results/amp

Configurations (--steps training steps each, default 2,000; seeds 1-3):
- ms: mnist_svhn, dreg K = 5, --looser, --learn-prior, batch 128 (the paper's objective at
  a smaller K), analysed by src/report/analyse_ms.py with the shortened settings of
  docs/baselines.md (latent accuracy, cross and joint coherence);
- ns: the number-sense MMVAE (cmnist_oscn) as src/numbersense_study.py trains it (its
  protocol noda2024: dreg K = 20, MLP 4 x 400, batch 128, fixed prior), one --job per run,
  analysed by the study (src/report/numbersense/analyse.py: silhouettes, magnitude,
  reconstruction and cross-modal accuracy).
Each (configuration, seed) is trained in float32 and with --amp, one run at a time, in the
order seed 1 (ms float32, ms amp, ns float32, ns amp), seed 2, ...: stopped anywhere, the
finished pairs compare, and rerunning the command continues (a finished run is kept, an
unfinished one resumes from its checkpoint, a missing analysis is made).

summarise writes, per run and per configuration and numerics (mean, sd over the seeds; and
--amp minus float32 seed by seed, with a paired t-test), the final training loss (mean of
the last 100 steps' logged losses), the final test bound, and the analyses' numbers:
runs.csv, summary.json, summary.md, curves.json (the logged training losses) into
--results, and the figure --figure.
"""
import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from src.files import save_json, save_text  # noqa: E402

MS = ['--model', 'mnist_svhn', '--obj', 'dreg', '--K', '5', '--looser', '--learn-prior', '--batch-size', '128']
MS_ANALYSIS = ['--latent-epochs', '5', '--classifier-epochs', '5', '--train-items', '20000', '--max-items', '5000']
PRINT_FREQ = 20
NUMERICS = {'float32': [], 'amp': ['--amp']}
LOSS = re.compile(r'epoch (\d+) batch\s+(\d+)/(\d+)\s+loss/item (\S+)')


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('what', choices=['run', 'summarise'])
    p.add_argument('--out', required=True, help='where the runs go')
    p.add_argument('--data-dir', default='data')
    p.add_argument('--offline', action='store_true')
    p.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3])
    p.add_argument('--steps', type=int, default=2000)
    p.add_argument('--configs', nargs='+', default=['ms', 'ns'], choices=['ms', 'ns'])
    p.add_argument('--numerics', nargs='+', default=list(NUMERICS), choices=list(NUMERICS),
                   help='run only these (to share the runs out among machines or processes)')
    p.add_argument('--results', default=os.path.join('docs', 'results', 'amp'))
    p.add_argument('--figure', default=os.path.join('_imgs', 'amp_accuracy.png'))
    return p.parse_args(argv)


def run_dir(a, config, numerics, seed):
    if config == 'ms':
        return os.path.join(a.out, 'ms', numerics, f'seed{seed}')
    return os.path.join(a.out, 'ns', numerics, 'cmnist_oscn', f'seed{seed:03d}')


def data_flags(a):
    return ['--data-dir', a.data_dir] + (['--offline'] if a.offline else [])


def _final(run):
    """Whether the run's final checkpoint was written (the run ended)."""
    return any(f.startswith('checkpoint') for f in os.listdir(run)) and os.path.isfile(os.path.join(run, 'model.pt')) \
        and 'done:' in open(os.path.join(run, 'run.log')).read()


def call(argv):
    print('+', ' '.join(argv), flush=True)
    subprocess.run([sys.executable, *argv], cwd=ROOT, check=True)


def run_ms(a, numerics, seed):
    run = run_dir(a, 'ms', numerics, seed)
    if not (os.path.isdir(run) and _final(run)):
        where = ['--resume', run] if os.path.isfile(os.path.join(run, 'args.json')) else \
            MS + ['--seed', str(seed), '--run-dir', run] + NUMERICS[numerics] + data_flags(a)
        call(['main.py', *where, '--epochs', str(-(-a.steps // 938)), '--max-steps', str(a.steps),
              '--print-freq', str(PRINT_FREQ), '--no-analytics'] if where[0] != '--resume' else ['main.py', *where])
    if not os.path.isfile(os.path.join(run, 'analyse_ms.json')):
        call(['src/report/analyse_ms.py', '--save-dir', run, *MS_ANALYSIS, '--data-dir', a.data_dir])


def run_ns(a, numerics, seed):
    """One job of the study (train, analyse) in a study directory per numerics."""
    study = os.path.join(a.out, 'ns', numerics)
    call(['src/numbersense_study.py', '--conditions', 'cmnist_oscn', '--first-seed', '1', '--seeds', '3',
          '--study-dir', study, '--epochs', str(-(-a.steps // 225)), '--max-steps', str(a.steps),
          '--print-freq', str(PRINT_FREQ), '--job', f'cmnist_oscn:{seed}', *NUMERICS[numerics], *data_flags(a)])


def run(a):
    for seed in a.seeds:
        for config in a.configs:
            for numerics in a.numerics:
                (run_ms if config == 'ms' else run_ns)(a, numerics, seed)


# ---------------------------------------------------------------- summary

def curve(run):
    """(global steps, losses per item) logged every PRINT_FREQ steps in run.log, in step order. A resumed
    run logs again the steps after its checkpoint (the same values: resuming is bit-exact); each step
    counts once, its last record."""
    by_step = {}
    for m in LOSS.finditer(open(os.path.join(run, 'run.log')).read()):
        epoch, i, n, loss = int(m[1]), int(m[2]), int(m[3]), float(m[4])
        by_step[(epoch - 1) * n + i + 1] = loss
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def measures(config, run):
    """The numbers compared: final training loss, final test bound, and the analysis'."""
    steps, losses = curve(run)
    out = {'train_loss_last100': float(np.mean([v for s, v in zip(steps, losses, strict=True)
                                                if s > steps[-1] - 100])),
           'test_loss': json.load(open(os.path.join(run, 'losses.json')))['test'][-1], 'steps': steps[-1]}
    if config == 'ms':
        path = os.path.join(run, 'analyse_ms.json')
        if os.path.isfile(path):
            r = json.load(open(path))
            out.update({f'latent_accuracy_{k}': v for k, v in r['latent_accuracy'].items() if _number(v)})
            out.update({f'cross_coherence_{k}': v for k, v in r['cross_coherence'].items() if _number(v)})
            out['joint_coherence'] = r['joint_coherence']
    else:
        path = os.path.join(run, 'numbersense.json')
        if os.path.isfile(path):
            for enc, r in json.load(open(path))['encoders'].items():
                s = r['summary']
                for k in ('silhouette_number', 'magnitude_abs_r', 'reconstruction_accuracy', 'cross_accuracy',
                          'arithmetic_accuracy'):
                    out[f'{enc}_{k}'] = s[k]
    return out


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def summarise(a):
    rows, curves = [], {}
    for config in a.configs:
        for numerics in NUMERICS:
            for seed in a.seeds:
                run = run_dir(a, config, numerics, seed)
                if os.path.isdir(run) and os.path.isfile(os.path.join(run, 'losses.json')) and _final(run):
                    rows.append({'config': config, 'numerics': numerics, 'seed': seed, **measures(config, run)})
                    curves[f'{config} {numerics} seed{seed}'] = curve(run)
    os.makedirs(a.results, exist_ok=True)
    keys = sorted({k for r in rows for k in r} - {'config', 'numerics', 'seed'})
    lines = [','.join(['config', 'numerics', 'seed'] + keys)]
    lines += [','.join([r['config'], r['numerics'], str(r['seed'])] + [f"{r[k]:.6g}" if k in r else '' for k in keys])
              for r in rows]
    save_text('\n'.join(lines) + '\n', os.path.join(a.results, 'runs.csv'))
    summary = {}
    for config in a.configs:
        for numerics in NUMERICS:
            group = [r for r in rows if r['config'] == config and r['numerics'] == numerics]
            summary[f'{config} {numerics}'] = {
                'seeds': [r['seed'] for r in group],
                **{k: {'mean': float(np.mean(v)), 'sd': float(np.std(v, ddof=1)) if len(v) > 1 else None}
                   for k in keys if (v := [r[k] for r in group if k in r])}}
        summary[f'{config} amp - float32'] = paired(rows, config, keys)
    save_json(summary, os.path.join(a.results, 'summary.json'))
    save_text(markdown(summary, a), os.path.join(a.results, 'summary.md'))
    save_json({k: {'steps': s, 'loss': v} for k, (s, v) in curves.items()}, os.path.join(a.results, 'curves.json'))
    figure(curves, a)
    print(json.dumps(summary, indent=1))


def paired(rows, config, keys):
    """Per measure, --amp minus float32 seed by seed (the pair shares weights, batches and noise), their
    mean and a paired t-test (scipy.stats.ttest_rel) where there are 2 pairs or more."""
    from scipy.stats import ttest_rel
    by = {(r['numerics'], r['seed']): r for r in rows if r['config'] == config}
    seeds = sorted(s for n, s in by if n == 'float32' and ('amp', s) in by)
    out = {'seeds': seeds}
    for k in keys:
        pairs = [(by['float32', s][k], by['amp', s][k]) for s in seeds if k in by['float32', s] and k in by['amp', s]]
        if pairs:
            f, m = map(np.array, zip(*pairs, strict=True))
            p = float(ttest_rel(m, f).pvalue) if len(pairs) > 1 and np.any(m != f) else None
            out[k] = {'per_seed': (m - f).tolist(), 'mean': float(np.mean(m - f)), 'p_paired_t': p}
    return out


def markdown(summary, a):
    """One table per configuration: each measure's mean (sd) over the seeds, float32 and --amp; the
    difference seed by seed, its mean in float32 seed-to-seed sds, and the paired t-test."""
    out = []
    for config in a.configs:
        f32, amp = summary.get(f'{config} float32', {}), summary.get(f'{config} amp', {})
        diff = summary.get(f'{config} amp - float32', {})
        out += [f"### {config}: seeds float32 {f32.get('seeds')}, --amp {amp.get('seeds')}", '',
                '| measure | float32 mean (sd) | --amp mean (sd) | --amp - float32, per seed | mean difference '
                'in float32 sds | paired t p |', '|---|---|---|---|---|---|']
        for k in sorted(set(f32) & set(amp) & set(diff) - {'seeds', 'steps'}):
            a_, b_, d = f32[k], amp[k], diff[k]
            sd = f'{d["mean"] / a_["sd"]:+.2f}' if a_['sd'] else ''
            p = f"{d['p_paired_t']:.2f}" if d['p_paired_t'] is not None else ''
            out.append(f"| {k} | {a_['mean']:.4g} {_sd(a_)} | {b_['mean']:.4g} {_sd(b_)} | "
                       f"{' / '.join(f'{v:+.3g}' for v in d['per_seed'])} | {sd} | {p} |")
        out.append('')
    return '\n'.join(out)


def _sd(m):
    return f"({m['sd']:.2g})" if m['sd'] is not None else '(one seed)'


def figure(curves, a):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(a.configs), figsize=(6 * len(a.configs), 4), squeeze=False)
    titles = {'ms': 'mnist_svhn, dreg K=5 --looser', 'ns': 'number-sense MMVAE (cmnist_oscn, dreg K=20)'}
    for ax, config in zip(axes[0], a.configs, strict=True):
        for numerics, colour in (('float32', 'tab:blue'), ('amp', 'tab:orange')):
            for name, (steps, loss) in curves.items():
                if name.startswith(f'{config} {numerics} '):
                    k = min(5, len(loss))  # a running mean over 5 logged steps (100 training steps)
                    smooth = np.convolve(loss, np.ones(k) / k, mode='valid')
                    ax.plot(steps[k - 1:], smooth, color=colour, alpha=0.7, lw=1,
                            label=numerics if name.endswith('seed1') else None)
        ax.set(title=titles[config], xlabel='training step', ylabel='training loss per item')
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(a.figure) or '.', exist_ok=True)
    fig.savefig(a.figure, dpi=100)


if __name__ == '__main__':
    args = parse(sys.argv[1:])
    run(args) if args.what == 'run' else summarise(args)
