"""Mixture of experts (MMVAE; Shi, Siddharth, Paige, Torr, NeurIPS 2019, section 3):
q(z | x_1..M) = (1/M) sum_m q_m(z|x_m). The default rule: the released code's computation."""
from ... import objectives as O
from . import register_joint


@register_joint
class MixtureOfExperts:
    name = 'moe'
    family = None  # each modality's own posterior family (Laplace for MNIST and SVHN)

    @staticmethod
    def components(experts, prior, full):
        return experts

    @staticmethod
    def describe(names, full):
        return [f'q(z|{n})' for n in names]

    @staticmethod
    def objectives():
        return O.ObjectiveSet(train={'elbo': O.m_elbo, 'iwae': O.m_iwae, 'dreg': O.m_dreg}, test=O.m_iwae,
                              looser={'iwae': O.m_iwae_looser, 'dreg': O.m_dreg_looser})
