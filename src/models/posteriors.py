"""The joint posteriors of multimodal models, as distributions over z of shape (..., B, D).

Every joint rule in src/models/joint/ builds q(z | x_S) as a uniform mixture of
components, each a location-scale distribution over z with batch shape (B, D):
- mixture of experts (MMVAE, Shi et al. 2019): one component per modality, q_m(z|x_m);
- product of experts (MVAE, Wu & Goodman 2018): one component, the product of
  the Gaussian experts and the prior expert;
- mixture of products of experts (MoPoE, Sutter et al. 2021): one component
  per non-empty subset of the modalities, the product of its experts.

Mixture.log_prob is the density every importance weight divides by; the
estimators in src/objectives.py draw K samples from every component
(stratified sampling of the uniform mixture, as the released MMVAE code does
for its experts).
"""
import math

import torch
from torch.distributions import Normal


class Mixture:
    """q(z) = (1/C) sum_c q_c(z) over components of batch shape (B, D)."""

    def __init__(self, components):
        if not components:
            raise ValueError('a mixture needs at least one component')
        self.components = list(components)

    def log_prob(self, z):
        """log q(z) summed over the latent dimensions: z (..., B, D) -> (..., B)."""
        lq = [c.log_prob(z).sum(-1) for c in self.components]
        if len(lq) == 1:
            return lq[0]
        return torch.logsumexp(torch.stack(lq), 0) - math.log(len(lq))

    def responsibilities(self, z):
        """r_c(z) = q_c(z) / sum_c' q_c'(z), the share of each component in the density at z: (C, ..., B)."""
        lq = torch.stack([c.log_prob(z).sum(-1) for c in self.components])
        return torch.softmax(lq, 0)

    def rsample(self, sample_shape=torch.Size()):
        """Draws of the mixture: each draw from one component chosen uniformly at random."""
        draws = torch.stack([c.rsample(sample_shape) for c in self.components])
        if len(self.components) == 1:
            return draws[0]
        pick = torch.randint(len(self.components), draws.shape[1:-1], device=draws.device)
        return draws.gather(0, pick.unsqueeze(0).unsqueeze(-1).expand(1, *draws.shape[1:])).squeeze(0)

    @property
    def mean(self):
        return torch.stack([c.mean for c in self.components]).mean(0)


def product_of_experts(experts):
    """The product of Gaussian experts N(mu_i, s_i^2): a Gaussian with precision sum_i s_i^-2 and mean
    sum_i mu_i s_i^-2 / sum_i s_i^-2 (Wu & Goodman 2018, section 2). Shapes broadcast, so a prior expert
    of batch shape (1, D) joins experts of shape (B, D)."""
    for e in experts:
        if not isinstance(e, Normal):
            raise TypeError(f'a product of experts needs Gaussian experts, got {type(e).__name__}')
    precisions = [e.scale.pow(-2) for e in experts]
    precision = sum(precisions)
    loc = sum(e.loc * p for e, p in zip(experts, precisions, strict=True)) / precision
    return Normal(loc, precision.rsqrt())
