"""--amp: bfloat16 where it pays, float32 where the precision matters (docs/performance.md).

The decoders run under bfloat16 autocast (src/train.py, amp_objective): their matrix products and
convolutions, and their outputs, the likelihood's means, are bfloat16. The likelihood term sums
K x B x (pixels) terms |x - mean| or (x - mean)^2: its value, a log density, is computed here in
float32 from the bfloat16 means (the difference is exact to float32 rounding), while its gradient,
which flows back into the bfloat16 decoder anyway, is computed in bfloat16 from the difference
kept in bfloat16: fewer passes over the K x B x pixels terms than autograd's, at half the bytes.
"""
import torch


class SumDiff(torch.autograd.Function):
    """sum over the last dimension of |x - loc| (p = 1) or (x - loc)^2 (p = 2), in float32, for a
    low-precision loc (..., P) and a float32 x that broadcasts to it; the gradient for loc in loc's
    dtype (none for x: data)."""

    @staticmethod
    def forward(ctx, loc, x, p):
        d = x - loc  # float32 by type promotion: exact up to float32 rounding
        ctx.save_for_backward(d.to(loc.dtype))  # its sign exact, its value to bfloat16 precision
        ctx.p = p
        return torch.linalg.vector_norm(d, p, -1) if p == 1 else torch.linalg.vector_norm(d, 2, -1).square()

    @staticmethod
    def backward(ctx, grad):
        d, = ctx.saved_tensors  # d/dloc |x - loc| = -sign(x - loc); d/dloc (x - loc)^2 = -2 (x - loc)
        d = d.sign() if ctx.p == 1 else d.mul(2)
        return d.mul_(-grad.unsqueeze(-1).to(d.dtype)), None, None
