"""Objectives against independent hand computations (docs/reproduction.md, "Objectives").

The tiny models of tests/tiny.py with deterministic reparameterised samples
(z = loc + scale * eps_k, eps fixed per sample index k) let every test see the
same samples, make chunking exactly invariant, and make each objective a
deterministic function of the parameters: its gradient is checked against
central finite differences.
"""
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.distributions as dist

from src import objectives as O
from src.models.joint import JOINTS
from src.models.vae import softmax_scale
from tests.tiny import TinyFixed as Tiny
from tests.tiny import TinyPairFixed as TinyPair
from tests.tiny import X, params

D = 3  # latent dimension; the tiny models' data are X = 5 dimensional (tests/tiny.py)


pytestmark = pytest.mark.usefixtures('float64')  # hand computations in double (tests/conftest.py)


def laplace_logpdf(x, loc, scale):
    return -torch.log(2 * scale) - (x - loc).abs() / scale


def laplace_kl(loc, scale, p_loc, p_scale):
    """KL(Laplace(loc, scale) || Laplace(p_loc, p_scale)) per dimension, written out:
    log(d/b) + |a-c|/d + b/d exp(-|a-c|/b) - 1."""
    gap = (loc - p_loc).abs()
    return torch.log(p_scale / scale) + gap / p_scale + scale / p_scale * torch.exp(-gap / scale) - 1


@pytest.fixture
def uni():
    torch.manual_seed(0)
    m = Tiny(params())
    with torch.no_grad():
        m._pz_params[1].copy_(torch.randn(1, D))  # a non-trivial learned prior scale
    return m


@pytest.fixture
def multi():
    torch.manual_seed(1)
    m = TinyPair(params())
    with torch.no_grad():
        m._pz_params[1].copy_(torch.randn(1, D))
    return m


def data(B=4, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, X, generator=g)


def mdata(B=4):
    return [data(B, 2), data(B, 3)]


# ---------------------------------------------------------------- hand computations

def hand_lw_uni(m, x, K, detach_q=False):
    """(K, B) log weights, written out with the Laplace density formula."""
    loc, scale = m.enc(x)
    if detach_q:
        loc, scale = loc.detach(), scale.detach()
    zs = m.enc(x)[0] + m.enc(x)[1] * m.eps[:K]
    p_loc, p_scale = m._pz_params[0], softmax_scale(m._pz_params[1])
    mean, s = m.dec(zs)
    lpz = laplace_logpdf(zs, p_loc, p_scale).sum(-1)
    lpx = laplace_logpdf(x, mean, s).sum(-1) * m.llik_scaling
    lq = laplace_logpdf(zs, loc, scale).sum(-1)
    return lpz + lpx - lq, zs


def hand_lw_multi(m, xs, K, detach_q=False, zss=None):
    """(M, K, B) log weights of the mixture; zss may be given (leaf tensors for gradients)."""
    M = len(m.vaes)
    encs = [v.enc(x) for v, x in zip(m.vaes, xs, strict=True)]
    if zss is None:
        zss = [loc + scale * m.eps[:K] for loc, scale in encs]
    if detach_q:
        encs = [(loc.detach(), scale.detach()) for loc, scale in encs]
    p_loc, p_scale = m._pz_params[0], softmax_scale(m._pz_params[1])
    out = torch.zeros(M, K, xs[0].size(0))
    for r in range(M):
        z = zss[r]
        lq = torch.stack([laplace_logpdf(z, loc, scale).sum(-1) for loc, scale in encs])
        lq_mix = torch.log(torch.exp(lq).mean(0))
        lpx = 0
        for d, v in enumerate(m.vaes):
            mean, s = v.dec(z)
            lpx = lpx + laplace_logpdf(xs[d], mean, s).sum(-1) * v.llik_scaling
        out[r] = laplace_logpdf(z, p_loc, p_scale).sum(-1) + lpx - lq_mix
    return out, zss


def lme(t, dim=0):
    return torch.log(torch.exp(t).mean(dim))


# ---------------------------------------------------------------- values

def test_elbo_unimodal(uni):
    x = data()
    loc, scale = uni.enc(x)
    z = loc + scale * uni.eps[:1]
    mean, s = uni.dec(z)
    p_loc, p_scale = uni._pz_params[0], softmax_scale(uni._pz_params[1])
    kl = laplace_kl(loc, scale, p_loc, p_scale).sum(-1)
    expected = (laplace_logpdf(x, mean, s).sum(-1)[0] - kl).sum()
    assert torch.allclose(O.elbo(uni, x, 1), expected)


def test_iwae_and_dreg_values(uni):
    x, K = data(), 7
    lw, _ = hand_lw_uni(uni, x, K)
    assert torch.allclose(O.iwae(uni, x, K), (torch.logsumexp(lw, 0) - math.log(K)).sum())
    w = torch.softmax(lw, 0)
    for true in (False, True):
        assert torch.allclose(O.dreg(uni, x, K, true_dreg=true), (w * lw).sum())


def test_m_elbo_value(multi):
    xs = mdata()
    M = 2
    encs = [v.enc(x) for v, x in zip(multi.vaes, xs, strict=True)]
    zs = [loc + scale * multi.eps[:1] for loc, scale in encs]
    p_loc, p_scale = multi._pz_params[0], softmax_scale(multi._pz_params[1])
    total = 0
    for r in range(M):
        q_loc, q_scale = encs[r]
        total = total - dist.kl_divergence(dist.Laplace(q_loc, q_scale), dist.Laplace(p_loc, p_scale)).sum(-1)
        for d in range(M):
            mean, s = multi.vaes[d].dec(zs[d])
            lpx = laplace_logpdf(xs[d], mean, s).sum(-1) * multi.vaes[d].llik_scaling
            if d != r:  # importance weight q_r(z_d) / q_d(z_d)
                lpx = lpx * torch.exp((laplace_logpdf(zs[d], q_loc, q_scale)
                                       - laplace_logpdf(zs[d], *encs[d])).sum(-1))
            total = total + lpx
    assert torch.allclose(O.m_elbo(multi, xs, 1), (total / M).mean(0).sum())


def test_m_iwae_tight_and_looser_values(multi):
    xs, K = mdata(), 6
    lw, _ = hand_lw_multi(multi, xs, K)
    tight = lme(lw.reshape(-1, lw.size(-1))).sum()
    looser = lme(lw, 1).mean(0).sum()
    assert torch.allclose(O.m_iwae(multi, xs, K), tight)
    assert torch.allclose(O.m_iwae_looser(multi, xs, K), looser)
    assert O.m_iwae(multi, xs, K) >= O.m_iwae_looser(multi, xs, K)  # Jensen, same samples


def test_m_dreg_values(multi):
    xs, K = mdata(), 6
    lw, _ = hand_lw_multi(multi, xs, K)
    w_tight = torch.softmax(lw.reshape(-1, lw.size(-1)), 0).view_as(lw)
    w_loose = torch.softmax(lw, 1)
    assert torch.allclose(O.m_dreg(multi, xs, K), (w_tight * lw).sum())
    assert torch.allclose(O.m_dreg_looser(multi, xs, K), (w_loose * lw).mean(0).sum())


@pytest.mark.parametrize('name', ['elbo', 'iwae', 'dreg'])
def test_chunked_equals_unchunked_unimodal(uni, monkeypatch, name):
    x, K = data(B=9), 5
    ps = [p for p in uni.parameters() if p.requires_grad]
    full = O.OBJECTIVES[name](uni, x, K)
    g_full = torch.autograd.grad(full, ps, allow_unused=True)
    monkeypatch.setattr(O, 'MEMORY_BUDGET', 2 * K * X)  # 2 items per chunk -> 5 chunks
    assert O.chunk_size(x, K) == 2
    chunked = O.OBJECTIVES[name](uni, x, K)
    g_chunked = torch.autograd.grad(chunked, ps, allow_unused=True)
    assert torch.allclose(full, chunked)
    for a, b in zip(g_full, g_chunked, strict=True):
        assert (a is None and b is None) or torch.allclose(a, b)


@pytest.mark.parametrize('name', ['m_elbo', 'm_iwae', 'm_iwae_looser', 'm_dreg', 'm_dreg_looser'])
def test_chunked_equals_unchunked_multimodal(multi, monkeypatch, name):
    xs, K = mdata(B=7), 4
    full = O.OBJECTIVES[name](multi, xs, K)
    monkeypatch.setattr(O, 'MEMORY_BUDGET', 3 * K * X / 2)  # 3 items per chunk
    assert O.chunk_size(xs, K) == 3
    assert torch.allclose(full, O.OBJECTIVES[name](multi, xs, K))


@pytest.mark.parametrize('looser', [False, True])
@pytest.mark.parametrize('joint', ['moe', 'mopoe'])
def test_unbiased_mixture_dreg_chunked_equals_unchunked(monkeypatch, joint, looser):
    """--dreg-estimator true on a mixture: the weights and the hooks of every chunk from the log weights of all
    chunks, so the gradients are those of the batch in one chunk."""
    torch.manual_seed(1)
    m = TinyPair(params(D, joint))
    xs, K = mdata(B=7), 4
    ps = [p for p in m.parameters() if p.requires_grad]
    fn = O.model_objective(m, 'dreg', looser, true_dreg=True)
    full = grads(fn(m, xs, K), ps)
    monkeypatch.setattr(O, 'MEMORY_BUDGET', 3 * K * X / 2)  # 3 items per chunk
    assert O.chunk_size(xs, K) == 3
    for a, b in zip(full, grads(fn(m, xs, K), ps), strict=True):
        assert torch.allclose(a, b)


def test_chunk_size_matches_released_budget():
    x = [torch.zeros(500, 1, 28, 28), torch.zeros(500, 3, 32, 32)]
    assert O.chunk_size(x, 1000) == int(1e8 * (1 / (1000 * 784) + 1 / (1000 * 3072)))
    assert O.chunk_size(x, 30) == 500  # the training batch fits in one chunk
    with pytest.raises(ValueError, match='smaller K'):
        O.chunk_size(torch.zeros(1).expand(2, 10 ** 9), 1)  # a view: no 8 GB allocation


def test_iwae_with_one_sample_is_the_single_sample_bound(uni):
    x = data()
    lw, _ = hand_lw_uni(uni, x, 1)
    assert torch.allclose(O.iwae(uni, x, 1), lw.sum())


# ---------------------------------------------------------------- dreg gradients

def grads(loss, params):
    return [torch.zeros_like(p) if g is None else g
            for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True), strict=True)]


def split_params(model):
    """(encoder parameters, all other trainable parameters: decoder and prior)."""
    enc = list(model.enc.parameters())
    rest = [p for p in model.parameters() if p.requires_grad and not any(p is q for q in enc)]
    return enc, rest


@pytest.mark.parametrize('true_dreg', [False, True])
def test_dreg_gradients_unimodal(uni, true_dreg):
    x, K = data(), 8
    enc, rest = split_params(uni)
    # decoder and prior: the same gradient as iwae (sum_k w~ d log w)
    g_iwae = grads(O.iwae(uni, x, K), rest)
    g_dreg = grads(O.dreg(uni, x, K, true_dreg=true_dreg), rest)
    for a, b in zip(g_iwae, g_dreg, strict=True):
        assert torch.allclose(a, b)
    # encoder: the explicit estimator sum_k W_k dlogw/dz dz/dphi, W = w~ (released) or w~^2 (true)
    lw, zs = hand_lw_uni(uni, x, K, detach_q=True)
    z_leaf = zs.detach().requires_grad_()
    p_loc, p_scale = uni._pz_params[0], softmax_scale(uni._pz_params[1])
    loc, scale = [t.detach() for t in uni.enc(x)]
    mean, s = uni.dec(z_leaf)
    lw_leaf = (laplace_logpdf(z_leaf, p_loc, p_scale).sum(-1) + laplace_logpdf(x, mean, s).sum(-1)
               - laplace_logpdf(z_leaf, loc, scale).sum(-1))
    dlw_dz, = torch.autograd.grad(lw_leaf.sum(), z_leaf)
    w = torch.softmax(lw.detach(), 0)
    W = w ** 2 if true_dreg else w
    expected = torch.autograd.grad(zs, enc, grad_outputs=W.unsqueeze(-1) * dlw_dz)
    got = grads(O.dreg(uni, x, K, true_dreg=true_dreg), enc)
    for a, b in zip(expected, got, strict=True):
        assert torch.allclose(a, b)
    if true_dreg:  # and it differs from the released estimator
        released = grads(O.dreg(uni, x, K, true_dreg=False), enc)
        assert not all(torch.allclose(a, b) for a, b in zip(released, got, strict=True))


@pytest.mark.parametrize('looser', [False, True])
@pytest.mark.parametrize('true_dreg', [False, True])
def test_dreg_gradients_multimodal(multi, looser, true_dreg):
    """Decoders and prior: the IWAE gradient. Encoders, released: sum_k v dlogw/dz dz/dphi with v = d(bound)/d(log w)
    (w~, or w~ / M looser). True (unbiased for the mixture, docs/reproduction.md): the sample's own expert's score
    as path terms, weight v (1 - r + r w~) on dlogw/dz and -v r on dlog r/dz, r = r_m(z) the share of its
    own expert in q(z); the other expert's score -v r' dlog q_m'(z)/dphi at the sample held fixed."""
    xs, K, M = mdata(), 5, 2
    dreg_fn = O.m_dreg_looser if looser else O.m_dreg
    iwae_fn = O.m_iwae_looser if looser else O.m_iwae
    enc = [p for v in multi.vaes for p in v.enc.parameters()]
    rest = [p for p in multi.parameters() if p.requires_grad and not any(p is q for q in enc)]
    for a, b in zip(grads(iwae_fn(multi, xs, K), rest),
                    grads(dreg_fn(multi, xs, K, true_dreg=true_dreg), rest), strict=True):
        assert torch.allclose(a, b)
    lw, zss = hand_lw_multi(multi, xs, K, detach_q=True)
    leaves = [z.detach().requires_grad_() for z in zss]
    lw_leaf, _ = hand_lw_multi(multi, xs, K, detach_q=True, zss=leaves)
    dlw_dz = torch.autograd.grad(lw_leaf.sum(), leaves)
    lw = lw.detach()
    if looser:
        wt = torch.softmax(lw, 1)
        v = wt / M  # the looser value is a mean over groups
    else:
        v = wt = torch.softmax(lw.reshape(-1, lw.size(-1)), 0).view_as(lw)
    encs = [v_.enc(x) for v_, x in zip(multi.vaes, xs, strict=True)]
    dencs = [(loc.detach(), scale.detach()) for loc, scale in encs]
    got = grads(dreg_fn(multi, xs, K, true_dreg=true_dreg), enc)
    expected = [torch.zeros_like(p) for p in enc]
    for r in range(M):
        out = v[r].unsqueeze(-1) * dlw_dz[r]
        if true_dreg:  # r_m(z) at group r's samples, on detached encoder outputs
            lq = torch.stack([laplace_logpdf(leaves[r], *e).sum(-1) for e in dencs])
            resp = torch.softmax(lq, 0)
            dlogr_dz, = torch.autograd.grad((lq[r] - torch.logsumexp(lq, 0)).sum(), leaves[r])
            out = (1 - resp[r] + resp[r] * wt[r]).detach().unsqueeze(-1) * out \
                - (v[r] * resp[r].detach()).unsqueeze(-1) * dlogr_dz
            other = 1 - r  # the other expert's score at the held sample
            score = (v[r] * resp[other].detach() * laplace_logpdf(zss[r].detach(), *encs[other]).sum(-1)).sum()
            expected = [e - g for e, g in zip(expected, grads(score, enc), strict=True)]
        path = grads_through(zss[r], enc, out)
        expected = [e + g for e, g in zip(expected, path, strict=True)]
    for a, b in zip(expected, got, strict=True):
        assert torch.allclose(a, b)


def grads_through(z, params, grad_outputs):
    """The vector-Jacobian product grad_outputs . dz/dparams, zeros where z does not depend on a parameter."""
    g = torch.autograd.grad(z, params, grad_outputs=grad_outputs, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if gi is None else gi for p, gi in zip(params, g, strict=True)]


MULTIMODAL = [f for f in O.OBJECTIVES.values() if f.__name__.startswith(('m_', 'mixture'))]
SUBSAMPLED = list(JOINTS['poe'].objectives().train.values())


@pytest.mark.parametrize('fn', MULTIMODAL + SUBSAMPLED + [O.elbo], ids=lambda f: f.__name__)
def test_default_is_one_sample(uni, multi, fn):
    """The objectives that have a default K (the released m_elbo, m_iwae, m_dreg, ... and elbo) draw one
    sample by default: the same value as K = 1 (the tiny models' samples are fixed per sample index).
    The ELBOs draw one sample whatever K (as released); the others depend on K."""
    model, x = (uni, data()) if fn is O.elbo else (multi, mdata())
    assert fn(model, x).item() == pytest.approx(fn(model, x, 1).item(), rel=1e-12)
    if 'elbo' not in fn.__name__:
        assert fn(model, x, 1).item() != pytest.approx(fn(model, x, 3).item(), rel=1e-6)


@pytest.mark.parametrize('fn', [O.dreg, O.m_dreg, O.m_dreg_looser, SUBSAMPLED[2]], ids=lambda f: f.__name__)
def test_default_dreg_estimator_is_the_released_one(uni, multi, fn):
    """Without true_dreg, the encoder gradients are the released code's (weights w~, not w~^2)."""
    model, xs, K = (uni, data(), 5) if fn is O.dreg else (multi, mdata(), 5)
    enc = [p for v in getattr(model, 'vaes', [model]) for p in v.enc.parameters()]
    default, released, true = (grads(fn(model, xs, K, **kw), enc)
                               for kw in ({}, {'true_dreg': False}, {'true_dreg': True}))
    assert all(torch.equal(a, b) for a, b in zip(default, released, strict=True))
    assert not all(torch.allclose(a, b) for a, b in zip(default, true, strict=True))


def test_kl_without_a_closed_form_is_a_100_sample_estimate():
    """torch has no KL(Normal || StudentT): the released fallback, a Monte Carlo mean over 100 samples."""
    from scipy import integrate
    from scipy import stats as sps
    q, p = dist.Normal(torch.tensor([0.3]), torch.tensor([0.8])), dist.StudentT(torch.tensor([3.0]))
    torch.manual_seed(4)
    got = O.kl_divergence(q, p)
    torch.manual_seed(4)
    z = q.rsample(torch.Size([100]))
    assert torch.allclose(got, (q.log_prob(z) - p.log_prob(z)).mean(0))
    exact = integrate.quad(lambda v: sps.norm.pdf(v, 0.3, 0.8) * (sps.norm.logpdf(v, 0.3, 0.8) - sps.t.logpdf(v, 3)),
                           -np.inf, np.inf)[0]
    assert got.item() == pytest.approx(exact, abs=0.1)  # 100 samples: within a few standard errors


def test_objective_defaults_are_the_released_ones(multi):
    """Without --looser or --dreg-estimator true: the tight bound and the released DReG estimator."""
    moe = JOINTS['moe'].objectives()
    assert O.get_objective(moe, 'iwae') is O.m_iwae
    dreg = O.get_objective(moe, 'dreg')
    assert dreg.func is O.m_dreg and dreg.keywords == {'true_dreg': False}
    assert O.model_objective(multi, 'dreg').keywords == {'true_dreg': False}
    with pytest.raises(dataclasses.FrozenInstanceError):  # a model's objectives are not changed by accident
        moe.test = O.m_elbo


def test_objective_sets_of_the_joint_rules():
    """--obj and --looser choose these functions; the test bound is the tight one."""
    moe = JOINTS['moe'].objectives()
    assert O.get_objective(moe, 'elbo', looser=True) is O.m_elbo  # --looser: no effect on elbo
    assert O.get_objective(moe, 'iwae', looser=True) is O.m_iwae_looser
    assert O.get_objective(O.UNIMODAL, 'iwae', looser=True) is O.iwae
    assert moe.test is O.m_iwae and O.UNIMODAL.test is O.iwae
    assert JOINTS['mopoe'].objectives().train['elbo'] is O.mixture_elbo
    assert JOINTS['poe'].objectives().train['iwae'].__name__ == 'subsampled_m_iwae'
    assert O.get_objective(JOINTS['poe'].objectives(), 'iwae', looser=True).__name__ == 'subsampled_m_iwae'


# ---------------------------------------------------------------- gradients against finite differences

def groups(model):
    """The parameter groups a bug could scale or cut off on its own: each encoder, each decoder, the prior."""
    vaes = model.vaes
    return ([list(v.enc.parameters()) for v in vaes] + [list(v.dec.parameters()) for v in vaes]
            + [[model._pz_params[1]]])


def directional(f, params, direction, h=1e-6):
    """(f(theta + h v) - f(theta - h v)) / 2h: the derivative of f along v, by central differences."""
    def step(t):
        for p, v in zip(params, direction, strict=True):
            p.add_(t * v)
    with torch.no_grad():
        step(h)
        up = f().item()
        step(-2 * h)
        down = f().item()
        step(h)
    return (up - down) / (2 * h)


def check_gradient(model, value_fn, fd_fn=None):
    """Along a random direction in each parameter group: autograd's derivative of value_fn() equals the
    finite-difference derivative of fd_fn (the function whose gradient the objective's is; default: itself)."""
    g = torch.Generator().manual_seed(3)
    value = value_fn()
    for ps in groups(model):
        direction = [torch.randn(p.shape, generator=g) for p in ps]
        got = sum((gr * v).sum() for gr, v in zip(torch.autograd.grad(value, ps, retain_graph=True), direction,
                                                  strict=True)).item()
        want = directional(fd_fn or value_fn, ps, direction)
        assert got == pytest.approx(want, rel=1e-6, abs=1e-8), [p.shape for p in ps]


@pytest.mark.parametrize('name', ['elbo', 'iwae'])
def test_unimodal_gradients_are_those_of_the_value(uni, name):
    """The elbo and iwae gradients are the gradients of their values (no stop-gradient hidden anywhere)."""
    x = data()
    check_gradient(uni, lambda: O.OBJECTIVES[name](uni, x, 6))


@pytest.mark.parametrize('name', ['m_iwae', 'm_iwae_looser', 'mixture_elbo'])
def test_multimodal_gradients_are_those_of_the_value(multi, name):
    xs = mdata()
    check_gradient(multi, lambda: O.OBJECTIVES[name](multi, xs, 5))


def test_m_elbo_gradient(multi):
    """m_elbo's gradient is that of its value with the importance weights' samples z_d and denominators
    q_d(z_d) held where they are (as released): every term's gradient by finite differences of that function,
    written out."""
    xs, M = mdata(), 2
    p_loc = multi._pz_params[0]
    with torch.no_grad():  # what m_elbo holds fixed, at the point of the gradient
        held = []
        for v, x in zip(multi.vaes, xs, strict=True):
            loc, scale = v.enc(x)
            z = loc + scale * multi.eps[:1]
            held.append((z, laplace_logpdf(z, loc, scale).sum(-1)))

    def surrogate():
        encs = [v.enc(x) for v, x in zip(multi.vaes, xs, strict=True)]
        zs = [loc + scale * multi.eps[:1] for loc, scale in encs]
        p_scale = softmax_scale(multi._pz_params[1])
        total = 0
        for r, (q_loc, q_scale) in enumerate(encs):
            total = total - laplace_kl(q_loc, q_scale, p_loc, p_scale).sum(-1)
            for d, v in enumerate(multi.vaes):
                lpx = laplace_logpdf(xs[d], *v.dec(zs[d])).sum(-1) * v.llik_scaling
                if d != r:
                    z_held, lq_held = held[d]
                    lpx = lpx * torch.exp(laplace_logpdf(z_held, q_loc, q_scale).sum(-1) - lq_held)
                total = total + lpx
        return (total / M).mean(0).sum()
    assert torch.allclose(surrogate(), O.m_elbo(multi, xs, 1))
    check_gradient(multi, lambda: O.m_elbo(multi, xs, 1), surrogate)
