"""Evaluation metrics (paper section 4) as plain functions of a model and tensors.

- Log-likelihood estimates: `iwae_terms` (unimodal) and `likelihood_terms`
  (multimodal, any joint posterior: joint, per-modality with the joint posterior
  as proposal, M x M cross terms).
- MNIST-SVHN: `latent_accuracy` (linear D -> 10 on reparameterised samples),
  `cross_coherence`, `joint_coherence`, `accuracy`; `chance_agreement` and
  `above_chance`: whether a coherence says more than its classifiers' predicted-class
  frequencies alone would give.

A model here is one of src/models: a unimodal VAE (vae.py) or a multimodal one
(multimodal.py: vaes, prior(), experts, posterior, unimodal_posterior, rsample,
and forward(x, K) -> (qz_xs, px_zs[e][d], zss)).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import stats

from src.data.tensors import to_model_input
from src.objectives import log_mean_exp
from src.rng import fork_rng

LIKELIHOOD_BUDGET = 2.5e7  # decoded elements per chunk (K * items * decoded size): ~100 MB per tensor


def accuracy(predicted, targets):
    """Fraction of items classified right: `predicted` holds class labels, or logits (their arg-max).
    Every analysis uses this one; the MNIST-SVHN reports show it in percent, as the paper's Table 2."""
    if predicted.dim() == targets.dim() + 1:
        predicted = predicted.argmax(-1)
    return (predicted == targets).float().mean().item()


def _log_px(px_z, x):
    """Unscaled log p(x|z) summed over data dimensions: (K, B)."""
    return px_z.log_prob(x).view(*px_z.batch_shape[:2], -1).sum(-1)


# ---------------------------------------------------------------- log-likelihoods

def decoded_size(vae):
    """Elements of one decoded sample (e.g. 784 for MNIST, 32 * V for caption logits)."""
    z = torch.zeros(1, vae.params.latent_dim, device=next(vae.parameters()).device)
    px = vae.decode(z)
    return max(t.numel() for t in vars(px).values() if torch.is_tensor(t))


def chunk_items(model, K, budget=LIKELIHOOD_BUDGET):
    """Items per chunk so that K samples of a chunk, decoded by every decoder, fit the budget."""
    return max(1, int(budget // (K * sum(decoded_size(v) for v in model.vaes))))


@torch.no_grad()
def iwae_terms(vae, x, K):
    """Per-item IWAE estimate of log p(x) (B,): log-mean-exp over K of
    log p(z_k) + s log p(x|z_k) - log q(z_k|x), with the model's likelihood scaling s."""
    qz_x = vae.qz_x(*vae.enc(x))
    zs = qz_x.rsample(torch.Size([K]))
    lw = (vae.pz(*vae.pz_params).log_prob(zs).sum(-1)
          + vae.llik_scaling * _log_px(vae.decode(zs), x)
          - qz_x.log_prob(zs).sum(-1))
    return log_mean_exp(lw)


@torch.no_grad()
def likelihood_terms(model, xs, K):
    """Per-item (B,) log-likelihood estimates of a multimodal model, each an importance-sampling estimate
    whose proposal is a posterior of the model's own joint rule, K samples from each of its components
    (stratified, as the released code samples its mixture of experts):

    joint:       log p(x_1..M), proposal q(z|x_1..M), log weights with the training likelihood
                 scalings (as released: m_iwae over all C*K samples);
    marginal[d]: log p(x_d), the same samples, unscaled p(x_d|z);
    cross[e][d]: log p(x_d), proposal q(z|x_e), unscaled.

    The joint posterior's components are drawn first, in order, so with the same seed `joint` equals
    objectives.m_iwae per item. A component that is also a single-modality posterior (each expert of a
    mixture of experts) is drawn and decoded once, for both uses, as in the released code.
    """
    M = len(model.vaes)
    experts = model.experts(xs)
    joint = model.posterior(experts=experts)
    singles = [model.posterior(subset=[e], experts=experts) for e in range(M)]
    lpz, lpx, drawn = {}, {}, {}  # by component: log p(z), unscaled log p(x_d|z) for every d, samples
    for c in joint.components + [c for q in singles for c in q.components]:
        if id(c) not in drawn:
            drawn[id(c)] = zs = model.rsample(c, K)
            lpz[id(c)] = model.prior().log_prob(zs).sum(-1)
            lpx[id(c)] = [_log_px(vae.decode(zs), x) for vae, x in zip(model.vaes, xs, strict=True)]

    def estimate(q, d=None):
        """log-mean-exp over all samples of q's components; d None: all modalities, scaled."""
        lws = []
        for c in q.components:
            lp = lpx[id(c)]
            like = sum(v.llik_scaling * lp[m] for m, v in enumerate(model.vaes)) if d is None else lp[d]
            lws.append(lpz[id(c)] + like - q.log_prob(drawn[id(c)]))
        return log_mean_exp(torch.cat(lws))

    return {'joint': estimate(joint), 'marginal': [estimate(joint, d) for d in range(M)],
            'cross': [[estimate(singles[e], d) for d in range(M)] for e in range(M)]}


# ---------------------------------------------------------------- latent accuracy

@torch.no_grad()
def posterior_params(posterior, x, batch_size=1024):
    """(family, loc, scale) of posterior(x) = q(z|x) for all rows of x (uint8 images are scaled to [0, 1]),
    batched."""
    qs = [posterior(to_model_input(xb)) for xb in x.split(batch_size)]
    return type(qs[0]), torch.cat([q.loc for q in qs]), torch.cat([q.scale for q in qs])


def latent_accuracy(posterior, x_train, y_train, x_test, y_test, epochs, batch_size, *, seed, lr,
                    train_rows=None, test_rows=None):
    """Test accuracy (%) of a linear classifier D -> 10 trained (Adam, cross-entropy) on
    reparameterised latent samples z ~ q(z|x) = posterior(x) (a modality's posterior under its model's
    joint rule, e.g. model.unimodal_posterior): a fresh sample per item per epoch, items in a
    fresh random order each epoch, the last partial batch included; tested on one sample per
    test item. Returns (accuracy, classifier).

    Item i is image x[rows[i]] with label y[i] (rows None: item i is x[i]); with a pairing
    index as rows, the items are the pairs, as the released analyse_ms.py iterates over the
    paired loader. The encoder is deterministic (eval mode), so its outputs are computed once
    per image and gathered per item: the same samples' distribution, far fewer encoder passes.
    """
    gen = torch.Generator().manual_seed(seed)
    dev = x_train.device
    train_rows = torch.arange(len(x_train), device=dev) if train_rows is None else train_rows
    test_rows = torch.arange(len(x_test), device=dev) if test_rows is None else test_rows
    if len(train_rows) != len(y_train) or len(test_rows) != len(y_test):
        raise ValueError('latent_accuracy: one label per item')
    (used_train, train_rows), (used_test, test_rows) = train_rows.unique(return_inverse=True), \
        test_rows.unique(return_inverse=True)  # encode only the images that some item uses
    (family, *p_train), (_, *p_test) = (posterior_params(posterior, x_train[used_train]),
                                        posterior_params(posterior, x_test[used_test]))
    with fork_rng(dev):
        torch.manual_seed(seed)
        clf = nn.Linear(p_train[0].size(-1), 10).to(dev)
        opt = torch.optim.Adam(clf.parameters(), lr=lr)
        for _ in range(epochs):
            for idx in torch.randperm(len(y_train), generator=gen).to(dev).split(batch_size):
                with torch.no_grad():
                    z = family(*[p[train_rows[idx]] for p in p_train]).rsample()
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(clf(z), y_train[idx]).backward()
                opt.step()
        with torch.no_grad():
            acc = 100.0 * accuracy(clf(family(*[p[test_rows] for p in p_test]).rsample()), y_test)
    return acc, clf


# ---------------------------------------------------------------- coherence

def _count(tally, key, labels, n_classes):
    """Add the class frequencies of `labels` to tally[key] (a tally: the counts behind a coherence)."""
    counts = torch.bincount(labels.flatten().cpu(), minlength=n_classes)
    tally[key] = tally[key] + counts if key in tally else counts


@torch.no_grad()
def cross_coherence(model, batches, classifiers, tally=None):
    """M x M matrix of percent: [e][d] = encode modality e (one sample), decode d
    (decoder mean), classify with classifiers[d], compare with the item's digit.
    Off-diagonal entries are the cross coherences; the diagonal classifies
    reconstructions. `batches` yields (xs list, digit labels). A dict `tally`
    receives the class frequencies of the predictions ((e, d)) and of the labels."""
    correct, total = None, 0
    for xs, y in batches:
        _, px_zs, _ = model(xs, 1)
        M = len(px_zs)
        if correct is None:
            correct = [[0] * M for _ in range(M)]
        for e in range(M):
            for d in range(M):
                logits = classifiers[d](px_zs[e][d].mean.squeeze(0))
                pred = logits.argmax(-1)
                correct[e][d] += (pred == y).sum().item()
                if tally is not None:
                    _count(tally, (e, d), pred, logits.shape[-1])
        if tally is not None:
            _count(tally, 'labels', y, logits.shape[-1])
        total += len(y)
    if not total:
        raise ValueError('cross_coherence: no test items')
    return [[100.0 * c / total for c in row] for row in correct]


@torch.no_grad()
def joint_coherence(model, classifiers, n, batch_size, tally=None):
    """Percent of n joint-prior samples whose decoded modalities (decoder means)
    all get the same digit from their classifiers. The released script draws the
    n samples in one batch; on the CPU, batches draw the very same samples (the
    generator's stream is consumed in order), with less memory. A dict `tally`
    receives each modality's predicted-class frequencies (keys 0..M-1)."""
    pz = model.pz(*model.pz_params)
    agree = 0
    for b in [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else []):
        zs = pz.rsample(torch.Size([b])).squeeze(1)  # prior batch shape (1, D) -> (b, D)
        logits = [clf(vae.decode(zs).mean) for vae, clf in zip(model.vaes, classifiers, strict=True)]
        preds = torch.stack([lg.argmax(-1) for lg in logits])
        agree += (preds == preds[0]).all(0).sum().item()
        for m, lg in enumerate(logits if tally is not None else ()):
            _count(tally, m, preds[m], lg.shape[-1])
    return 100.0 * agree / n


def chance_agreement(*frequencies):
    """Percent agreement of predictions independent of each other (or of the labels), given each one's class
    frequencies: sum_c prod_m p_m(c). Classifiers that predict one class each agree 100 % or 0 % by chance
    alone; against balanced labels any predictions agree 1 / (number of classes) by chance."""
    p = torch.stack([f.double() / f.sum() for f in frequencies]).prod(0).sum().item()
    return 100.0 * min(max(p, 0.0), 1.0)


def above_chance(percent, n, chance):
    """The p-value of a one-sided binomial test: is an agreement of `percent` over n items above `chance`
    (percent)? The chance level is taken as known (it comes from the same n predictions: a close
    approximation at the thousands of items a coherence is scored on)."""
    return float(stats.binomtest(round(percent * n / 100), n, chance / 100, alternative='greater').pvalue)
