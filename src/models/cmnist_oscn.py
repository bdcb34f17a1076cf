"""MMVAE of CMNIST and OSCN (number sense): the two unimodal VAEs under a joint
prior, Laplace (--joint-prior) with scale softmax(raw) * D as published."""
from math import prod

from . import register
from .cmnist import CMNIST, DISTS
from .multimodal import MultimodalVAE
from .oscn import OSCN


@register
class CMNIST_OSCN(MultimodalVAE):
    name = 'cmnist_oscn'
    dataset = 'cmnist_oscn'

    def __init__(self, params):
        super().__init__(DISTS[params.joint_prior], params, CMNIST, OSCN)
        # Balance the likelihoods by data size: (3*32*32) / (3*28*28) = 1.306 on CMNIST;
        # a non-zero --llik_scaling replaces the default.
        self.scale_first_likelihood(prod(OSCN.data_size) / prod(CMNIST.data_size))
