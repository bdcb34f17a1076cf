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


# ---------------------------------------------------------------- OLS ANOVA, sphericity, pairwise comparisons

def test_ols_anova_against_statsmodels_and_f_oneway():
    import pandas as pd
    import statsmodels.api as sm
    from statsmodels.formula.api import ols
    r = stats.ols_anova({'a': X, 'b': Y, 'c': [0.2, None, 0.3, 0.25]})
    frame = pd.DataFrame({'g': ['a'] * 5 + ['b'] * 4 + ['c'] * 3, 'v': X + Y + [0.2, 0.3, 0.25]})
    ref = sm.stats.anova_lm(ols('v ~ C(g)', data=frame).fit(), typ=2)
    assert r['F'] == pytest.approx(ref.loc['C(g)', 'F']) and r['p'] == pytest.approx(ref.loc['C(g)', 'PR(>F)'])
    assert r['df'] == [2, 9] and r['sum_sq'] == pytest.approx(list(ref['sum_sq']))
    assert r['F'] == pytest.approx(sps.f_oneway(X, Y, [0.2, 0.3, 0.25]).statistic)  # one-way: the same F
    assert stats.ols_anova({'a': [1.0, 1.0], 'b': [2.0, 2.0]})['F'] is None  # no residual variance
    small = stats.ols_anova({'a': [v * 1e-4 for v in X], 'b': [v * 1e-4 for v in Y]})  # F has no unit
    assert small['F'] == pytest.approx(stats.ols_anova({'a': X, 'b': Y})['F'])
    assert stats.ols_anova({'a': [1.0], 'b': [2.0]}) == {'F': None, 'p': None, 'df': None, 'sum_sq': None,
                                                        'n': [1, 1]}  # no residual at all


RM = {'a': [0.8, 0.7, 0.9, 0.6, 0.5], 'b': [0.7, 0.5, 0.8, 0.6, 0.4], 'c': [0.4, 0.5, 0.6, 0.3, 0.35],
      'd': [0.3, 0.2, 0.5, 0.3, 0.1]}


def _contrast_cov(values):
    """Covariance of k - 1 orthonormal contrasts of the levels (Helmert), subjects as rows."""
    m = np.array([values[k] for k in values]).T
    k = m.shape[1]
    c = np.zeros((k - 1, k))
    for i in range(1, k):
        c[i - 1, :i], c[i - 1, i] = 1, -i
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    return np.cov(m @ c.T, rowvar=False), m.shape[0], k


def test_sphericity_against_mauchly_and_greenhouse_geisser_formulas():
    s, n, k = _contrast_cov(RM)
    p = k - 1
    w = np.linalg.det(s) / (np.trace(s) / p) ** p
    chi2 = -(1 - (2 * p ** 2 + p + 2) / (6 * p * (n - 1))) * (n - 1) * np.log(w)  # Box's factor
    r = stats.sphericity(RM)
    assert r['W'] == pytest.approx(w) and r['chi2'] == pytest.approx(chi2) and r['df'] == p * (p + 1) // 2 - 1
    # p with Box's second-order term, written out as in anovakun (Anderson 2003, d = k - 1 throughout).
    f = 1 - (2 * p ** 2 + p + 2) / (6 * p * (n - 1))
    w2 = (p + 2) * (p - 1) * (p - 2) * (2 * p ** 3 + 6 * p ** 2 + 3 * p + 2) / (288 * p ** 2 * (n - 1) ** 2 * f ** 2)
    assert r['p'] == pytest.approx(sps.chi2.sf(chi2, 5) + w2 * (sps.chi2.sf(chi2, 9) - sps.chi2.sf(chi2, 5)))
    assert r['p'] == pytest.approx(r['p_pingouin'], abs=2e-3) and r['p'] != r['p_pingouin']
    assert r['eps_gg'] == pytest.approx(np.trace(s) ** 2 / (p * np.trace(s @ s)))
    # Fewer subjects than levels: W is 0 by construction, the test is not reported; epsilon still is.
    few = stats.sphericity({lv: v[:3] for lv, v in RM.items()})
    assert few['W'] is None and few['p'] is None and 'at least 4 subjects' in few['note']
    s3, _, _ = _contrast_cov({lv: v[:3] for lv, v in RM.items()})
    assert few['eps_gg'] == pytest.approx(np.trace(s3) ** 2 / (p * np.trace(s3 @ s3)))


def test_anova_rm_gg_corrects_the_degrees_of_freedom():
    plain, gg = stats.anova_rm(RM), stats.anova_rm_gg(RM)
    eps = stats.sphericity(RM)['eps_gg']
    assert gg['F'] == pytest.approx(plain['F']) and gg['eps_gg'] == pytest.approx(eps)
    assert gg['df'] == pytest.approx([3 * eps, 12 * eps])
    assert gg['p'] == pytest.approx(sps.f.sf(plain['F'], 3 * eps, 12 * eps)) and gg['p'] > plain['p']
    import warnings

    import pandas as pd
    import pingouin as pg
    with warnings.catch_warnings():  # pingouin's own use of a keyword pandas deprecates
        warnings.simplefilter('ignore')
        ref = pg.rm_anova(pd.DataFrame(RM), correction=True).iloc[0]  # pingouin's own corrected p
    assert gg['p'] == pytest.approx(ref['p_GG_corr']) and gg['F'] == pytest.approx(ref['F'])
    two = stats.anova_rm_gg({lv: v[:2] for lv, v in RM.items()})  # 2 subjects: still defined
    assert two['p'] is not None and two['df'][0] == pytest.approx(3 * two['eps_gg'])


def test_shaffer_multipliers_match_his_table():
    # Shaffer (1986): the maximum numbers of true hypotheses, step by step, for 3, 4 and 5 means.
    assert stats.shaffer_multipliers(3) == [3, 1, 1]
    assert stats.shaffer_multipliers(4) == [6, 3, 3, 3, 2, 1]
    assert stats.shaffer_multipliers(5) == [10, 6, 6, 6, 6, 4, 4, 3, 2, 1]


def test_pairwise_paired_with_shaffer_adjustment():
    rows = stats.pairwise_paired(RM)
    assert [r['levels'] for r in rows] == [['a', 'b'], ['a', 'c'], ['a', 'd'], ['b', 'c'], ['b', 'd'], ['c', 'd']]
    for r in rows:
        ref = sps.ttest_rel(RM[r['levels'][0]], RM[r['levels'][1]])
        assert (r['t'], r['p'], r['df']) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue), 4)
        a, b = (RM[lv] for lv in r['levels'])
        assert r['t'] > 0 and r['difference'] == pytest.approx(np.mean(a) - np.mean(b))
    ps = sorted(r['p'] for r in rows)
    adj, running = [], 0
    for p, m in zip(ps, [6, 3, 3, 3, 2, 1], strict=True):
        running = max(running, min(1, p * m))
        adj.append(running)
    assert sorted(r['p_shaffer'] for r in rows) == pytest.approx(adj)
    assert min(rows, key=lambda r: r['p'])['p_shaffer'] == pytest.approx(6 * ps[0])


# ---------------------------------------------------------------- the smallest samples and constant ones

@pytest.fixture
def no_warnings():
    """The module promises JSON-ready None, never a warning, where a quantity is undefined."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        yield


def test_undefined_quantities_are_none_without_warnings(no_warnings):
    assert stats.mean_ci([3.0]) == {'mean': 3.0, 'lo': None, 'hi': None, 'sd': None, 'n': 1}
    assert stats.cohens_d([1.0, 1.0], [2.0, 2.0]) is None  # no variance
    assert stats.cohens_d([1.0, 2.0], [2.0]) is None and stats.cohens_d([2.0], [1.0, 2.0]) is None  # one value
    assert stats.paired([0.4], [0.2])['t'] is None  # one pair
    assert stats.paired([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])['t'] is None  # all zero: no difference at all
    assert stats.anova([[1.0, 2.0, 3.0]])['F'] is None  # one group
    for x, y in (([1.0], [1.0, 2.0, 3.0]), ([1.0, 2.0, 3.0], [1.0]), ([1.0, 1.0], [2.0, 2.0])):
        assert stats.welch(x, y)['t'] is None and stats.welch(x, y)['p'] is None
    assert stats.one_sample([0.5], 1 / 9)['t'] is None
    assert stats.paired([], [])['t'] is None and stats.paired([], [])['n'] == 0
    assert stats.anova_rm({'a': [1.0, 2.0, 3.0]})['F'] is None  # one level
    assert stats.ols_anova({'a': [1.0, 2.0, 3.0]})['F'] is None  # one group
    assert stats.complete_subjects({}) == [] and stats.anova_rm({})['n_subjects'] == 0  # no levels
    for groups in ([[1.0], [2.0]], [[1.0, 1.0], [2.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]]):
        a = stats.anova(groups)
        assert a['F'] is None and a['p'] is None
    assert stats.anova([[1.0], [2.0]])['eta_sq'] is None and stats.anova([[1.0], [2.0]])['df'] is None
    assert stats.anova([[1.0, 1.0], [1.0, 1.0]])['eta_sq'] is None  # no variance at all
    assert stats.anova([[1.0, 1.0], [2.0, 2.0]])['eta_sq'] == 1.0  # all of it between the groups
    one_subject = {'a': [1.0, None], 'b': [2.0, 5.0], 'c': [4.0, 1.0]}
    assert stats.anova_rm(one_subject)['F'] is None and stats.anova_rm(one_subject)['n_subjects'] == 1


def test_paired_values_come_in_pairs():
    with pytest.raises(ValueError):
        stats.paired([0.1, 0.2, 0.3], [0.1, 0.2])


def test_two_values_per_side_are_enough():
    x, y = [0.3, 0.5], [0.1, 0.4]
    assert stats.one_sample(x, 0.1)['p'] == pytest.approx(sps.ttest_1samp(x, 0.1).pvalue)
    assert stats.cohens_d(x, y) == pytest.approx(0.15 / math.sqrt((0.02 + 0.045) / 2))
    ref = sps.ttest_ind(x, y, equal_var=False)
    assert stats.welch(x, y)['t'] == pytest.approx(ref.statistic)
    ref = sps.ttest_rel(x, [0.1, 0.1])
    assert stats.paired(x, [0.1, 0.1])['t'] is not None  # differences 0.2, 0.4
    assert stats.paired(x, [0.1, 0.1])['p'] == pytest.approx(ref.pvalue)
    rows = stats.pairwise_paired({'a': x, 'b': [0.1, 0.1], 'c': [0.9, 0.2]})
    assert rows[0]['levels'] == ['a', 'b'] and rows[0]['df'] == 1
    assert rows[0]['p'] == pytest.approx(sps.ttest_rel(x, [0.1, 0.1]).pvalue)


def test_two_levels_repeated_measures_is_the_paired_t_squared():
    values = {'a': [0.61, 0.55, 0.72, 0.58], 'b': [0.41, 0.52, 0.38, 0.47]}
    t = sps.ttest_rel(values['a'], values['b'])
    rm = stats.anova_rm(values)
    assert rm['F'] == pytest.approx(t.statistic ** 2) and rm['p'] == pytest.approx(t.pvalue)
    gg = stats.anova_rm_gg(values)  # two levels: sphericity holds, epsilon 1, the same F test
    assert gg['eps_gg'] == 1.0 and gg['p'] == pytest.approx(t.pvalue) and gg['df'] == [1.0, 3.0]
    s = stats.sphericity(values)
    assert s['W'] is None and s['eps_gg'] is None and s['note'] == 'sphericity holds trivially with 2 levels'
    assert stats.sphericity({'a': [1.0], 'b': [2.0], 'c': [3.0]})['note'] == 'too few subjects'


def test_sphericity_with_three_levels_against_pingouin():
    import pandas as pd
    import pingouin as pg
    values = {'a': [0.61, 0.55, 0.72, 0.58], 'b': [0.41, 0.52, 0.38, 0.47], 'c': [0.50, 0.58, 0.44, 0.61]}
    wide = pd.DataFrame(values)
    s = stats.sphericity(values)
    assert s['W'] == pytest.approx(pg.sphericity(wide).W) and s['eps_gg'] == pytest.approx(pg.epsilon(wide))


def test_shaffer_adjusted_p_is_at_most_one():
    rows = stats.pairwise_paired({'a': [0.5, 0.6, 0.4, 0.55], 'b': [0.52, 0.58, 0.43, 0.5],
                                  'c': [0.49, 0.61, 0.41, 0.56]})  # no real differences: p * 3 > 1
    assert max(r['p'] for r in rows) * 3 > 1 and max(r['p_shaffer'] for r in rows) == 1.0


def test_pairwise_paired_skips_a_constant_difference(no_warnings):
    """a - b is the same for every subject (a + b is not): no t for that pair, the others tested."""
    rows = stats.pairwise_paired({'a': [1.0, 2.0, 3.0], 'b': [2.0, 3.0, 4.0], 'c': [0.5, 2.5, 2.0]})
    by = {tuple(r['levels']): r for r in rows}
    assert by['a', 'b']['t'] is None and by['a', 'b']['p'] is None
    assert by['a', 'c']['p'] == pytest.approx(sps.ttest_rel([1.0, 2.0, 3.0], [0.5, 2.5, 2.0]).pvalue)
