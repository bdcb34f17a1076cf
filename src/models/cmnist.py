"""CMNIST VAE (number sense, Kamma Noda, Soda & Yamashita 2024): coloured MNIST digits 1-9, 3x28x28.

Published configuration (the authors' src/models/components.py EncMLP/DecMLP):
MLP encoder/decoder of --num-hidden-layers (4 in the study) x 400 units;
Normal prior, posterior and likelihood (fixed scale 0.75), decoder means
clamped to [1e-6, 1 - 1e-6]; posterior scale softmax(v) * D + eta, prior
scale softmax(raw) * D.
--arch cnn swaps in convolutions, --dist laplace the Laplace family.
The MLP networks here are shared with the OSCN VAE (src/models/oscn.py).
"""
from math import prod

import torch
import torch.distributions as dist
import torch.nn as nn

from . import register
from .vae import VAE, softmax_scale_eta

DATA_SIZE = (3, 28, 28)
HIDDEN_DIM = 400
LIKELIHOOD_SCALE = 0.75
DISTS = {'normal': dist.Normal, 'laplace': dist.Laplace}  # --dist / --joint-prior
ETA = 1e-6  # the authors' Constants.eta: decoder means are clamped to [ETA, 1 - ETA]


def hidden_layer(n_in, n_out=HIDDEN_DIM):
    return nn.Sequential(nn.Linear(n_in, n_out), nn.ReLU(True))


class MLPEnc(nn.Module):
    """x (..., *data_size) -> (loc, scale = softmax(v) * D + eta)."""

    def __init__(self, data_size, latent_dim, num_hidden_layers):
        super().__init__()
        layers = [hidden_layer(prod(data_size))]
        layers += [hidden_layer(HIDDEN_DIM) for _ in range(num_hidden_layers - 1)]
        self.enc = nn.Sequential(*layers)
        self.fc21 = nn.Linear(HIDDEN_DIM, latent_dim)
        self.fc22 = nn.Linear(HIDDEN_DIM, latent_dim)

    def forward(self, x):
        e = self.enc(x.reshape(*x.shape[:-3], -1))
        return self.fc21(e), softmax_scale_eta(self.fc22(e))


class MLPDec(nn.Module):
    """z (..., D) -> (mean (..., *data_size) in [1e-6, 1 - 1e-6], scale 0.75)."""

    def __init__(self, data_size, latent_dim, num_hidden_layers):
        super().__init__()
        self.data_size = tuple(data_size)
        layers = [hidden_layer(latent_dim)]
        layers += [hidden_layer(HIDDEN_DIM) for _ in range(num_hidden_layers - 1)]
        self.dec = nn.Sequential(*layers)
        self.fc3 = nn.Linear(HIDDEN_DIM, prod(data_size))

    def forward(self, z):
        mean = torch.sigmoid(self.fc3(self.dec(z))).view(*z.shape[:-1], *self.data_size)
        mean = mean.clamp(ETA, 1 - ETA)  # as the authors' DecMLP (no gradient where clamped)
        return mean, torch.full((), LIKELIHOOD_SCALE, device=z.device)  # no host-to-device copy per call


class CNNEnc(nn.Module):
    """3x28x28 -> 4x4 features (28 -> 14 -> 7 -> 4) -> two 4x4 conv heads."""

    def __init__(self, latent_dim, width=32):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.ReLU(True),              # 14x14
            nn.Conv2d(width, width * 2, 4, 2, 1), nn.ReLU(True),      # 7x7
            nn.Conv2d(width * 2, width * 4, 3, 2, 1), nn.ReLU(True),  # 4x4
        )
        self.c1 = nn.Conv2d(width * 4, latent_dim, 4, 1, 0)
        self.c2 = nn.Conv2d(width * 4, latent_dim, 4, 1, 0)

    def forward(self, x):
        lead = x.shape[:-3]
        e = self.enc(x.reshape(-1, *DATA_SIZE))
        return self.c1(e).view(*lead, -1), softmax_scale_eta(self.c2(e).view(*lead, -1))


class CNNDec(nn.Module):
    """z (..., D) -> 1x1 -> 4x4 -> 7x7 -> 14x14 -> 28x28, sigmoid; scale 0.75."""

    def __init__(self, latent_dim, width=32):
        super().__init__()
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, width * 4, 4, 1, 0), nn.ReLU(True),  # 4x4
            nn.ConvTranspose2d(width * 4, width * 2, 3, 2, 1), nn.ReLU(True),   # 7x7
            nn.ConvTranspose2d(width * 2, width, 4, 2, 1), nn.ReLU(True),       # 14x14
            nn.ConvTranspose2d(width, 3, 4, 2, 1), nn.Sigmoid(),                # 28x28
        )

    def forward(self, z):
        mean = self.dec(z.reshape(-1, z.size(-1), 1, 1)).view(*z.shape[:-1], *DATA_SIZE)
        return mean, torch.full((), LIKELIHOOD_SCALE, device=z.device)  # no host-to-device copy per call


def networks(params, data_size, cnn_enc, cnn_dec):
    """(encoder, decoder) for --arch: the shared MLP, or the modality's CNN."""
    if params.arch == 'cnn':
        return cnn_enc(params.latent_dim), cnn_dec(params.latent_dim)
    return (MLPEnc(data_size, params.latent_dim, params.num_hidden_layers),
            MLPDec(data_size, params.latent_dim, params.num_hidden_layers))


@register
class CMNIST(VAE):
    name = 'cmnist'
    dataset = 'cmnist'
    data_size = DATA_SIZE

    def __init__(self, params):
        family = DISTS[params.dist]
        super().__init__(family, family, family, *networks(params, DATA_SIZE, CNNEnc, CNNDec), params)
