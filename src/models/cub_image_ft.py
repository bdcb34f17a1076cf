"""cubIft: VAE of the 2048-d ResNet-101 features of CUB images (the released vae_cub_image_ft.py).

Normal prior and posterior, Laplace likelihood with scale fixed 0.01;
encoder scale softplus(v) + eta, prior scale softplus(raw) + eta. MLPs with
ELU: 2048 -> 1024 -> 512 -> 256, two heads 256 -> D; decoder D -> 256 -> 512
-> 1024, then Linear 1024 -> 2048 (features are unbounded: no sigmoid).
Module names follow the released code, so state dicts match.
"""
import torch
import torch.distributions as dist
import torch.nn as nn

from . import register
from .vae import VAE, softplus_scale_eta

FEATURE_DIM = 2048
HIDDEN_DIM = 256
LIKELIHOOD_SCALE = 0.01


def elu_layer(n_in, n_out):
    return nn.Sequential(nn.Linear(n_in, n_out), nn.ELU(inplace=True))


class Enc(nn.Module):
    """(..., 2048) -> (loc, softplus(v) + eta)."""

    def __init__(self, latent_dim):
        super().__init__()
        self.enc = nn.Sequential()
        for i, n in enumerate((FEATURE_DIM, FEATURE_DIM // 2, FEATURE_DIM // 4)):  # 2048 -> ... -> 256
            self.enc.add_module(f'layer{i}', elu_layer(n, n // 2))
        self.fc21 = nn.Linear(HIDDEN_DIM, latent_dim)
        self.fc22 = nn.Linear(HIDDEN_DIM, latent_dim)

    def forward(self, x):
        e = self.enc(x)
        return self.fc21(e), softplus_scale_eta(self.fc22(e))


class Dec(nn.Module):
    """z (..., D) -> (mean (..., 2048), scale 0.01)."""

    def __init__(self, latent_dim):
        super().__init__()
        self.dec = nn.Sequential()
        self.dec.add_module('out_t', elu_layer(latent_dim, HIDDEN_DIM))
        self.dec.add_module('layer1_t', elu_layer(HIDDEN_DIM, HIDDEN_DIM * 2))
        self.dec.add_module('layer2_t', elu_layer(HIDDEN_DIM * 2, HIDDEN_DIM * 4))
        self.fc31 = nn.Linear(HIDDEN_DIM * 4, FEATURE_DIM)

    def forward(self, z):
        return self.fc31(self.dec(z)), torch.full((), LIKELIHOOD_SCALE, device=z.device)


@register
class CUBImageFt(VAE):
    name = 'cubIft'
    dataset = 'cubIft'
    modality = 'feature'
    data_size = (FEATURE_DIM,)
    prior_scale_fn = staticmethod(softplus_scale_eta)

    def __init__(self, params):
        super().__init__(dist.Normal, dist.Laplace, dist.Normal,
                         Enc(params.latent_dim), Dec(params.latent_dim), params)
