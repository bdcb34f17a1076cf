"""Each gradient estimator against the gradient of the bound it estimates, statistically.

For every rule (a unimodal VAE, moe, poe, mopoe), every --looser and every estimator (the autograd gradient of
the IWAE bound's Monte Carlo estimate; DReG `released` and `true`), on a tiny float64 model with a learnt prior
(tests/tiny.py, D = 2, K = 2): one data item repeated R times in a batch gives R independent replicates of the
estimator; G batches give G independent means, whose spread gives the standard error.

- `iwae`: its mean against the score-function (REINFORCE) estimate of the same bound's gradient, written here
  from the densities and the samples alone (no objective code), on other samples: within 4.5 standard errors.
- `true`: unbiased for that gradient (docs/reproduction.md, "DReG with a mixture"): the same replicates as `iwae`
  (paired), the mean difference within 4.5 standard errors, for every parameter.
- `released`: the released MMVAE's estimator is biased for K > 1; the bias is measured (`python
  tests/test_dreg_unbiased.py` prints it, as in docs/baselines.md) and must be seen here, well beyond noise.

The elements compared are every trainable parameter's gradient (encoders, decoders, the learnt prior); a
difference of rounding size (estimators that agree by construction, e.g. on the decoders) is not read as a
z-score. Fixed seeds: deterministic.
"""
import math
import sys
from functools import lru_cache, partial

import pytest
import torch
import torch.distributions as dist

from src import objectives as O
from tests.tiny import Tiny, TinyPair, X, params

D, K = 2, 2
RULES = ['unimodal', 'moe', 'poe', 'mopoe']
LIMIT = 4.5   # |z| of an unbiased estimator (about 80 elements, strongly correlated: far in the tail)
BIASED = 10   # |z| the released estimator's bias reaches at least, somewhere, at the fast tier's replicates


def build(rule):
    torch.manual_seed(1)
    m = Tiny(params(D)) if rule == 'unimodal' else TinyPair(params(D, rule))
    with torch.no_grad():
        m._pz_params[1].copy_(torch.randn(1, D))  # a learnt, non-uniform prior scale
    return m


def item(m, R):
    """One data item, R times."""
    g = torch.Generator().manual_seed(5)
    xs = [torch.rand(1, X, generator=g).expand(R, X) for _ in m.vaes]
    return xs[0] if len(xs) == 1 else xs


def flat_grad(m, value):
    ps = [p for p in m.parameters() if p.requires_grad]
    g = torch.autograd.grad(value, ps, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if gi is None else gi).flatten() for p, gi in zip(ps, g, strict=True)])


# ---------------------------------------------------------------- the bound, written from densities alone

def posteriors(m, rule, xs):
    """[(subset, components)] of the bound's terms: MVAE's sub-sampled objective has three (both modalities,
    each alone), the others one."""
    if rule == 'unimodal':
        return [([0], [m.encode(xs)])]
    subsets = [[0, 1], [0], [1]] if rule == 'poe' else [[0, 1]]
    return [(s, m.posterior(xs, s).components) for s in subsets]


def log_mean_exp(t, dim):
    return torch.logsumexp(t, dim) - math.log(t.size(dim))


def bound_at(m, rule, xs, looser, draws):
    """Per item (B,): the bound's Monte Carlo estimate at the given samples, every density written with
    torch.distributions: log w = log p(z) + sum_{d in S} s_d log p(x_d | z) - log (1/C) sum_c q_c(z)."""
    data = [xs] if rule == 'unimodal' else xs
    total = 0
    for (subset, comps), zs in zip(posteriors(m, rule, xs), draws, strict=True):
        lws = []
        for z in zs:  # (K, B, D) from each component
            lq = torch.logsumexp(torch.stack([c.log_prob(z).sum(-1) for c in comps]), 0) - math.log(len(comps))
            lp = m.prior().log_prob(z).sum(-1)
            for d in subset:
                mean, scale = m.vaes[d].dec(z)
                lp = lp + dist.Laplace(mean, scale).log_prob(data[d]).sum(-1) * m.vaes[d].llik_scaling
            lws.append(lp - lq)
        lw = torch.stack(lws)  # (C, K, B)
        total = total + (log_mean_exp(lw, 1).mean(0) if looser else log_mean_exp(lw.flatten(0, 1), 0))
    return total


def score_function_gradient(m, rule, xs, looser, baseline, K):
    """The REINFORCE estimate of the bound's gradient, summed over the batch: with every sample drawn without
    gradient (K from each component), d/dparam of sum_b [ L_b + (L_b - baseline) log prod q(samples_b) ], L_b
    and the log densities with the parameters live and the samples held. Unbiased whatever the constant
    baseline (the score has mean zero)."""
    draws = [[c.sample(torch.Size([K])) for c in comps] for _, comps in posteriors(m, rule, xs)]
    value = bound_at(m, rule, xs, looser, draws)
    log_q = sum(c.log_prob(z).sum((0, -1)) for (_, comps), zs in zip(posteriors(m, rule, xs), draws, strict=True)
                for c, z in zip(comps, zs, strict=True))
    return flat_grad(m, (value + (value.detach() - baseline) * log_q).sum())


# ---------------------------------------------------------------- replicates

def means(m, fn, xs, G, R, K):
    """(G, P): the estimator fn(m, xs, K)'s gradient, averaged over R replicates, from G batches (seeds 0 .. G-1:
    every estimator of the models' objectives sees the same samples)."""
    out = []
    for g in range(G):
        torch.manual_seed(g)
        out.append(flat_grad(m, fn(m, xs, K)) / R)
    return torch.stack(out)


@lru_cache(maxsize=None)
def replicates(rule, looser, G=20, R=500, K=K):
    """{estimator: (G, P) means over R replicates}; `iwae`, `released` and `true` on the same samples, `score` on
    others."""
    m = build(rule)
    xs = item(m, R)
    out = {'iwae': means(m, O.model_objective(m, 'iwae', looser), xs, G, R, K),
           'released': means(m, O.model_objective(m, 'dreg', looser, true_dreg=False), xs, G, R, K),
           'true': means(m, O.model_objective(m, 'dreg', looser, true_dreg=True), xs, G, R, K)}
    torch.manual_seed(10 ** 6)
    with torch.no_grad():  # a constant baseline for the score-function estimate, from other samples
        baseline = bound_at(m, rule, xs, looser, [[c.sample(torch.Size([K])) for c in comps]
                                                  for _, comps in posteriors(m, rule, xs)]).mean()
    score = []
    for g in range(G):
        torch.manual_seed(G + g)
        score.append(score_function_gradient(m, rule, xs, looser, baseline, K) / R)
    return {**out, 'score': torch.stack(score)}


def z_scores(a, b, paired):
    """Per element: (mean a - mean b) / its standard error (paired: of the differences)."""
    G = a.size(0)
    if paired:
        se = (a - b).std(0) / math.sqrt(G)
    else:
        se = ((a.var(0) + b.var(0)) / G).sqrt()
    return (a.mean(0) - b.mean(0)) / (se ** 2 + 1e-18).sqrt()  # a floor far below any real error: rounding


pytestmark = pytest.mark.usefixtures('float64')  # tests/conftest.py

# estimator: (the estimate of the bound's gradient it is compared with, on the same samples, biased)
CHECKS = {'iwae': ('score', False, False), 'true': ('iwae', True, False), 'released': ('iwae', True, True)}


@pytest.mark.parametrize('estimator', list(CHECKS))
@pytest.mark.parametrize('looser', [False, True])
@pytest.mark.parametrize('rule', RULES)
def test_estimator_against_the_gradient_of_the_bound(rule, looser, estimator):
    """iwae (autograd through the samples) and true (DReG) within LIMIT standard errors of the gradient of the
    bound; released beyond BIASED of it."""
    est = replicates(rule, looser)
    reference, paired, biased = CHECKS[estimator]
    z = z_scores(est[estimator], est[reference], paired).abs().max()
    assert z > BIASED if biased else z < LIMIT, z
    if estimator == 'true':
        assert not torch.allclose(est['true'], est['iwae'])  # another estimator, not the IWAE gradient itself


def test_looser_changes_only_the_mixtures():
    """--looser has no effect on a one-component posterior (unimodal, poe): the same estimates."""
    for rule in ('unimodal', 'poe'):
        tight, looser = replicates(rule, False), replicates(rule, True)
        assert all(torch.allclose(tight[n], looser[n]) for n in ('iwae', 'released', 'true'))
    for rule in ('moe', 'mopoe'):
        assert not torch.allclose(replicates(rule, False)['iwae'], replicates(rule, True)['iwae'])


@pytest.mark.slow
@pytest.mark.parametrize('looser', [False, True])
@pytest.mark.parametrize('rule', ['moe', 'mopoe'])
def test_true_dreg_is_unbiased_at_ten_times_the_replicates(rule, looser):
    est = replicates(rule, looser, G=50, R=4000)
    assert z_scores(est['true'], est['iwae'], paired=True).abs().max() < LIMIT


def naive_mixture_dreg(m, xs, K, looser=False):
    """Tucker et al.'s estimator applied to the mixture as if it were one q (what `--dreg-estimator true`
    computed for moe and mopoe before it was made unbiased): log w on detached parameters, the samples'
    gradient multiplied by w~, nothing else. It leaves out the other components' scores."""
    lw, zss = O._m_lw_chunks(m, xs, K, True)
    with torch.no_grad():
        if looser:
            wt = torch.softmax(lw, 1)
            v = wt / lw.size(0)
        else:
            v = wt = torch.softmax(lw.flatten(0, 1), 0).view_as(lw)
    for zs, w in zip(zss[0], wt, strict=True):  # one chunk
        zs.register_hook(lambda grad, w=w: w.unsqueeze(-1) * grad)
    return (v * lw).sum()


@pytest.mark.slow
@pytest.mark.parametrize('looser', [False, True])
def test_the_check_sees_the_bias_of_a_naive_mixture_dreg(looser):
    """The check has the power to see the bias that a mixture's DReG had without the other components'
    scores (MoPoE: the product overlaps its experts, so those scores weigh)."""
    G, R = 50, 4000
    m = build('mopoe')
    naive = means(m, partial(naive_mixture_dreg, looser=looser), item(m, R), G, R, K)
    assert z_scores(naive, replicates('mopoe', looser, G, R)['iwae'], paired=True).abs().max() > LIMIT + 2


# ---------------------------------------------------------------- the measurement quoted in docs/baselines.md

def groups(m):
    """Masks of the parameter groups within the flat gradient (the parts' own priors are unused)."""
    named = [(n, p.numel()) for n, p in m.named_parameters() if p.requires_grad]
    tests = {'encoders': lambda n: 'enc.' in n, 'decoders': lambda n: 'dec.' in n,
             'prior': lambda n: n == '_pz_params.1'}
    return {g: torch.cat([torch.full((size,), test(n)) for n, size in named]) for g, test in tests.items()}


def report(G=50, R=4000, K=K):
    """For each rule, bound and parameter group where the estimators differ (the encoders; the learnt prior
    where it is an expert of the products; never the decoders): the relative error of each DReG estimator's
    expected gradient, |E[estimator] - E[iwae]| / |E[iwae]|, with the largest |z| in the group, and each
    estimator's variance per replicate (summed over the group's elements). `naive`: the mixtures' DReG without
    the other components' scores (naive_mixture_dreg)."""
    print(f'K = {K}, D = {D}, {G} x {R} replicates, float64. Error: norm of the mean difference from the IWAE '
          'gradient / norm of the mean IWAE gradient [largest |z|]. Variance: of one replicate, summed over the '
          'group')
    print('| rule | bound | group | released: error | true: error | naive: error | '
          'variance: iwae / released / true / naive |')
    print('|---|---|---|---|---|---|---|')
    for rule in RULES:
        for looser in (False, True) if rule in ('moe', 'mopoe') else (False,):
            est = dict(replicates(rule, looser, G, R, K))
            m = build(rule)
            if rule in ('moe', 'mopoe'):
                est['naive'] = means(m, partial(naive_mixture_dreg, looser=looser), item(m, R), G, R, K)
            names = [n for n in ('released', 'true', 'naive') if n in est]
            for group, mask in groups(m).items():
                part = {name: e[:, mask] for name, e in est.items()}
                if all(torch.allclose(part[n], part['iwae'], rtol=1e-9, atol=1e-14) for n in names):
                    continue  # the same gradient by construction (decoders; a prior outside q)
                ref = part['iwae'].mean(0).norm()
                cells = []
                for name in ('released', 'true', 'naive'):
                    if name not in part:
                        cells.append('')
                        continue
                    error = (part[name] - part['iwae']).mean(0).norm() / ref
                    z = z_scores(part[name], part['iwae'], paired=True).abs().max()
                    cells.append(f'{error.item():.1%} [{z.item():.1f}]')
                var = ' / '.join(f"{(part[n].var(0).sum() * R).item():.3g}" for n in ['iwae', *names])
                print(f"| {rule} | {'looser' if looser else 'tight'} | {group} | {' | '.join(cells)} | {var} |")


if __name__ == '__main__':
    torch.set_default_dtype(torch.float64)
    report(*map(int, sys.argv[1:4]))  # G R K
