"""MMVAE of MNIST and SVHN (paper section 5): Laplace joint prior."""
from math import prod

import torch.distributions as dist

from . import register
from .mnist import MNIST
from .multimodal import MultimodalVAE
from .svhn import SVHN


@register
class MNIST_SVHN(MultimodalVAE):
    name = 'mnist_svhn'
    dataset = 'mnist_svhn'

    def __init__(self, params):
        super().__init__(dist.Laplace, params, MNIST, SVHN)
        # Balance the modalities' likelihoods by data size (3072 / 784 = 3.918, as released);
        # a non-zero --llik_scaling replaces the default.
        self.scale_first_likelihood(prod(SVHN.data_size) / prod(MNIST.data_size))
