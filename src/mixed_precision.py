"""--amp: bfloat16 where it pays, float32 where the precision matters (docs/performance.md).

The decoders run under bfloat16 autocast (src/train.py, amp_objective): their matrix products and
convolutions, and their outputs, the likelihood's means, are bfloat16. The likelihood term sums
K x B x (pixels) terms |x - mean| or (x - mean)^2: its value, a log density, is computed here in
float32 from the bfloat16 means (the difference is exact to float32 rounding), while its gradient,
which flows back into the bfloat16 decoder anyway, is computed in bfloat16 from the difference
kept in bfloat16: fewer and cheaper passes over the K x B x pixels terms than autograd's.
"""
import torch


class SumDiff(torch.autograd.Function):
    """sum over the last dimension of |x - loc| (p = 1) or (x - loc)^2 (p = 2), in float32, for a
    low-precision loc (..., B, P) and a float32 x (B, P); the gradient for loc in loc's dtype (none for x:
    data). Computed one (B, P) slice at a time, in a float32 buffer that stays in the cache: whole
    float32 temporaries of K x B x P made it 5-7 times slower (measured)."""

    @staticmethod
    def forward(ctx, loc, x, p):
        locs = loc.reshape(-1, *x.shape)
        out = torch.empty(locs.shape[:2], dtype=x.dtype, device=x.device)
        d = torch.empty_like(locs)  # x - loc, kept for the gradient in loc's dtype: its sign exact
        buf = torch.empty_like(x)
        for k in range(locs.size(0)):
            torch.sub(x, locs[k], out=buf)  # float32: exact up to float32 rounding
            d[k].copy_(buf)
            out[k] = (buf.abs_() if p == 1 else buf.square_()).sum(-1)
        ctx.save_for_backward(d)
        ctx.p = p
        return out.reshape(loc.shape[:-1])

    @staticmethod
    def backward(ctx, grad):
        d, = ctx.saved_tensors  # d/dloc |x - loc| = -sign(x - loc); d/dloc (x - loc)^2 = -2 (x - loc)
        d = d.sign_() if ctx.p == 1 else d.mul_(2)  # in place: a second backward through it is an error
        return d.mul_(-grad.reshape(d.shape[:2]).unsqueeze(-1).to(d.dtype)).reshape(*grad.shape, -1), None, None
