"""The number-sense study's statistics, summary table and figures
(<study-dir>/summary.json, summary.md, synthesized.csv, summary.png,
magnitude_vs_silhouette.png).

The runner (src/numbersense_study.py) hands over its run records (directory,
training and analysis state, budget); this module reads only the analyses
made with the requested settings (a stale one is named, never mixed in).
First the authors' family of tests, exactly (authors_stats.py, on their data
frame, written as synthesized.csv), then this project's additions apart
(our_stats.py). Every test in summary.json carries its call, its inputs (the
per-run values by group and seed) and its result. A test on a model whose
reconstruction accuracy is not above chance is flagged: such a model has not
learnt, and the test says nothing about the paper's claims.
Accuracies are fractions in [0, 1].
"""
import os

from src.files import load_json, save_figure, save_json, save_text
from src.report import stats
from src.report.numbersense import authors_stats, our_stats
from src.report.numbersense.metrics import CHANCE, MAGNITUDE_VARIANTS
from src.report.numbersense.summary_md import markdown

# (label, condition, encoder): the MMVAE contributes one group per modality's encoder.
GROUPS = (('cmnist VAE', 'cmnist', 'cmnist'), ('MMVAE cmnist enc.', 'cmnist_oscn', 'cmnist'),
          ('oscn VAE', 'oscn', 'oscn'), ('MMVAE oscn enc.', 'cmnist_oscn', 'oscn'))
METRICS = ('silhouette_number', 'silhouette_colour', 'silhouette_shape', 'magnitude_abs_r', 'arithmetic_accuracy',
           'reconstruction_accuracy', 'cross_accuracy')
ACCURACIES = ('reconstruction_accuracy', 'cross_accuracy', 'arithmetic_accuracy')
MAGNITUDES = tuple('magnitude_abs_r' if v == 'none' else f'magnitude_{v}' for v in MAGNITUDE_VARIANTS)


def collect(runs):
    """From the runner's run records: values[group][measure] = [[seed, value]], the per-run results
    [(condition, seed, {encoder: summary})], and the runs left out (not analysed; analysed with
    other settings)."""
    values = {g: {m: [] for m in METRICS + MAGNITUDES} for g, _, _ in GROUPS}
    results, missing, stale = [], [], []
    for r in runs:
        name = f"{r['condition']}:{r['seed']}"
        if r['training'] != 'finished' or r['analysis'] == 'missing':
            missing.append(name)
            continue
        if r['analysis'] == 'stale':
            stale.append({'run': name, 'differences': r['differences']})
            continue
        res = load_json(os.path.join(r['path'], 'numbersense.json'), 'number-sense analysis file', dict)
        encoders = {enc: res['encoders'][enc]['summary'] for enc in res['encoders']}
        results.append((r['condition'], r['seed'], encoders))
        for label, gcond, enc in GROUPS:
            if gcond == r['condition']:
                for m in values[label]:
                    if encoders[enc].get(m) is not None:
                        values[label][m].append([r['seed'], encoders[enc][m]])
    return values, results, missing, stale


def not_above_chance(groups):
    """{group: reason} for each group whose reconstruction accuracy is not above chance: its 95 % CI
    over seeds reaches down to 1/9 (or cannot be computed from one seed)."""
    out = {}
    for g, ms in groups.items():
        s = ms.get('reconstruction_accuracy')
        if s and (s['lo'] is None or s['lo'] <= CHANCE):
            ci = 'one seed, no interval' if s['lo'] is None else f"95 % CI [{s['lo']:.3f}, {s['hi']:.3f}]"
            out[g] = f"{g}: reconstruction accuracy {s['mean']:.3f} ({ci}) is not above chance {CHANCE:.3f}"
    return out


def group_of(model, t):
    mod = authors_stats.MODALITIES[t]
    return f'MMVAE {mod} enc.' if model == authors_stats.MMVAE else f'{mod} VAE'


def _flag(test, groups, chance):
    reasons = [chance[g] for g in groups if g in chance]
    test['flag'] = '; '.join(reasons) or None


def flag_tests(authors, ours, chance):
    """Mark each test that uses a group not above chance (test['flag'], else None)."""
    for cols in authors['mmvae_vs_vae'].values():
        for r in cols.values():
            for k in ('f_oneway', 'anova_lm', 'welch'):
                _flag(r[k], [group_of(m, r[k]['target_modality']) for m in r[k]['models']], chance)
    for r in [*authors['transforms_oneway'].values(), *authors['transforms_rm'].values()]:
        _flag(r, [group_of(r['models'][0], r['target_modality'])], chance)
    for cols in authors['vs_chance'].values():
        for c, r in cols.items():
            t = r['target_modality']
            other = [group_of(authors_stats.MMVAE, 1 - t)] if c.startswith('cross_') else []
            _flag(r, [group_of(r['models'][0], t), *other], chance)
    for mod, rows in ours['mmvae_vs_vae_silhouettes'].items():
        for r in rows.values():
            for k in ('anova', 'welch'):
                _flag(r[k], our_stats.GROUP_PAIRS[mod], chance)
    for g, r in ours['magnitude_all_variants_rm'].items():
        _flag(r, [g], chance)
    for r in ours['mmvae_encoders_paired'].values():
        _flag(r, ['MMVAE cmnist enc.', 'MMVAE oscn enc.'], chance)


def statistics(values, results):
    """(statistics dict, their data frame) of the collected values and per-run results."""
    groups = {g: {m: {**stats.mean_ci([v for _, v in values[g][m]]), 'values': values[g][m]}
                  for m in METRICS if values[g][m]} for g in values}
    df = authors_stats.frame(results)
    authors = authors_stats.family(df)
    ours = our_stats.family(values, authors, MAGNITUDES, METRICS)
    chance = not_above_chance(groups)
    flag_tests(authors, ours, chance)
    return {'groups': groups, 'not_above_chance': chance, 'authors': authors, 'ours': ours}, df


def condition_budgets(runs):
    """{condition: training budget of its finished runs} (they share it; all of them kept if not)."""
    out = {}
    for r in runs:
        if r['budget'] is not None:
            out.setdefault(r['condition'], []).append(r['budget'])
    return {c: bs[0] if all(b == bs[0] for b in bs) else {'differ': bs} for c, bs in out.items()}


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def summary_figure(st, path, title):
    """One panel per measure: each group's seeds (dots) and mean with its 95 % CI."""
    plt = _plt()
    metrics = [m for m in METRICS if any(m in st['groups'].get(g, {}) for g, _, _ in GROUPS)]
    cols = min(4, len(metrics)) or 1
    rows = -(-len(metrics) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    colors = ['tab:blue', 'tab:orange', 'tab:green', 'tab:red']
    for ax in axes.flat[len(metrics):]:
        ax.axis('off')
    for ax, m in zip(axes.flat, metrics, strict=False):
        for i, (g, _, _) in enumerate(GROUPS):
            s = st['groups'].get(g, {}).get(m)
            if s is None:
                continue
            ys = [v for _, v in s['values']]
            ax.scatter([i + 0.15] * len(ys), ys, s=10, color=colors[i], alpha=0.5)
            if s['lo'] is not None:
                ax.errorbar([i], [s['mean']], yerr=[[s['mean'] - s['lo']], [s['hi'] - s['mean']]], fmt='o',
                            color=colors[i], capsize=4)
            else:
                ax.plot([i], [s['mean']], 'o', color=colors[i])
        if m in ACCURACIES:
            ax.axhline(CHANCE, color='grey', ls='--', lw=1, label='chance')
            ax.legend(fontsize=7)
        ax.set_xticks(range(len(GROUPS)))
        ax.set_xticklabels([g for g, _, _ in GROUPS], rotation=30, ha='right', fontsize=7)
        ax.set_title(m.replace('_', ' '), fontsize=9)
        ax.set_xlim(-0.5, len(GROUPS) - 0.5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def magnitude_silhouette_figure(values, path, title):
    """Magnitude |r| against number silhouette, one point per run, per group (their across-seed plot)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for (g, _, _), c in zip(GROUPS, ['tab:blue', 'tab:orange', 'tab:green', 'tab:red'], strict=True):
        sil, mag = dict(values[g]['silhouette_number']), dict(values[g]['magnitude_abs_r'])
        seeds = sorted(set(sil) & set(mag))
        ax.scatter([sil[s] for s in seeds], [mag[s] for s in seeds], color=c, label=g, s=18)
    ax.set_xlabel('silhouette (number)')
    ax.set_ylabel('magnitude |r|')
    ax.xaxis.set_major_locator(plt.MaxNLocator(6))
    ax.legend(fontsize=7)
    ax.set_title(title.replace(': ', ':\n', 1), fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def aggregate(opts, log, runs, training, deviations, study_flags):
    """Statistics of the study's runs analysed with the requested settings -> summary.json, summary.md,
    synthesized.csv and the figures. runs: the runner's records (numbersense_study.run_records)."""
    values, results, missing, stale = collect(runs)
    st, df = statistics(values, results)
    n_runs = len(results)
    name = os.path.basename(os.path.normpath(opts.study_dir))
    tag = f'{name} (protocol {opts.protocol}{", OFFLINE DATA" if opts.offline else ""})'
    fig = os.path.join(opts.study_dir, 'summary.png')
    summary_figure(st, fig, f'{tag}: mean and 95 % CI over seeds')
    magnitude_silhouette_figure(values, os.path.join(opts.study_dir, 'magnitude_vs_silhouette.png'),
                                f'{tag}: one point per run')
    save_text(df.to_csv(index=False), os.path.join(opts.study_dir, 'synthesized.csv'))
    summary = {'study_dir': opts.study_dir, 'protocol': opts.protocol, 'study_flags': study_flags,
               'training': training, 'deviations': opts.deviations, 'deviation_text': deviations,
               'offline_data': opts.offline, 'seeds': opts.seed_list, 'conditions': opts.conditions,
               'n_runs': n_runs, 'missing': missing, 'stale': stale, 'chance': CHANCE, 'accuracy_unit': 'fraction',
               'measures': list(METRICS),
               'budget': condition_budgets(runs),
               'runs': [{k: r[k] for k in ('condition', 'seed', 'path', 'analysis', 'budget')} for r in runs],
               **st, 'frame': 'synthesized.csv', 'figure': fig}
    md = markdown(summary, name)
    save_text(md, os.path.join(opts.study_dir, 'summary.md'))
    save_json(summary, os.path.join(opts.study_dir, 'summary.json'))
    log.info(md)
    log.info(f'wrote {os.path.join(opts.study_dir, "summary.json")}, summary.md, synthesized.csv and {fig}')
    if missing:
        log.info(f'{len(missing)} run(s) not analysed yet: {", ".join(missing)}')
    if stale:
        log.info(f'{len(stale)} run(s) analysed with other settings, left out: '
                 + ', '.join(s['run'] for s in stale) + ' (rerun without --stats-only to analyse them again)')
    return summary
