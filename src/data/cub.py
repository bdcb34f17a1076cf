"""CUB image-caption datasets: Caltech-UCSD Birds-200-2011 images with the captions of
Reed et al. (2016), or with --offline the generated bird set; docs/cub.md.

The parts, each in its own file:
- src/data/cub_layout.py    where the data are, the check of the real layout;
- src/data/cub_offline.py   the generated bird set (--offline);
- src/data/captions.py      tokenise, vocabulary, ids (cached under <root>/cache);
- src/data/cub_images.py    the images at 64x64 (cached);
- src/data/cub_features.py  2048-d ResNet-101 features (or the offline stand-in; cached);
- src/data/cub_display.py   captions and features in figures.
Here: the caption data of a split, and the datasets by the names the models
give: cubI (64x64 images), cubS (captions), cubIft (features), cubIS / cubISft
(each caption paired with its image / image features: 10 pairs per image, as
the released code).
"""
import os

import torch

from .cub_display import Display
from .cub_features import extractor, features
from .cub_images import images64
from .cub_layout import CAPTIONS_PER_IMAGE, cache_dir, check_layout, root, text_file
from .cub_offline import make_offline_set, offline_meta, offline_source  # noqa: F401  (make_offline_set: docs)
from .registry import register_dataset
from .tensors import TensorData


def _captions():
    """src.data.captions, imported on first use (nltk takes seconds to import)."""
    from . import captions
    return captions


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
    """The size of the training captions' vocabulary (main.py gives it to the caption models)."""
    return len(caption_data(args)[0])


# ---------------------------------------------------------------- datasets

def _display(args, with_features, net=None):
    i2w = vocab(args)
    if not with_features:
        return Display(i2w)
    images = {s: images64(args, s)[0] for s in ('train', 'test')}
    feats = {s: features(args, s, net=net)[0] for s in ('train', 'test')}
    return Display(i2w, images, feats)


def _source(args, net=None):
    if args.offline:
        s = offline_source(args.data_dir)
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


def _ids(args, split):
    return caption_data(args)[1 if split == 'train' else 2]


@register_dataset('cubI')
def load_cub_images(args, split):
    images, classes = images64(args, split)
    return TensorData([images], _labels(torch.arange(len(images)), classes), source=_source(args), names=['cubI'])


@register_dataset('cubS')
def load_cub_captions(args, split):
    ids = _ids(args, split)
    image = torch.arange(len(ids)) // CAPTIONS_PER_IMAGE
    data = TensorData([ids], {'image': image}, source=_source(args), names=['cubS'])
    data.display = _display(args, False)
    return data


@register_dataset('cubIft')
def load_cub_features(args, split):
    net = extractor(args)
    feats = features(args, split, net=net)[0]
    data = TensorData([feats], {'image': torch.arange(len(feats))}, source=_source(args, net), names=['cubIft'])
    data.display = _display(args, True, net)
    return data


@register_dataset('cubIS')
def load_cub_image_captions(args, split):
    images, classes = images64(args, split)
    index = _pair_index(len(_ids(args, split)))
    data = TensorData([images, _ids(args, split)], _labels(index[0], classes), index=index,
                      source=_source(args), names=['cubI', 'cubS'])
    data.display = _display(args, False)
    return data


@register_dataset('cubISft')
def load_cub_features_captions(args, split):
    net = extractor(args)
    feats = features(args, split, net=net)[0]
    index = _pair_index(len(_ids(args, split)))
    data = TensorData([feats, _ids(args, split)], {'image': index[0]}, index=index, source=_source(args, net),
                      names=['cubIft', 'cubSft'])
    data.display = _display(args, True, net)
    return data
