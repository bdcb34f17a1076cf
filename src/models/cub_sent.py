"""cubS: VAE of CUB captions (the released vae_cub_sent.py), and the wider caption model of cubISft.

Normal prior and posterior (encoder scale softplus(v) + eta, prior scale
softplus(raw) + eta); the likelihood is one categorical over the vocabulary
per token (CaptionCategorical). A caption is 32 token ids; its embedding
(32 x 128) is a one-channel image: Conv 4x4/2 to 32, 64, 128 channels, then
two Conv (1,4)/(1,2) blocks (each with BatchNorm + ReLU), then two 4x4 conv
heads. The decoder mirrors it with transposed convolutions (the released code
ends it in a ReLU) into (32, 128) embeddings, mapped to vocabulary logits by a
Linear layer whose weight IS the embedding matrix (tied).
cubISft's caption model (CUBSentFt) has biases and 256, 512 channels in the
last two blocks. Module names follow the released code, so state dicts match.

The vocabulary size is a flag (params.vocab_size): main.py sets it from the
training captions and saves it with the run's flags, so a saved run is built
again without its data.
"""
import torch
import torch.distributions as dist
import torch.nn as nn
import torch.nn.functional as F

from . import register
from .vae import VAE, softplus_scale_eta

MAX_LEN = 32     # tokens per caption
EMB_DIM = 128    # word embedding size
F_BASE = 32
EXC = 0          # id of '<exc>', the unknown word (the released vocabulary's first entry)
NARROW = (1, 2, 4, 4, 4)   # channels of the five blocks, in units of F_BASE: 32, 64, 128, 128, 128
WIDE = (1, 2, 4, 8, 16)    # cubISft: 32, 64, 128, 256, 512


class CaptionCategorical(dist.Distribution):
    """p(caption | z): a categorical over the vocabulary per token, from logits (..., 32, V).

    log_prob(x) is (..., 32): minus the cross-entropy of each token, with id 0
    ignored (scored 0). A quirk of the released code, kept: id 0 is '<exc>', the unknown
    word, not padding, so the '<pad>' tokens (id 1) after '<eos>' are scored.
    `mean` holds the logits, as in the released code (figures and analyses
    take their argmax); `mode` is that argmax, the token ids.
    """
    arg_constraints = {}

    def __init__(self, logits):
        self.logits = logits
        super().__init__(batch_shape=logits.shape[:-1], validate_args=False)

    @property
    def mean(self):
        return self.logits

    @property
    def mode(self):
        return self.logits.argmax(-1)

    def log_prob(self, value):
        value = value.long().expand(self.batch_shape)
        lp = -F.cross_entropy(self.logits.reshape(-1, self.logits.size(-1)), value.reshape(-1),
                              reduction='none', ignore_index=EXC)
        return lp.view(self.batch_shape)

    def sample(self, sample_shape=torch.Size()):
        return dist.Categorical(logits=self.logits).sample(sample_shape)


SQUARE = (4, 2, 1)                # kernel, stride, padding: halves (or doubles) both axes
WIDE_ONLY = ((1, 4), (1, 2), (0, 1))  # halves (or doubles) the width only


def _block(conv, n_in, n_out, shape, bias):
    return [conv(n_in, n_out, *shape, bias=bias), nn.BatchNorm2d(n_out), nn.ReLU(True)]


class Enc(nn.Module):
    """ids (B, 32) -> embeddings as a 1 x 32 x 128 image -> c5 x 4 x 4 -> (loc, softplus(v) + eta)."""

    def __init__(self, latent_dim, vocab_size, widths=NARROW, bias=False):
        super().__init__()
        c = [1] + [F_BASE * w for w in widths]
        self.embedding = nn.Embedding(vocab_size, EMB_DIM, padding_idx=EXC)
        layers = []
        for i in range(5):  # 32x128 -> 16x64 -> 8x32 -> 4x16, then (1, 4) blocks: 4x8 -> 4x4
            layers += _block(nn.Conv2d, c[i], c[i + 1], SQUARE if i < 3 else WIDE_ONLY, bias)
        self.enc = nn.Sequential(*layers)
        self.c1 = nn.Conv2d(c[5], latent_dim, 4, 1, 0, bias=bias)
        self.c2 = nn.Conv2d(c[5], latent_dim, 4, 1, 0, bias=bias)

    def forward(self, x):
        e = self.enc(self.embedding(x.long()).unsqueeze(1))
        return self.c1(e).flatten(1), softplus_scale_eta(self.c2(e).flatten(1))


class Dec(nn.Module):
    """z (..., D) -> (logits (..., 32, V),)."""

    def __init__(self, latent_dim, vocab_size, widths=NARROW, bias=False):
        super().__init__()
        c = [1] + [F_BASE * w for w in widths]
        layers = _block(nn.ConvTranspose2d, latent_dim, c[5], (4, 1, 0), bias)  # 1x1 -> 4x4
        for i in (5, 4, 3, 2):  # 4x4 -> 4x8 -> 4x16, then square blocks: 8x32 -> 16x64
            layers += _block(nn.ConvTranspose2d, c[i], c[i - 1], WIDE_ONLY if i >= 4 else SQUARE, bias)
        layers += [nn.ConvTranspose2d(c[1], 1, 4, 2, 1, bias=bias), nn.ReLU(True)]  # 32x128
        self.dec = nn.Sequential(*layers)
        self.toVocabSize = nn.Linear(EMB_DIM, vocab_size)  # weight tied to the embedding (CUBSent)

    def forward(self, z):
        out = self.dec(z.reshape(-1, z.size(-1), 1, 1))
        return (self.toVocabSize(out.view(*z.shape[:-1], MAX_LEN, EMB_DIM)),)


def caption_vocab_size(params):
    V = getattr(params, 'vocab_size', 0)
    if not V:
        raise ValueError('the caption models need params.vocab_size (main.py sets it from the training captions)')
    return V


@register
class CUBSent(VAE):
    name = 'cubS'
    dataset = 'cubS'
    modality = 'caption'
    data_size = (MAX_LEN,)
    prior_scale_fn = staticmethod(softplus_scale_eta)
    widths, bias = NARROW, False
    captions = True

    def __init__(self, params):
        V = caption_vocab_size(params)
        super().__init__(dist.Normal, CaptionCategorical, dist.Normal,
                         Enc(params.latent_dim, V, self.widths, self.bias),
                         Dec(params.latent_dim, V, self.widths, self.bias), params)
        self.vocab_size = V
        # A Linear(128, V) weight is (V, 128), the embedding matrix's shape: the
        # output layer uses the embedding matrix itself (one parameter).
        self.dec.toVocabSize.weight = self.enc.embedding.weight


class CUBSentFt(CUBSent):
    """The caption model inside cubISft: biases, and 256, 512 channels in the last blocks."""
    name = 'cubSft'
    widths, bias = WIDE, True
