"""How figures show CUB data: captions as text, feature vectors as the nearest real image."""
import torch


class Display:
    """Captions as text, feature vectors as the nearest real image (Euclidean distance in feature space).

    i2w: the vocabulary. For feature models, images/feats: dict split ->
    uint8 images (N, 3, 64, 64) and their features (N, 2048).
    """

    def __init__(self, i2w, images=None, feats=None):
        self.i2w, self.images, self.feats = i2w, images or {}, feats or {}

    def captions(self, x):
        """Ids (N, L) or logits (N, L, V) -> list of N strings (up to '<eos>', '<pad>' removed)."""
        from .captions import decode_batch
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.argmax(-1)
        return decode_batch(x, self.i2w)

    def nearest_images(self, feats, split='train'):
        """(N, 2048) features -> float (N, 3, 64, 64) in [0, 1]: the nearest real image of `split`.

        Inputs that are real features of `split` find their own image (distance 0)."""
        bank = self.feats[split]
        idx = torch.cdist(feats.detach().float().cpu(), bank).argmin(1)
        return self.images[split][idx].float() / 255
