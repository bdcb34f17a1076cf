"""A multimodal VAE: its modalities (one VAE each, src/models/vae.py) plus a joint-posterior rule.

    p(z) prod_m p(x_m|z)     generative model: a joint prior, one decoder per modality
    q(z | x_S)               the joint posterior of any subset S of the modalities, built by the rule
                             (--joint-posterior; src/models/joint/) from the experts q_m(z|x_m)

The rule decides the posterior, the objectives the model trains with and its test bound; the modalities,
the prior and the likelihood scalings are the model's (one file per model, as the released code's
mmvae_*.py). With the default rule, `moe`, every model computes what the released MMVAE computes.
"""
import math

import torch
import torch.nn as nn
from torch.distributions import Normal

from ..distributed import rsample
from ..errors import UserError
from .joint import joint_rule
from .posteriors import Mixture
from .vae import prior_params, softmax_scale


class MultimodalVAE(nn.Module):
    """Subclasses set `name`, `dataset`, `prior_scale_fn`, and call
    `super().__init__(prior_dist, params, *modalities)` with VAE classes (built from params, named by their
    `name`) or VAE instances (named by their `name` attribute: two modalities of one class need two names)."""
    name = None
    dataset = None
    prior_scale_fn = staticmethod(softmax_scale)
    multimodal = True
    captions = False

    def __init__(self, prior_dist, params, *modalities):
        super().__init__()
        self.joint = joint_rule(getattr(params, 'joint_posterior', 'moe'))
        vaes = [m if isinstance(m, nn.Module) else m(params) for m in modalities]
        names = [v.name for v in vaes]
        if len(set(names)) != len(names) or None in names:
            raise ValueError(f'{type(self).__name__}: every modality needs its own name, got {names} '
                             f'(a second modality of one class: Class(params).named("other_name"))')
        if self.joint.family is not None:  # e.g. a product of experts is closed-form for Gaussians only
            prior_dist = self.joint.family
            for v in vaes:
                v.pz = v.qz_x = self.joint.family
        self.pz = prior_dist
        self.vaes = nn.ModuleList(vaes)
        self.params = params
        self._pz_params = prior_params(params.latent_dim, params.learn_prior)
        self._llik_weights = getattr(params, 'llik_weights', '')
        if self._llik_weights:  # MVAE's lambdas: every modality's weight, in place of the model's defaults
            weights = parse_llik_weights(self._llik_weights)
            if len(weights) != len(vaes):
                raise UserError(f"--llik-weights {self._llik_weights}: {len(weights)} weights for the "
                                f"{len(vaes)} modalities of --model {self.name} ({', '.join(names)})")
            for v, w in zip(vaes, weights, strict=True):
                v.llik_scaling = w
        check_random_subsets(getattr(params, 'random_subsets', 0), len(vaes))

    @classmethod
    def training_objectives(cls, params):
        """The objectives of the model's joint rule (--obj names, looser variants, test bound)."""
        return joint_rule(getattr(params, 'joint_posterior', 'moe')).objectives()

    @property
    def pz_params(self):
        return self._pz_params[0], self.prior_scale_fn(self._pz_params[1])

    def prior(self):
        return self.pz(*self.pz_params)

    def prior_expert(self):
        """The prior expert of the products of experts (poe, mopoe): the prior p(z), or with --prior-expert unit
        a fixed N(0, I), as the MVAE and MoPoE authors' code (mnist/model.py prior_expert; utils/BaseMMVae.py
        poe_fusion)."""
        if getattr(self.params, 'prior_expert', 'prior') == 'unit':
            loc = self._pz_params[0]
            return Normal(torch.zeros_like(loc), torch.ones_like(loc))
        return self.prior()

    @property
    def modalities(self):
        return [vae.name for vae in self.vaes]

    def scale_first_likelihood(self, default):
        """Weight the first modality's log-likelihood: --llik_scaling when non-zero, else `default` (neither
        where --llik-weights gave every modality's weight)."""
        if not self._llik_weights:
            self.vaes[0].llik_scaling = self.params.llik_scaling or default

    def share_prior(self):
        """The unimodal VAEs use the joint prior's parameters (as in the released CUB models)."""
        for vae in self.vaes:
            vae._pz_params = self._pz_params

    # ------------------------------------------------------------ posteriors

    def experts(self, xs):
        """Each modality's encoder output q_m(z|x_m), batch shape (B, D), in modality order."""
        return [vae.encode(x) for vae, x in zip(self.vaes, xs, strict=True)]

    def posterior(self, xs=None, subset=None, experts=None):
        """q(z | x_S): the joint rule applied to the experts of the modalities in `subset` (indices; None:
        all). Give `experts` (all modalities') to reuse an encoding. A Mixture of the rule's components."""
        experts = self.experts(xs) if experts is None else experts
        subset = range(len(self.vaes)) if subset is None else subset
        return Mixture(self.joint.components([experts[m] for m in subset], self.prior_expert(),
                                             full=len(subset) == len(self.vaes)))

    def unimodal_posterior(self, m, x):
        """q(z | x_m) of modality m alone under the joint rule, from its data x (a distribution)."""
        return single_component(self.posterior(subset=[m], experts={m: self.vaes[m].encode(x)}))

    def rsample(self, q, K):
        """K reparameterised samples (K, B, D) of one posterior component (see VAE.rsample)."""
        return rsample(q, torch.Size([K]))

    # ------------------------------------------------------------ cross-modal decoding

    def forward(self, xs, K=1):
        """Each single modality's posterior q(z|x_e) under the joint rule (a distribution: one component for
        every rule here), K samples each, decoded by every decoder: (posteriors [M], likelihoods px_zs[e][d]
        (encoder e's samples, decoder d), samples [M] of shape (K, B, D)). With the mixture of experts this
        is the released MMVAE.forward."""
        experts = self.experts(xs)
        qz_xs = [single_component(self.posterior(subset=[e], experts=experts)) for e in range(len(self.vaes))]
        zss = [self.rsample(q, K) for q in qz_xs]
        px_zs = [[vae.decode(zs) for vae in self.vaes] for zs in zss]
        return qz_xs, px_zs, zss

    @torch.no_grad()
    def generate(self, N):
        """One list entry per modality: decoder means of N joint-prior samples."""
        zs = self.prior().rsample(torch.Size([N])).squeeze(1)
        return [vae.decode(zs).mean for vae in self.vaes]

    @torch.no_grad()
    def reconstruct(self, xs):
        """M x M matrix [e][d] of decoder means for one sample of q(z|x_e)."""
        _, px_zs, _ = self.forward(xs, K=1)
        return [[px_z.mean.squeeze(0) for px_z in row] for row in px_zs]


def single_component(q):
    """The distribution of a posterior with one component (every rule's single-modality posterior)."""
    if len(q.components) != 1:
        raise ValueError(f'expected a single-component posterior, got a mixture of {len(q.components)}')
    return q.components[0]


def parse_llik_weights(text):
    """--llik-weights '1,10' -> [1.0, 10.0]: positive, finite numbers."""
    try:
        weights = [float(w) for w in text.split(',')]
    except ValueError:
        weights = []
    if not weights or not all(math.isfinite(w) and w > 0 for w in weights):
        raise UserError(f"--llik-weights {text!r}: give positive numbers separated by commas, one per modality "
                        f"(e.g. 1,10)")
    return weights


def check_random_subsets(k, M):
    """--random-subsets k draws subsets of 2 .. M-1 of the M modalities: k sizes uniformly with replacement, then
    distinct subsets within a size (MVAE's celeba19/train.py), so at most M: the M subsets of size M - 1 are the
    fewest of any size."""
    if k and M < 3:
        raise UserError(f"--random-subsets {k}: with {M} modalities the sub-sampled objective already has every "
                        f"subset (the full set and each modality alone): drop the flag")
    if k > M:
        raise UserError(f"--random-subsets {k}: at most {M} with {M} modalities (distinct subsets of one size are "
                        f"drawn, and there are {M} of size {M - 1})")
