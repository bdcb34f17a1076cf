"""Tiny models and data for the fast tier: the by-hand networks (Enc, Dec: one linear layer each way), a
modality of 5-d vectors made of them, a pair of two of them, their datasets, and fixed-noise variants (every
posterior sample z = loc + scale * eps_k, eps drawn once per model: the objectives become deterministic
functions of the parameters, and hand computations see the same samples).

`registered()` adds the models ('tiny', 'tiny_pair', 'tiny_fixed', 'tiny_pair_fixed') and their datasets to
the registries for a test module, so that main.py and src/train.py run them end to end in a fraction of a
second."""
import argparse
import contextlib

import torch
import torch.distributions as dist
import torch.nn as nn

from src.data import DATASETS, TensorData
from src.models import MODELS
from src.models.multimodal import MultimodalVAE
from src.models.vae import VAE

X = 5          # data dimension
N_TRAIN = 32   # items of the tiny datasets (the test split: 12)


def params(latent_dim=3, joint='moe'):
    """The flags a tiny model is built from (a learnt prior scale)."""
    return argparse.Namespace(latent_dim=latent_dim, learn_prior=True, num_hidden_layers=1, llik_scaling=0.,
                              joint_posterior=joint)


class Enc(nn.Module):
    """x (..., X) -> (loc, scale = softplus + 0.5), each (..., D)."""

    def __init__(self, X, D):
        super().__init__()
        self.D = D
        self.lin = nn.Linear(X, 2 * D)

    def forward(self, x):
        h = self.lin(x)
        return h[..., :self.D], nn.functional.softplus(h[..., self.D:]) + 0.5


class Dec(nn.Module):
    """z (..., D) -> (mean = sigmoid of a linear map (..., X), scale 0.75 in z's dtype)."""

    def __init__(self, X, D):
        super().__init__()
        self.lin = nn.Linear(D, X)

    def forward(self, z):
        return torch.sigmoid(self.lin(z)), torch.tensor(0.75, dtype=z.dtype)


class Tiny(VAE):
    """Laplace prior, posterior and likelihood (as the MNIST and SVHN modalities)."""
    name, dataset, data_size, modality = 'tiny', 'tiny', (X,), 'feature'

    def __init__(self, params):
        super().__init__(dist.Laplace, dist.Laplace, dist.Laplace, Enc(X, params.latent_dim),
                         Dec(X, params.latent_dim), params)


class TinyPair(MultimodalVAE):
    """Two tiny modalities; the first one's log-likelihood scaled by 1.7 (a scaling that a term could lose)."""
    name, dataset = 'tiny_pair', 'tiny_pair'

    def __init__(self, params):
        super().__init__(dist.Laplace, params, Tiny(params).named('tiny_a'), Tiny(params).named('tiny_b'))
        self.scale_first_likelihood(1.7)


class FixedNoise:
    """Mixin: posterior samples z = loc + scale * eps[:K], eps (64, 1, D) drawn at construction (a buffer)."""

    def __init__(self, params):
        super().__init__(params)
        self.register_buffer('eps', torch.randn(64, 1, params.latent_dim))

    def rsample(self, q, K):
        return q.loc + q.scale * self.eps[:K]


class TinyFixed(FixedNoise, Tiny):
    name, dataset = 'tiny_fixed', 'tiny'


class TinyPairFixed(FixedNoise, TinyPair):
    name, dataset = 'tiny_pair_fixed', 'tiny_pair'


def tiny_data(split):
    """(a, b, label): b is a fixed nonlinear function of a, so that the two modalities share information."""
    g = torch.Generator().manual_seed(0 if split == 'train' else 1)
    n = N_TRAIN if split == 'train' else 12
    a = torch.rand(n, X, generator=g)
    return a, torch.sigmoid(3 * (a.flip(-1) - 0.5)), torch.arange(n) % 2


def load_tiny(args, split):
    a, _, label = tiny_data(split)
    return TensorData([a], {'class': label}, source='generated (tests/tiny.py)', names=['tiny'])


def load_tiny_pair(args, split):
    a, b, label = tiny_data(split)
    return TensorData([a, b], {'class': label}, source='generated pairs (tests/tiny.py)', names=['tiny_a', 'tiny_b'])


@contextlib.contextmanager
def registered():
    models = {c.name: c for c in (Tiny, TinyPair, TinyFixed, TinyPairFixed)}
    data = {'tiny': load_tiny, 'tiny_pair': load_tiny_pair}
    MODELS.update(models)
    DATASETS.update(data)
    try:
        yield
    finally:
        for k in models:
            MODELS.pop(k)
        for k in data:
            DATASETS.pop(k)
