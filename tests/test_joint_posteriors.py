"""The joint posteriors (src/models/posteriors.py, src/models/joint/) and the objectives of the product of
experts (MVAE) and the mixture of products (MoPoE), each against an independent computation: densities
multiplied on a grid, components built by hand, objective values and gradients written out on small
tensors with fixed noise."""
import argparse
import itertools
import json
import math

import pytest
import torch
import torch.distributions as dist

from main import main
from src import objectives as O
from src import train
from src.errors import UserError
from src.models.joint import JOINTS
from src.models.multimodal import MultimodalVAE
from src.models.posteriors import Mixture, product_of_experts
from src.models.vae import softmax_scale
from tests.tiny import FixedNoise, Tiny, TinyPairFixed, X, params
from tests.tiny import registered as tiny_registry

D = 2  # latent dimension; the data are X = 5 dimensional (tests/tiny.py)


pytestmark = pytest.mark.usefixtures('float64')  # hand computations in double (tests/conftest.py)


# ---------------------------------------------------------------- the product of Gaussian experts

def test_product_of_experts_is_the_normalised_product_of_densities_on_a_grid():
    """Per latent dimension: multiply the experts' densities on a fine grid, normalise numerically; the
    mean, the standard deviation and the log density must be those of product_of_experts."""
    locs = torch.tensor([[-1.0, 2.0], [0.5, 1.0], [0.0, -3.0]])       # 3 experts x D = 2
    scales = torch.tensor([[0.8, 1.5], [0.4, 2.0], [1.0, 0.7]])
    poe = product_of_experts([dist.Normal(loc, s) for loc, s in zip(locs, scales, strict=True)])
    grid = torch.linspace(-12, 12, 200001)
    step = grid[1] - grid[0]
    for d in range(D):
        density = torch.ones_like(grid)
        for loc, s in zip(locs[:, d], scales[:, d], strict=True):
            density = density * torch.exp(-0.5 * ((grid - loc) / s) ** 2) / (s * math.sqrt(2 * math.pi))
        density = density / (density.sum() * step)
        mean = (grid * density).sum() * step
        std = (((grid - mean) ** 2 * density).sum() * step).sqrt()
        assert poe.loc[d].item() == pytest.approx(mean.item(), abs=1e-6)
        assert poe.scale[d].item() == pytest.approx(std.item(), abs=1e-6)
        at = grid[::20000]
        assert torch.allclose(poe.log_prob(torch.stack([at, at], -1))[:, d], density[::20000].log(), atol=1e-6)


def test_product_of_experts_needs_gaussians_and_broadcasts_the_prior_expert():
    with pytest.raises(TypeError, match='Gaussian'):
        product_of_experts([dist.Laplace(torch.zeros(2), torch.ones(2))])
    prior = dist.Normal(torch.zeros(1, D), torch.ones(1, D))
    experts = [dist.Normal(torch.randn(4, D), torch.rand(4, D) + 0.1)]
    poe = product_of_experts([prior, *experts])
    assert poe.batch_shape == (4, D)
    # one expert with a unit prior: precision 1 + s^-2
    s = experts[0].scale
    assert torch.allclose(poe.scale, (1 + s ** -2) ** -0.5)
    assert torch.allclose(poe.loc, experts[0].loc * s ** -2 / (1 + s ** -2))


# ---------------------------------------------------------------- the rules' components

def normals(n, B=3):
    g = torch.Generator().manual_seed(n)
    return [dist.Normal(torch.randn(B, D, generator=g), torch.rand(B, D, generator=g) + 0.2) for _ in range(n)]


def same(a, b):
    return torch.allclose(a.loc, b.loc) and torch.allclose(a.scale, b.scale)


def test_mixture_of_products_components_are_every_subset():
    """MoPoE over 3 modalities: the 7 non-empty subsets, singles as their own expert, each product without
    the prior expert except the product of all three (as the authors' code); a proper subset gets none."""
    e = normals(3)
    prior = dist.Normal(torch.zeros(1, D), torch.full((1, D), 1.3))
    comps = JOINTS['mopoe'].components(e, prior, full=True)
    expected = [e[0], e[1], e[2], product_of_experts([e[0], e[1]]), product_of_experts([e[0], e[2]]),
                product_of_experts([e[1], e[2]]), product_of_experts([prior, *e])]
    assert len(comps) == 7 and all(same(a, b) for a, b in zip(comps, expected, strict=True))
    assert comps[0] is e[0]
    sub = JOINTS['mopoe'].components(e[:2], prior, full=False)
    assert len(sub) == 3 and same(sub[2], product_of_experts(e[:2]))
    assert JOINTS['moe'].components(e, prior, True) == e
    (poe,) = JOINTS['poe'].components(e[:1], prior, False)
    assert same(poe, product_of_experts([prior, e[0]]))  # MVAE: the prior expert always


@pytest.mark.parametrize('C', [2, 3])
def test_mixture_density_and_draws(C):
    """log q = log mean_c q_c (summed over dimensions); each draw is one component's, chosen uniformly."""
    means = (-10.0, 10.0, 30.0)[:C]
    comps = [dist.Normal(torch.full((4, D), m), torch.full((4, D), 0.1)) for m in means]
    q = Mixture(comps)
    z = 10 + 0.1 * torch.randn(5, 4, D)  # near the second component: no density underflows
    by_hand = torch.log(sum(c.log_prob(z).sum(-1).exp() for c in comps) / C)
    assert torch.allclose(q.log_prob(z), by_hand)
    torch.manual_seed(0)
    draws = q.rsample(torch.Size([3000]))
    assert draws.shape == (3000, 4, D)
    which = ((draws[..., 0] + 10) / 20).round()  # 0, 1 or 2: the component each draw came from
    assert torch.allclose((draws[..., 1] + 10) / 20, which, atol=0.05)  # both dimensions from the same one
    frac = torch.stack([(which == c).double().mean() for c in range(C)])
    assert torch.allclose(frac, torch.full((C,), 1 / C), atol=0.02)
    assert torch.allclose(q.mean, torch.full((4, D), sum(means) / C))


def test_joint_posteriors_described_in_words():
    """calculate_likelihoods' JSON names each proposal's components: every subset, the prior expert in the
    full product only, '(normalised)' on the products."""
    mopoe = JOINTS['mopoe']
    assert mopoe.describe(['a', 'b', 'c'], full=True) == [
        'q(z|a)', 'q(z|b)', 'q(z|c)', 'q(z|a) q(z|b) (normalised)', 'q(z|a) q(z|c) (normalised)',
        'q(z|b) q(z|c) (normalised)', 'q(z|a) q(z|b) q(z|c) p(z) (normalised)']
    assert mopoe.describe(['a', 'b'], full=False) == ['q(z|a)', 'q(z|b)', 'q(z|a) q(z|b) (normalised)']
    assert JOINTS['poe'].describe(['a', 'b'], full=True) == ['p(z) q(z|a) q(z|b) (normalised)']
    assert JOINTS['moe'].describe(['a', 'b'], full=True) == ['q(z|a)', 'q(z|b)']


def test_one_component_draws_as_its_component():
    """A one-component posterior (the product of experts) samples exactly as its component: the same draws,
    and the random stream left where the component leaves it (training and evaluation draws continue alike)."""
    c = dist.Normal(torch.zeros(4, D), torch.ones(4, D))
    torch.manual_seed(0)
    mine = [Mixture([c]).rsample(torch.Size([2])) for _ in range(2)]
    torch.manual_seed(0)
    theirs = [c.rsample(torch.Size([2])) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs, strict=True))
    assert torch.allclose(Mixture([c]).log_prob(mine[0]), c.log_prob(mine[0]).sum(-1))


# ---------------------------------------------------------------- objectives on a tiny model, fixed noise

def pair(joint, **flags):
    torch.manual_seed(1)
    m = TinyPairFixed(argparse.Namespace(**{**vars(params(D, joint)), **flags}))
    with torch.no_grad():
        m._pz_params[1].copy_(torch.randn(1, D))
    return m


def xs(B=4):
    g = torch.Generator().manual_seed(2)
    return [torch.rand(B, X, generator=g), torch.rand(B, X, generator=g)]


def normal_logpdf(z, loc, scale):
    return -torch.log(scale) - 0.5 * math.log(2 * math.pi) - 0.5 * ((z - loc) / scale) ** 2


def laplace_logpdf(x, loc, scale):
    return -torch.log(2 * scale) - (x - loc).abs() / scale


def by_hand(m, x, detach=False, weights=None):
    """Everything written out: the experts' (loc, scale), the prior's, the products by the precision
    formula, the log-likelihood of a modality (weighted by `weights`, default the model's), the normal KL."""
    enc = [v.enc(t) for v, t in zip(m.vaes, x, strict=True)]
    if detach:
        enc = [(loc.detach(), s.detach()) for loc, s in enc]
    p = (torch.zeros(1, D), softmax_scale(m._pz_params[1]))

    def product(*experts):
        prec = sum(s ** -2 for _, s in experts)
        return sum(loc * s ** -2 for loc, s in experts) / prec, prec ** -0.5

    def lpx(d, z):
        mean, s = m.vaes[d].dec(z)
        return laplace_logpdf(x[d], mean, s).sum(-1) * (m.vaes[d].llik_scaling if weights is None else weights[d])

    def kl(q):  # KL(N(a, b) || N(0, c)) per item, summed over dimensions
        (a, b), (_, c) = q, p
        return (torch.log(c / b) + (b ** 2 + a ** 2) / (2 * c ** 2) - 0.5).sum(-1)
    return enc, p, product, lpx, kl


def lme(t):
    return torch.log(torch.exp(t).mean(0))


UNIT = (torch.zeros(1, D, dtype=torch.float64), torch.ones(1, D, dtype=torch.float64))  # N(0, I)


def poe_value(m, x, K, bound, unit_expert=False, weights=None):
    """MVAE's sub-sampled objective by hand: the bound on both modalities with q ~ e q_a q_b, plus the
    bound on each modality with q ~ e q_m; the prior expert e is the prior p, or N(0, I)."""
    enc, p, product, lpx, kl = by_hand(m, x, weights=weights)
    e = UNIT if unit_expert else p
    total = 0
    for subset in ([0, 1], [0], [1]):
        q = product(e, *[enc[d] for d in subset])
        if bound == 'elbo':
            z = q[0] + q[1] * m.eps[:1]
            total = total + (sum(lpx(d, z) for d in subset) - kl(q)).mean(0).sum()
        else:
            z = q[0] + q[1] * m.eps[:K]
            lw = normal_logpdf(z, *p).sum(-1) + sum(lpx(d, z) for d in subset) - normal_logpdf(z, *q).sum(-1)
            total = total + lme(lw).sum()
    return total


def mopoe_components(m, x, unit_expert=False, weights=None):
    enc, p, product, lpx, kl = by_hand(m, x, weights=weights)
    return [enc[0], enc[1], product(UNIT if unit_expert else p, enc[0], enc[1])], p, lpx, kl


def mopoe_value(m, x, K, bound, unit_expert=False, weights=None):
    comps, p, lpx, kl = mopoe_components(m, x, unit_expert, weights)
    if bound == 'elbo':  # mean over the 3 components of their own ELBO terms
        return sum((lpx(0, z) + lpx(1, z) - kl(q)).mean(0).sum() / 3
                   for q in comps for z in [q[0] + q[1] * m.eps[:1]])
    lws = []
    for q in comps:
        z = q[0] + q[1] * m.eps[:K]
        lq = torch.log(sum(normal_logpdf(z, *c).sum(-1).exp() for c in comps) / 3)
        lws.append(normal_logpdf(z, *p).sum(-1) + lpx(0, z) + lpx(1, z) - lq)
    return lme(torch.cat(lws)).sum()


def grads(value, params):
    """Gradients of value, zeros for parameters it does not reach (the parts' own unused priors)."""
    g = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if gi is None else gi for p, gi in zip(params, g, strict=True)]


@pytest.mark.parametrize('expert', ['prior', 'unit'])
@pytest.mark.parametrize('joint, hand', [('poe', poe_value), ('mopoe', mopoe_value)])
@pytest.mark.parametrize('obj', ['elbo', 'iwae'])
def test_values_and_gradients_against_hand_computations(joint, hand, obj, expert):
    """Also with --prior-expert unit: the products' prior expert a fixed N(0, I) (the MVAE and MoPoE authors'),
    the prior p(z) still the model's (learnt): its gradient then comes from the KL and log p(z) only."""
    m, x, K = pair(joint, prior_expert=expert), xs(), 5
    objective = O.model_objective(m, obj)
    got, want = objective(m, x, K), hand(m, x, K, obj, unit_expert=expert == 'unit')
    assert torch.allclose(got, want)
    params = [p for p in m.parameters() if p.requires_grad]
    for a, b in zip(grads(got, params), grads(want, params), strict=True):
        assert torch.allclose(a, b)


def test_mopoe_looser_bound_and_test_bound():
    m, x, K = pair('mopoe'), xs(), 4
    comps, p, lpx, _ = mopoe_components(m, x)
    lws = []
    for q in comps:
        z = q[0] + q[1] * m.eps[:K]
        lq = torch.log(sum(normal_logpdf(z, *c).sum(-1).exp() for c in comps) / 3)
        lws.append(normal_logpdf(z, *p).sum(-1) + lpx(0, z) + lpx(1, z) - lq)
    looser = sum(lme(lw) for lw in lws).sum() / 3
    assert torch.allclose(O.model_objective(m, 'iwae', looser=True)(m, x, K), looser)
    assert m.training_objectives(m.params).test is O.m_iwae


@pytest.mark.parametrize('joint', ['poe', 'mopoe'])
@pytest.mark.parametrize('true_dreg', [False, True])
def test_dreg_values_and_gradients(joint, true_dreg):
    """DReG with log q on detached parameters: the gradient of every parameter is sum_k w~_k d(log w_k)
    (samples held fixed: decoders, the prior) plus the path through the samples (encoders, and the prior expert
    inside a product), summed over MVAE's subsets. Released: sum_k w~_k dlog w_k/dz dz/dparam. True: for a sample
    of component c, weight w~ (1 - r_c + r_c w~) on dlog w/dz and -w~ r_c on dlog r_c/dz, r_c(z) its component's
    share of q(z), plus the other components' scores -w~ sum_{c' != c} r_c' d log q_c'(z) at the sample held
    (one component, MVAE: w~^2, Tucker et al.). Not the IWAE gradient, for the prior too: it is also inside q."""
    m, x, K = pair(joint), xs(), 5
    params = [p for p in m.parameters() if p.requires_grad]
    dreg = O.model_objective(m, 'dreg', true_dreg=true_dreg)
    value = dreg(m, x, K)
    assert torch.allclose(value, hand_dreg_value(m, x, K, joint))
    for a, b in zip(grads(value, params), hand_dreg_grads(m, x, K, joint, true_dreg, params), strict=True):
        assert torch.allclose(a, b)
    iwae = O.model_objective(m, 'iwae')(m, x, K)
    decoders = [p for v in m.vaes for p in v.dec.parameters()]
    for a, b in zip(grads(value, decoders), grads(iwae, decoders), strict=True):
        assert torch.allclose(a, b)  # the decoders' gradient is the IWAE one


def dreg_groups(m, x, K, joint, zs_given=None):
    """[(log weights (C*K, B), samples (C*K, B, D) as functions of the encoders, live and detached components)]
    per subset of the objective, log q on detached parameters."""
    enc, p, product, lpx, _ = by_hand(m, x)
    denc, pd = by_hand(m, x, detach=True)[0], tuple(t.detach() for t in p)  # q's parameters, the prior expert's too
    subsets = ([0, 1], [0], [1]) if joint == 'poe' else ([0, 1],)
    out = []
    for i, subset in enumerate(subsets):
        if joint == 'poe':
            comps = [product(p, *[enc[d] for d in subset])]
            dcomps = [product(pd, *[denc[d] for d in subset])]
        else:
            comps, dcomps = [enc[0], enc[1], product(p, enc[0], enc[1])], \
                [denc[0], denc[1], product(pd, denc[0], denc[1])]
        zs = torch.cat([loc + s * m.eps[:K] for loc, s in comps]) if zs_given is None else zs_given[i]
        lq = torch.log(sum(normal_logpdf(zs, *c).sum(-1).exp() for c in dcomps) / len(dcomps))
        lw = normal_logpdf(zs, *p).sum(-1) + sum(lpx(d, zs) for d in subset) - lq
        out.append((lw, zs, comps, dcomps))
    return out


def hand_dreg_value(m, x, K, joint):
    return sum((torch.softmax(lw.detach(), 0) * lw).sum() for lw, *_ in dreg_groups(m, x, K, joint))


def hand_dreg_grads(m, x, K, joint, true_dreg, params):
    groups = dreg_groups(m, x, K, joint)
    leaves = [zs.detach().requires_grad_() for _, zs, *_ in groups]
    total = [torch.zeros_like(p) for p in params]
    for (lw, zs, comps, dcomps), (lw_leaf, leaf, *_) in zip(groups, dreg_groups(m, x, K, joint, leaves),
                                                            strict=True):
        w = torch.softmax(lw.detach(), 0)
        direct = grads((w * lw_leaf).sum(), params)
        dlw_dz = torch.autograd.grad(lw_leaf.sum(), leaf, retain_graph=True)[0]
        out = w.unsqueeze(-1) * dlw_dz
        if true_dreg:
            own = torch.arange(len(comps)).repeat_interleave(K)  # each sample's component
            lq = torch.stack([normal_logpdf(leaf, *c).sum(-1) for c in dcomps])  # (C, C*K, B)
            resp = torch.softmax(lq, 0).detach()
            r = resp[own, torch.arange(len(own))]
            log_r = lq[own, torch.arange(len(own))] - torch.logsumexp(lq, 0)
            dlogr_dz = torch.autograd.grad(log_r.sum(), leaf, retain_graph=True)[0]
            out = (1 - r + r * w).unsqueeze(-1) * out - (w * r).unsqueeze(-1) * dlogr_dz
            held = zs.detach()
            others = sum((w * resp[c] * (own != c).unsqueeze(-1) * normal_logpdf(held, *comp).sum(-1)).sum()
                         for c, comp in enumerate(comps))  # the other components' scores at the held samples
            direct = [d - g for d, g in zip(direct, grads(others, params), strict=True)]
        path = torch.autograd.grad(zs, params, grad_outputs=out, retain_graph=True, allow_unused=True)
        total = [t + d + (0 if g is None else g) for t, d, g in zip(total, direct, path, strict=True)]
    return total


# ---------------------------------------------------------------- the MVAE authors' settings, as flags

@pytest.mark.parametrize('joint, hand', [('poe', poe_value), ('mopoe', mopoe_value)])
def test_llik_weights_replace_every_modalitys_weight(joint, hand):
    """--llik-weights 0.5,3: MVAE's lambdas, each modality's log-likelihood weighted, the model's own weights
    (the tiny pair's 1.7 on the first) replaced."""
    m, x, K = pair(joint, llik_weights='0.5,3'), xs(), 5
    assert [v.llik_scaling for v in m.vaes] == [0.5, 3.0]
    for obj in ('elbo', 'iwae'):
        got = O.model_objective(m, obj)(m, x, K)
        assert torch.allclose(got, hand(m, x, K, obj, weights=[0.5, 3.0]))
        assert not torch.allclose(got, hand(m, x, K, obj, weights=[1.7, 1.0]))
    assert [v.llik_scaling for v in pair(joint).vaes] == [1.7, 1.0]  # without the flag: the model's


def test_llik_weights_need_one_weight_per_modality():
    with pytest.raises(UserError, match=r'3 weights for the 2 modalities .*tiny_a, tiny_b'):
        pair('poe', llik_weights='1,2,3')
    with pytest.raises(UserError, match='positive numbers separated by commas'):
        pair('poe', llik_weights='1,-2')


class Triple(MultimodalVAE):
    """Three tiny modalities (MVAE's random subsets need more than two)."""
    name, dataset = 'tiny_triple', 'tiny_triple'

    def __init__(self, params):
        super().__init__(dist.Laplace, params, *[Tiny(params).named(f'tiny_{c}') for c in 'abc'])


class TinyTriple(FixedNoise, Triple):
    pass


def triple(**flags):
    torch.manual_seed(3)
    m = TinyTriple(argparse.Namespace(**{**vars(params(D, 'poe')), **flags}))
    with torch.no_grad():
        m._pz_params[1].copy_(torch.randn(1, D))
    return m


def test_random_subsets_are_drawn_as_mvae_draws_them():
    """MVAE's sample_combinations (celeba19/train.py): each of the k subsets' size uniform over 2 .. M-1, the
    subsets of one size distinct and uniform. M = 4, k = 3: each pair turns up 3 / 2 / 6 times a draw on
    average, each triple 3 / 2 / 4 times, nothing else."""
    torch.manual_seed(0)
    n, counts = 4000, {}
    for _ in range(n):
        drawn = O.random_subsets(4, 3)
        assert len(drawn) == 3
        for size in (2, 3):
            same = [tuple(s) for s in drawn if len(s) == size]
            assert len(set(same)) == len(same)  # distinct within a size
        for s in drawn:
            counts[tuple(s)] = counts.get(tuple(s), 0) + 1
    assert set(counts) == {s for size in (2, 3) for s in itertools.combinations(range(4), size)}
    for s, c in counts.items():
        mean = 3 / 2 / (6 if len(s) == 2 else 4)  # expected count per draw
        assert c / n == pytest.approx(mean, abs=4 * math.sqrt(mean / n))
    assert O.random_subsets(5, 0) == []


def test_random_subsets_join_the_subsampled_objective():
    """poe with --random-subsets 2 on three modalities: the bounds of the full set, each modality alone and the two
    subsets drawn (the same draws under the same seed); a drawn pair's bound by hand, q ~ p q_a q_c."""
    m, K = triple(random_subsets=2), 4
    g = torch.Generator().manual_seed(2)
    x = [torch.rand(3, X, generator=g) for _ in range(3)]
    torch.manual_seed(7)
    got = O.model_objective(m, 'iwae')(m, x, K)
    torch.manual_seed(7)
    drawn = O.random_subsets(3, 2)
    terms = [None, [0], [1], [2], *drawn]
    assert torch.allclose(got, sum(O.m_iwae(m, x, K, subset=s) for s in terms))
    enc = [v.enc(t) for v, t in zip(m.vaes, x, strict=True)]
    p = (torch.zeros(1, D), softmax_scale(m._pz_params[1]))
    prec = p[1] ** -2 + enc[0][1] ** -2 + enc[2][1] ** -2
    q = ((enc[0][0] * enc[0][1] ** -2 + enc[2][0] * enc[2][1] ** -2) / prec, prec ** -0.5)
    z = q[0] + q[1] * m.eps[:K]
    lw = normal_logpdf(z, *p).sum(-1) - normal_logpdf(z, *q).sum(-1) + sum(
        laplace_logpdf(x[d], *m.vaes[d].dec(z)).sum(-1) for d in (0, 2))
    assert torch.allclose(O.m_iwae(m, x, K, subset=[0, 2]), lme(lw).sum())


def test_random_subsets_need_more_than_two_modalities_and_at_most_M():
    with pytest.raises(UserError, match='already has every subset'):
        pair('poe', random_subsets=1)
    with pytest.raises(UserError, match='at most 3 with 3 modalities'):
        triple(random_subsets=4)
    triple(random_subsets=3)


# ---------------------------------------------------------------- the flags through main.py

@pytest.fixture
def run_flags(monkeypatch, tmp_path):
    """main.py's flags of a short MVAE run of the tiny pair (registered; no figures: the data are not images)."""
    monkeypatch.setattr(train, 'save_epoch_figures', lambda *a, **k: [])
    with tiny_registry():
        yield ['--model', 'tiny_pair', '--joint-posterior', 'poe', '--obj', 'dreg', '--K', '2', '--latent-dim', '2',
               '--batch-size', '8', '--epochs', '1', '--max-steps', '2', '--no-analytics',
               '--data-dir', str(tmp_path / 'data')]


@pytest.mark.parametrize('argv, message', [
    (['--joint-posterior', 'moe', '--prior-expert', 'unit'], 'has no prior expert'),
    (['--model', 'tiny', '--joint-posterior', 'moe', '--llik-weights', '1'], '--llik-weights applies to multimodal'),
    (['--llik-weights', '1,2', '--llik_scaling', '2'], 'keep one'),
    (['--llik-weights', 'a,b'], 'positive numbers separated by commas'),
    (['--joint-posterior', 'mopoe', '--random-subsets', '1'], 'applies to --joint-posterior poe'),
    (['--random-subsets', '1'], 'already has every subset'),
])
def test_baseline_flags_refuse_what_they_cannot_do(run_flags, tmp_path, capsys, argv, message):
    run = tmp_path / 'run'
    assert main([*run_flags, *argv, '--run-dir', str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith('error:') and 'Traceback' not in err
    assert not run.exists()


def test_baseline_flags_are_saved_and_kept_by_resume_and_pre_trained(run_flags, tmp_path, capsys):
    run, new = tmp_path / 'run', tmp_path / 'new'
    assert main([*run_flags, '--prior-expert', 'unit', '--llik-weights', '2,0.5', '--run-dir', str(run)]) == 0
    flags = json.load(open(run / 'args.json'))['flags']
    assert (flags['prior_expert'], flags['llik_weights'], flags['random_subsets']) == ('unit', '2,0.5', 0)
    assert main(['--resume', str(run), '--llik-weights', '1,1']) == 2
    assert 'these flags differ' in capsys.readouterr().err
    assert main(['--pre-trained', str(run), '--max-steps', '1', '--run-dir', str(new)]) == 0
    flags = json.load(open(new / 'args.json'))['flags']
    assert (flags['prior_expert'], flags['llik_weights']) == ('unit', '2,0.5')
