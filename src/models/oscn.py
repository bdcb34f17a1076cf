"""OSCN VAE (number sense): 3x32x32 images of N objects of one shape and colour.

Same configuration as the CMNIST VAE (src/models/cmnist.py): the shared MLP
(--num-hidden-layers x 400), or with --arch cnn the DCGAN-style SVHN networks;
Normal (--dist) prior, posterior and likelihood (scale 0.75).
"""
from . import register
from .cmnist import DISTS, networks
from .svhn import Dec as SVHNDec
from .svhn import Enc as SVHNEnc
from .vae import VAE

DATA_SIZE = (3, 32, 32)


@register
class OSCN(VAE):
    name = 'oscn'
    dataset = 'oscn'
    data_size = DATA_SIZE

    def __init__(self, params):
        family = DISTS[params.dist]
        super().__init__(family, family, family, *networks(params, DATA_SIZE, SVHNEnc, SVHNDec), params)
