"""The number-sense study: N seeds x 3 conditions (cmnist, oscn, cmnist_oscn),
the number-sense analyses of every run, then the statistics.

    python src/numbersense_study.py                        # the authors' protocol (noda2024), 20 seeds
    python src/numbersense_study.py --protocol extended    # this project's earlier design
    python src/numbersense_study.py --offline --quick      # minutes on a laptop CPU
    python src/numbersense_study.py --print-commands       # the same study, one job per line
    python src/numbersense_study.py --jobs 2               # two runs at a time on this machine

--protocol noda2024 (default) runs what the authors ran (Kamma Noda, Soda &
Yamashita 2024, their released main.py / src/config.py / data_prepare/):
their data (--numbersense-data noda2024), pairs with dm = 2, MLP 4 x 400,
latent 20, dreg K = 20, batch 128, 50 epochs, fixed prior, seeds 0-19, their
number classifiers and analysis items. --protocol extended is the design
this project had before; docs/numbersense.md lists every difference.

Every main.py flag passes through to each run (the parser is main.py's plus
the study's flags). A flag typed here wins over the protocol's value; every
such deviation is recorded in the study's log, summary.json and summary.md.
Flags that main.py uses to place a run (--model, --seed, --run-dir, --resume,
--pre-trained, --experiment, --out-dir) are the study's to set: an error.

Each (condition, seed) is an ordinary main.py run (src.train.run called here
with the flags --print-commands shows as a main.py command), trained into
<study-dir>/<condition>/seed<NNN> (main.py --run-dir), then analysed
(src/report/numbersense/analyse.py -> numbersense.json in the run). The study
resumes: a finished run (all epochs in losses.json) is not trained again, an
unfinished one continues from its last checkpoint (main.py --resume), an
analysis of the final epoch with the requested settings (analysis version,
classifier epochs, map, item counts, data) is not redone, one made with other
settings is redone; a run directory trained with other flags than the study's
is an error. Budgets are logged and summarised in optimiser steps, with their
share of the protocol's steps (src/report/numbersense/budget.py).

--jobs N runs N of the study's jobs at once on this machine, each a process of
its own (the same `--job CONDITION:SEED` command --print-commands lists, so each
resumes as one does) with the machine's cores divided among them
(OMP_NUM_THREADS); the datasets and number classifiers are built first, once
(--prepare), and the statistics after the last job, as with --jobs 1.
"""
import argparse
import logging
import os
import shlex
import subprocess
import sys
import time

from src.cli import build_parser as main_parser
from src.cli import check_dir, explicit_flags, parse_args
from src.errors import UserError, report
from src.files import load_json, save_text
from src.rundir import LogFile

CONDITIONS = ('cmnist', 'oscn', 'cmnist_oscn')
MAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'main.py')
# main.py flags of each protocol. noda2024: the authors' src/config.py after their main.py's
# update_args (which forces learn_prior False, K 20, looser False, llik_scaling 0) and their
# data_prepare/make_index_cmnist_oscn.py (dm = 2).
NODA2024 = dict(obj='dreg', K=20, batch_size=128, epochs=50, latent_dim=20, num_hidden_layers=4, arch='mlp',
                dist='normal', joint_prior='laplace', pair_multiplier=2, numbersense_data='noda2024',
                learn_prior=False, looser=False, llik_scaling=0.0, dreg_estimator='released')
EXTENDED = dict(NODA2024, pair_multiplier=1, numbersense_data='extended')
# Study settings of each protocol (not main.py flags).
STUDY = {'noda2024': dict(seeds=20, first_seed=0, classifier_epochs=50, map='tsne',
                          study_dir=os.path.join('experiments', 'numbersense')),
         'extended': dict(seeds=20, first_seed=1, classifier_epochs=3, map='umap',
                          study_dir=os.path.join('experiments', 'numbersense_extended'))}
PROTOCOLS = {'noda2024': NODA2024, 'extended': EXTENDED}
# --quick: a pipeline check, on top of either protocol (recorded as deviations).
QUICK_MAIN = dict(epochs=2, K=2)
QUICK_STUDY = dict(seeds=3, classifier_epochs=2)
# main.py flags that place a run: set by the study for each run, never by the user.
PER_RUN = ('model', 'seed', 'run_dir', 'resume', 'pre_trained', 'experiment', 'out_dir')
# Flags that bookkeep rather than define a run: not compared when looking for a finished run.
BOOKKEEPING = ('data_dir', 'out_dir', 'experiment', 'run_dir', 'resume', 'no_analytics', 'no_cuda', 'print_freq',
               'checkpoint_every', 'skip_nonfinite', 'compile', 'logp', 'return_host_memory')
STUDY_DESTS = ('protocol', 'quick', 'study_dir', 'seeds', 'first_seed', 'conditions', 'classifier_epochs', 'map',
               'map_points', 'print_commands', 'write_commands', 'job', 'prepare', 'stats_only', 'train_only', 'jobs')
log = logging.getLogger('mmvae.study')


def build_parser():
    """main.py's parser (every main.py flag passes through to the runs) plus the study's flags."""
    p = main_parser()
    p.description = ('Number-sense study: seeds x conditions, analyses, statistics. Every main.py flag below '
                     'passes through to each run and wins over the protocol\'s value (recorded as a deviation).')
    s = p.add_argument_group('study')
    s.add_argument('--protocol', default='noda2024', choices=sorted(PROTOCOLS),
                   help="noda2024: the authors' protocol; extended: this project's design (docs/numbersense.md)")
    s.add_argument('--quick', action='store_true',
                   help=f'small pipeline check on top of the protocol: {QUICK_MAIN | QUICK_STUDY}')
    s.add_argument('--study-dir', default=None, help='where the runs and the summary go '
                   f'(default {STUDY["noda2024"]["study_dir"]}, extended: {STUDY["extended"]["study_dir"]}, '
                   '--quick: <that>_quick)')
    s.add_argument('--seeds', type=int, default=None, help='seeds per condition (default 20)')
    s.add_argument('--first-seed', type=int, default=None,
                   help='seeds are first-seed .. first-seed + seeds - 1 (default: noda2024 0, extended 1)')
    s.add_argument('--conditions', nargs='+', default=list(CONDITIONS), choices=CONDITIONS, help='models to train')
    a = p.add_argument_group('analyses')
    a.add_argument('--classifier-epochs', type=int, default=None,
                   help='training epochs of the number classifiers (default: noda2024 50, extended 3)')
    a.add_argument('--map', default=None, choices=['umap', 'tsne', 'none'],
                   help='extended: latent maps (default umap); noda2024 always draws their t-SNE (perplexity 20)')
    a.add_argument('--map-points', type=int, default=2000, help='extended: test items in the latent maps')
    w = p.add_argument_group('what to do')
    w.add_argument('--print-commands', action='store_true',
                   help='print one command per job, for a cluster; write nothing, run nothing')
    w.add_argument('--write-commands', default='', metavar='FILE', help='write the command list to FILE; run nothing')
    w.add_argument('--job', default='', metavar='CONDITION:SEED', help='train and analyse this run only')
    w.add_argument('--jobs', type=int, default=1, metavar='N',
                   help="run N jobs at once on this machine, each a process with 1/N of the CPU cores "
                        "(OMP_NUM_THREADS); every job resumes as --job does")
    w.add_argument('--train-only', action='store_true', help='train (or resume) the runs, analyse nothing')
    w.add_argument('--prepare', action='store_true', help='only build the datasets and number classifiers')
    w.add_argument('--stats-only', action='store_true',
                   help='train nothing, analyse nothing: statistics of the finished runs')
    return p


def resolve(argv):
    """Parse the study's command line: the protocol's values where not typed, deviations recorded."""
    opts = build_parser().parse_args(argv)
    typed = explicit_flags(build_parser(), argv)
    bad = [f"--{k.replace('_', '-')}" for k in PER_RUN if k in typed]
    if bad:
        raise UserError(f"{', '.join(bad)}: the study sets these for each run (model, seed, run directory); "
                        f"use --conditions, --seeds / --first-seed and --study-dir instead")
    protocol = PROTOCOLS[opts.protocol]
    preset = dict(protocol, **(QUICK_MAIN if opts.quick else {}))
    for k, v in preset.items():
        if k not in typed:
            setattr(opts, k, v)
    study = dict(STUDY[opts.protocol], **(QUICK_STUDY if opts.quick else {}))
    if opts.quick:
        study['study_dir'] += '_quick'
    for k, v in study.items():
        if getattr(opts, k) is None:
            setattr(opts, k, v)
    # Deviations from the protocol: main.py flags whose value is not the protocol's.
    opts.deviations = {k: {'value': getattr(opts, k), 'protocol': v} for k, v in protocol.items()
                       if getattr(opts, k) != v}
    opts.typed_main = sorted(k for k in typed if k not in STUDY_DESTS)
    for k in ('seeds', 'classifier_epochs', 'map_points', 'jobs'):
        if getattr(opts, k) < 1:
            raise UserError(f"--{k.replace('_', '-')} must be a positive integer, got {getattr(opts, k)}")
    if opts.first_seed < 0:
        raise UserError(f"--first-seed must be >= 0, got {opts.first_seed}")
    check_dir(opts.study_dir, '--study-dir')
    check_dir(opts.data_dir, '--data-dir')
    if opts.write_commands:
        check_dir(os.path.dirname(os.path.abspath(opts.write_commands)), '--write-commands')
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


def _flag(action, value):
    """argv words that set `action` to `value` ([] for a switch left off)."""
    opt = action.option_strings[0]
    if isinstance(action, argparse._StoreTrueAction):
        return [opt] if value else []
    if isinstance(action, argparse._StoreFalseAction):
        return [] if value else [opt]
    if isinstance(value, (list, tuple)):
        return [opt, *map(str, value)]
    return [opt, str(value)]


def main_flags(opts):
    """main.py argv shared by all runs: the protocol's flags, then every other main.py flag typed."""
    actions = {a.dest: a for a in main_parser()._actions if a.option_strings and a.dest != 'help'}
    keys = list(PROTOCOLS[opts.protocol]) + [k for k in opts.typed_main if k not in PROTOCOLS[opts.protocol]]
    keys += [k for k in ('data_dir', 'offline') if k not in keys]
    argv = []
    for k in keys:
        argv += _flag(actions[k], getattr(opts, k))
    return argv


def train_argv(opts, cond, seed):
    """main.py flags of the run (condition, seed)."""
    argv = ['--model', cond, '--seed', str(seed)] + main_flags(opts) + ['--run-dir', run_dir(opts, cond, seed)]
    return argv + ([] if '--no-analytics' in argv else ['--no-analytics'])


def expected_flags(argv):
    """The flags that define a run of these main.py flags (what its args.json must hold)."""
    full = vars(parse_args(argv))
    return {k: v for k, v in full.items() if k not in BOOKKEEPING}


def run_state(opts, cond, seed):
    """'new' (nothing trained yet), 'partial' (to resume) or 'finished' for run (condition, seed).

    A run trained with other flags than this study's is an error, not something to overwrite.
    """
    rd = run_dir(opts, cond, seed)
    if not os.path.isfile(os.path.join(rd, 'args.json')):
        return 'new'
    flags = load_json(os.path.join(rd, 'args.json'), 'run flags file', dict).get('flags', {})
    want = expected_flags(train_argv(opts, cond, seed))
    differ = [f"--{k.replace('_', '-')} {flags.get(k)!r} (study: {v!r})" for k, v in want.items()
              if k != 'epochs' and k in flags and flags[k] != v]
    if flags.get('epochs', 0) > opts.epochs:
        differ.append(f"--epochs {flags['epochs']} (study: {opts.epochs})")
    if differ:
        raise UserError(f"{rd} was trained with other flags than this study: {', '.join(differ)}. "
                        f"Use the study's original flags, or another --study-dir")
    path = os.path.join(rd, 'losses.json')
    done = len(load_json(path, 'losses file', dict).get('train', [])) if os.path.isfile(path) else 0
    return 'finished' if done >= opts.epochs else 'partial'


def trained_epochs(run):
    path = os.path.join(run, 'losses.json')
    return len(load_json(path, 'losses file', dict).get('train', [])) if os.path.isfile(path) else 0


def requested_settings(opts, cond, seed):
    """The analysis settings this study asks for run (condition, seed) (analyse.analysis_settings)."""
    from src.report.numbersense.analyse import SILHOUETTE_POINTS, analysis_settings
    return analysis_settings(opts.protocol, opts.map, opts.map_points, SILHOUETTE_POINTS, opts.classifier_epochs,
                             seed, expected_flags(train_argv(opts, cond, seed)))


def analysis_state(opts, cond, seed):
    """('missing', []), ('stale', [differences]) or ('current', []) of the run's numbersense.json."""
    from src.report.numbersense.analyse import settings_differences
    run = run_dir(opts, cond, seed)
    path = os.path.join(run, 'numbersense.json')
    if not os.path.isfile(path):
        return 'missing', []
    result = load_json(path, 'number-sense analysis file', dict)
    diff = settings_differences(result, requested_settings(opts, cond, seed), trained_epochs(run))
    return ('stale', diff) if diff else ('current', [])


def budget(opts, cond, seed):
    from src.report.numbersense.budget import run_budget
    run = run_dir(opts, cond, seed)
    return run_budget(run, trained_epochs(run), cond, PROTOCOLS[opts.protocol])


def log_budget(opts, cond, seed):
    from src.report.numbersense.budget import budget_text
    log.info(f'[{cond} seed {seed}] trained: {budget_text(budget(opts, cond, seed), opts.offline)}')


def run_records(opts):
    """Each (condition, seed) of the study: its directory, training state, analysis state and budget."""
    out = []
    for cond in opts.conditions:
        for seed in opts.seed_list:
            state = run_state(opts, cond, seed)
            analysis, diff = analysis_state(opts, cond, seed) if state == 'finished' else ('missing', [])
            out.append({'condition': cond, 'seed': seed, 'path': run_dir(opts, cond, seed), 'training': state,
                        'analysis': analysis, 'differences': diff,
                        'budget': budget(opts, cond, seed) if state == 'finished' else None})
    return out


def training_description(opts):
    """The main.py flags shared by all runs (no model, seed or paths)."""
    argv, out, skip = main_flags(opts), [], {'--data-dir'}
    i = 0
    while i < len(argv):
        if argv[i] in skip:
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return shlex.join(out)


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
    from src.report.numbersense.analyse import analyse as analyse_run
    from src.report.runs import device_from
    device = device_from(opts.no_cuda, opts.ieee_denormals, opts.return_host_memory)
    analyse_run(run, opts.data_dir, device, map=opts.map, map_points=opts.map_points,
                classifier_epochs=opts.classifier_epochs, protocol=opts.protocol)


def do_job(opts, cond, seed):
    """Train (new, or resumed, unless finished) and analyse (unless done) one run; returns its directory."""
    run = run_dir(opts, cond, seed)
    state = run_state(opts, cond, seed)
    if state == 'finished':
        log.info(f'[{cond} seed {seed}] finished run {run}: not trained again')
    else:
        train(opts, cond, seed, resume=state == 'partial')
    log_budget(opts, cond, seed)
    if opts.train_only:
        return run
    analysis, diff = analysis_state(opts, cond, seed)
    if analysis == 'current':
        log.info(f'[{cond} seed {seed}] already analysed with these settings: {os.path.join(run, "numbersense.json")}')
        return run
    if analysis == 'stale':
        log.info(f'[{cond} seed {seed}] analysed with other settings ({"; ".join(diff)}): analysing again')
    analyse(opts, run)
    return run


def prepare(opts):
    """Build the datasets and train the number classifiers once, before parallel jobs."""
    from src.data import load_data
    from src.report.numbersense.classifiers import get_classifier
    from src.report.runs import device_from
    args = parse_args(train_argv(opts, 'cmnist_oscn', 0))
    for cond in opts.conditions:
        for split in ('train', 'test'):
            log.info(f'{cond} {split}: {len(load_data(cond, args, split)):,} items')
    for m in ('cmnist', 'oscn'):
        device = device_from(opts.no_cuda, opts.ieee_denormals, opts.return_host_memory)
        _, info = get_classifier(m, args, device, opts.classifier_epochs, log, opts.protocol)
        log.info(f'{m} number classifier: test accuracy {100 * info["test_accuracy"]:.2f} % ({info["path"]})')


# ---------------------------------------------------------------- commands for a cluster

def study_argv(opts):
    """Runner flags that reproduce this study exactly (protocol and deviations resolved)."""
    argv = ['--protocol', opts.protocol, '--study-dir', opts.study_dir, '--seeds', str(opts.seeds),
            '--first-seed', str(opts.first_seed), '--conditions', *opts.conditions,
            '--classifier-epochs', str(opts.classifier_epochs), '--map', opts.map,
            '--map-points', str(opts.map_points)]
    return argv + main_flags(opts)


def commands(opts):
    me = f'python {display_path(os.path.abspath(__file__))}'
    base = shlex.join(study_argv(opts))
    lines = [f'# Number-sense study (protocol {opts.protocol}): run from the repository root, on machines '
             'sharing --study-dir and --data-dir.',
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


# ---------------------------------------------------------------- jobs side by side

def job_argv(opts, cond, seed):
    """The command of one job: this study's flags (as --print-commands lists them) and --job."""
    argv = [sys.executable, os.path.abspath(__file__), *study_argv(opts), '--job', f'{cond}:{seed}']
    return argv + (['--train-only'] if opts.train_only else [])


def run_side_by_side(opts):
    """The jobs, opts.jobs at a time, each a process with its share of the cores; its output in
    <study-dir>/jobs/<condition>_seed<NNN>.log. A failed job is reported after the others have run."""
    prepare(opts)  # datasets and classifiers once, before the jobs read them
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, cores // opts.jobs)))
    os.makedirs(os.path.join(opts.study_dir, 'jobs'), exist_ok=True)
    todo = [(cond, seed) for seed in opts.seed_list for cond in opts.conditions]
    running, failed = {}, []
    log.info(f'{len(todo)} jobs, {opts.jobs} at a time, {env["OMP_NUM_THREADS"]} threads each')
    while todo or running:
        while todo and len(running) < opts.jobs:
            cond, seed = todo.pop(0)
            path = os.path.join(opts.study_dir, 'jobs', f'{cond}_seed{seed:03d}.log')
            with open(path, 'a') as out:
                running[cond, seed] = (subprocess.Popen(job_argv(opts, cond, seed), stdout=out,
                                                        stderr=subprocess.STDOUT, env=env), path, time.time())
            log.info(f'[{cond} seed {seed}] job started (output: {display_path(path)})')
        time.sleep(1)
        for (cond, seed), (proc, path, t0) in list(running.items()):
            if proc.poll() is not None:
                del running[cond, seed]
                log.info(f'[{cond} seed {seed}] job {"done" if proc.returncode == 0 else "FAILED"} in '
                         f'{time.time() - t0:,.0f} s')
                if proc.returncode:
                    failed.append(f'{cond}:{seed} (exit {proc.returncode}; see {display_path(path)})')
    if failed:
        raise UserError(f"{len(failed)} job(s) failed: {', '.join(failed)}. Rerun the same command to resume them")


# ---------------------------------------------------------------- main

def setup_log(study_dir):
    os.makedirs(study_dir, exist_ok=True)
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO)
    for h in (logging.StreamHandler(sys.stdout), LogFile(os.path.join(study_dir, 'study.log'))):
        h.setFormatter(logging.Formatter('%(message)s'))
        log.addHandler(h)


def protocol_budget_text(opts):
    from src.report.numbersense.budget import protocol_steps
    protocol = PROTOCOLS[opts.protocol]
    steps = ', '.join(f'{c} {protocol_steps(c, protocol)[1]:,}' for c in opts.conditions)
    data = 'the offline data (OFFLINE DATA)' if opts.offline else 'the real data'
    return (f'budget: --epochs {opts.epochs} of {data}, batch {opts.batch_size}; the protocol: {protocol["epochs"]} '
            f'epochs of the real data, batch {protocol["batch_size"]}: {steps} steps per run. Each run\'s steps '
            'and share of these are logged after its training and summarised.')


def deviation_text(opts):
    return ', '.join(f"--{k.replace('_', '-')} {d['value']} (protocol: {d['protocol']})"
                     for k, d in opts.deviations.items())


def main(argv=None):
    opts = resolve(argv)
    if opts.print_commands or opts.write_commands:
        lines = commands(opts)
        if opts.write_commands:
            save_text('\n'.join(lines) + '\n', opts.write_commands)
        if opts.print_commands:
            print('\n'.join(lines))
        return
    setup_log(opts.study_dir)
    log.info(f'number-sense study in {opts.study_dir}: python {display_path(os.path.abspath(__file__))} '
             f'{shlex.join(study_argv(opts))}' + (' (OFFLINE DATA)' if opts.offline else ''))
    if opts.deviations:
        log.info(f'deviations from protocol {opts.protocol}: {deviation_text(opts)}')
    log.info(protocol_budget_text(opts))
    if opts.prepare:
        prepare(opts)
        return
    if opts.job:
        do_job(opts, *opts.job)
        return
    if not opts.stats_only:
        if opts.jobs > 1:
            run_side_by_side(opts)
        else:
            for seed in opts.seed_list:
                for cond in opts.conditions:
                    do_job(opts, cond, seed)
    if not opts.train_only:
        from src.report.numbersense.summary import aggregate
        aggregate(opts, log, run_records(opts), training=training_description(opts), deviations=deviation_text(opts),
                  study_flags=study_argv(opts))


if __name__ == '__main__':
    try:
        main()
    except Exception as e:  # bad input, a full disk: one `error:` line
        sys.exit(report(e))
    except KeyboardInterrupt:
        print('interrupted: rerun the same command to resume (finished runs and analyses are kept)', file=sys.stderr)
        sys.exit(130)
