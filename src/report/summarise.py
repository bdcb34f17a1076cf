"""Summarise many runs (one configuration, several seeds) in one table.

    python src/report/summarise.py RUN_OR_DIR [RUN_OR_DIR ...] [--out DIR] [--by FLAG]

Each argument is a run directory or a directory searched for run directories
(any folder holding args.json). For every number in the runs' analysis
results (analyse_ms.json, likelihoods.json, analyse_cub.json, logp.json,
numbersense analysis JSON, and the last test loss of losses.json) it gives the
number of runs, the mean, the sample standard deviation and the 95 %
confidence interval of the mean (Student's t, scipy.stats.t), as markdown on
stdout and, with --out, as summary.md, summary.csv and summary.json. The
settings that differ between the runs (flags, and the analyses' own budgets)
are listed (seeds, say), so that a table never silently mixes configurations.
With --by FLAG (e.g. --by joint-posterior) the runs are grouped by that flag's
value and the groups are shown side by side, each metric's mean and 95 %
interval per group: models compared at one budget. Groups that differ in more
than FLAG are headed by the differences, and what differs within a group is
listed beside it. A number that comes from fewer than every run of its table
or group says so (n); a coherence that its analysis found at its chance level
(analyse_ms.json's at_chance) is marked and left out of the mean.
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
               'samples_per_component', 'n', 'max_batches'}
SETTINGS = ('budget', 'options', 'settings')
# what an analysis file says about how it was computed: runs compared in one table must agree on it
ANALYSIS_SETTINGS = SETTINGS + ('protocol', 'data_source', 'test_set', 'cross_coherence_test_set', 'K', 'n_items',
                                'max_items', 'joint_samples', 'joint_coherence_samples', 'max_batches')
WHERE = ('run_dir', 'resume', 'experiment', 'out_dir', 'data_dir', 'config')  # where a run lived, not what it is
AT_CHANCE = 'at chance'  # a coherence its analysis found not above chance (the file's `at_chance`): no number


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


def leaves(obj, prefix):
    """{'prefix/a/b': value} for every value of nested dicts."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    return {k: v for key, sub in obj.items() for k, v in leaves(sub, f'{prefix}/{key}').items()}


def analyses(run):
    """{file name without .json: contents} of a run's analysis results."""
    return {f[:-len('.json')]: load_json(os.path.join(run, f), 'analysis results file') for f in sorted(os.listdir(run))
            if f.endswith('.json') and f not in ('args.json', 'losses.json')}


def run_metrics(run):
    """The numbers of one run: each analysis JSON's, prefixed with its file name, and the last test loss. A
    coherence that its analysis found at chance (the file's `at_chance`) is AT_CHANCE instead of a number."""
    out = {}
    for name, data in analyses(run).items():
        out.update(numbers(data, name))
        at_chance = data.get('at_chance', []) if isinstance(data, dict) else []
        out.update({f'{name}/{k}': AT_CHANCE for k in at_chance if f'{name}/{k}' in out})
    losses = os.path.join(run, 'losses.json')
    if os.path.isfile(losses):
        test = load_json(losses, 'losses file', dict).get('test') or []
        if test:
            out['final_test_loss'] = float(test[-1])
    return out


def unchecked_chance(run):
    """The coherences of an analyse_ms.json written before analyses recorded their chance levels."""
    data = analyses(run).get('analyse_ms')
    if not isinstance(data, dict) or 'chance' in data:
        return set()
    return {k for k in numbers(data, 'analyse_ms') if 'coherence' in k}


def run_flags(run):
    path = os.path.join(run, 'args.json')
    saved = load_json(path, 'run flags file') if os.path.isfile(path) else {}
    return saved.get('flags', {}) if isinstance(saved, dict) else {}


def run_config(run):
    """What a run's numbers depend on, flat: its flags ('--seed') and its analyses' settings
    ('analyse_ms.json budget/max_items'), without where the run lived."""
    config = {f'--{k.replace("_", "-")}': v for k, v in run_flags(run).items() if k not in WHERE}
    for name, data in analyses(run).items():
        for key in ANALYSIS_SETTINGS:
            if isinstance(data, dict) and key in data:
                config.update(leaves(data[key], f'{name}.json {key}'))
    return config


def differing(configs):
    """{setting: [value per run]} for the settings whose values are not all equal."""
    keys = sorted(set().union(*configs))
    return {k: [c.get(k) for c in configs] for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1}


def differing_flags(runs):
    return differing([run_config(r) for r in runs])


def summary_rows(per_run):
    """Per metric: the runs, n (the runs that give it a number), mean, sd (ddof 1), the 95 % t confidence
    interval of the mean, and the runs whose value is at chance (not counted in n). sd and interval are None
    for fewer than two numbers: summary.json stays strict JSON, without NaN."""
    rows = []
    for key in sorted(set().union(*per_run)):
        values = [m[key] for m in per_run if key in m]
        x = np.array([v for v in values if v != AT_CHANCE], dtype=float)
        n = len(x)
        row = {'metric': key, 'runs': len(per_run), 'n': n, 'at_chance': len(values) - n,
               'mean': float(x.mean()) if n else None, 'sd': None, 'ci95_low': None, 'ci95_high': None}
        if n > 1:
            sd = float(x.std(ddof=1))
            half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
            row.update(sd=sd, ci95_low=row['mean'] - half, ci95_high=row['mean'] + half)
        rows.append(row)
    return rows


def count_cell(r):
    """'3', or '2 of 3' where a number comes from fewer than every run, '; 1 at chance' where some were."""
    n = f"{r['n']}" if r['n'] == r['runs'] else f"{r['n']} of {r['runs']}"
    return n + (f"; {r['at_chance']} at chance" if r['at_chance'] else '')


def differences_list(differ):
    return [f'- `{k}`: ' + ', '.join(map(str, v)) for k, v in differ.items()]


def chance_note(unchecked):
    """A line naming the coherences whose chance level the analyses did not record, and in how many runs."""
    if not unchecked:
        return []
    return ['', 'Chance level not recorded (analyse_ms.json written before analyses recorded it; rerun '
            'src/report/analyse_ms.py to check it): ' + ', '.join(f'{k} ({n} run{"s" * (n != 1)})'
                                                                  for k, n in sorted(unchecked.items()))]


def markdown(rows, runs, differ, unchecked):
    lines = [f'{len(runs)} runs: ' + ', '.join(runs), '']
    if differ:
        lines += ['Settings that differ between the runs:', ''] + differences_list(differ) + ['']
    lines += ['| metric | n | mean | sd | 95% CI |', '|---|---|---|---|---|']
    for r in rows:
        sd, ci = (f"{r['sd']:.3g}", f"[{r['ci95_low']:.4g}, {r['ci95_high']:.4g}]") if r['n'] > 1 else ('-', '-')
        mean = f"{r['mean']:.4g}" if r['n'] else AT_CHANCE
        lines.append(f"| {r['metric']} | {count_cell(r)} | {mean} | {sd} | {ci} |")
    return '\n'.join(lines + chance_note(unchecked)) + '\n'


def ci_cell(r):
    """mean [95 % CI], with n where it is not every run of the group; 'at chance' where no run gives a number."""
    if not r['n']:
        return f"{AT_CHANCE} ({r['at_chance']} of {r['runs']})" if r['at_chance'] else '-'
    cell = f"{r['mean']:.4g} [{r['ci95_low']:.4g}, {r['ci95_high']:.4g}]" if r['n'] > 1 else f"{r['mean']:.4g}"
    return cell if r['n'] == r['runs'] else f'{cell} (n = {count_cell(r)})'


def markdown_by(flag, groups, between, unchecked):
    """One row per metric, one column per group: mean [95 % CI] (n where not every run); first what differs
    between the groups besides `flag`, and within each group."""
    names = list(groups)
    lines = [f'Runs grouped by `--{flag.replace("_", "-")}`: ' + ', '.join(
        f'{g} ({len(groups[g]["runs"])} run{"s" if len(groups[g]["runs"]) != 1 else ""})' for g in names), '']
    if between:
        lines += [f'**The groups differ in more than `--{flag.replace("_", "-")}`:**', '']
        lines += [f'- `{k}`: ' + ', '.join(f'{g} {v}' for g, v in by_group.items()) for k, by_group in between.items()]
        lines += ['']
    for g in names:
        if groups[g]['differing_flags']:
            lines.append(f'- {g}: settings that differ within the group: ' + ', '.join(
                f'`{k}` {", ".join(map(str, v))}' for k, v in groups[g]['differing_flags'].items()))
    lines += ['', '| metric | ' + ' | '.join(names) + ' |', '|---|' + '---|' * len(names)]
    by_metric = [{r['metric']: r for r in groups[g]['metrics']} for g in names]
    for key in sorted(set().union(*by_metric)):
        lines.append(f'| {key} | ' + ' | '.join(ci_cell(m[key]) if key in m else '-' for m in by_metric) + ' |')
    return '\n'.join(lines + chance_note(unchecked)) + '\n'


def grouped(runs, per_run, flag):
    """{value of flag: {'runs', 'differing_flags', 'metrics'}}, in the order the values first appear, and
    {setting: {group: value}} for the settings other than the flag that are constant within each group and
    differ between the groups."""
    dest = flag.replace('-', '_')
    values = [run_flags(r).get(dest) for r in runs]
    if all(v is None for v in values):
        raise UserError(f"--by {flag}: none of the runs has that flag (see a run's args.json for the names)")
    configs = [run_config(r) for r in runs]
    groups, constant = {}, {}
    for v in dict.fromkeys(map(str, values)):
        idx = [i for i, x in enumerate(values) if str(x) == v]
        within = differing([configs[i] for i in idx])
        groups[v] = {'runs': [runs[i] for i in idx], 'differing_flags': within,
                     'metrics': summary_rows([per_run[i] for i in idx])}
        constant[v] = {k: configs[idx[0]].get(k) for k in set().union(*configs) if k not in within}
    keys = set.intersection(*(set(c) for c in constant.values())) - {f'--{flag.replace("_", "-")}'}
    between = {k: {g: c[k] for g, c in constant.items()} for k in sorted(keys)
               if len({json.dumps(c[k]) for c in constant.values()}) > 1}
    return groups, between


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
    unchecked = {}
    for r in runs:
        for k in unchecked_chance(r):
            if not cmd.match or any(t in k for t in cmd.match):
                unchecked[k] = unchecked.get(k, 0) + 1
    if cmd.by:
        return summarise_by(cmd, runs, per_run, unchecked)
    rows, differ = summary_rows(per_run), differing_flags(runs)
    text = markdown(rows, runs, differ, unchecked)
    write(cmd.out, text, rows, {'runs': runs, 'differing_flags': differ, 'metrics': rows,
                                'chance_not_recorded': unchecked})
    return rows


def summarise_by(cmd, runs, per_run, unchecked):
    groups, between = grouped(runs, per_run, cmd.by)
    text = markdown_by(cmd.by.replace('-', '_'), groups, between, unchecked)
    write(cmd.out, text, [dict(group=g, **r) for g, v in groups.items() for r in v['metrics']],
          {'by': cmd.by.replace('-', '_'), 'differing_between_groups': between, 'groups': groups,
           'chance_not_recorded': unchecked})
    return groups


def write(out, text, rows, summary):
    """The markdown on stdout; with --out, summary.md, summary.csv (the rows) and summary.json."""
    sys.stdout.write(text)
    if out:
        os.makedirs(out, exist_ok=True)
        save_text(text, os.path.join(out, 'summary.md'))
        save_text(to_csv(rows), os.path.join(out, 'summary.csv'))
        save_json(summary, os.path.join(out, 'summary.json'))
        print(f'wrote {out}/summary.md, summary.csv, summary.json')


if __name__ == '__main__':
    run_script(main)
