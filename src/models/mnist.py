"""MNIST VAE: MLP encoder/decoder, Laplace prior, posterior and likelihood."""
import torch
import torch.distributions as dist
import torch.nn as nn
import torch.nn.functional as F

from . import register
from .vae import ETA, VAE

DATA_SIZE = (1, 28, 28)
DATA_DIM = 28 * 28
HIDDEN_DIM = 400
LIKELIHOOD_SCALE = 0.75  # fixed Laplace scale of p(x|z), as in the released vae_mnist.py


def hidden_layer(n_in, n_out=HIDDEN_DIM):
    return nn.Sequential(nn.Linear(n_in, n_out), nn.ReLU(True))


class Enc(nn.Module):
    """x -> (loc, scale = softmax(v) * D + eta)."""

    def __init__(self, latent_dim, num_hidden_layers=1):
        super().__init__()
        layers = [hidden_layer(DATA_DIM)]
        layers += [hidden_layer(HIDDEN_DIM) for _ in range(num_hidden_layers - 1)]
        self.enc = nn.Sequential(*layers)
        self.fc21 = nn.Linear(HIDDEN_DIM, latent_dim)
        self.fc22 = nn.Linear(HIDDEN_DIM, latent_dim)

    def forward(self, x):
        e = self.enc(x.reshape(*x.shape[:-3], -1))
        lv = self.fc22(e)
        return self.fc21(e), F.softmax(lv, dim=-1) * lv.size(-1) + ETA


class Dec(nn.Module):
    """z (..., D) -> (mean (..., 1, 28, 28) clamped to [eta, 1 - eta], scale 0.75)."""

    def __init__(self, latent_dim, num_hidden_layers=1):
        super().__init__()
        layers = [hidden_layer(latent_dim)]
        layers += [hidden_layer(HIDDEN_DIM) for _ in range(num_hidden_layers - 1)]
        self.dec = nn.Sequential(*layers)
        self.fc3 = nn.Linear(HIDDEN_DIM, DATA_DIM)

    def forward(self, z):
        p = self.fc3(self.dec(z))
        d = torch.sigmoid(p.view(*z.shape[:-1], *DATA_SIZE))
        d = d.clamp(ETA, 1 - ETA)
        return d, torch.full((), LIKELIHOOD_SCALE, device=z.device)


@register
class MNIST(VAE):
    name = 'mnist'
    dataset = 'mnist'
    data_size = DATA_SIZE

    def __init__(self, params):
        super().__init__(dist.Laplace, dist.Laplace, dist.Laplace,
                         Enc(params.latent_dim, params.num_hidden_layers),
                         Dec(params.latent_dim, params.num_hidden_layers),
                         params)
