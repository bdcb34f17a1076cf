"""cubIS: MMVAE of 64x64 CUB images (cubI) and their captions (cubS).

Laplace joint prior with scale softmax(raw) * D + eta (the released
mmvae_cub_images_sentences.py). The
image log-likelihood is scaled by 32 / (3 * 64 * 64) (caption length over
image size) unless --llik_scaling is non-zero. As in the released code the
unimodal VAEs share the joint prior's parameters.
"""
from math import prod

import torch.distributions as dist

from . import register
from .cub_image import CUBImage
from .cub_sent import MAX_LEN, CUBSent
from .multimodal import MultimodalVAE
from .vae import softmax_scale_eta


@register
class CUBImageSent(MultimodalVAE):
    name = 'cubIS'
    dataset = 'cubIS'
    prior_scale_fn = staticmethod(softmax_scale_eta)
    captions = True

    def __init__(self, params):
        super().__init__(dist.Laplace, params, CUBImage, CUBSent)
        self.scale_first_likelihood(MAX_LEN / prod(CUBImage.data_size))
        self.share_prior()
