"""cubISft: MMVAE of CUB image features (cubIft, 2048-d ResNet-101) and captions.

Normal joint prior with scale softplus(raw) + eta (the released
mmvae_cub_images_sentences_ft.py); the
caption model is the wider one with biases (CUBSentFt). The feature
log-likelihood is scaled by 32 / 2048 unless --llik_scaling is non-zero (the
paper trains with --llik_scaling 0.002). As in the released code the
unimodal VAEs share the joint prior's parameters.
"""
from math import prod

import torch.distributions as dist

from . import register
from .cub_image_ft import CUBImageFt
from .cub_sent import MAX_LEN, CUBSentFt
from .multimodal import MultimodalVAE
from .vae import softplus_scale_eta


@register
class CUBImageSentFt(MultimodalVAE):
    name = 'cubISft'
    dataset = 'cubISft'
    prior_scale_fn = staticmethod(softplus_scale_eta)
    captions = True

    def __init__(self, params):
        super().__init__(dist.Normal, params, CUBImageFt, CUBSentFt)
        self.scale_first_likelihood(MAX_LEN / prod(CUBImageFt.data_size))
        self.share_prior()
