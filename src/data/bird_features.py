"""Offline stand-in for the ImageNet ResNet-101 features of CUB: a small CNN
trained on the generated birds' attributes (src/data/synth_cub.py).

Why: offline there are no ImageNet weights, and a randomly initialised
ResNet-101 hardly encodes colour (a linear probe of the belly colour is at
chance on its features), so a CCA between its features and the captions
measures nothing. This network learns, from the offline training birds, to
predict the attributes that the captions describe (colours of crown, belly,
wings and beak, sizes, lengths, optional parts): its features carry what the
captions talk about, the role the ImageNet features play for real CUB.

Features: the 64-d code that the attribute heads read, mapped to 2048
dimensions by a fixed non-negative random matrix and rescaled to mean 0.5 on
the training birds. So the cubIft/cubISft models get non-negative 2048-d
vectors of the order of ImageNet features, and the features span 64
dimensions: the CCA (fitted on 1,000 offline training images) stays
well-posed, as it is on real CUB with 8,855 training images for 2,048
dimensions. Deterministic given the seed; trained once and cached by
src/data/cub.py.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..rng import fork_rng
from .synth_cub import ATTRIBUTES, BEAK_COLOURS, COLOURS, EYEBROW_COLOURS, LENGTHS, SIZES, WINGBAR_COLOURS

VERSION = 1
SEED = 0
EPOCHS = 30
CODE_DIM = 64
FEATURE_DIM = 2048
FEATURE_MEAN = 0.5
IMAGE_SIZE = 64
# the values each attribute takes (None: an optional part that is absent)
CHOICES = {'size': SIZES, 'crown': COLOURS, 'belly': COLOURS, 'wings': COLOURS, 'beak': BEAK_COLOURS,
           'beak_len': LENGTHS, 'tail_len': LENGTHS, 'wingbars': (None,) + WINGBAR_COLOURS,
           'eyebrow': (None,) + EYEBROW_COLOURS, 'eyering': (None, 'white')}


def targets(attrs):
    """Attribute dicts (synth_cub) -> LongTensor (N, 10): the index of each attribute's value."""
    return torch.tensor([[CHOICES[k].index(a.get(k)) for k in ATTRIBUTES] for a in attrs], dtype=torch.long)


def _block(c_in, c_out, stride=1, pool=False):
    layers = [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return layers + [nn.MaxPool2d(2)] if pool else layers


class AttributeNet(nn.Module):
    """64x64 image -> 64-d code (ReLU) -> one linear classifier per attribute."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(*_block(3, 32, stride=2), *_block(32, 64, pool=True),     # 32 -> 16
                                   *_block(64, 128, pool=True), *_block(128, 256))           # 16 -> 8
        self.code = nn.Linear(2 * 256, CODE_DIM)  # from mean- and max-pooled maps: position-free
        self.heads = nn.ModuleList(nn.Linear(CODE_DIM, len(CHOICES[k])) for k in ATTRIBUTES)
        g = torch.Generator().manual_seed(SEED)
        self.register_buffer('expand', torch.rand(CODE_DIM, FEATURE_DIM, generator=g))
        self.register_buffer('scale', torch.ones(()))

    def encode(self, x):
        """(N, 3, H, W) uint8 or float in [0, 1] -> (N, 64) code."""
        x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
        if tuple(x.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
            x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode='bilinear', align_corners=False,
                              antialias=x.shape[-1] > IMAGE_SIZE)
        h = self.trunk(x - 0.5)
        return F.relu(self.code(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)))

    def forward(self, x):
        """Logits of each attribute (a list of (N, n_values))."""
        c = F.dropout(self.encode(x), 0.1, self.training)
        return [head(c) for head in self.heads]

    def features(self, x):
        """(N, 3, H, W) -> (N, 2048) non-negative features."""
        return self.encode(x) @ self.expand * self.scale


def train_attribute_net(images, attrs, epochs=EPOCHS, seed=SEED, batch_size=64, lr=1e-3):
    """Train on uint8 images (N, 3, 64, 64) and their attribute dicts; returns (net in eval mode,
    training accuracy per attribute). Leaves the caller's random state as it was."""
    y = targets(attrs)
    with fork_rng(), torch.enable_grad():  # callers may be under no_grad
        torch.manual_seed(seed)
        net = AttributeNet()
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        bar = tqdm(range(epochs), desc='offline bird features: training the attribute network', unit='epoch',
                   disable=None)
        for _ in bar:
            net.train()
            for b in torch.randperm(len(images)).split(batch_size):
                x = images[b]
                flip = torch.rand(len(b)) < 0.5  # the facing direction is random and never described
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                loss = sum(F.cross_entropy(logits, y[b, i]) for i, logits in enumerate(net(x)))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            bar.set_postfix(loss=f'{loss.item():.3f}')
    net.eval()
    with torch.no_grad():
        logits = [torch.cat(ls) for ls in zip(*[net(c) for c in images.split(256)], strict=True)]
        accuracy = {k: (lg.argmax(1) == y[:, i]).float().mean().item()
                    for i, (k, lg) in enumerate(zip(ATTRIBUTES, logits, strict=True))}
        net.scale.fill_(FEATURE_MEAN / torch.cat([net.features(c) for c in images.split(256)]).mean().clamp_min(1e-12))
    return net, accuracy
