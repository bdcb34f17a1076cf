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
    instead of a convolution, and on the CPU its last layer as PhaseConvTranspose.
    The stride-2 layers run in the default (NCHW) layout: with freed memory kept for
    reuse (src/numerics.py), oneDNN's channels_last kernels made the paper step
    slower, not faster (docs/performance.md).
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
        for up in ups[:-1]:
            h = F.relu(F.conv_transpose2d(h, up.weight, up.bias, up.stride, up.padding), inplace=True)
        last = ups[-1]
        if h.device.type == 'cpu':
            h = PhaseConvTranspose.apply(h, last.weight, last.bias)
        else:
            h = F.conv_transpose2d(h, last.weight, last.bias, last.stride, last.padding)
        h = torch.sigmoid(h)
        # torch.full, not torch.tensor: no host-to-device copy (a GPU sync) per call
        return h.view(*z.shape[:-1], *DATA_SIZE), torch.full((), LIKELIHOOD_SCALE, device=z.device)


# Output row 2i + a of a ConvTranspose2d(kernel 4, stride 2, padding 1) is the sum, over taps t = 0, 1, of input
# row i + a + t - 1 (row i + a + t of the input padded by 1) through kernel row 3 - a - 2t. Columns alike.
PHASE_TAPS = torch.tensor([[3 - a - 2 * t for t in range(2)] for a in range(2)])


class PhaseConvTranspose(torch.autograd.Function):
    """ConvTranspose2d(kernel 4, stride 2, padding 1) computed forward as one 2x2 convolution of the input padded
    by 1, into 4 x C_out channels (the four output phases (a, b), each with its 2x2 taps of the kernel), whose
    phase (a, b) is its (H+1) x (W+1) output from offset (a, b); one strided copy interleaves the phases.
    Backward as the transposed convolution's own. With 3 output channels (the SVHN decoder's last layer) oneDNN
    runs the transposed convolution forward at 13 % of the CPU's matmul peak; the phase form, 1.13 times its
    FLOPs, takes about a third of its time (docs/performance.md). Values equal up to float rounding
    (tests/test_speed_equivalence.py)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        n, c_in, h, w = x.shape
        c_out = weight.shape[1]
        taps = PHASE_TAPS.to(x.device)
        k = weight.to(x.dtype)[:, :, taps[:, :, None, None], taps[None, None]]  # (c_in, c_out, a, t, b, s)
        k = k.permute(2, 4, 1, 0, 3, 5).reshape(4 * c_out, c_in, 2, 2)  # channel (a, b, c_out)
        y = F.conv2d(x, k, bias.to(x.dtype).repeat(4), padding=1).contiguous()  # (n, 4 c_out, h + 1, w + 1)
        ctx.save_for_backward(x, weight)
        # out[:, c, 2i + a, 2j + b] = y[:, (a, b, c), i + a, j + b]: a and b step through y by a phase block
        # plus one row (a) or one column (b)
        s_n, s_c, s_h, _ = y.stride()
        s_b = c_out * s_c
        phases = y.as_strided((n, c_out, h, 2, w, 2), (s_n, s_c, s_h, 2 * s_b + s_h, 1, s_b + 1))
        return y.new_empty(n, c_out, h, 2, w, 2).copy_(phases).view(n, c_out, 2 * h, 2 * w)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad.to(x.dtype), x, weight.to(x.dtype), [weight.shape[1]], stride=[2, 2], padding=[1, 1],
            dilation=[1, 1], transposed=True, output_padding=[0, 0], groups=1, output_mask=ctx.needs_input_grad)
        return gx, None if gw is None else gw.to(weight.dtype), None if gb is None else gb.to(weight.dtype)


@register
class SVHN(VAE):
    name = 'svhn'
    dataset = 'svhn'
    data_size = DATA_SIZE

    def __init__(self, params):
        super().__init__(dist.Laplace, dist.Laplace, dist.Laplace,
                         Enc(params.latent_dim), Dec(params.latent_dim), params)
