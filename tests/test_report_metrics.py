"""Evaluation metrics (src/report/metrics.py, analytics.py) on cases with known answers."""
import argparse
import math
from types import SimpleNamespace

import pytest
import torch
import torch.distributions as dist
import torch.nn as nn

from src import objectives as O
from src.cli import build_parser
from src.models import MODELS
from src.models.multimodal import MultimodalVAE
from src.report import metrics as Mx
from src.report.analytics import latent_analytics


def model_args(**kw):
    return build_parser().parse_args([f'--{k.replace("_", "-")}={v}' for k, v in kw.items()])


# ---------------------------------------------------------------- coherence

class Mean:
    """Stand-in for a decoded distribution: only .mean is read."""

    def __init__(self, mean):
        self.mean = mean


class IdentityDecoders:
    """Joint prior N(0, I) in D = 10; every decoder returns z itself as its mean."""

    def __init__(self, M=2, D=10):
        self.pz = dist.Normal
        self.pz_params = (torch.zeros(1, D), torch.ones(1, D))
        self.vaes = [SimpleNamespace(decode=lambda zs: Mean(zs)) for _ in range(M)]


def test_joint_coherence_self_agreeing_classifier_is_100():
    clf = lambda x: x[:, :10]  # noqa: E731
    assert Mx.joint_coherence(IdentityDecoders(), [clf, clf], n=2500, batch_size=1000) == 100.0


def test_joint_coherence_disagreeing_classifiers_is_0():
    clf = lambda x: x[:, :10]  # noqa: E731
    shifted = lambda x: x[:, :10].roll(1, -1)  # always the next digit  # noqa: E731
    assert Mx.joint_coherence(IdentityDecoders(), [clf, shifted], n=1000, batch_size=1000) == 0.0


class NoGradCounter:
    """A classifier (the first 10 coordinates as logits) that counts the items it sees and checks that
    evaluation builds no autograd graph and passes one 2-d batch (items, features), as an image classifier
    needs its input laid out."""

    def __init__(self):
        self.items = 0

    def __call__(self, x):
        assert not torch.is_grad_enabled() and x.dim() == 2
        self.items += len(x)
        return x[:, :10]


@pytest.mark.parametrize('n, batch_size', [(300, 1000), (3000, 1000), (2345, 1000)])
def test_joint_coherence_draws_exactly_n_samples(n, batch_size):
    """Fewer samples than a batch, a multiple of the batch, and a remainder: n samples in all."""
    clfs = [NoGradCounter(), NoGradCounter()]
    assert Mx.joint_coherence(IdentityDecoders(), clfs, n=n, batch_size=batch_size) == 100.0
    assert [c.items for c in clfs] == [n, n]


def test_joint_coherence_one_classifier_per_modality():
    clf = lambda x: x[:, :10]  # noqa: E731
    with pytest.raises(ValueError):
        Mx.joint_coherence(IdentityDecoders(M=2), [clf, clf, clf], n=10, batch_size=10)


def test_joint_coherence_against_hand_count():
    """Classifier 2 always says 0: agreement = how often classifier 1 says 0, counted on the same draws,
    drawn by hand in one batch of n as the released script does (batches of 1000 draw the same samples)."""
    clf = lambda x: x[:, :10]  # noqa: E731
    zero = lambda x: torch.eye(10)[0].expand(len(x), 10)  # noqa: E731
    torch.manual_seed(3)
    got = Mx.joint_coherence(IdentityDecoders(), [clf, zero], n=1500, batch_size=1000)
    torch.manual_seed(3)
    z = dist.Normal(torch.zeros(1, 10), torch.ones(1, 10)).sample([1500]).squeeze(1)
    assert got == pytest.approx(100.0 * (z.argmax(-1) == 0).float().mean().item())
    assert 3 < got < 20  # about 10 %, a real count and not a constant


def test_joint_coherence_laplace_prior_batches_draw_the_released_single_batch():
    """The MNIST-SVHN prior is a Laplace: n draws in batches are the n draws of one batch (CPU)."""
    model = IdentityDecoders()
    model.pz, model.pz_params = dist.Laplace, (torch.zeros(1, 10), torch.full((1, 10), 0.7))
    first = lambda x: x[:, :10]  # noqa: E731
    coin = lambda x: x[:, :10] * torch.tensor([1.0] * 5 + [-1.0] * 5)  # noqa: E731  agrees when a max is in 0..4
    torch.manual_seed(11)
    got = Mx.joint_coherence(model, [first, coin], n=2345, batch_size=1000)
    torch.manual_seed(11)
    z = dist.Laplace(*model.pz_params).sample([2345]).squeeze(1)
    assert got == pytest.approx(100.0 * (first(z).argmax(-1) == coin(z).argmax(-1)).float().mean().item())
    assert 20 < got < 80


class PairedInputModel:
    """An MMVAE whose decoder d returns the paired input x_d whatever the encoder, K samples (K, B, ...)."""

    def __call__(self, xs, K):
        M = len(xs)
        return None, [[Mean(xs[d].expand(K, *xs[d].shape)) for d in range(M)] for _ in range(M)], None


class TwoDimensional(nn.Module):
    """A classifier that takes one 2-d batch only, as an image classifier takes its layout only."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        assert not torch.is_grad_enabled() and x.dim() == 2, 'one sample per item, no graph'
        return self.net(x)


def test_cross_coherence_with_perfect_decoders_is_the_classifiers_accuracy():
    torch.manual_seed(0)
    nets = [nn.Linear(6, 10), nn.Linear(8, 10)]
    x = [torch.randn(300, 6), torch.randn(300, 8)]
    y = nets[0](x[0]).argmax(-1)
    y[::3] = torch.randint(0, 10, (100,))  # some wrong: the accuracies are not 100 %
    own = [100 * (net(xd).argmax(-1) == y).double().mean().item() for net, xd in zip(nets, x, strict=True)]
    assert 20 < own[0] < 100 and own[1] < 40
    batches = [([x[0][i:i + 64], x[1][i:i + 64]], y[i:i + 64]) for i in range(0, 300, 64)]
    mat = Mx.cross_coherence(PairedInputModel(), batches, [TwoDimensional(net) for net in nets])
    for e in range(2):
        for d in range(2):
            assert mat[e][d] == pytest.approx(own[d])


def test_accuracy():
    logits = torch.tensor([[0., 1., 0.], [2., 0., 0.], [0., 0., 3.], [0., 5., 0.]])
    assert Mx.accuracy(logits, torch.tensor([1, 0, 0, 1])) == 0.75
    assert Mx.accuracy(torch.tensor([1, 0, 2, 2]), torch.tensor([1, 0, 0, 1])) == 0.5  # labels, not logits
    samples = torch.stack([logits, logits.roll(1, 0)])  # (samples, items, classes): classes are the last dim
    assert Mx.accuracy(samples, torch.tensor([[1, 0, 0, 1], [1, 1, 0, 2]])) == 7 / 8


# ---------------------------------------------------------------- latent accuracy

def identity_posterior(x):
    """q(z|x) = Laplace(x, 0.1): the latent is the input plus a little noise."""
    return dist.Laplace(x, torch.full_like(x, 0.1))


def test_latent_accuracy_separable_latents_near_100_and_label_free_latents_near_chance():
    g = torch.Generator().manual_seed(0)
    y_tr, y_te = torch.randint(0, 10, (2000,), generator=g), torch.randint(0, 10, (1000,), generator=g)
    onehot = lambda y: 3 * nn.functional.one_hot(y, 10).float()  # noqa: E731
    acc, clf = Mx.latent_accuracy(identity_posterior, onehot(y_tr), y_tr, onehot(y_te), y_te, 5, 256, seed=1, lr=0.05)
    assert acc > 97 and isinstance(clf, nn.Linear) and clf.in_features == 10
    noise_tr, noise_te = torch.randn(2000, 10, generator=g), torch.randn(1000, 10, generator=g)
    acc, _ = Mx.latent_accuracy(identity_posterior, noise_tr, y_tr, noise_te, y_te, 5, 256, seed=1, lr=0.05)
    assert acc < 20


def test_posterior_params_batched_without_graph():
    """The posterior's parameters over batches, uint8 images scaled to [0, 1], no autograd graph kept."""
    lin = nn.Linear(4, 2)
    x = torch.randint(0, 256, (7, 4), dtype=torch.uint8)
    family, loc, scale = Mx.posterior_params(lambda xb: dist.Normal(lin(xb), lin(xb).exp()), x, batch_size=3)
    with torch.no_grad():
        assert family is dist.Normal and torch.allclose(loc, lin(x / 255.0)) and torch.allclose(scale, loc.exp())
    assert not loc.requires_grad and not scale.requires_grad


@pytest.mark.parametrize('n_train, n_test', [(9, 4), (10, 3)])
def test_latent_accuracy_one_label_per_item(n_train, n_test):
    """A label count that differs from the item count on either side is an error."""
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match='one label per item'):
        Mx.latent_accuracy(identity_posterior, x, torch.zeros(n_train, dtype=torch.long), x[:4],
                           torch.zeros(n_test, dtype=torch.long), 1, 4, seed=0, lr=0.1)


def test_latent_accuracy_on_pairs_by_hand():
    """Items given as rows into the images (a pairing index) against a by-hand loop over the
    materialised pairs: a fresh permutation each epoch, the last partial batch, one Laplace
    sample per item and step, one Adam step per batch, one sample per test item."""
    g = torch.Generator().manual_seed(4)
    x_tr, x_te = torch.randn(6, 3, generator=g), torch.randn(4, 3, generator=g)
    rows_tr, rows_te = torch.tensor([0, 1, 2, 3, 4, 5, 2, 0, 5, 1, 3]), torch.tensor([3, 0, 1, 2, 0, 3, 1])
    y_tr, y_te = torch.randint(0, 10, (11,), generator=g), torch.randint(0, 10, (7,), generator=g)
    acc, clf = Mx.latent_accuracy(identity_posterior, x_tr, y_tr, x_te, y_te, epochs=2, batch_size=4, seed=9,
                                  lr=0.1, train_rows=rows_tr, test_rows=rows_te)
    torch.manual_seed(9)
    order = torch.Generator().manual_seed(9)
    lin = nn.Linear(3, 10)
    opt = torch.optim.Adam(lin.parameters(), lr=0.1)
    pairs = x_tr[rows_tr]  # the paired training set, one row per pair
    for _ in range(2):
        perm = torch.randperm(11, generator=order)
        for start in (0, 4, 8):  # batches of 4, 4 and 3
            idx = perm[start:start + 4]
            z = dist.Laplace(pairs[idx], 0.1).sample()
            opt.zero_grad()
            nn.functional.cross_entropy(lin(z), y_tr[idx]).backward()
            opt.step()
    with torch.no_grad():
        z = dist.Laplace(x_te[rows_te], 0.1).sample()
        hand = 100.0 * (lin(z).argmax(-1) == y_te).float().mean().item()
    assert torch.allclose(clf.weight, lin.weight) and torch.allclose(clf.bias, lin.bias)
    assert acc == pytest.approx(hand)


# ---------------------------------------------------------------- log-likelihoods

def test_iwae_K1_is_the_single_sample_bound():
    torch.manual_seed(0)
    vae = MODELS['mnist'](model_args(model='mnist')).eval()
    x = torch.rand(5, 1, 28, 28)
    torch.manual_seed(1)
    got = Mx.iwae_terms(vae, x, 1)
    torch.manual_seed(1)
    with torch.no_grad():
        loc, scale = vae.enc(x)
        z = dist.Laplace(loc, scale).rsample()  # the one sample, same draw
        mean, s = vae.dec(z)
        hand = (dist.Laplace(torch.zeros(20), torch.ones(20)).log_prob(z).sum(-1)  # prior scale softmax(0)*D = 1
                + dist.Laplace(mean, s).log_prob(x).flatten(1).sum(-1)
                - dist.Laplace(loc, scale).log_prob(z).sum(-1))
    assert got.shape == (5,) and not got.requires_grad  # an evaluation: no graph kept
    assert torch.allclose(got, hand, rtol=1e-5, atol=1e-3)
    torch.manual_seed(1)
    with torch.no_grad():
        assert O.iwae(vae, x, 1).item() == pytest.approx(got.sum().item(), rel=1e-5)


class LinearGaussian(nn.Module):
    """p(z) = N(0, I_D), p(x|z) = N(W z + b, s^2 I), W with orthogonal columns, and the
    encoder gives the exact posterior (diagonal because W^T W is): every importance
    weight equals p(x), so IWAE is exact for any K."""

    def __init__(self, X, D, seed, s=0.5):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        Q, _ = torch.linalg.qr(torch.randn(X, X, generator=g, dtype=torch.float64))
        self.W = Q[:, :D] * torch.tensor([2.0, 0.7, 1.3][:D])
        self.b = torch.randn(X, generator=g, dtype=torch.float64)
        self.s = s
        self.params = argparse.Namespace(latent_dim=D)
        self.pz, self.qz_x = dist.Normal, dist.Normal
        self.pz_params = (torch.zeros(1, D), torch.ones(1, D))
        self.llik_scaling = 1.0
        self.dummy = nn.Parameter(torch.zeros(1))

    def enc(self, x):
        prec = 1 + (self.W ** 2).sum(0) / self.s ** 2  # diagonal of I + W^T W / s^2
        return ((x - self.b) @ self.W / self.s ** 2) / prec, prec.rsqrt().expand(len(x), -1)

    def encode(self, x):
        return dist.Normal(*self.enc(x))

    def decode(self, zs):
        return dist.Normal(zs @ self.W.T + self.b, self.s)

    def log_px(self, x):
        cov = self.W @ self.W.T + self.s ** 2 * torch.eye(len(self.b))
        return dist.MultivariateNormal(self.b, cov).log_prob(x)


def test_iwae_exact_on_a_linear_gaussian_model(float64):
    vae = LinearGaussian(X=4, D=2, seed=0)
    x = torch.randn(6, 4)
    for K in (1, 7):
        assert torch.allclose(Mx.iwae_terms(vae, x, K), vae.log_px(x), atol=1e-9)


@pytest.mark.parametrize('rule', ['moe', 'poe', 'mopoe'])
def test_likelihood_terms_converge_to_the_exact_log_likelihoods(float64, rule):
    """Two linear-Gaussian modalities sharing z: q_d is exact for x_d alone, so with the experts as the
    single-modality posteriors (moe, mopoe) cross[d][d] is exact at any K; the other proposals are not,
    but converge at large K; the joint (scaling 1) against the stacked model."""
    torch.manual_seed(0)
    v0, v1 = LinearGaussian(3, 2, seed=1, s=1.5), LinearGaussian(4, 2, seed=2, s=1.5)  # broad posteriors
    v0.name, v1.name = 'a', 'b'
    mm = MultimodalVAE(dist.Normal, argparse.Namespace(latent_dim=2, learn_prior=False, joint_posterior=rule),
                       v0, v1).double()  # prior N(0, I): softmax(0) * D = 1
    z = torch.randn(5, 2)
    xs = [v.decode(z).sample() for v in (v0, v1)]
    exact = [v0.log_px(xs[0]), v1.log_px(xs[1])]
    W = torch.cat([v0.W, v1.W])
    cov = W @ W.T + 1.5 ** 2 * torch.eye(7)
    joint = dist.MultivariateNormal(torch.cat([v0.b, v1.b]), cov).log_prob(torch.cat(xs, 1))

    t = Mx.likelihood_terms(mm, xs, 3)
    for d in range(2):
        assert torch.allclose(t['cross'][d][d], exact[d], atol=1e-9) == (rule != 'poe')
    t = Mx.likelihood_terms(mm, xs, 20000)
    # the products count the prior again in each expert here (these experts are exact posteriors): poorer
    # proposals, slower to converge (measured at K = 20000: 0.13, 0.19, 0.06 off at most)
    tol = {'marginal': 0.01, 'cross': 0.25, 'joint': 0.02} if rule != 'poe' else \
        {'marginal': 0.2, 'cross': 0.3, 'joint': 0.1}
    for d in range(2):
        assert torch.allclose(t['marginal'][d], exact[d], atol=tol['marginal'])
        # q_e ignores x_d: a poorer proposal, slower to converge (the exact form is checked by hand below)
        assert torch.allclose(t['cross'][1 - d][d], exact[d], atol=tol['cross'])
    assert torch.allclose(t['joint'], joint, atol=tol['joint'])
    assert not torch.allclose(t['joint'], joint, atol=1e-9)  # an estimate indeed


def test_mmvae_joint_term_equals_m_iwae_and_hand_computed_terms():
    torch.manual_seed(0)
    model = MODELS['mnist_svhn'](model_args(model='mnist_svhn')).eval()
    xs = [torch.rand(3, 1, 28, 28), torch.rand(3, 3, 32, 32)]
    K = 4
    torch.manual_seed(5)
    t = Mx.likelihood_terms(model, xs, K)
    assert not t['joint'].requires_grad  # an evaluation: no graph kept
    torch.manual_seed(5)
    with torch.no_grad():
        assert O.m_iwae(model, xs, K).item() == pytest.approx(t['joint'].sum().item(), rel=1e-5)
    torch.manual_seed(5)
    with torch.no_grad():  # by hand, with the same samples: cross[1][0] and marginal[0]
        qs = [v.qz_x(*v.enc(x)) for v, x in zip(model.vaes, xs, strict=True)]
        zs = [q.rsample([K]) for q in qs]
        pz = model.pz(*model.pz_params)
        lpx0 = [model.vaes[0].decode(z).log_prob(xs[0]).flatten(2).sum(-1) for z in zs]
        lq = [[q.log_prob(z).sum(-1) for q in qs] for z in zs]
        cross10 = torch.logsumexp(pz.log_prob(zs[1]).sum(-1) + lpx0[1] - lq[1][1], 0) - math.log(K)
        lw = torch.cat([pz.log_prob(zs[e]).sum(-1) + lpx0[e] - (torch.logsumexp(torch.stack(lq[e]), 0) - math.log(2))
                        for e in range(2)])
        marg0 = torch.logsumexp(lw, 0) - math.log(2 * K)
    assert torch.allclose(t['cross'][1][0], cross10, rtol=1e-5)
    assert torch.allclose(t['marginal'][0], marg0, rtol=1e-5)
    assert model.vaes[0].llik_scaling == pytest.approx(3072 / 784)  # the joint is scaled, the others not


def test_spread_subset_spans_the_data():
    from src.data.tensors import spread_subset
    assert spread_subset(10, 0).tolist() == list(range(10)) and spread_subset(10, 30).tolist() == list(range(10))
    assert spread_subset(10, 4).tolist() == [0, 3, 6, 9]
    idx = spread_subset(1000, 300)
    assert len(idx.unique()) == 300 and idx[0] == 0 and idx[-1] == 999
    labels = torch.arange(1000) // 100  # class-ordered, as the paired sets
    assert torch.bincount(labels[idx]).tolist() == [30] * 10


def test_chunk_items_bounds_memory():
    model = MODELS['mnist_svhn'](model_args(model='mnist_svhn'))
    assert Mx.decoded_size(model.vaes[0]) == 784 and Mx.decoded_size(model.vaes[1]) == 3072
    S = Mx.chunk_items(model, 1000)
    assert S >= 1 and 1000 * S * (784 + 3072) <= Mx.LIKELIHOOD_BUDGET
    assert Mx.chunk_items(model, 10 ** 7) == 1


# ---------------------------------------------------------------- analytics

def laplace_kl(m1, b1, m2, b2):
    d = (m1 - m2).abs()
    return torch.log(b2 / b1) + d / b2 + (b1 / b2) * torch.exp(-d / b1) - 1


def test_latent_analytics_samples_and_kls_by_hand():
    torch.manual_seed(0)
    model = MODELS['mnist_svhn'](model_args(model='mnist_svhn', latent_dim=4))
    xs = [torch.rand(6, 1, 28, 28), torch.rand(6, 3, 32, 32)]
    zs, source, labels, kls = latent_analytics(model, xs, K=3)
    assert zs.shape == (3 * 3 * 6, 4) and list(source) == [0] * 18 + [1] * 18 + [2] * 18
    assert labels == ['prior p(z)', 'q(z|mnist)', 'q(z|svhn)']
    assert list(kls) == ['KL(q(z|mnist) || p(z))', 'KL(q(z|svhn) || p(z))', 'J(q(z|mnist), q(z|svhn))']
    with torch.no_grad():
        (m0, b0), (m1, b1) = model.vaes[0].enc(xs[0]), model.vaes[1].enc(xs[1])
        pm, pb = model.pz_params
    assert torch.allclose(torch.from_numpy(kls['KL(q(z|mnist) || p(z))']), laplace_kl(m0, b0, pm, pb), atol=1e-5)
    sym = 0.5 * (laplace_kl(m0, b0, m1, b1) + laplace_kl(m1, b1, m0, b0))
    assert torch.allclose(torch.from_numpy(kls['J(q(z|mnist), q(z|svhn))']), sym, atol=1e-4)
    assert (kls['KL(q(z|svhn) || p(z))'] >= 0).all()


def test_the_likelihood_proposals_name_the_prior_expert():
    from src.models.joint import joint_rule
    from src.report.calculate_likelihoods import estimators
    poe, mopoe = joint_rule('poe'), joint_rule('mopoe')
    assert estimators(poe, ['a', 'b'], 3)['joint'] == 'p(z) q(z|a) q(z|b) (normalised)'
    assert estimators(poe, ['a', 'b'], 3, 'unit')['joint'] == 'N(0, I) q(z|a) q(z|b) (normalised)'
    words = estimators(mopoe, ['a', 'b'], 3, 'unit')
    assert words['joint'] == '1/3 (q(z|a) + q(z|b) + q(z|a) q(z|b) N(0, I) (normalised))'  # the full product's
    assert words['cross'] == {'a': 'q(z|a)', 'b': 'q(z|b)'}  # a single expert: no product, no prior expert
