"""Pure functions of the number-sense analyses (issue 5) and of the study's
statistics: arrays in, numbers out (numpy / scipy / scikit-learn, no torch).

Numbers are 1..9 throughout; class-mean arrays are indexed by number - 1.
"""
import contextlib
import itertools
import math
import warnings

import numpy as np
from scipy import stats

NUMBERS = tuple(range(1, 10))
CHANCE = 1 / len(NUMBERS)


# ---------------------------------------------------------------- latent space

def class_means(z, numbers):
    """(9, D) mean latent of each number 1..9; raises if a number has no item."""
    z, numbers = np.asarray(z, dtype=np.float64), np.asarray(numbers)
    missing = [n for n in NUMBERS if not (numbers == n).any()]
    if missing:
        raise ValueError(f"no items of number(s) {missing}: cannot form class means")
    return np.stack([z[numbers == n].mean(0) for n in NUMBERS])


def silhouette(z, labels, sample_size=5000, seed=0):
    """Mean silhouette score (Euclidean) of the points z clustered by `labels`.

    Above `sample_size` points a fixed random subset is scored (the score is
    quadratic in the number of points). None if fewer than 2 clusters.
    """
    from sklearn.metrics import silhouette_score
    z, labels = np.asarray(z), np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return None
    sample = sample_size if sample_size is not None and sample_size < len(z) else None
    return float(silhouette_score(z, labels, sample_size=sample, random_state=seed))


def magnitude(means):
    """Pearson r between |i - j| and ||m_i - m_j|| over the 36 pairs i < j of numbers 1..9.

    r near 1: the latent distances between numbers grow with their numerical
    distance (a 'mental number line'). Returns dict(r, p, n_pairs).
    """
    means = np.asarray(means, dtype=np.float64)
    pairs = list(itertools.combinations(range(len(NUMBERS)), 2))
    diff = np.array([abs(i - j) for i, j in pairs], dtype=np.float64)
    dist = np.array([np.linalg.norm(means[i] - means[j]) for i, j in pairs])
    if np.ptp(dist) == 0:
        return {'r': None, 'p': None, 'n_pairs': len(pairs)}
    r, p = stats.pearsonr(diff, dist)
    return {'r': float(r), 'p': float(p), 'n_pairs': len(pairs)}


# ---------------------------------------------------------------- arithmetic

def equations():
    """All (a, b, c) in 1..9 with a != c and 1 <= a + b - c <= 9 (408 of them)."""
    return [(a, b, c) for a in NUMBERS for b in NUMBERS for c in NUMBERS
            if a != c and 1 <= a + b - c <= 9]


def arithmetic_latents(means, eqs):
    """(len(eqs), D): m_a + m_b - m_c for each equation."""
    means = np.asarray(means)
    idx = np.asarray(eqs) - 1
    return means[idx[:, 0]] + means[idx[:, 1]] - means[idx[:, 2]]


def arithmetic_accuracy(predicted, eqs):
    """Fraction of equations whose predicted number equals a + b - c, and the
    accuracy per result value r = a + b - c (dict r -> accuracy)."""
    predicted = np.asarray(predicted)
    target = np.array([a + b - c for a, b, c in eqs])
    correct = predicted == target
    by_result = {int(r): float(correct[target == r].mean()) for r in np.unique(target)}
    return float(correct.mean()), by_result


# ---------------------------------------------------------------- statistics

@contextlib.contextmanager
def _constant_sample_ok():
    """scipy warns when one sample is constant (e.g. every seed exactly at chance); the
    tests stay valid while the pooled variance is not zero, which the callers check."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Precision loss occurred', category=RuntimeWarning)
        yield


def _clean(x):
    return np.asarray([v for v in x if v is not None and not (isinstance(v, float) and math.isnan(v))],
                      dtype=np.float64)


def _num(v):
    """float, or None for nan/inf (JSON has no NaN)."""
    v = float(v)
    return v if math.isfinite(v) else None


def mean_ci(x, level=0.95):
    """Mean and the t-based confidence interval of the mean: dict(mean, lo, hi, sd, n)."""
    x = _clean(x)
    n = len(x)
    if n == 0:
        return {'mean': None, 'lo': None, 'hi': None, 'sd': None, 'n': 0}
    m = x.mean()
    if n < 2:
        return {'mean': _num(m), 'lo': None, 'hi': None, 'sd': None, 'n': 1}
    sd = x.std(ddof=1)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {'mean': _num(m), 'lo': _num(m - half), 'hi': _num(m + half), 'sd': _num(sd), 'n': n}


def cohens_d(x, y):
    """(mean x - mean y) / pooled standard deviation (ddof 1)."""
    x, y = _clean(x), _clean(y)
    nx, ny = len(x), len(y)
    if nx < 2 or ny < 2:
        return None
    pooled = math.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2))
    return _num((x.mean() - y.mean()) / pooled) if pooled > 0 else None


def welch(x, y):
    """Welch's t-test (unequal variances) of x against y, with Cohen's d."""
    x, y = _clean(x), _clean(y)
    vx, vy = (x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)) if len(x) > 1 and len(y) > 1 else (0, 0)
    if vx + vy == 0:  # too few values, or no variance: t is undefined
        return {'t': None, 'df': None, 'p': None, 'd': None, 'n': [len(x), len(y)]}
    with _constant_sample_ok():
        res = stats.ttest_ind(x, y, equal_var=False)
    df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    return {'t': _num(res.statistic), 'df': _num(df), 'p': _num(res.pvalue), 'd': cohens_d(x, y),
            'n': [len(x), len(y)]}


def anova(groups):
    """One-way ANOVA over a list of samples, with eta squared (SS_between / SS_total)."""
    groups = [_clean(g) for g in groups]
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
    return {'F': _num(res.statistic) if res else None, 'p': _num(res.pvalue) if res else None,
            'eta_sq': _num(ss_between / ss_total) if ss_total > 0 else None,
            'df': [len(groups) - 1, sum(ns) - len(groups)], 'n': ns}


def one_sample(x, mu):
    """Two-sided one-sample t-test of mean(x) against mu, with d = (mean - mu) / sd."""
    x = _clean(x)
    sd = x.std(ddof=1) if len(x) > 1 else 0
    if sd == 0:  # too few values, or all equal: t is undefined
        return {'t': None, 'df': None, 'p': None, 'd': None, 'mu': mu, 'n': len(x)}
    res = stats.ttest_1samp(x, mu)
    return {'t': _num(res.statistic), 'df': len(x) - 1, 'p': _num(res.pvalue),
            'd': _num((x.mean() - mu) / sd), 'mu': mu, 'n': len(x)}
