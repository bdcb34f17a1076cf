"""General statistics of the studies: confidence intervals, effect sizes and tests.

Thin wrappers over scipy.stats, statsmodels and pingouin that take plain lists
(None and NaN dropped), return JSON-ready dicts (None where a quantity is
undefined, e.g. no variance) and never warn for a constant sample. Tested
against scipy, statsmodels and pingouin on fixed numbers in tests/test_stats.py.
"""
import contextlib
import itertools
import math
import warnings

import numpy as np
from scipy import stats


@contextlib.contextmanager
def _constant_sample_ok():
    """scipy warns when one sample is constant (e.g. every seed exactly at chance); the
    tests stay valid while the pooled variance is not zero, which the callers check."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Precision loss occurred', category=RuntimeWarning)
        yield


def clean(x):
    """float64 array of the finite values of x (None and NaN dropped)."""
    return np.asarray([v for v in x if v is not None and math.isfinite(v)], dtype=np.float64)


def num(v):
    """float, or None for nan/inf (JSON has no NaN)."""
    v = float(v)
    return v if math.isfinite(v) else None


def mean_ci(x, level=0.95):
    """Mean and the t-based confidence interval of the mean: dict(mean, lo, hi, sd, n)."""
    x = clean(x)
    n = len(x)
    if n == 0:
        return {'mean': None, 'lo': None, 'hi': None, 'sd': None, 'n': 0}
    m = x.mean()
    if n < 2:
        return {'mean': num(m), 'lo': None, 'hi': None, 'sd': None, 'n': 1}
    sd = x.std(ddof=1)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {'mean': num(m), 'lo': num(m - half), 'hi': num(m + half), 'sd': num(sd), 'n': n}


def cohens_d(x, y):
    """(mean x - mean y) / pooled standard deviation (ddof 1)."""
    x, y = clean(x), clean(y)
    nx, ny = len(x), len(y)
    if nx < 2 or ny < 2:
        return None
    pooled = math.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2))
    return num((x.mean() - y.mean()) / pooled) if pooled > 0 else None


def welch(x, y):
    """Welch's t-test (unequal variances, two-sided) of x against y, with Cohen's d."""
    x, y = clean(x), clean(y)
    vx, vy = (x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)) if len(x) > 1 and len(y) > 1 else (0, 0)
    if vx + vy == 0:  # too few values, or no variance: t is undefined
        return {'t': None, 'df': None, 'p': None, 'd': None, 'n': [len(x), len(y)]}
    with _constant_sample_ok():
        res = stats.ttest_ind(x, y, equal_var=False)
    df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    return {'t': num(res.statistic), 'df': num(df), 'p': num(res.pvalue), 'd': cohens_d(x, y),
            'n': [len(x), len(y)]}


def anova(groups):
    """One-way ANOVA over a list of independent samples, with eta squared (SS_between / SS_total)."""
    groups = [clean(g) for g in groups]
    groups = [g for g in groups if len(g)]
    ns = [len(g) for g in groups]
    if len(groups) < 2 or sum(ns) <= len(groups):
        return {'F': None, 'p': None, 'eta_sq': None, 'df': None, 'n': ns}
    allx = np.concatenate(groups)
    ss_total = ((allx - allx.mean()) ** 2).sum()
    ss_between = sum(len(g) * (g.mean() - allx.mean()) ** 2 for g in groups)
    ss_within = sum(((g - g.mean()) ** 2).sum() for g in groups)
    with _constant_sample_ok():
        res = stats.f_oneway(*groups) if ss_within > 0 else None  # no variance within groups: F undefined
    return {'F': num(res.statistic) if res else None, 'p': num(res.pvalue) if res else None,
            'eta_sq': num(ss_between / ss_total) if ss_total > 0 else None,
            'df': [len(groups) - 1, sum(ns) - len(groups)], 'n': ns}


def one_sample(x, mu):
    """Two-sided one-sample t-test of mean(x) against mu, with d = (mean - mu) / sd."""
    x = clean(x)
    sd = x.std(ddof=1) if len(x) > 1 else 0
    if sd == 0:  # too few values, or all equal: t is undefined
        return {'t': None, 'df': None, 'p': None, 'd': None, 'mu': mu, 'n': len(x)}
    res = stats.ttest_1samp(x, mu)
    return {'t': num(res.statistic), 'df': len(x) - 1, 'p': num(res.pvalue),
            'd': num((x.mean() - mu) / sd), 'mu': mu, 'n': len(x)}


def constant_difference_free(sd, pairs):
    """False when the paired differences are constant: sd zero, or at rounding level of the values."""
    scale = max((abs(v) for p in pairs for v in p), default=0.0)
    return sd > 1e-12 * scale


def paired(x, y):
    """Two-sided paired t-test of x against y (x[i], y[i] from the same unit), with
    d_z = mean(x - y) / sd(x - y). Pairs with a missing value on either side are dropped."""
    keep = [(a, b) for a, b in zip(x, y, strict=True)
            if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    diff = np.asarray([a - b for a, b in keep], dtype=np.float64)
    sd = diff.std(ddof=1) if len(diff) > 1 else 0
    if not constant_difference_free(sd, keep):
        return {'t': None, 'df': None, 'p': None, 'dz': None, 'n': len(diff)}
    with _constant_sample_ok():
        res = stats.ttest_rel([a for a, _ in keep], [b for _, b in keep])
    return {'t': num(res.statistic), 'df': len(diff) - 1, 'p': num(res.pvalue), 'dz': num(diff.mean() / sd),
            'n': len(diff)}


def holm(pvalues):
    """Holm-Bonferroni adjusted p-values (statsmodels' multipletests), None kept where p is None."""
    from statsmodels.stats.multitest import multipletests
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    out = [None] * len(pvalues)
    if idx:
        adj = multipletests([pvalues[i] for i in idx], method='holm')[1]
        for i, p in zip(idx, adj, strict=True):
            out[i] = float(p)
    return out


def ols_anova(values):
    """statsmodels' OLS `value ~ C(group)` and anova_lm(typ=2) over {group: [values]}: the group
    term's F, p, df and sum of squares (with the residual's df and sum of squares)."""
    import pandas as pd
    import statsmodels.api as sm
    from statsmodels.formula.api import ols
    rows = [(g, v) for g, vs in values.items() for v in clean(vs)]
    k = len({g for g, _ in rows})
    out = {'F': None, 'p': None, 'df': None, 'sum_sq': None, 'n': [len(clean(vs)) for vs in values.values()]}
    if k < 2 or len(rows) <= k:
        return out
    frame = pd.DataFrame(rows, columns=['group', 'value'])
    with np.errstate(divide='ignore', invalid='ignore'):  # no residual variance: F is inf, returned as None
        table = sm.stats.anova_lm(ols('value ~ C(group)', data=frame).fit(), typ=2)
    g, r = table.loc['C(group)'], table.loc['Residual']
    varies = r['sum_sq'] > 1e-12 * (g['sum_sq'] + r['sum_sq'])  # else F is 0/0 or x/0 up to rounding: undefined
    return {**out, 'F': num(g['F']) if varies else None, 'p': num(g['PR(>F)']) if varies else None,
            'df': [num(g['df']), num(r['df'])], 'sum_sq': [num(g['sum_sq']), num(r['sum_sq'])]}


def complete_subjects(values):
    """The subjects (indices) with a finite value in every level of {level: [value per subject]}."""
    n = len(next(iter(values.values()))) if values else 0
    return [s for s in range(n) if all(values[lv][s] is not None and math.isfinite(values[lv][s]) for lv in values)]


def _long(values, subjects):
    import pandas as pd
    return pd.DataFrame([(s, lv, float(values[lv][s])) for s in subjects for lv in values],
                        columns=['subject', 'level', 'value'])


def anova_rm(values):
    """Repeated-measures one-way ANOVA (statsmodels AnovaRM), no sphericity correction.

    values: {level: [value per subject]} with the subjects in the same order in
    every level. Subjects with a missing value in any level are dropped (AnovaRM
    needs a balanced design); returns F, df, p, the levels and subjects used.
    """
    from statsmodels.stats.anova import AnovaRM
    levels, subjects = list(values), complete_subjects(values)
    out = {'F': None, 'df': None, 'p': None, 'levels': levels, 'n_subjects': len(subjects), 'subjects': subjects}
    if len(levels) < 2 or len(subjects) < 2:
        return out
    df = _long(values, subjects)
    if np.allclose(df.groupby('subject')['value'].transform(lambda v: v - v.mean()), 0):
        return out  # no variation within subjects: F undefined
    table = AnovaRM(df, 'value', 'subject', within=['level']).fit().anova_table
    row = table.loc['level']
    return {**out, 'F': num(row['F Value']), 'df': [num(row['Num DF']), num(row['Den DF'])],
            'p': num(row['Pr > F'])}


def _wide(values, subjects):
    return _long(values, subjects).pivot(index='subject', columns='level', values='value')[list(values)]


def sphericity(values):
    """Mauchly's sphericity test and the Greenhouse-Geisser epsilon (pingouin) of {level: [value per
    subject]}, complete subjects only.

    Mauchly's W needs at least as many subjects as levels (else the covariance of the k - 1
    contrasts is singular and W = 0): then W, chi2 and p are None and `note` says why, as
    anovakun marks the test invalid.
    """
    import pingouin as pg
    subjects = complete_subjects(values)
    k, n = len(values), len(subjects)
    out = {'W': None, 'chi2': None, 'df': None, 'p': None, 'p_pingouin': None, 'eps_gg': None, 'n_subjects': n,
           'note': None}
    if k < 3 or n < 2:
        out['note'] = 'sphericity holds trivially with 2 levels' if k == 2 else 'too few subjects'
        return out
    wide = _wide(values, subjects)
    out['eps_gg'] = num(pg.epsilon(wide, correction='gg'))
    if n < k:
        out['note'] = f'the test needs at least {k} subjects (as many as levels), has {n}'
        return out
    s = pg.sphericity(wide)
    return {**out, 'W': num(s.W), 'chi2': num(s.chi2), 'df': int(s.dof), 'p': num(mauchly_p(s.chi2, k - 1, n)),
            'p_pingouin': num(s.pval)}


def mauchly_p(chi2, d, n):
    """p of Mauchly's chi2 (d = levels - 1, n subjects) with Box's second-order term, as R anovakun's
    epsilon.calc computes it (for one group Mendoza's test is Mauchly's). pingouin and R's
    mauchly.test put the number of levels where anovakun puts d in one term of w2: p differs in
    the third or fourth decimal."""
    f = 1 - (2 * d ** 2 + d + 2) / (6 * d * (n - 1))
    w2 = (d + 2) * (d - 1) * (d - 2) * (2 * d ** 3 + 6 * d ** 2 + 3 * d + 2) / (288 * d ** 2 * (n - 1) ** 2 * f ** 2)
    p1, p2 = stats.chi2.sf(chi2, d * (d + 1) / 2 - 1), stats.chi2.sf(chi2, d * (d + 1) / 2 + 3)
    return p1 + w2 * (p2 - p1)


def anova_rm_gg(values):
    """The repeated-measures F (AnovaRM) with Greenhouse-Geisser-corrected degrees of freedom: epsilon
    from pingouin, p = F's survival function at (eps df1, eps df2); complete subjects only."""
    rm = anova_rm(values)
    out = {'F': rm['F'], 'eps_gg': None, 'df': None, 'p': None, 'n_subjects': rm['n_subjects']}
    if rm['F'] is None:
        return out
    eps = 1.0 if len(values) == 2 else sphericity(values)['eps_gg']
    df = [eps * rm['df'][0], eps * rm['df'][1]]
    return {**out, 'eps_gg': num(eps), 'df': [num(d) for d in df], 'p': num(stats.f.sf(rm['F'], *df))}


def shaffer_multipliers(k):
    """Shaffer's (1986) sequentially rejective Bonferroni multipliers for the k(k-1)/2 pairwise
    comparisons of k means: after j rejections, the most null hypotheses that can still be true
    (a set of true nulls is a partition of the means into equal groups)."""
    def partitions(n, largest):
        if n == 0:
            yield ()
        for first in range(min(n, largest), 0, -1):
            for rest in partitions(n - first, first):
                yield (first, *rest)
    h = k * (k - 1) // 2
    true_counts = {sum(s * (s - 1) // 2 for s in p) for p in partitions(k, k)}
    return [max(t for t in true_counts if h - t >= j) for j in range(h)]


def pairwise_paired(values):
    """Every pair of levels of {level: [value per subject]}: paired t (two-sided, complete subjects),
    p adjusted by Shaffer's procedure (min(1, running max of p_(j) * multiplier_j) in order of p)."""
    subjects = complete_subjects(values)
    pairs = list(itertools.combinations(values, 2))
    rows = [{'levels': [a, b], 'difference': None, 't': None, 'df': None, 'p': None, 'p_shaffer': None}
            for a, b in pairs]
    if len(subjects) < 2:
        return rows
    for r, (a, b) in zip(rows, pairs, strict=True):
        x, y = (np.asarray([values[lv][s] for s in subjects], dtype=np.float64) for lv in (a, b))
        if constant_difference_free(np.std(x - y), list(zip(x, y, strict=True))):
            with _constant_sample_ok():
                res = stats.ttest_rel(x, y)
            r.update(difference=num((x - y).mean()), t=num(res.statistic), df=len(subjects) - 1, p=num(res.pvalue))
    tested = sorted((r for r in rows if r['p'] is not None), key=lambda r: r['p'])
    running = 0.0
    for r, m in zip(tested, shaffer_multipliers(len(values)), strict=False):
        running = max(running, min(1.0, r['p'] * m))
        r['p_shaffer'] = running
    return rows
