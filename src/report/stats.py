"""General statistics of the studies: confidence intervals, effect sizes and tests.

Thin wrappers over scipy.stats and statsmodels that take plain lists (None and
NaN dropped), return JSON-ready dicts (None where a quantity is undefined, e.g.
no variance) and never warn for a constant sample. Tested against scipy and
statsmodels on fixed numbers in tests/test_stats.py.
"""
import contextlib
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


def paired(x, y):
    """Two-sided paired t-test of x against y (x[i], y[i] from the same unit), with
    d_z = mean(x - y) / sd(x - y). Pairs with a missing value on either side are dropped."""
    keep = [(a, b) for a, b in zip(x, y, strict=True)
            if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    diff = np.asarray([a - b for a, b in keep], dtype=np.float64)
    sd = diff.std(ddof=1) if len(diff) > 1 else 0
    if sd == 0:
        return {'t': None, 'df': None, 'p': None, 'dz': None, 'n': len(diff)}
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


def anova_rm(values):
    """Repeated-measures one-way ANOVA (statsmodels AnovaRM).

    values: {level: [value per subject]} with the subjects in the same order in
    every level. Subjects with a missing value in any level are dropped (AnovaRM
    needs a balanced design); returns F, df, p, the levels and subjects used.
    """
    import pandas as pd
    from statsmodels.stats.anova import AnovaRM
    levels = list(values)
    n = len(next(iter(values.values()))) if values else 0
    subjects = [s for s in range(n) if all(values[lv][s] is not None and math.isfinite(values[lv][s])
                                           for lv in levels)]
    out = {'F': None, 'df': None, 'p': None, 'levels': levels, 'n_subjects': len(subjects)}
    if len(levels) < 2 or len(subjects) < 2:
        return out
    df = pd.DataFrame([(s, lv, float(values[lv][s])) for s in subjects for lv in levels],
                      columns=['subject', 'level', 'value'])
    if np.allclose(df.groupby('subject')['value'].transform(lambda v: v - v.mean()), 0):
        return out  # no variation within subjects: F undefined
    table = AnovaRM(df, 'value', 'subject', within=['level']).fit().anova_table
    row = table.loc['level']
    return {**out, 'F': num(row['F Value']), 'df': [num(row['Num DF']), num(row['Den DF'])],
            'p': num(row['Pr > F'])}
