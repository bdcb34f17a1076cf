"""CUB image-caption data (SPEC section 5): Caltech-UCSD Birds-200-2011 images
with the captions of Reed et al. (2016), and the --offline generated bird set.

Layout under --data-dir (real data):
  cub/train/<class>/<image>.jpg     training images (the train+val classes), one folder per class
  cub/test/<class>/<image>.jpg      test images (the test classes)
  cub/text_trainvalclasses.txt      10 captions per training image, one per line, in image order
  cub/text_testclasses.txt          the same for the test images
Image order: class folders sorted, files sorted within each; caption i belongs
to image i // 10. The layout is checked on load.

--offline: <data-dir>/cub_offline/ holds a generated set (src/data/synth_cub.py:
bird figures whose colours and parts vary, 10 captions each that describe
exactly them) as the two caption files plus uint8 image tensors; built on
first use (OFFLINE_SIZE images), or at another size by
`python -c "from src.data.cub import make_offline_set; make_offline_set('data', 2000, 500)"`.

Both go through the same pipeline, cached under <root>/cache/:
- captions: tokenised per line, vocabulary, ids (src/data/captions.py);
- images resized to 64x64 once, kept as uint8 (N, 3, 64, 64);
- ResNet-101 pooled 2048-d features of the images resized to 224x224
  (torchvision ImageNet weights), extracted once with a progress bar. Without
  the weights file and without network access this is an error naming the
  file to place. With --offline the features come from a stand-in instead
  (src/data/bird_features.py: a small CNN trained once on the offline
  training birds' attributes, cached), and every source string, log and JSON
  output says so.

Datasets (the names the models give): cubI (64x64 images), cubS (captions),
cubIft (features), cubIS / cubISft (each caption paired with its image /
image features: 10 pairs per image, as the released code).
"""
import hashlib
import json
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import UserError
from ..files import load_json, load_torch, save_json, save_torch
from . import bird_features
from .tensors import TensorData

log = logging.getLogger(__name__)

CAPTIONS_PER_IMAGE = 10
IMAGE_SIZE = 64
FEATURE_SIZE = 224          # ResNet input: images resized to 224 x 224
FEATURE_DIM = 2048
TEXT_FILES = {'train': 'text_trainvalclasses.txt', 'test': 'text_testclasses.txt'}
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
OFFLINE_SIZE = {'train': 1000, 'test': 250}   # default size of the generated set (images)
OFFLINE_SEED = {'train': 0, 'test': 1}        # fixed: the data do not change with --seed
OFFLINE_VERSION = 1                           # bump when the generated set changes
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------- where things are

def _captions():
    """src.data.captions, imported on first use (nltk takes seconds to import)."""
    from . import captions
    return captions


def root(args):
    """<data-dir>/cub (real) or <data-dir>/cub_offline (generated)."""
    return os.path.join(args.data_dir, 'cub_offline' if args.offline else 'cub')


def cache_dir(args):
    """<root>/cache, created; a clear error where it cannot be written (e.g. read-only shared data)."""
    d = os.path.join(root(args), 'cache')
    try:
        os.makedirs(d, exist_ok=True)
        if not os.access(d, os.W_OK):
            raise PermissionError(f'{d} is not writable')
    except OSError as e:
        raise UserError(f"cannot write the CUB caches to {d} ({e}).\n  fix: give write access there, or copy "
                        f"the data to a writable --data-dir") from None
    return d


def _cache(args, name):
    return os.path.join(cache_dir(args), name)


def text_file(args, split):
    return os.path.join(root(args), TEXT_FILES[split])


def image_files(cub_root, split):
    """Sorted (class index, path) of the images of a split: class folders sorted, files sorted."""
    d = os.path.join(cub_root, split)
    classes = sorted(c for c in os.listdir(d) if os.path.isdir(os.path.join(d, c)) and not c.startswith('.'))
    out = []
    for k, c in enumerate(classes):
        files = sorted(f for f in os.listdir(os.path.join(d, c))
                       if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.'))
        out += [(k, os.path.join(d, c, f)) for f in files]
    return out


_LAYOUTS = {}


def check_layout(cub_root):
    """Raise a UserError naming the problem unless the real CUB layout is complete.

    Returns {split: [(class, path), ...]} (checked once per process and directory).
    """
    key = os.path.abspath(cub_root)
    if key not in _LAYOUTS:
        _LAYOUTS[key] = _check_layout(cub_root)
    return _LAYOUTS[key]


def _check_layout(cub_root):
    how = ("lay the data out as <data-dir>/cub/{train,test}/<class>/<image>.jpg with "
           "cub/text_trainvalclasses.txt and cub/text_testclasses.txt (10 captions per image, one per line, "
           "in image order); see README, section CUB. Or run with --offline to use the generated bird set")
    if not os.path.isdir(cub_root):
        raise UserError(f"CUB data not found: {os.path.abspath(cub_root)} does not exist.\n  fix: {how}")
    for split in ('train', 'test'):  # everything there first, then the counts
        d = os.path.join(cub_root, split)
        txt = os.path.join(cub_root, TEXT_FILES[split])
        if not os.path.isdir(d):
            raise UserError(f"CUB layout: the image folder {d} is missing.\n  fix: {how}")
        if not os.path.isfile(txt):
            raise UserError(f"CUB layout: the caption file {txt} is missing.\n  fix: {how}")
    files = {}
    for split in ('train', 'test'):
        d = os.path.join(cub_root, split)
        txt = os.path.join(cub_root, TEXT_FILES[split])
        files[split] = image_files(cub_root, split)
        n_img, n_cap = len(files[split]), len(_captions().read_captions(txt))
        if n_img == 0:
            raise UserError(f"CUB layout: no images ({', '.join(IMAGE_EXTENSIONS)}) in class folders under {d}.\n"
                            f"  fix: {how}")
        if n_cap != CAPTIONS_PER_IMAGE * n_img:
            raise UserError(f"CUB layout: {txt} has {n_cap:,} captions but {d} has {n_img:,} images "
                            f"(expected {CAPTIONS_PER_IMAGE} x {n_img:,} = {CAPTIONS_PER_IMAGE * n_img:,} captions, "
                            f"one per line, in image order).\n  fix: pair each caption file with its image folder")
    return files


def _files_key(files):
    """Hash of the image list (relative paths and sizes): caches follow the files."""
    h = hashlib.sha1()
    for k, p in files:
        h.update(f'{k}|{os.path.basename(os.path.dirname(p))}/{os.path.basename(p)}|{os.path.getsize(p)}\n'.encode())
    return h.hexdigest()


# ---------------------------------------------------------------- the offline set

def _offline_meta_path(data_dir):
    return os.path.join(data_dir, 'cub_offline', 'meta.json')


def make_offline_set(data_dir, n_train=None, n_test=None):
    """Generate <data-dir>/cub_offline (caption files, uint8 images, attributes); returns its meta."""
    from .synth_cub import generate_birds
    n = {'train': n_train or OFFLINE_SIZE['train'], 'test': n_test or OFFLINE_SIZE['test']}
    d = os.path.join(data_dir, 'cub_offline')
    os.makedirs(d, exist_ok=True)
    for split in ('train', 'test'):
        log.info(f'generating the offline bird set ({split}: {n[split]:,} images, '
                 f'{CAPTIONS_PER_IMAGE * n[split]:,} captions) -> {d}')
        images, caps, attrs = generate_birds(n[split], OFFLINE_SEED[split], size=IMAGE_SIZE)
        save_torch({'images': torch.from_numpy(images)}, os.path.join(d, f'images_{split}.pt'))
        save_json(attrs, os.path.join(d, f'attributes_{split}.json'))
        txt = os.path.join(d, TEXT_FILES[split])
        with open(txt + '.tmp', 'w', encoding='utf-8') as f:
            f.write('\n'.join(caps) + '\n')
        os.replace(txt + '.tmp', txt)
    meta = {'n_images': n, 'seed': OFFLINE_SEED, 'version': OFFLINE_VERSION, 'image_size': IMAGE_SIZE}
    meta['key'] = hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()
    save_json(meta, _offline_meta_path(data_dir))  # written last: its presence means the set is complete
    return meta


def offline_meta(data_dir):
    """The generated set's meta (generating the set at the default size if there is none)."""
    path = _offline_meta_path(data_dir)
    if os.path.isfile(path):
        meta = load_json(path, 'offline bird set description')
        if meta.get('version') == OFFLINE_VERSION:
            return meta
        log.info(f'{path} is from an older generator: regenerating the offline bird set')
    return make_offline_set(data_dir)


# ---------------------------------------------------------------- captions

def caption_data(args):
    """(w2i, train ids (N, 32), test ids (N, 32)): built once, cached under <root>/cache."""
    if args.offline:
        offline_meta(args.data_dir)
    else:
        check_layout(root(args))
    return _captions().load_or_build(text_file(args, 'train'), text_file(args, 'test'), cache_dir(args))


def captions_key(args):
    """Hash of both caption files and the pipeline settings (what the vocabulary and ids depend on)."""
    caption_data(args)  # generates the offline set / checks the layout first
    return _captions().cache_key(text_file(args, 'train'), text_file(args, 'test'))


def vocab(args):
    """i2w list: the vocabulary of the training captions (id -> word)."""
    return _captions().invert_vocab(caption_data(args)[0])


def vocab_size(args):
    """The caption models' vocabulary size, from the data (the cached vocabulary)."""
    return len(caption_data(args)[0])


# ---------------------------------------------------------------- images

def images64(args, split):
    """uint8 (N, 3, 64, 64) images of a split, resized once and cached; and their class
    labels (LongTensor (N,), the index of the class folder; None for the offline set)."""
    if args.offline:  # no species: class None
        offline_meta(args.data_dir)
        return load_torch(os.path.join(root(args), f'images_{split}.pt'), 'offline bird images file')['images'], None
    files = check_layout(root(args))[split]
    key = _files_key(files)
    path = _cache(args, f'images64_{split}.pt')
    if os.path.exists(path):
        d = load_torch(path, 'cached CUB images file')
        if d.get('key') == key:
            return d['images'], d['classes']
        log.info(f'{path} was built from other image files: rebuilding it')
    from PIL import Image
    images = torch.empty(len(files), 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    for i, (_, p) in enumerate(tqdm(files, desc=f'CUB {split}: resizing images to 64x64', disable=None)):
        with Image.open(p) as im:
            im = im.convert('RGB').resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
            images[i] = torch.from_numpy(_pil_array(im)).permute(2, 0, 1)
    classes = torch.tensor([k for k, _ in files], dtype=torch.long)
    save_torch({'key': key, 'images': images, 'classes': classes}, path)
    return images, classes


def _pil_array(im):
    return np.asarray(im, dtype=np.uint8).copy()


def images_key(args, split):
    """Identifies the images of a split (their files, or the generated set): cache keys."""
    if args.offline:
        return offline_meta(args.data_dir)['key'] + f'/{split}'
    return _files_key(check_layout(root(args))[split])


# ---------------------------------------------------------------- ResNet-101 features

def weights_file():
    """Where torchvision looks for the ImageNet ResNet-101 weights (the released code's pretrained=True)."""
    from torchvision.models import ResNet101_Weights
    url = ResNet101_Weights.IMAGENET1K_V1.url
    return os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(url)), url


class FeatureExtractor:
    """ResNet-101 up to its global average pool: (N, 3, H, W) in [0, 1] -> (N, 2048).

    The ImageNet weights file in torch hub's checkpoints directory, else
    downloaded (without network: an error naming the file and where to put
    it). tag names the caches; the network is built on first use, so cached
    features need no weights.
    """
    stand_in = False

    def __init__(self, device):
        self.path, self.url = weights_file()
        self.device = device
        self._net = None
        self.tag = 'resnet101_imagenet1k_v1'
        self.description = f'ResNet-101 with the torchvision ImageNet weights ({os.path.basename(self.path)})'

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
        if tuple(x.shape[-2:]) != (FEATURE_SIZE, FEATURE_SIZE):
            x = F.interpolate(x, size=(FEATURE_SIZE, FEATURE_SIZE), mode='bilinear', align_corners=False,
                              antialias=x.shape[-1] > FEATURE_SIZE)
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        return net((x - mean) / std).float().cpu()

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
        self.path = _cache(args, f'bird_features_v{bird_features.VERSION}_seed{bird_features.SEED}.pt')
        self.tag = f'birdattr_v{bird_features.VERSION}_seed{bird_features.SEED}'
        self.description = ("offline stand-in features: a small CNN trained on the generated birds' attributes "
                            "(src/data/bird_features.py), NOT the paper's ImageNet ResNet-101 features")

    @property
    def net(self):
        key = images_key(self.args, 'train')
        if self._key != key:  # first use, or the offline set was generated anew
            state = load_torch(self.path, 'cached offline feature network') if os.path.isfile(self.path) else {}
            if state.get('key') == key:
                with torch.random.fork_rng(devices=[]):  # building it leaves the caller's RNG as it was
                    net = bird_features.AttributeNet()
                net.load_state_dict(state['state_dict'])
            else:
                images = images64(self.args, 'train')[0]
                attrs = load_json(os.path.join(root(self.args), 'attributes_train.json'), 'offline bird attributes')
                log.info(f'offline image features: training the attribute network on the {len(images):,} offline '
                         f'training birds ({bird_features.EPOCHS} epochs; once, cached in {self.path})')
                net, accuracy = bird_features.train_attribute_net(images, attrs)
                log.info('its training accuracy per attribute: ' +
                         ', '.join(f'{k} {a:.2f}' for k, a in accuracy.items()))
                save_torch({'key': key, 'state_dict': net.state_dict(), 'train_accuracy': accuracy}, self.path)
            self._net, self._key = net.eval().to(self.device), key
        return self._net

    @torch.no_grad()
    def __call__(self, x):
        return self.net.features(x.to(self.device)).float().cpu()


_EXTRACTORS = {}


def _device(args):
    return torch.device('cuda' if torch.cuda.is_available() and not getattr(args, 'no_cuda', False) else 'cpu')


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


def _batch_size(device):
    return 64 if device.type == 'cuda' else 16


def _original_batches(files, batch_size):
    """Real CUB images read from disk and resized to 224 x 224, as uint8 batches."""
    from PIL import Image
    for s in range(0, len(files), batch_size):
        batch = []
        for _, p in files[s:s + batch_size]:
            with Image.open(p) as im:
                im = im.convert('RGB').resize((FEATURE_SIZE, FEATURE_SIZE), Image.BILINEAR)
                batch.append(torch.from_numpy(_pil_array(im)).permute(2, 0, 1))
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
    path = _cache(args, f'{net.tag}_{source}_{split}.pt')
    key = images_key(args, split)
    if os.path.exists(path):
        d = load_torch(path, 'cached image features file')
        if d.get('key') == key:
            return d['features'], net.description
        log.info(f'{path} was extracted from other images: extracting again')
    if net.stand_in:
        log.info(f'CUB {split} image features: {net.description}')
    desc = f'CUB {split}: image features ({source})'
    bs = _batch_size(net.device)
    if source == 'original' and not args.offline:
        files = check_layout(root(args))[split]
        feats = net.batched(_original_batches(files, bs), len(files), desc)
    else:
        images = images64(args, split)[0]
        feats = net.batched(images.split(bs), len(images), desc)
    if not torch.isfinite(feats).all():
        raise UserError(f'image features of the CUB {split} images are not finite: {net.description}')
    save_torch({'key': key, 'features': feats, 'network': net.description}, path)
    return feats, net.description


# ---------------------------------------------------------------- showing data in figures

class Display:
    """How figures show CUB data: captions as text, feature vectors as the
    nearest real image (Euclidean distance in feature space).

    i2w: the vocabulary. For feature models, images/feats: dict split ->
    uint8 images (N, 3, 64, 64) and their features (N, 2048).
    """

    def __init__(self, i2w, images=None, feats=None):
        self.i2w, self.images, self.feats = i2w, images or {}, feats or {}

    def captions(self, x):
        """Ids (N, L) or logits (N, L, V) -> list of N strings (up to '<eos>', '<pad>' removed)."""
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.argmax(-1)
        return _captions().decode_batch(x, self.i2w)

    def nearest_images(self, feats, split='train'):
        """(N, 2048) features -> float (N, 3, 64, 64) in [0, 1]: the nearest real image of `split`.

        Inputs that are real features of `split` find their own image (distance 0)."""
        bank = self.feats[split]
        idx = torch.cdist(feats.detach().float().cpu(), bank).argmin(1)
        return self.images[split][idx].float() / 255


def _display(args, with_features, net=None):
    i2w = vocab(args)
    if not with_features:
        return Display(i2w)
    images = {s: images64(args, s)[0] for s in ('train', 'test')}
    feats = {s: features(args, s, net=net)[0] for s in ('train', 'test')}
    return Display(i2w, images, feats)


# ---------------------------------------------------------------- datasets

def _source(args, net=None):
    if args.offline:
        meta = offline_meta(args.data_dir)
        n = meta['n_images']
        s = (f"offline: generated bird set (src/data/synth_cub.py; {n['train']:,} train / {n['test']:,} test images, "
             f"10 captions each), not CUB")
    else:
        s = f'CUB-200-2011 images with the Reed et al. (2016) captions ({os.path.abspath(root(args))})'
    if net is not None:
        s += f'; image features: {net.description}'
    return s


def _pair_index(n_captions):
    """Caption i is paired with image i // 10 (every caption once, its image 10 times)."""
    caps = torch.arange(n_captions)
    return [caps // CAPTIONS_PER_IMAGE, caps]


def _labels(image, classes):
    """'image': index of the item's image; 'class': its species (real CUB only)."""
    return {'image': image} if classes is None else {'image': image, 'class': classes[image]}


def load_cub_images(args, split):
    images, classes = images64(args, split)
    return TensorData([images], _labels(torch.arange(len(images)), classes), source=_source(args), names=['cubI'])


def load_cub_captions(args, split):
    ids = caption_data(args)[1 if split == 'train' else 2]
    image = torch.arange(len(ids)) // CAPTIONS_PER_IMAGE
    data = TensorData([ids], {'image': image}, source=_source(args), names=['cubS'])
    data.display = _display(args, False)
    return data


def load_cub_features(args, split):
    net = extractor(args)
    feats = features(args, split, net=net)[0]
    data = TensorData([feats], {'image': torch.arange(len(feats))}, source=_source(args, net), names=['cubIft'])
    data.display = _display(args, True, net)
    return data


def load_cub_image_captions(args, split):
    images, classes = images64(args, split)
    ids = caption_data(args)[1 if split == 'train' else 2]
    index = _pair_index(len(ids))
    data = TensorData([images, ids], _labels(index[0], classes), index=index,
                      source=_source(args), names=['cubI', 'cubS'])
    data.display = _display(args, False)
    return data


def load_cub_features_captions(args, split):
    net = extractor(args)
    feats = features(args, split, net=net)[0]
    ids = caption_data(args)[1 if split == 'train' else 2]
    index = _pair_index(len(ids))
    data = TensorData([feats, ids], {'image': index[0]}, index=index, source=_source(args, net),
                      names=['cubIft', 'cubSft'])
    data.display = _display(args, True, net)
    return data
