"""2048-d image features of CUB: ResNet-101 with the ImageNet weights, or with --offline
the stand-in network of src/data/bird_features.py; extracted once and cached.

ResNet-101 input as the released CUBImageFt prepared it: the image (RGB) with its
shorter side resized to 224, aspect kept, no crop (torchvision Resize(224)), then
ToTensor, values in [0, 1], WITHOUT the ImageNet mean/std normalisation. Features
are the 2048-d output of the global average pool.
"""
import logging
import os

import torch
from tqdm import tqdm

from ..distributed import default_device
from ..errors import UserError
from ..files import load_json, load_torch, save_torch
from ..rng import fork_rng
from . import bird_features
from .cub_images import images64, images_key
from .cub_layout import cache_file, check_layout, root

log = logging.getLogger(__name__)

FEATURE_SIZE = 224   # the shorter side of the ResNet input
FEATURE_DIM = 2048
PREPROCESSING = 'shorter side resized to 224 (aspect kept, no crop), [0, 1] values, no ImageNet normalisation'


def weights_file():
    """Where torchvision looks for the ImageNet ResNet-101 weights (the released code's pretrained=True)."""
    from torchvision.models import ResNet101_Weights
    url = ResNet101_Weights.IMAGENET1K_V1.url
    return os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(url)), url


def resize_shorter(x, size=FEATURE_SIZE):
    """(N, 3, H, W) float -> the shorter side resized to `size`, aspect kept (bilinear, antialiased when
    shrinking): torchvision's Resize(size) on tensors."""
    if min(x.shape[-2:]) == size:
        return x
    from torchvision.transforms.functional import resize
    return resize(x, size, antialias=True)


class FeatureExtractor:
    """ResNet-101 up to its global average pool: (N, 3, H, W) in [0, 1] -> (N, 2048).

    The ImageNet weights file in torch hub's checkpoints directory, else
    downloaded (without network: an error naming the file and where to put
    it). tag names the caches (the weights and the preprocessing); the network
    is built on first use, so cached features need no weights.
    """
    stand_in = False

    def __init__(self, device):
        self.path, self.url = weights_file()
        self.device = device
        self._net = None
        self.tag = 'resnet101_imagenet1k_v1_short224'
        self.description = (f'ResNet-101 with the torchvision ImageNet weights ({os.path.basename(self.path)}); '
                            f'input: {PREPROCESSING}, as released')

    @property
    def net(self):
        if self._net is None:
            import torchvision
            net = torchvision.models.resnet101(weights=None)
            net.load_state_dict(self._imagenet_state())
            net.fc = torch.nn.Identity()
            self._net = net.eval().to(self.device)
        return self._net

    def _imagenet_state(self):
        if os.path.isfile(self.path):
            return load_torch(self.path, 'ResNet-101 weights file')
        try:
            return torch.hub.load_state_dict_from_url(self.url, progress=True, check_hash=True)
        except Exception as e:
            reason = (str(e).strip().splitlines() or [''])[0]
            raise UserError(
                f"the ImageNet weights of ResNet-101 (for the CUB image features) are not available and could "
                f"not be downloaded ({type(e).__name__}: {reason}).\n"
                f"  fix: download {self.url} on a machine with network access and place the file "
                f"{os.path.basename(self.path)} in {os.path.dirname(self.path)} (torch hub's checkpoints "
                f"directory; $TORCH_HOME moves it), or run with --offline") from None

    @torch.no_grad()
    def __call__(self, x):
        """x: (N, 3, H, W) float in [0, 1] or uint8, any size -> (N, 2048) float32 on the CPU."""
        net = self.net
        x = x.to(self.device)
        x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
        return net(resize_shorter(x)).float().cpu()

    def batched(self, batches, n, desc):
        """Features of an iterable of image batches (n images in all), with a progress bar."""
        out = []
        with tqdm(total=n, desc=desc, unit='img', disable=None) as bar:
            for x in batches:
                out.append(self(x))
                bar.update(len(x))
        return torch.cat(out) if out else torch.empty(0, FEATURE_DIM)


class BirdFeatureExtractor(FeatureExtractor):
    """--offline: the stand-in for ImageNet features of src/data/bird_features.py, a
    small CNN trained on the offline training birds' attributes (once, cached)."""
    stand_in = True

    def __init__(self, args, device):
        self.args, self.device, self._net, self._key = args, device, None, None
        self.path = cache_file(args, f'bird_features_v{bird_features.VERSION}_seed{bird_features.SEED}.pt')
        self.tag = f'birdattr_v{bird_features.VERSION}_seed{bird_features.SEED}'
        self.description = ("offline stand-in features: a small CNN trained on the generated birds' attributes "
                            "(src/data/bird_features.py), NOT the paper's ImageNet ResNet-101 features")

    @property
    def net(self):
        key = images_key(self.args, 'train')
        if self._key != key:  # first use, or the offline set was generated anew
            state = load_torch(self.path, 'cached offline feature network') if os.path.isfile(self.path) else {}
            if state.get('key') == key:
                with fork_rng():  # building it leaves the caller's RNG as it was
                    net = bird_features.AttributeNet()
                net.load_state_dict(state['state_dict'])
            else:
                net = self._train(key)
            self._net, self._key = net.eval().to(self.device), key
        return self._net

    def _train(self, key):
        images = images64(self.args, 'train')[0]
        attrs = load_json(os.path.join(root(self.args), 'attributes_train.json'), 'offline bird attributes')
        log.info(f'offline image features: training the attribute network on the {len(images):,} offline '
                 f'training birds ({bird_features.EPOCHS} epochs; once, cached in {self.path})')
        net, accuracy = bird_features.train_attribute_net(images, attrs)
        log.info('its training accuracy per attribute: ' + ', '.join(f'{k} {a:.2f}' for k, a in accuracy.items()))
        save_torch({'key': key, 'state_dict': net.state_dict(), 'train_accuracy': accuracy}, self.path)
        return net

    @torch.no_grad()
    def __call__(self, x):
        return self.net.features(x.to(self.device)).float().cpu()


_EXTRACTORS = {}


def _device(args):
    return default_device(getattr(args, 'no_cuda', False))


def extractor(args, device=None):
    """The feature extractor of this data source (one per process and device: the network is large):
    ResNet-101 with ImageNet weights, or with --offline the stand-in of src/data/bird_features.py."""
    device = device or _device(args)
    if args.offline:
        key = ('offline', os.path.abspath(root(args)), str(device))
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = BirdFeatureExtractor(args, device)
    else:
        key = ('resnet101', str(device), weights_file()[0], os.path.isfile(weights_file()[0]))
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = FeatureExtractor(device)
    return _EXTRACTORS[key]


def original_batches(files, batch_size):
    """Real CUB image files as the released CUBImageFt read them (RGB, torchvision Resize(224) on the
    PIL image, ToTensor): float batches of consecutive images of one size (at most batch_size)."""
    from PIL import Image
    from torchvision import transforms
    tx = transforms.Compose([transforms.Resize(FEATURE_SIZE), transforms.ToTensor()])
    batch = []
    for _, p in files:
        with Image.open(p) as im:
            x = tx(im.convert('RGB'))
        if batch and (x.shape != batch[0].shape or len(batch) == batch_size):
            yield torch.stack(batch)
            batch = []
        batch.append(x)
    if batch:
        yield torch.stack(batch)


def features(args, split, source='original', net=None):
    """(N, 2048) float32 image features of a split (ResNet-101, or the offline stand-in), extracted once and cached.

    source 'original': the image files (the paper's cubIft features); '64': the
    64x64 images the image models see (for the cubIS coherence analysis).
    The offline images are 64x64 to begin with, so both are the same there.
    Returns (features, description of the network).
    """
    net = net or extractor(args)
    if args.offline:
        source = 'original'
    path = cache_file(args, f'{net.tag}_{source}_{split}.pt')
    key = images_key(args, split)
    if os.path.exists(path):
        d = load_torch(path, 'cached image features file')
        if d.get('key') == key:
            return d['features'], net.description
        log.info(f'{path} was extracted from other images: extracting again')
    if net.stand_in:
        log.info(f'CUB {split} image features: {net.description}')
    desc = f'CUB {split}: image features ({source})'
    bs = 64 if net.device.type == 'cuda' else 16
    if source == 'original' and not args.offline:
        files = check_layout(root(args))[split]
        feats = net.batched(original_batches(files, bs), len(files), desc)
    else:
        images = images64(args, split)[0]
        feats = net.batched(images.split(bs), len(images), desc)
    if not torch.isfinite(feats).all():
        raise UserError(f'image features of the CUB {split} images are not finite: {net.description}')
    save_torch({'key': key, 'features': feats, 'network': net.description}, path)
    return feats, net.description
