"""This project's statistics, apart from the authors' family (authors_stats.py):

- Holm-adjusted p-values over the authors' family (their tests are not adjusted);
- the Greenhouse-Geisser-corrected p of their repeated-measures ANOVA;
- the MMVAE encoder against the matching VAE on the colour and shape silhouettes
  (one-way ANOVA and Welch's t, as their tests of the other measures);
- a repeated-measures ANOVA (AnovaRM) over every defined magnitude variant,
  the `_dist` ones included, within each MMVAE encoder;
- a paired t-test of the MMVAE's two encoders per measure (they come from the
  same runs);
- Holm over this family.
Values are {group: {measure: [[seed, value]]}} (summary.collect).
"""
from src.report import stats
from src.report.numbersense.authors_stats import named_tests

GROUP_PAIRS = {'cmnist': ('MMVAE cmnist enc.', 'cmnist VAE'), 'oscn': ('MMVAE oscn enc.', 'oscn VAE')}
EXTRA = ('silhouette_colour', 'silhouette_shape')


def _v(pairs):
    return [v for _, v in pairs]


def holm(named_tests, mark):
    """[{name, p, p_holm}] over the tests with a p-value (statsmodels' Holm); with mark, each test
    dict gets its p_holm too (ours; the authors' test dicts are left as they are)."""
    named = [(n, t) for n, t in named_tests if t.get('p') is not None]
    adjusted = stats.holm([t['p'] for _, t in named])
    if mark:
        for (_, t), p in zip(named, adjusted, strict=True):
            t['p_holm'] = p
    return [{'name': n, 'p': t['p'], 'p_holm': p} for (n, t), p in zip(named, adjusted, strict=True)]


def extra_silhouettes(values):
    out = {}
    for mod, (mm, vae) in GROUP_PAIRS.items():
        for m in EXTRA:
            a, b = values.get(mm, {}).get(m, []), values.get(vae, {}).get(m, [])
            if a and b:
                x, y = _v(a), _v(b)
                out.setdefault(mod, {})[m] = {
                    'inputs': {mm: a, vae: b}, 'mmvae': stats.mean_ci(x)['mean'], 'vae': stats.mean_ci(y)['mean'],
                    'anova': {'call': 'scipy.stats.f_oneway(MMVAE, VAE)', **stats.anova([x, y])},
                    'welch': {'call': 'scipy.stats.ttest_ind(MMVAE, VAE, equal_var=False)', **stats.welch(x, y)}}
    return out


def all_variants_rm(values, magnitudes):
    """AnovaRM over every magnitude variant defined for every seed (log of the means is undefined as
    soon as one mean coordinate is negative: such a variant is left out and listed)."""
    out = {}
    for g in ('MMVAE cmnist enc.', 'MMVAE oscn enc.'):
        if not values.get(g, {}).get(magnitudes[0]):
            continue
        seeds = [s for s, _ in values[g][magnitudes[0]]]
        by_level = {m: [dict(values[g][m]).get(s) for s in seeds] for m in magnitudes}
        kept = {m: v for m, v in by_level.items() if all(x is not None for x in v)}
        r = stats.anova_rm(kept)
        out[g] = {'call': 'statsmodels AnovaRM(value ~ variant | seed)', 'inputs': {m: values[g][m] for m in kept},
                  **r, 'subjects': [seeds[i] for i in r['subjects']],
                  'dropped_levels': [m for m in magnitudes if m not in kept]}
    return out


def encoders_paired(values, measures):
    out = {}
    a_all, b_all = values.get('MMVAE cmnist enc.', {}), values.get('MMVAE oscn enc.', {})
    for m in measures:
        a, b = a_all.get(m, []), b_all.get(m, [])
        if a and b:
            seeds = sorted(set(dict(a)) | set(dict(b)))
            out[m] = {'call': 'scipy.stats.ttest_rel(MMVAE cmnist enc., MMVAE oscn enc.)',
                      'inputs': {'MMVAE cmnist enc.': a, 'MMVAE oscn enc.': b},
                      **stats.paired([dict(a).get(s) for s in seeds], [dict(b).get(s) for s in seeds])}
    return out


def gg_corrected(authors):
    """Their repeated-measures F with Greenhouse-Geisser-corrected df (anovakun's default applies none)."""
    out = {}
    for g, r in authors['transforms_rm'].items():
        seeds = sorted({s for pairs in r['inputs'].values() for s, _ in pairs})
        per_level = {c: [dict(pairs).get(s) for s in seeds] for c, pairs in r['inputs'].items()}
        out[g] = {'call': 'scipy.stats.f.sf(F, eps * df1, eps * df2), eps = pingouin.epsilon(wide)',
                  'inputs': r['inputs'], **stats.anova_rm_gg(per_level), 'p_uncorrected': r['p']}
    return out


def family(values, authors, magnitudes, measures):
    out = {'authors_holm': holm(named_tests(authors), mark=False), 'rm_gg_corrected': gg_corrected(authors),
           'mmvae_vs_vae_silhouettes': extra_silhouettes(values),
           'magnitude_all_variants_rm': all_variants_rm(values, magnitudes),
           'mmvae_encoders_paired': encoders_paired(values, measures)}
    ours = [(f'{mod}: MMVAE vs VAE {m}, {k}', r[k]) for mod, rows in out['mmvae_vs_vae_silhouettes'].items()
            for m, r in rows.items() for k in ('anova', 'welch')]
    ours += [(f'{g}: all magnitude variants, AnovaRM', r) for g, r in out['magnitude_all_variants_rm'].items()]
    ours += [(f'MMVAE encoders paired: {m}', r) for m, r in out['mmvae_encoders_paired'].items()]
    out['ours_holm'] = holm(ours, mark=True)
    return out
