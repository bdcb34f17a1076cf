"""Summarise many runs (one configuration, several seeds) in one table.

    python src/report/summarise.py RUN_OR_DIR [RUN_OR_DIR ...] [--out DIR] [--by FLAG]

Each argument is a run directory or a directory searched for run directories
(any folder holding args.json). For every number in the runs' analysis
results (analyse_ms.json, likelihoods.json, analyse_cub.json, logp.json,
numbersense analysis JSON, and the last test loss of losses.json) it gives the
number of runs, the mean, the sample standard deviation and the 95 %
confidence interval of the mean (Student's t, scipy.stats.t), as markdown on
stdout and, with --out, as summary.md, summary.csv and summary.json. The
flags that differ between the runs are listed (seeds, say), so that a table
never silently mixes configurations. With --by FLAG (e.g. --by joint-posterior)
the runs are grouped by that flag's value and the groups are shown side by side,
each metric's mean and 95 % interval per group: models compared at one budget.
"""
import csv
import io
import json
import math
import os
import sys

import numpy as np
from scipy import stats

from src.cli import Parser, check_dir
from src.errors import UserError
from src.files import load_json, save_json, save_text
from src.report.runs import run_script

# numbers in the analysis files that describe the analysis rather than the model: these keys, counts (n_*),
# and whole sections of settings
BOOKKEEPING = {'seconds', 'seed', 'K', 'epochs', 'batch_size', 'steps', 'lr', 'train_seconds', 'std', 'chance',
               'joint_samples', 'joint_coherence_samples', 'joint_llik_scaling', 'max_items', 'iwae_samples',
               'pair_multiplier', 'world_size', 'analysis_version', 'version', 'target', 'nearest_class',
               'samples_per_component'}
SETTINGS = ('budget', 'options')


def find_runs(paths):
    runs = []
    for p in paths:
        if not os.path.isdir(p):
            raise UserError(f'{p}: no such directory (give run directories or folders that hold them)')
        found = sorted(d for d, _, files in os.walk(p) if 'args.json' in files or 'args.rar' in files)
        if not found:
            raise UserError(f'{p} holds no run directory (no args.json below it)')
        runs += [d for d in found if d not in runs]
    return runs


def numbers(obj, prefix=''):
    """{'a/b/c': float} for every number in nested dicts, except BOOKKEEPING keys and lists."""
    out = {}
    for k, v in obj.items() if isinstance(obj, dict) else ():
        key = f'{prefix}/{k}' if prefix else str(k)
        if k in BOOKKEEPING or str(k).startswith('n_') or isinstance(v, bool):
            continue
        if k in SETTINGS or str(k).endswith('_setup'):
            continue
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[key] = float(v)
        elif isinstance(v, dict):
            out.update(numbers(v, key))
    return out


def run_metrics(run):
    """The numbers of one run: each analysis JSON's, prefixed with its file name, and the last test loss."""
    out = {}
    for f in sorted(os.listdir(run)):
        if f.endswith('.json') and f not in ('args.json', 'losses.json'):
            data = load_json(os.path.join(run, f), 'analysis results file')
            out.update(numbers(data, f[:-len('.json')]))
    losses = os.path.join(run, 'losses.json')
    if os.path.isfile(losses):
        test = load_json(losses, 'losses file', dict).get('test') or []
        if test:
            out['final_test_loss'] = float(test[-1])
    return out


def run_flags(run):
    path = os.path.join(run, 'args.json')
    saved = load_json(path, 'run flags file') if os.path.isfile(path) else {}
    return saved.get('flags', {}) if isinstance(saved, dict) else {}


def differing_flags(runs):
    """{flag: [value per run]} for the flags whose values are not all equal (where a run lives aside)."""
    flags = [run_flags(r) for r in runs]
    keys = sorted(set().union(*flags) - {'run_dir', 'resume', 'experiment', 'out_dir', 'data_dir', 'config'})
    return {k: [f.get(k) for f in flags] for k in keys if len({json.dumps(f.get(k)) for f in flags}) > 1}


def summary_rows(per_run):
    """Per metric: n, mean, sd (ddof 1), and the 95 % t confidence interval of the mean (sd and interval
    None for a single run: summary.json stays strict JSON, without NaN)."""
    rows = []
    for key in sorted(set().union(*per_run)):
        x = np.array([m[key] for m in per_run if key in m])
        n, mean = len(x), float(x.mean())
        row = {'metric': key, 'n': n, 'mean': mean, 'sd': None, 'ci95_low': None, 'ci95_high': None}
        if n > 1:
            sd = float(x.std(ddof=1))
            half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
            row.update(sd=sd, ci95_low=mean - half, ci95_high=mean + half)
        rows.append(row)
    return rows


def markdown(rows, runs, differ):
    lines = [f'{len(runs)} runs: ' + ', '.join(runs), '']
    if differ:
        lines += ['Flags that differ between the runs:', '']
        lines += [f'- `--{k.replace("_", "-")}`: ' + ', '.join(map(str, v)) for k, v in differ.items()] + ['']
    lines += ['| metric | n | mean | sd | 95% CI |', '|---|---|---|---|---|']
    for r in rows:
        sd, ci = (f"{r['sd']:.3g}", f"[{r['ci95_low']:.4g}, {r['ci95_high']:.4g}]") if r['n'] > 1 else ('-', '-')
        lines.append(f"| {r['metric']} | {r['n']} | {r['mean']:.4g} | {sd} | {ci} |")
    return '\n'.join(lines) + '\n'


def ci_cell(r):
    return f"{r['mean']:.4g} [{r['ci95_low']:.4g}, {r['ci95_high']:.4g}]" if r['n'] > 1 else f"{r['mean']:.4g}"


def markdown_by(flag, groups):
    """One row per metric, one column per group: mean [95 % CI] (n runs)."""
    names = list(groups)
    lines = [f'Runs grouped by `--{flag.replace("_", "-")}`: ' + ', '.join(
        f'{g} ({len(groups[g]["runs"])} run{"s" if len(groups[g]["runs"]) != 1 else ""})' for g in names), '']
    for g in names:
        if groups[g]['differing_flags']:
            lines.append(f'- {g}: flags that differ within the group: ' + ', '.join(
                f'`--{k.replace("_", "-")}` {", ".join(map(str, v))}' for k, v in groups[g]['differing_flags'].items()))
    lines += ['', '| metric | ' + ' | '.join(names) + ' |', '|---|' + '---|' * len(names)]
    by_metric = [{r['metric']: r for r in groups[g]['metrics']} for g in names]
    for key in sorted(set().union(*by_metric)):
        lines.append(f'| {key} | ' + ' | '.join(ci_cell(m[key]) if key in m else '-' for m in by_metric) + ' |')
    return '\n'.join(lines) + '\n'


def grouped(runs, per_run, flag):
    """{value of flag: {'runs', 'differing_flags', 'metrics'}}, in the order the values first appear."""
    dest = flag.replace('-', '_')
    values = [run_flags(r).get(dest) for r in runs]
    if all(v is None for v in values):
        raise UserError(f"--by {flag}: none of the runs has that flag (see a run's args.json for the names)")
    groups = {}
    for v in dict.fromkeys(map(str, values)):
        idx = [i for i, x in enumerate(values) if str(x) == v]
        rs = [runs[i] for i in idx]
        groups[v] = {'runs': rs, 'differing_flags': differing_flags(rs),
                     'metrics': summary_rows([per_run[i] for i in idx if per_run[i]] or [{}])}
    return groups


def to_csv(rows):
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator='\n')
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()


def main(argv=None):
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('runs', nargs='+', metavar='RUN_OR_DIR', help='run directories, or folders holding them')
    p.add_argument('--out', default='', metavar='DIR', help='also write summary.md, summary.csv and summary.json here')
    p.add_argument('--match', action='append', default=[], metavar='TEXT',
                   help='only the metrics whose name contains TEXT (repeatable: any of them), e.g. analyse_ms/')
    p.add_argument('--by', default='', metavar='FLAG',
                   help='group the runs by this flag (e.g. joint-posterior) and show the groups side by side')
    cmd = p.parse_args(argv)
    check_dir(cmd.out, '--out')
    runs = find_runs(cmd.runs)
    per_run = [{k: v for k, v in run_metrics(r).items() if not cmd.match or any(t in k for t in cmd.match)}
               for r in runs]
    if not any(per_run):
        raise UserError('the runs hold no analysis results yet' + (f" matching {', '.join(cmd.match)}" if cmd.match
                        else '') + ': run the analyses first (src/report/calculate_likelihoods.py, analyse_ms.py, '
                        'analyse_cub.py, ...)')
    if cmd.by:
        return summarise_by(cmd, runs, per_run)
    rows, differ = summary_rows(per_run), differing_flags(runs)
    text = markdown(rows, runs, differ)
    sys.stdout.write(text)
    if cmd.out:
        os.makedirs(cmd.out, exist_ok=True)
        save_text(text, os.path.join(cmd.out, 'summary.md'))
        save_text(to_csv(rows), os.path.join(cmd.out, 'summary.csv'))
        save_json({'runs': runs, 'differing_flags': differ, 'metrics': rows}, os.path.join(cmd.out, 'summary.json'))
        print(f'wrote {cmd.out}/summary.md, summary.csv, summary.json')
    return rows


def summarise_by(cmd, runs, per_run):
    groups = grouped(runs, per_run, cmd.by)
    text = markdown_by(cmd.by.replace('-', '_'), groups)
    sys.stdout.write(text)
    if cmd.out:
        os.makedirs(cmd.out, exist_ok=True)
        save_text(text, os.path.join(cmd.out, 'summary.md'))
        save_text(to_csv([dict(group=g, **r) for g, v in groups.items() for r in v['metrics']]),
                  os.path.join(cmd.out, 'summary.csv'))
        save_json({'by': cmd.by.replace('-', '_'), 'groups': groups}, os.path.join(cmd.out, 'summary.json'))
        print(f'wrote {cmd.out}/summary.md, summary.csv, summary.json')
    return groups


if __name__ == '__main__':
    run_script(main)
