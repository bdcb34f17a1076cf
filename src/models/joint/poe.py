"""Product of experts (MVAE; Wu & Goodman, NeurIPS 2018): q(z | x_S) = p(z) prod_{m in S} q_m(z|x_m),
normalised: the Gaussian with the summed precisions of the experts and of the prior expert p(z).

Trained as MVAE is: the sub-sampled objective, the bound on all modalities plus the bound on each single
modality with its own product (Wu & Goodman 2018, section 3; with two modalities that is every subset).
The experts and the prior are Gaussian; the networks are the modalities' own."""
from torch.distributions import Normal

from ... import objectives as O
from ..posteriors import product_of_experts
from . import register_joint


@register_joint
class ProductOfExperts:
    name = 'poe'
    family = Normal
    prior_expert = True  # the products hold a prior expert (--prior-expert)

    @staticmethod
    def components(experts, prior, full):
        return [product_of_experts([prior, *experts])]  # the prior expert is always in the product

    @staticmethod
    def describe(names, full):
        return ['p(z) ' + ' '.join(f'q(z|{n})' for n in names) + ' (normalised)']

    @staticmethod
    def objectives():
        return O.ObjectiveSet(train={'elbo': O.subsampled(O.mixture_elbo), 'iwae': O.subsampled(O.m_iwae),
                                     'dreg': O.subsampled(O.m_dreg)}, test=O.m_iwae)
