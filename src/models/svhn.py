"""SVHN VAE: DCGAN-style conv encoder/decoder, Laplace prior, posterior and likelihood."""
import torch
import torch.distributions as dist
import torch.nn as nn
import torch.nn.functional as F

from . import register
from .vae import ETA, VAE

DATA_SIZE = (3, 32, 32)
F_BASE = 32  # base channel width
LIKELIHOOD_SCALE = 0.75


class Enc(nn.Module):
    """3x32x32 -> 4x4 features -> two 4x4 conv heads: (loc, softmax(v) * D + eta)."""

    def __init__(self, latent_dim):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(3, F_BASE, 4, 2, 1), nn.ReLU(True),               # 16x16
            nn.Conv2d(F_BASE, F_BASE * 2, 4, 2, 1), nn.ReLU(True),      # 8x8
            nn.Conv2d(F_BASE * 2, F_BASE * 4, 4, 2, 1), nn.ReLU(True),  # 4x4
        )
        self.c1 = nn.Conv2d(F_BASE * 4, latent_dim, 4, 1, 0)
        self.c2 = nn.Conv2d(F_BASE * 4, latent_dim, 4, 1, 0)

    def forward(self, x):
        e = self.enc(x)
        lv = self.c2(e).flatten(1)
        return self.c1(e).flatten(1), F.softmax(lv, dim=-1) * lv.size(-1) + ETA


class Dec(nn.Module):
    """z (..., D) -> (mean (..., 3, 32, 32) in (0, 1), scale 0.75).

    The parameters are the released nn.Sequential `dec` (same state-dict keys);
    forward computes exactly what `dec(z.view(-1, D, 1, 1))` computes
    (tests/test_speed_equivalence.py checks values and gradients), with its first
    layer, which turns a 1x1 input into 4x4, as one matrix product (N, D) x (D, C*4*4)
    instead of a convolution. The stride-2 layers run in the default (NCHW) layout:
    with freed memory kept for reuse (src/numerics.py), oneDNN's channels_last kernels
    made the paper step slower, not faster (docs/performance.md).
    """

    def __init__(self, latent_dim):
        super().__init__()
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, F_BASE * 4, 4, 1, 0), nn.ReLU(True),  # 4x4
            nn.ConvTranspose2d(F_BASE * 4, F_BASE * 2, 4, 2, 1), nn.ReLU(True),  # 8x8
            nn.ConvTranspose2d(F_BASE * 2, F_BASE, 4, 2, 1), nn.ReLU(True),      # 16x16
            nn.ConvTranspose2d(F_BASE, 3, 4, 2, 1), nn.Sigmoid(),                # 32x32
        )

    def forward(self, z):
        first, *ups = self.dec[::2]  # the ConvTranspose2d layers; ReLU between, sigmoid at the end
        D, C = first.weight.shape[:2]  # weight (D, C, 4, 4): output (C, 4, 4) = sum_d z_d * weight[d] + bias
        h = F.linear(z.reshape(-1, D), first.weight.view(D, C * 16).t(), first.bias.repeat_interleave(16))
        h = F.relu(h.view(-1, C, 4, 4), inplace=True)
        for up in ups:
            h = F.conv_transpose2d(h, up.weight, up.bias, up.stride, up.padding)
            h = torch.sigmoid(h) if up is ups[-1] else F.relu(h, inplace=True)
        # torch.full, not torch.tensor: no host-to-device copy (a GPU sync) per call
        return h.view(*z.shape[:-1], *DATA_SIZE), torch.full((), LIKELIHOOD_SCALE, device=z.device)


@register
class SVHN(VAE):
    name = 'svhn'
    dataset = 'svhn'
    data_size = DATA_SIZE

    def __init__(self, params):
        super().__init__(dist.Laplace, dist.Laplace, dist.Laplace,
                         Enc(params.latent_dim), Dec(params.latent_dim), params)
