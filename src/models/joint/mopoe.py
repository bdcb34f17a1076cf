"""Mixture of products of experts (MoPoE; Sutter, Daunhawer, Vogt, ICLR 2021): q(z | x_S) is the uniform
mixture, over the non-empty subsets s of S, of the products of the experts in s. As in the authors' code
(thomassutter/MoPoE, utils/BaseMMVae.py), the prior expert joins the product of all the modalities only,
so a single modality's posterior is its own expert."""
from itertools import combinations

from torch.distributions import Normal

from ... import objectives as O
from ..posteriors import product_of_experts
from . import register_joint


@register_joint
class MixtureOfProducts:
    name = 'mopoe'
    family = Normal
    prior_expert = True  # the products hold a prior expert (--prior-expert)

    @staticmethod
    def components(experts, prior, full):
        subsets = [list(s) for n in range(1, len(experts) + 1) for s in combinations(experts, n)]
        return [product_of_experts([prior, *s]) if full and len(s) == len(experts) else
                s[0] if len(s) == 1 else product_of_experts(s) for s in subsets]

    @staticmethod
    def describe(names, full):
        subsets = [s for n in range(1, len(names) + 1) for s in combinations(names, n)]
        return [' '.join(f'q(z|{n})' for n in s) + (' p(z)' if full and len(s) == len(names) else '')
                + (' (normalised)' if len(s) > 1 else '') for s in subsets]

    @staticmethod
    def objectives():
        return O.ObjectiveSet(train={'elbo': O.mixture_elbo, 'iwae': O.m_iwae, 'dreg': O.m_dreg}, test=O.m_iwae,
                              looser={'iwae': O.m_iwae_looser, 'dreg': O.m_dreg_looser})
