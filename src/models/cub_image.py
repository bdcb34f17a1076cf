"""cubI: VAE of 64x64 CUB images (the released vae_cub_image.py).

Laplace prior, posterior and likelihood (scale fixed 0.01); encoder scale
softplus(v) + eta, prior scale softplus(raw) + eta. Networks as svhn's with
base width 64 and one more stride-2 block: 3 -> 64 -> 128 -> 256 -> 512
channels (64x64 -> 4x4), 4x4 conv heads; the decoder mirrors it and ends in
a sigmoid. Module names follow the released code, so state dicts match.
"""
import torch
import torch.distributions as dist
import torch.nn as nn

from . import register
from .vae import VAE, softplus_scale_eta

DATA_SIZE = (3, 64, 64)
F_BASE = 64
LIKELIHOOD_SCALE = 0.01


class Enc(nn.Module):
    """3x64x64 -> 512x4x4 -> two 4x4 conv heads: (loc, softplus(v) + eta)."""

    def __init__(self, latent_dim):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(3, F_BASE, 4, 2, 1), nn.ReLU(True),               # 32x32
            nn.Conv2d(F_BASE, F_BASE * 2, 4, 2, 1), nn.ReLU(True),      # 16x16
            nn.Conv2d(F_BASE * 2, F_BASE * 4, 4, 2, 1), nn.ReLU(True),  # 8x8
            nn.Conv2d(F_BASE * 4, F_BASE * 8, 4, 2, 1), nn.ReLU(True),  # 4x4
        )
        self.c1 = nn.Conv2d(F_BASE * 8, latent_dim, 4, 1, 0)
        self.c2 = nn.Conv2d(F_BASE * 8, latent_dim, 4, 1, 0)

    def forward(self, x):
        e = self.enc(x)
        return self.c1(e).flatten(1), softplus_scale_eta(self.c2(e).flatten(1))


class Dec(nn.Module):
    """z (..., D) -> (mean (..., 3, 64, 64) in (0, 1), scale 0.01)."""

    def __init__(self, latent_dim):
        super().__init__()
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, F_BASE * 8, 4, 1, 0), nn.ReLU(True),  # 4x4
            nn.ConvTranspose2d(F_BASE * 8, F_BASE * 4, 4, 2, 1), nn.ReLU(True),  # 8x8
            nn.ConvTranspose2d(F_BASE * 4, F_BASE * 2, 4, 2, 1), nn.ReLU(True),  # 16x16
            nn.ConvTranspose2d(F_BASE * 2, F_BASE, 4, 2, 1), nn.ReLU(True),      # 32x32
            nn.ConvTranspose2d(F_BASE, 3, 4, 2, 1), nn.Sigmoid(),                # 64x64
        )

    def forward(self, z):
        out = self.dec(z.reshape(-1, z.size(-1), 1, 1))
        return out.view(*z.shape[:-1], *DATA_SIZE), torch.full((), LIKELIHOOD_SCALE, device=z.device)


@register
class CUBImage(VAE):
    name = 'cubI'
    dataset = 'cubI'
    modality = 'image'
    data_size = DATA_SIZE
    prior_scale_fn = staticmethod(softplus_scale_eta)

    def __init__(self, params):
        super().__init__(dist.Laplace, dist.Laplace, dist.Laplace,
                         Enc(params.latent_dim), Dec(params.latent_dim), params)
