"""Base classes: a unimodal VAE and the mixture-of-experts multimodal VAE.

Shapes: data x is (B, *data_size); latent samples zs are (K, B, D); a
likelihood p(x|z) has batch shape (K, B, *data_size).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

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

    Subclasses set `name` (the --model key), `dataset` (the data registry
    key), `modality` (what the data are: 'image', 'caption' or 'feature'),
    `data_size`, and choose distributions, networks and the prior scale.
    `captions` marks the models whose shapes need the caption vocabulary size
    (params.vocab_size).
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
        self._qz_x_params = None  # set by forward; dreg needs them detached
        self.llik_scaling = 1.0

    @property
    def pz_params(self):
        return self._pz_params[0], self.prior_scale_fn(self._pz_params[1])

    @property
    def vaes(self):
        """The unimodal VAEs of a model: here, itself (as MMVAE.vaes lists its parts)."""
        return [self]

    @property
    def modalities(self):
        return [self.name]

    @property
    def qz_x_params(self):
        if self._qz_x_params is None:
            raise RuntimeError("qz_x params not initialised: call forward first")
        return self._qz_x_params

    def forward(self, x, K=1):
        # float32 even under --amp (bf16 autocast): the encoder is cheap, and the samples
        # and log q(z|x) need the precision; the decoders, where the time goes, run in bf16
        with torch.autocast(x.device.type, enabled=False):
            self._qz_x_params = self.enc(x)
        qz_x = self.qz_x(*self._qz_x_params)
        zs = qz_x.rsample(torch.Size([K]))
        px_z = self.px_z(*self.dec(zs))
        return qz_x, px_z, zs

    def decode(self, zs):
        """p(x|z) for latents of shape (..., D)."""
        return self.px_z(*self.dec(zs))

    @torch.no_grad()
    def generate(self, N):
        """Means of p(x|z) for N prior samples: (N, *data_size)."""
        pz = self.pz(*self.pz_params)
        zs = pz.rsample(torch.Size([N])).squeeze(1)
        return self.decode(zs).mean

    @torch.no_grad()
    def reconstruct(self, x):
        """Decoder mean for one posterior sample, as the released code: (B, *data_size)."""
        qz_x = self.qz_x(*self.enc(x))
        return self.decode(qz_x.rsample()).mean


class MMVAE(nn.Module):
    """Mixture-of-experts multimodal VAE: q(z|x_1..M) = 1/M sum_m q_m(z|x_m)."""
    name = None
    dataset = None
    prior_scale_fn = staticmethod(softmax_scale)
    multimodal = True
    captions = False

    def __init__(self, prior_dist, params, *vaes):
        super().__init__()
        self.pz = prior_dist
        self.vaes = nn.ModuleList([vae(params) for vae in vaes])
        self.params = params
        self._pz_params = prior_params(params.latent_dim, params.learn_prior)

    @property
    def pz_params(self):
        return self._pz_params[0], self.prior_scale_fn(self._pz_params[1])

    @property
    def modalities(self):
        return [vae.name for vae in self.vaes]

    def scale_first_likelihood(self, default):
        """Weight the first modality's log-likelihood: --llik_scaling when non-zero, else `default`."""
        self.vaes[0].llik_scaling = self.params.llik_scaling or default

    def share_prior(self):
        """The unimodal VAEs use the joint prior's parameters (as in the released CUB models)."""
        for vae in self.vaes:
            vae._pz_params = self._pz_params

    def forward(self, x, K=1):
        """Returns posteriors [M], likelihoods px_zs[e][d] (M x M: encoder e's
        samples decoded by d), samples [M] of shape (K, B, D)."""
        M = len(self.vaes)
        qz_xs, zss = [], []
        px_zs = [[None] * M for _ in range(M)]
        for m, vae in enumerate(self.vaes):
            qz_x, px_z, zs = vae(x[m], K=K)
            qz_xs.append(qz_x)
            zss.append(zs)
            px_zs[m][m] = px_z
        for e, zs in enumerate(zss):
            for d, vae in enumerate(self.vaes):
                if e != d:
                    px_zs[e][d] = vae.decode(zs)
        return qz_xs, px_zs, zss

    @torch.no_grad()
    def generate(self, N):
        """One list entry per modality: decoder means of N joint-prior samples."""
        pz = self.pz(*self.pz_params)
        zs = pz.rsample(torch.Size([N])).squeeze(1)
        return [vae.decode(zs).mean for vae in self.vaes]

    @torch.no_grad()
    def reconstruct(self, x):
        """M x M matrix [e][d] of decoder means for one sample of q_e."""
        _, px_zs, _ = self.forward(x, K=1)
        return [[px_z.mean.squeeze(0) for px_z in row] for row in px_zs]
