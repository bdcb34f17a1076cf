"""Evaluation metrics (paper section 4) as plain functions of a model and tensors.

- Log-likelihood estimates: `iwae_terms` (unimodal) and `mmvae_likelihood_terms`
  (joint, per-modality with the whole mixture as proposal, M x M cross terms).
- MNIST-SVHN: `latent_accuracy` (linear D -> 10 on reparameterised samples),
  `cross_coherence`, `joint_coherence`, `accuracy`.

A model here is anything with the attributes of src/models/vae.py: a unimodal
VAE has enc, qz_x, pz, pz_params, decode, llik_scaling; an MMVAE has vaes, pz,
pz_params and forward(x, K) -> (qz_xs, px_zs[e][d], zss).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

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
def mmvae_likelihood_terms(model, xs, K):
    """Per-item (B,) log-likelihood estimates of a mixture-of-experts MMVAE:

    joint:       log p(x_1..M), m_iwae: all M*K samples of the mixture, log
                 weights with the training likelihood scalings (as released);
    marginal[d]: log p(x_d), the same M*K mixture samples, unscaled p(x_d|z);
    cross[e][d]: log p(x_d) from K samples of q_e alone (proposal q_e), unscaled.

    The samples are drawn in the order of MMVAE.forward (q_0, then q_1, ...), so
    with the same seed `joint` equals objectives.m_iwae per item. Each decoded
    tensor is reduced to (K, B) at once, so memory holds one decoding at a time.
    """
    M = len(model.vaes)
    pz = model.pz(*model.pz_params)
    qs = [vae.qz_x(*vae.enc(x)) for vae, x in zip(model.vaes, xs, strict=True)]
    zss = [q.rsample(torch.Size([K])) for q in qs]
    lpz = [pz.log_prob(zs).sum(-1) for zs in zss]
    lq = [[q.log_prob(zs).sum(-1) for q in qs] for zs in zss]  # lq[e][m] = log q_m(z_e)
    lq_mix = [log_mean_exp(torch.stack(row)) for row in lq]  # log (1/M) sum_m q_m(z_e)
    # lpx[e][d]: unscaled log p(x_d | z_e)
    lpx = [[_log_px(vae.decode(zs), x) for vae, x in zip(model.vaes, xs, strict=True)] for zs in zss]
    scale = [vae.llik_scaling for vae in model.vaes]
    joint = log_mean_exp(torch.cat([lpz[e] + sum(s * lp for s, lp in zip(scale, lpx[e], strict=True)) - lq_mix[e]
                                    for e in range(M)]))
    marginal = [log_mean_exp(torch.cat([lpz[e] + lpx[e][d] - lq_mix[e] for e in range(M)]))
                for d in range(M)]
    cross = [[log_mean_exp(lpz[e] + lpx[e][d] - lq[e][e]) for d in range(M)] for e in range(M)]
    return {'joint': joint, 'marginal': marginal, 'cross': cross}


# ---------------------------------------------------------------- latent accuracy

@torch.no_grad()
def posterior_params(vae, x, batch_size=1024):
    """Encoder outputs of all rows of x (uint8 images are scaled to [0, 1]), batched: the parameters of q(z|x)."""
    outs = [vae.enc(to_model_input(xb)) for xb in x.split(batch_size)]
    return [torch.cat(p) for p in zip(*outs, strict=True)]


def latent_accuracy(vae, x_train, y_train, x_test, y_test, epochs, batch_size=256, seed=0, lr=1e-3,
                    train_rows=None, test_rows=None):
    """Test accuracy (%) of a linear classifier D -> 10 trained (Adam, cross-entropy) on
    reparameterised latent samples z ~ q(z|x): a fresh sample per item per epoch, items in a
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
    p_train, p_test = posterior_params(vae, x_train[used_train]), posterior_params(vae, x_test[used_test])
    with fork_rng(dev):
        torch.manual_seed(seed)
        clf = nn.Linear(p_train[0].size(-1), 10).to(dev)
        opt = torch.optim.Adam(clf.parameters(), lr=lr)
        for _ in range(epochs):
            for idx in torch.randperm(len(y_train), generator=gen).to(dev).split(batch_size):
                with torch.no_grad():
                    z = vae.qz_x(*[p[train_rows[idx]] for p in p_train]).rsample()
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(clf(z), y_train[idx]).backward()
                opt.step()
        with torch.no_grad():
            acc = 100.0 * accuracy(clf(vae.qz_x(*[p[test_rows] for p in p_test]).rsample()), y_test)
    return acc, clf


# ---------------------------------------------------------------- coherence

@torch.no_grad()
def cross_coherence(model, batches, classifiers):
    """M x M matrix of percent: [e][d] = encode modality e (one sample), decode d
    (decoder mean), classify with classifiers[d], compare with the item's digit.
    Off-diagonal entries are the cross coherences; the diagonal classifies
    reconstructions. `batches` yields (xs list, digit labels)."""
    correct, total = None, 0
    for xs, y in batches:
        _, px_zs, _ = model(xs, 1)
        M = len(px_zs)
        if correct is None:
            correct = [[0] * M for _ in range(M)]
        for e in range(M):
            for d in range(M):
                pred = classifiers[d](px_zs[e][d].mean.squeeze(0)).argmax(-1)
                correct[e][d] += (pred == y).sum().item()
        total += len(y)
    if not total:
        raise ValueError('cross_coherence: no test items')
    return [[100.0 * c / total for c in row] for row in correct]


@torch.no_grad()
def joint_coherence(model, classifiers, n=10000, batch_size=1000):
    """Percent of n joint-prior samples whose decoded modalities (decoder means)
    all get the same digit from their classifiers. The released script draws the
    n samples in one batch; on the CPU, batches draw the very same samples (the
    generator's stream is consumed in order), with less memory."""
    pz = model.pz(*model.pz_params)
    agree = 0
    for b in [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else []):
        zs = pz.rsample(torch.Size([b])).squeeze(1)  # prior batch shape (1, D) -> (b, D)
        preds = torch.stack([clf(vae.decode(zs).mean).argmax(-1)
                             for vae, clf in zip(model.vaes, classifiers, strict=True)])
        agree += (preds == preds[0]).all(0).sum().item()
    return 100.0 * agree / n
