"""Training objectives (paper section 3; the released src/objectives.py). All are maximised;
the loss is minus the value. The formulas and notation: docs/reproduction.md.

Every objective has the released call form `objective(model, x, K)` and returns
a scalar summed over the batch. Unimodal: x is a tensor, model(x, K) returns
(q(z|x), p(x|z), zs). Multimodal: x is a list; the objectives ask the model for
the joint posterior q(z | x_S) of a subset S of its modalities (model.posterior:
a uniform mixture of C components, src/models/posteriors.py), draw K samples
from every component (model.rsample), and score them with model.prior() and
the decoders (_log_likelihood). Samples are (K, B, D). Which objectives a model trains
with is its joint rule's choice (src/models/joint/): the ObjectiveSets below.

Large batches are evaluated in chunks along the batch axis (memory budget as
in the released code); each chunk's log weights are concatenated before the
(per data point) reductions, so the chunked value equals the unchunked one.

dreg estimators (a quirk of the released code, kept). It registers the weighting hook
on a copy of the samples that the graph never uses, so it never fires: what it
trains with is sum_k w~_k grad(log w_k) with the encoder parameters entering
only through the samples, a biased gradient of the IWAE bound for K > 1. That is
the default here (`true_dreg=False`). With `true_dreg=True`: the doubly
reparameterised estimator of Tucker et al. (2018), unbiased; for a mixture with
stratified draws it keeps the terms that the identity does not cover
(_m_dreg_unbiased; docs/reproduction.md, "DReG with a mixture").
"""
import math
from dataclasses import dataclass, field
from functools import partial
from itertools import combinations
from math import prod

import torch
from torch.distributions import Laplace, Normal
from torch.distributions import kl_divergence as _torch_kl

from .mixed_precision import SumDiff

MEMORY_BUDGET = 1e8  # released heuristic: about 1e8 / (K * data size) items per chunk


def log_mean_exp(value, dim=0, keepdim=False):
    return torch.logsumexp(value, dim, keepdim=keepdim) - math.log(value.size(dim))


def kl_divergence(d1, d2, K=100):
    """Analytic KL where torch has it, else a K-sample Monte Carlo estimate."""
    try:
        return _torch_kl(d1, d2)
    except NotImplementedError:
        samples = d1.rsample(torch.Size([K]))
        return (d1.log_prob(samples) - d2.log_prob(samples)).mean(0)


def chunk_size(x, K):
    """Items per chunk so that K samples of a chunk fit the memory budget.

    With gradients (training) every chunk's graph lives until the backward pass,
    so chunking cannot bound the memory: the released rule is kept. Without
    (evaluation, e.g. K = 1000) each chunk is freed before the next, so the
    budget bounds what one chunk holds: a model with M modalities decodes every
    modality from each modality's K samples, M * K * (sum of data sizes)
    likelihood parameters per item (the released rule allows 12 times more
    for mnist_svhn); at least one item per chunk.
    """
    xs = x if isinstance(x, (list, tuple)) else [x]
    B = xs[0].size(0)
    if torch.is_grad_enabled():
        S = int(MEMORY_BUDGET * sum(1.0 / (K * prod(_x.shape[1:])) for _x in xs))
    else:
        S = max(1, int(MEMORY_BUDGET / (K * len(xs) * sum(prod(_x.shape[1:]) for _x in xs))))
    if S < 1:
        raise ValueError(f"K = {K} samples of one data point exceed the memory budget; use a smaller K")
    return min(B, S)


def _chunks(x, K):
    S = chunk_size(x, K)
    if isinstance(x, (list, tuple)):
        return list(zip(*[_x.split(S) for _x in x], strict=True))
    return list(x.split(S))


def detached(q):
    """The same distribution on detached parameters: DReG's log q without the score-function path. A
    mixture (src/models/posteriors.py) detaches each component."""
    if hasattr(q, 'components'):
        return type(q)([detached(c) for c in q.components])
    return type(q)(q.loc.detach(), q.scale.detach())


def _log_px_z(px_z, x, scaling):
    """Scaled log p(x|z) summed over data dimensions: (K, B).

    A Laplace or Normal likelihood whose scale is one number (the image
    models' fixed 0.75, broadcast by torch.distributions to the full shape) is
    written out, with its log taken once: torch's log_prob computes log(2 *
    scale) for every pixel of every sample, about 10% of a paper-config step.
    Same values up to float rounding.
    """
    lead = px_z.batch_shape[:2]
    if type(px_z) in (Laplace, Normal) and not any(px_z.scale.stride()):
        loc, n, laplace = px_z.loc, prod(px_z.batch_shape[2:]), type(px_z) is Laplace
        if loc.dtype != x.dtype:  # --amp: bfloat16 means; the sum in float32 (src/mixed_precision.py)
            total = SumDiff.apply(loc.reshape(*lead, -1), x.reshape(x.size(0), -1), 1 if laplace else 2)
        else:
            diff = x - loc
            total = (diff.abs() if laplace else diff.square()).reshape(*lead, -1).sum(-1)
        s = px_z.scale.reshape(-1)[0].to(total.dtype)
        if laplace:  # log p = -log(2 s) - |x - loc| / s
            lp = -total / s - n * torch.log(2 * s)
        else:  # log p = -log(s) - log(2 pi) / 2 - (x - loc)^2 / (2 s^2)
            lp = -total / (2 * s ** 2) - n * (torch.log(s) + 0.5 * math.log(2 * math.pi))
        return lp * scaling
    return px_z.log_prob(x).view(*lead, -1).sum(-1) * scaling


# ---------------------------------------------------------------- unimodal

def _elbo(model, x, K):
    qz_x, px_z, _ = model(x)  # one sample, as released
    lpx_z = _log_px_z(px_z, x, model.llik_scaling)
    kld = kl_divergence(qz_x, model.pz(*model.pz_params)).sum(-1)
    return (lpx_z - kld).mean(0).sum()


def elbo(model, x, K=1):
    return sum(_elbo(model, _x, K) for _x in _chunks(x, 1))


def _log_weights(model, x, K, detach_q):
    """log w_k = log p(z_k) + s log p(x|z_k) - log q(z_k|x): (K, B)."""
    qz_x, px_z, zs = model(x, K)
    if detach_q:  # dreg: the posterior density on detached encoder outputs
        qz_x = detached(qz_x)
    lpz = model.pz(*model.pz_params).log_prob(zs).sum(-1)
    lqz_x = qz_x.log_prob(zs).sum(-1)
    return lpz + _log_px_z(px_z, x, model.llik_scaling) - lqz_x, zs


def iwae(model, x, K):
    lw = torch.cat([_log_weights(model, _x, K, False)[0] for _x in _chunks(x, K)], 1)
    return log_mean_exp(lw).sum()


def dreg(model, x, K, true_dreg=False):
    lws, zss = zip(*[_log_weights(model, _x, K, True) for _x in _chunks(x, K)], strict=True)
    lw = torch.cat(lws, 1)
    with torch.no_grad():
        wt = (lw - torch.logsumexp(lw, 0, keepdim=True)).exp()  # w~ over k
    if true_dreg:
        _weight_sample_grads(zss, wt.split([z.size(1) for z in zss], 1))
    return (wt * lw).sum()


def _weight_sample_grads(zss, wts):
    """Multiply the gradient reaching each sample tensor z (K, B, D) by w~ (K, B)."""
    for zs, wt in zip(zss, wts, strict=True):
        if zs.requires_grad:
            zs.register_hook(lambda grad, wt=wt: wt.unsqueeze(-1) * grad)



# ---------------------------------------------------------------- multimodal: the released MMVAE's m_elbo

def _log_likelihood(model, x, zs, subset=None):
    """sum over the modalities d in `subset` (None: all) of s_d log p(x_d | z): (K, B) for zs (K, B, D)."""
    subset = range(len(model.vaes)) if subset is None else subset
    return sum(_log_px_z(model.vaes[d].decode(zs), x[d], model.vaes[d].llik_scaling) for d in subset)


def _m_elbo(model, x, K):
    """(1/M) sum_r [ -KL(q_r || p) + sum_d s_d log p(x_d|z_d) w_rd ], z_d ~ q_d one sample, with the
    importance weight w_rd = q_r(z_d) / q_d(z_d) for d != r (gradient only through q_r), as released.
    Defined for the mixture of experts, whose components are the modalities' experts q_m(z|x_m)."""
    qz_xs = model.experts(x)
    zss = [model.rsample(q, 1) for q in qz_xs]  # one sample, as released
    lpx_zs = [_log_likelihood(model, x, zs, [d]) for d, zs in enumerate(zss)]
    pz = model.prior()
    M = len(model.vaes)
    terms = []
    for r, qz_x in enumerate(qz_xs):
        terms.append(-kl_divergence(qz_x, pz).sum(-1))
        for d in range(M):
            lpx_z = lpx_zs[d]
            if d != r:  # importance weight q_r(z_d) / q_d(z_d), gradient only through q_r
                zs = zss[d].detach()
                lwt = (qz_x.log_prob(zs) - qz_xs[d].log_prob(zs).detach()).sum(-1)
                lpx_z = lwt.exp() * lpx_z
            terms.append(lpx_z)
    return (sum(terms) / M).mean(0).sum()


def m_elbo(model, x, K=1):
    return sum(_m_elbo(model, _x, K) for _x in _chunks(x, 1))


# ---------------------------------------------------------------- multimodal: any joint posterior

def _mixture_elbo(model, x, K, subset):
    """(1/C) sum_c [ sum_{d in S} s_d log p(x_d|z_c) - KL(q_c || p) ], z_c ~ q_c one sample: the ELBO of
    the mixture q(z|x_S) = (1/C) sum_c q_c with each component's sample (stratified) and its KL to the prior
    (the mixture's KL is at most this mean, as MoPoE trains; one component: the plain ELBO)."""
    q = model.posterior(x, subset)
    pz = model.prior()
    terms = [_log_likelihood(model, x, model.rsample(c, 1), subset) - kl_divergence(c, pz).sum(-1)
             for c in q.components]
    return (sum(terms) / len(terms)).mean(0).sum()


def mixture_elbo(model, x, K=1, subset=None):
    return sum(_mixture_elbo(model, _x, K, subset) for _x in _chunks(x, 1))


def _m_log_weights(model, x, K, detach_q, subset=None):
    """Log weights (C, K, B): group c holds K samples z ~ q_c of the joint posterior's components,
    log w = log p(z) + sum_{d in S} s_d log p(x_d|z) - log (1/C) sum_c' q_c'(z). With the mixture of
    experts (C = M components q_m(z|x_m)) these are the released MMVAE's log weights."""
    q = model.posterior(x, subset)
    zss = [model.rsample(c, K) for c in q.components]  # K per component: stratified, as released
    if detach_q:  # dreg: the mixture density on detached encoder outputs
        q = detached(q)
    pz = model.prior()
    lws = []
    for zs in zss:
        lpz = pz.log_prob(zs).sum(-1)
        lqz_x = q.log_prob(zs)
        lpx_z = _log_likelihood(model, x, zs, subset)
        lws.append(lpz + lpx_z - lqz_x)
    return torch.stack(lws), zss


def _m_lw_chunks(model, x, K, detach_q, subset=None):
    """Log weights of all chunks concatenated on the batch axis, and each chunk's samples."""
    lws, zss = zip(*[_m_log_weights(model, _x, K, detach_q, subset) for _x in _chunks(x, K)], strict=True)
    return torch.cat(lws, 2), zss


def m_iwae(model, x, K=1, subset=None):
    lw, _ = _m_lw_chunks(model, x, K, False, subset)
    return log_mean_exp(lw.flatten(0, 1)).sum()  # over all C*K samples


def m_iwae_looser(model, x, K=1, subset=None):
    lw, _ = _m_lw_chunks(model, x, K, False, subset)
    return log_mean_exp(lw, dim=1).mean(0).sum()  # over K per group, then mean over the C groups


def m_dreg(model, x, K=1, true_dreg=False, subset=None):
    if true_dreg:
        return _m_dreg_unbiased(model, x, K, subset, looser=False)
    lw, _ = _m_lw_chunks(model, x, K, True, subset)
    with torch.no_grad():
        flat = lw.flatten(0, 1)
        wt = (flat - torch.logsumexp(flat, 0, keepdim=True)).exp().view_as(lw)  # over C*K
    return (wt * lw).sum()


def m_dreg_looser(model, x, K=1, true_dreg=False, subset=None):
    if true_dreg:
        return _m_dreg_unbiased(model, x, K, subset, looser=True)
    lw, _ = _m_lw_chunks(model, x, K, True, subset)
    with torch.no_grad():
        wt = (lw - torch.logsumexp(lw, 1, keepdim=True)).exp()  # over K within each group
    return (wt * lw).mean(0).sum()


# ---------------------------------------------------------------- multimodal: DReG, unbiased for a mixture

@dataclass
class _DregParts:
    """One chunk's pieces of the doubly reparameterised estimator for q = (1/C) sum_c q_c, each (C, K, B) with
    group c the K samples z ~ q_c: log w on q's detached parameters, computed from `taps` (views of the samples
    whose gradient a hook re-weights); own = log q_c(z) - log q(z) on detached parameters (log r_c + log C);
    cross = log q(z) - r_c log q_c(z) at the detached samples with q's parameters live (its gradient: the other
    components' scores, sum_{c' != c} r_c' d log q_c'); r = r_c(z) and rest = 1 - r_c(z), without gradient."""
    lw: torch.Tensor
    taps: list
    own: torch.Tensor
    cross: torch.Tensor
    r: torch.Tensor
    rest: torch.Tensor


def _m_dreg_parts(model, x, K, subset):
    q = model.posterior(x, subset)
    zss = [model.rsample(c, K) for c in q.components]  # K per component: stratified, as m_iwae
    qd = detached(q)
    pz = model.prior()
    lws, taps, own, cross, r, rest = [], [], [], [], [], []
    for c, zs in enumerate(zss):
        zd = zs.detach()
        with torch.no_grad():
            resp = qd.responsibilities(zd)
        tap = zs.view_as(zs)
        lws.append(pz.log_prob(tap).sum(-1) + _log_likelihood(model, x, tap, subset) - qd.log_prob(tap))
        own.append(qd.components[c].log_prob(zs).sum(-1) - qd.log_prob(zs))
        cross.append(q.log_prob(zd) - resp[c] * q.components[c].log_prob(zd).sum(-1))
        taps.append(tap)
        r.append(resp[c])
        rest.append(torch.cat([resp[:c], resp[c + 1:]]).sum(0))  # 1 - r_c, without the rounding of 1 - r_c
    return _DregParts(torch.stack(lws), taps, *map(torch.stack, (own, cross, r, rest)))


def _m_dreg_unbiased(model, x, K, subset, looser):
    """The doubly reparameterised estimator (Tucker et al. 2018) of the gradient of m_iwae (or, looser,
    m_iwae_looser), unbiased for the stratified draws of a mixture (derivation: docs/reproduction.md, "DReG with
    a mixture"). With v_i = d(bound)/d(log w_i) and w~_i the normalised weight of sample i ~ q_c, the gradient is
    sum_i v_i [ d log p(x, z_i) (z_i held) + (1 - r_c + r_c w~_i) dlog w_i/dz dz_i/dparam
                - r_c dlog r_c(z_i)/dz dz_i/dparam - sum_{c' != c} r_c'(z_i) d log q_c'(z_i) (z_i held) ]:
    the identity E_{q_c}[f d log q_c] = E[df/dz dz/dparam] turns the score of the sample's own component into
    path terms; the other components' scores stay score-function terms. One component (the product of experts):
    r = 1, and this is Tucker et al.'s estimator, weight w~^2 on the path. Value: sum_i v_i log w_i."""
    parts = [_m_dreg_parts(model, _x, K, subset) for _x in _chunks(x, K)]
    lw = torch.cat([p.lw for p in parts], 2)
    C = lw.size(0)
    with torch.no_grad():
        if looser:  # the mean over components of each one's log-mean-exp over its K samples
            wt = (lw - torch.logsumexp(lw, 1, keepdim=True)).exp()
            v = wt / C
        else:  # the log-mean-exp over all C K samples
            flat = lw.flatten(0, 1)
            v = wt = (flat - torch.logsumexp(flat, 0, keepdim=True)).exp().view_as(lw)
    widths = [p.lw.size(2) for p in parts]
    correction = 0
    for p, v_p, wt_p in zip(parts, v.split(widths, 2), wt.split(widths, 2), strict=True):
        for tap, m in zip(p.taps, p.rest + p.r * wt_p, strict=True):
            if tap.requires_grad:
                tap.register_hook(lambda grad, m=m: m.unsqueeze(-1) * grad)
        correction = correction + (v_p * (p.r * p.own + p.cross)).sum()
    return (v * lw).sum() - (correction - correction.detach())  # the value: sum v log w


def subsampled(bound):
    """MVAE's sub-sampled objective (Wu & Goodman 2018, section 3): the bound on all modalities plus the
    bound on each single modality, each with the joint posterior of its own subset; with --random-subsets k,
    also the bounds of k subsets drawn at random (random_subsets)."""
    def objective(model, x, K=1, **kw):
        M = len(model.vaes)
        subsets = [None] + [[m] for m in range(M)] + random_subsets(M, getattr(model.params, 'random_subsets', 0))
        return sum(bound(model, x, K, subset=s, **kw) for s in subsets)
    objective.__name__ = f'subsampled_{bound.__name__}'
    return objective


def random_subsets(M, k):
    """k subsets of the M modalities, of sizes 2 .. M-1, as MVAE's sample_combinations (celeba19/train.py,
    --approx-m): each size uniform (with replacement); for a size drawn n times, n distinct subsets of that size,
    uniformly. From the global torch RNG, which every data-parallel rank keeps in step."""
    if not k:
        return []
    sizes = torch.randint(2, M, (k,)).tolist()
    out = []
    for size in sorted(set(sizes)):
        pool = list(combinations(range(M), size))
        out += [list(pool[i]) for i in torch.randperm(len(pool))[:sizes.count(size)].tolist()]
    return out


# ---------------------------------------------------------------- what a model trains with

@dataclass(frozen=True)
class ObjectiveSet:
    """A model's objectives: --obj name -> objective(model, x, K); the --looser variants (where the bound has
    one: --looser has no effect on the others); the per-epoch test loss (the tight bound at the training K,
    as in the released code)."""
    train: dict
    test: object
    looser: dict = field(default_factory=dict)


OBJECTIVES = {f.__name__: f for f in (elbo, iwae, dreg, m_elbo, mixture_elbo, m_iwae, m_iwae_looser, m_dreg,
                                      m_dreg_looser)}
UNIMODAL = ObjectiveSet({'elbo': elbo, 'iwae': iwae, 'dreg': dreg}, iwae)
OBJECTIVE_NAMES = ('elbo', 'iwae', 'dreg')  # --obj choices; each model's ObjectiveSet says which it has


def get_objective(objectives, obj, looser=False, true_dreg=False):
    """The training objective for --obj/--looser/--dreg-estimator from a model's ObjectiveSet, as
    f(model, x, K)."""
    fn = objectives.looser.get(obj, objectives.train[obj]) if looser else objectives.train[obj]
    return partial(fn, true_dreg=true_dreg) if obj == 'dreg' else fn


def model_objective(model, obj, looser=False, true_dreg=False):
    """The training objective --obj (--looser, --dreg-estimator) of a built model."""
    return get_objective(model.training_objectives(model.params), obj, looser, true_dreg)
