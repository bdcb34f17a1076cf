"""A modality: its VAE p(z) p(x|z) with encoder q(z|x), trained alone (a unimodal model) or as one part
of a multimodal model (src/models/multimodal.py).

Shapes: data x is (B, *data_size); latent samples zs are (K, B, D); a
likelihood p(x|z) has batch shape (K, B, *data_size).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..distributed import rsample
from ..objectives import UNIMODAL

ETA = 1e-6  # eta of the released code: keeps scales strictly positive


def softmax_scale(raw):
    """Scales that sum to D: softmax(raw) * D (MNIST/SVHN parametrisation)."""
    return F.softmax(raw, dim=-1) * raw.size(-1)


def softmax_scale_eta(raw):
    return softmax_scale(raw) + ETA


def softplus_scale_eta(raw):
    return F.softplus(raw) + ETA


def prior_params(latent_dim, learn_prior):
    """(loc, raw scale), both (1, D) and zero; loc is never trained.

    Kept as a ParameterList named `_pz_params` so that state dicts match the
    released code's keys.
    """
    return nn.ParameterList([
        nn.Parameter(torch.zeros(1, latent_dim), requires_grad=False),
        nn.Parameter(torch.zeros(1, latent_dim), requires_grad=learn_prior),
    ])


class VAE(nn.Module):
    """p(z) p(x|z) with encoder q(z|x).

    Subclasses set `name` (the --model key, and the modality's name inside a
    multimodal model), `dataset` (the data registry key), `modality` (what the
    data are: 'image', 'caption' or 'feature'), `data_size`, and choose
    distributions, networks and the prior scale. `captions` marks the models
    whose shapes need the caption vocabulary size (params.vocab_size).
    """
    name = None
    dataset = None
    modality = 'image'
    data_size = None
    prior_scale_fn = staticmethod(softmax_scale)
    multimodal = False
    captions = False

    def __init__(self, prior_dist, likelihood_dist, post_dist, enc, dec, params):
        super().__init__()
        self.pz = prior_dist
        self.px_z = likelihood_dist
        self.qz_x = post_dist
        self.enc = enc
        self.dec = dec
        self.params = params
        self._pz_params = prior_params(params.latent_dim, params.learn_prior)
        self.llik_scaling = 1.0

    @classmethod
    def training_objectives(cls, params):
        """--obj name -> objective(model, x, K), the --looser forms (none) and the per-epoch test bound."""
        return UNIMODAL

    @property
    def pz_params(self):
        return self._pz_params[0], self.prior_scale_fn(self._pz_params[1])

    def prior(self):
        return self.pz(*self.pz_params)

    def named(self, name):
        """This modality under another name: two modalities of one class in a model need two names (the
        files of a run, vae_<name>.pt and the figures, are named by it)."""
        self.name = name
        return self

    @property
    def vaes(self):
        """The unimodal VAEs of a model: here, itself (as MultimodalVAE.vaes lists its parts)."""
        return [self]

    @property
    def modalities(self):
        return [self.name]

    def encode(self, x):
        """q(z|x), batch shape (B, D). Float32 even under --amp (bf16 autocast): the encoder is cheap, and
        the samples and log q(z|x) need the precision; the decoders, where the time goes, run in bf16."""
        with torch.autocast(x.device.type, enabled=False):
            return self.qz_x(*self.enc(x))

    def unimodal_posterior(self, m, x):
        """q(z|x) (m = 0: the one modality), as MultimodalVAE.unimodal_posterior."""
        return self.encode(x)

    def rsample(self, q, K):
        """K reparameterised samples (K, B, D) of a posterior: the one place training draws its noise
        (data-parallel ranks draw their rows of the global batch's noise there)."""
        return rsample(q, torch.Size([K]))

    def forward(self, x, K=1):
        qz_x = self.encode(x)
        zs = self.rsample(qz_x, K)
        return qz_x, self.decode(zs), zs

    def decode(self, zs):
        """p(x|z) for latents of shape (..., D)."""
        return self.px_z(*self.dec(zs))

    @torch.no_grad()
    def generate(self, N):
        """Means of p(x|z) for N prior samples: (N, *data_size)."""
        zs = self.prior().rsample(torch.Size([N])).squeeze(1)
        return self.decode(zs).mean

    @torch.no_grad()
    def reconstruct(self, x):
        """Decoder mean for one posterior sample, as the released code: (B, *data_size)."""
        return self.decode(self.qz_x(*self.enc(x)).rsample()).mean
