"""src/report/stats.py against scipy / statsmodels / direct numpy formulas on fixed numbers."""
import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from src.report import stats

X = [0.61, 0.55, 0.72, 0.58, 0.66]
Y = [0.41, 0.52, 0.38, 0.47]


def test_mean_ci():
    s = stats.mean_ci(X)
    lo, hi = sps.t.interval(0.95, len(X) - 1, loc=np.mean(X), scale=sps.sem(X))
    assert (s['mean'], s['lo'], s['hi'], s['n']) == (pytest.approx(np.mean(X)), pytest.approx(lo),
                                                     pytest.approx(hi), 5)
    assert stats.mean_ci([4.0])['lo'] is None and stats.mean_ci([])['n'] == 0
    assert stats.mean_ci([1.0, None, float('nan'), 3.0])['n'] == 2


def test_welch_and_cohens_d():
    w = stats.welch(X, Y)
    ref = sps.ttest_ind(X, Y, equal_var=False)
    assert w['t'] == pytest.approx(ref.statistic) and w['p'] == pytest.approx(ref.pvalue)
    vx, vy = np.var(X, ddof=1) / 5, np.var(Y, ddof=1) / 4
    assert w['df'] == pytest.approx((vx + vy) ** 2 / (vx ** 2 / 4 + vy ** 2 / 3))
    pooled = math.sqrt((4 * np.var(X, ddof=1) + 3 * np.var(Y, ddof=1)) / 7)
    assert w['d'] == pytest.approx((np.mean(X) - np.mean(Y)) / pooled)
    assert stats.welch([1.0, 1.0], [1.0, 1.0])['p'] is None


def test_two_group_anova_is_student_t_squared():
    a = stats.anova([X, Y])
    ref = sps.f_oneway(X, Y)
    student = sps.ttest_ind(X, Y, equal_var=True)
    assert a['F'] == pytest.approx(ref.statistic) and a['F'] == pytest.approx(student.statistic ** 2)
    assert a['p'] == pytest.approx(student.pvalue) and a['df'] == [1, 7]
    allx = np.array(X + Y)
    ss_b = 5 * (np.mean(X) - allx.mean()) ** 2 + 4 * (np.mean(Y) - allx.mean()) ** 2
    assert a['eta_sq'] == pytest.approx(ss_b / ((allx - allx.mean()) ** 2).sum())
    assert stats.anova([[1.0, 1.0], [2.0, 2.0]])['F'] is None


def test_one_sample():
    r = stats.one_sample(X, 1 / 9)
    ref = sps.ttest_1samp(X, 1 / 9)
    assert (r['t'], r['p'], r['df']) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue), 4)
    assert r['d'] == pytest.approx((np.mean(X) - 1 / 9) / np.std(X, ddof=1))
    assert stats.one_sample([0.5, 0.5, 0.5], 1 / 9)['p'] is None


def test_paired():
    a, b = [0.5, 0.6, 0.7, None, 0.4], [0.45, 0.5, 0.71, 0.3, 0.3]
    r = stats.paired(a, b)
    ref = sps.ttest_rel([0.5, 0.6, 0.7, 0.4], [0.45, 0.5, 0.71, 0.3])  # the pair with a missing value dropped
    assert (r['t'], r['p'], r['n'], r['df']) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue), 4, 3)
    diff = np.array([0.05, 0.1, -0.01, 0.1])
    assert r['dz'] == pytest.approx(diff.mean() / diff.std(ddof=1))


def test_holm():
    ps = [0.01, None, 0.04, 0.03, 0.5]
    adj = stats.holm(ps)
    ref = multipletests([0.01, 0.04, 0.03, 0.5], method='holm')[1]
    assert adj[1] is None and [adj[i] for i in (0, 2, 3, 4)] == pytest.approx(list(ref))
    assert adj[0] == pytest.approx(0.04)  # 4 tests: 0.01 * 4
    assert stats.holm([]) == [] and stats.holm([None]) == [None]


def test_anova_rm_against_the_textbook_formula():
    values = {'a': [0.8, 0.7, 0.9, 0.6], 'b': [0.7, 0.5, 0.8, 0.6], 'c': [0.4, 0.5, 0.6, 0.3]}
    r = stats.anova_rm(values)
    m = np.array([values[k] for k in values]).T  # subjects x levels
    n, k = m.shape
    grand = m.mean()
    ss_levels = n * ((m.mean(0) - grand) ** 2).sum()
    ss_subjects = k * ((m.mean(1) - grand) ** 2).sum()
    ss_error = ((m - grand) ** 2).sum() - ss_levels - ss_subjects
    f = (ss_levels / (k - 1)) / (ss_error / ((k - 1) * (n - 1)))
    assert r['F'] == pytest.approx(f) and r['df'] == [2, 6]
    assert r['p'] == pytest.approx(sps.f.sf(f, k - 1, (k - 1) * (n - 1)))
    assert r['n_subjects'] == 4
    values['c'][0] = None  # a subject with a missing level is left out
    assert stats.anova_rm(values)['n_subjects'] == 3
    assert stats.anova_rm({'a': [1.0, 2.0], 'b': [1.0, 2.0]})['F'] is None  # no variation within subjects


# Known values worked by hand.

def test_mean_ci_known_values():
    s = stats.mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * sd 1 / sqrt(3)
    assert (s['mean'], s['sd'], s['n']) == (2.0, 1.0, 3)
    assert s['lo'] == pytest.approx(2 - half) and s['hi'] == pytest.approx(2 + half)
    assert stats.mean_ci([4.0])['lo'] is None and stats.mean_ci([])['n'] == 0
    assert stats.mean_ci([1.0, None, 3.0])['n'] == 2


def test_welch_cohen_anova_known_values():
    x, y = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]
    assert stats.cohens_d(x, y) == pytest.approx(-3.0)
    w = stats.welch(x, y)
    assert w['t'] == pytest.approx(-3 / math.sqrt(2 / 3))  # (2 - 5) / sqrt(1/3 + 1/3)
    assert w['df'] == pytest.approx(4.0) and w['d'] == pytest.approx(-3.0)
    assert w['p'] == pytest.approx(0.021311641128756, rel=1e-6)
    a = stats.anova([x, y])
    assert a['F'] == pytest.approx(13.5)  # two groups: F = t^2 of the pooled t-test
    assert a['eta_sq'] == pytest.approx(13.5 / 17.5) and a['df'] == [1, 4]
    # Unequal variances: Welch's df differs from n - 2.
    w2 = stats.welch([1.0, 2.0, 3.0, 4.0], [0.0, 10.0, 20.0])
    vx, vy = (5 / 3) / 4, 100 / 3
    assert w2['df'] == pytest.approx((vx + vy) ** 2 / (vx ** 2 / 3 + vy ** 2 / 2))
    # No variance at all: the tests are undefined, not 'p = 0'.
    assert stats.welch([1.0, 1.0], [1.0, 1.0])['p'] is None
    assert stats.anova([[1.0, 1.0], [2.0, 2.0]])['F'] is None


def test_one_sample_known_values():
    r = stats.one_sample([0.2, 0.3, 0.4], 1 / 9)
    assert r['t'] == pytest.approx((0.3 - 1 / 9) / (0.1 / math.sqrt(3)))
    assert r['d'] == pytest.approx((0.3 - 1 / 9) / 0.1) and r['df'] == 2
    assert stats.one_sample([0.5, 0.5, 0.5], 1 / 9)['p'] is None
