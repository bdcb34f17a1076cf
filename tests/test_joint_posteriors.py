"""The joint posteriors (src/models/posteriors.py, src/models/joint/) and the objectives of the product of
experts (MVAE) and the mixture of products (MoPoE), each against an independent computation: densities
multiplied on a grid, components built by hand, objective values and gradients written out on small
tensors with fixed noise."""
import math

import pytest
import torch
import torch.distributions as dist

from src import objectives as O
from src.models.joint import JOINTS
from src.models.posteriors import Mixture, product_of_experts
from src.models.vae import softmax_scale
from tests.tiny import TinyPairFixed, X, params

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

def pair(joint):
    torch.manual_seed(1)
    m = TinyPairFixed(params(D, joint))
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


def by_hand(m, x, detach=False):
    """Everything written out: the experts' (loc, scale), the prior's, the products by the precision
    formula, the log-likelihood of a modality, the normal KL."""
    enc = [v.enc(t) for v, t in zip(m.vaes, x, strict=True)]
    if detach:
        enc = [(loc.detach(), s.detach()) for loc, s in enc]
    p = (torch.zeros(1, D), softmax_scale(m._pz_params[1]))

    def product(*experts):
        prec = sum(s ** -2 for _, s in experts)
        return sum(loc * s ** -2 for loc, s in experts) / prec, prec ** -0.5

    def lpx(d, z):
        mean, s = m.vaes[d].dec(z)
        return laplace_logpdf(x[d], mean, s).sum(-1) * m.vaes[d].llik_scaling

    def kl(q):  # KL(N(a, b) || N(0, c)) per item, summed over dimensions
        (a, b), (_, c) = q, p
        return (torch.log(c / b) + (b ** 2 + a ** 2) / (2 * c ** 2) - 0.5).sum(-1)
    return enc, p, product, lpx, kl


def lme(t):
    return torch.log(torch.exp(t).mean(0))


def poe_value(m, x, K, bound):
    """MVAE's sub-sampled objective by hand: the bound on both modalities with q ~ p q_a q_b, plus the
    bound on each modality with q ~ p q_m."""
    enc, p, product, lpx, kl = by_hand(m, x)
    total = 0
    for subset in ([0, 1], [0], [1]):
        q = product(p, *[enc[d] for d in subset])
        if bound == 'elbo':
            z = q[0] + q[1] * m.eps[:1]
            total = total + (sum(lpx(d, z) for d in subset) - kl(q)).mean(0).sum()
        else:
            z = q[0] + q[1] * m.eps[:K]
            lw = normal_logpdf(z, *p).sum(-1) + sum(lpx(d, z) for d in subset) - normal_logpdf(z, *q).sum(-1)
            total = total + lme(lw).sum()
    return total


def mopoe_components(m, x):
    enc, p, product, lpx, kl = by_hand(m, x)
    return [enc[0], enc[1], product(p, enc[0], enc[1])], p, lpx, kl


def mopoe_value(m, x, K, bound):
    comps, p, lpx, kl = mopoe_components(m, x)
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


@pytest.mark.parametrize('joint, hand', [('poe', poe_value), ('mopoe', mopoe_value)])
@pytest.mark.parametrize('obj', ['elbo', 'iwae'])
def test_values_and_gradients_against_hand_computations(joint, hand, obj):
    m, x, K = pair(joint), xs(), 5
    objective = O.model_objective(m, obj)
    got, want = objective(m, x, K), hand(m, x, K, obj)
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
