"""Digit classifiers that label generated MNIST and SVHN images (paper section 4.1, Table 2).

The small CNNs of the released src/report/helper.py (the PyTorch MNIST example
net and its 3-channel twin), trained as the released analyse_ms.py trains them:
Adam (lr 1e-3), cross-entropy, batches of 256 drawn in a fresh random order
each epoch, 30 epochs over the run's *paired* training set (each pair gives its
image of this modality; with pair multiplier 30 each MNIST image is seen 30
times per epoch), tested on the paired test set.

A trained classifier is cached under <data-dir>/classifiers/<real|offline>/,
under a name that hashes everything that changes it: the data (a fingerprint of
the images, the item -> image rows and the labels), the training set's
description (paired with which multiplier, or unpaired), epochs, batch size,
learning rate and seed. A cache file whose recorded key differs is retrained.
The test accuracy is recomputed at every use (it depends on the test set).
"""
import hashlib
import math
import os
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from src.data.tensors import spread_subset, to_model_input
from src.files import load_torch, save_torch
from src.report.metrics import accuracy
from src.rng import fork_rng


class DigitCNN(nn.Module):
    """channels x side x side -> logits over 10 digits (the released analyse_ms classifiers).

    The released nets end in log_softmax; their arg-max and their cross-entropy
    loss (log_softmax is idempotent) are those of these logits."""

    def __init__(self, channels, side):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 10, 5)  # side - 4, then pool /2
        self.conv2 = nn.Conv2d(10, 20, 5)        # -4, then pool /2
        self.drop = nn.Dropout2d()
        self.fc1 = nn.Linear(20 * (((side - 4) // 2 - 4) // 2) ** 2, 50)  # 320 for MNIST, 500 for SVHN
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.drop(self.conv2(x)), 2))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(F.dropout(x, training=self.training))


def digit_cnn(shape):
    """The digit classifier of square images of `shape` (C, S, S): DigitCNN(1, 28) for MNIST, (3, 32) for SVHN."""
    channels, height, width = shape
    if height != width or height < 16:
        raise ValueError(f'the digit classifiers take square images of side 16 or more, not {tuple(shape)}')
    return DigitCNN(channels, height)



SEED = 0     # fixed: a cached classifier depends only on the data and the budget
LR = 1e-3    # released: Adam(lr=0.001)


@dataclass
class Items:
    """One modality's items: item i is image images[rows[i]] with digit labels[i].

    For a paired set, rows is the pairing index of this modality (an image
    appears once per pair it is in); for an unpaired set, rows = 0..n-1."""
    images: torch.Tensor   # (n_images, C, H, W), uint8 or float
    rows: torch.Tensor     # (n_items,) long
    labels: torch.Tensor   # (n_items,) long
    description: str

    def __len__(self):
        return len(self.rows)

    def batch(self, idx):
        return to_model_input(self.images[self.rows[idx]])

    def subset(self, n):
        """n evenly spaced items (all when n == 0 or n >= len): a quick check on fewer items."""
        if n == 0 or n >= len(self):
            return self
        idx = spread_subset(len(self), n, self.rows.device)
        return Items(self.images, self.rows[idx], self.labels[idx], f'{self.description}, {n:,} evenly spaced items')


def modality_items(data, m, description):
    """Items of modality m of a TensorData (paired: its pairing index; unpaired: every image once)."""
    rows = data.index[m] if data.index is not None else torch.arange(len(data), device=data.sources[m].device)
    return Items(data.sources[m], rows, data.labels['digit'], description)


def fingerprint(*tensors):
    """A short hash of the tensors' bytes (the cache key's data part)."""
    h = hashlib.blake2b(digest_size=8)
    for t in tensors:
        h.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy())
    return h.hexdigest()


def steps(n_items, epochs, batch_size):
    """Optimiser steps of `epochs` passes over n items (the last partial batch included, as a DataLoader)."""
    return epochs * math.ceil(n_items / batch_size)


def train_classifier(modality, train, epochs, batch_size=256, lr=LR, log=None):
    """Adam + cross-entropy over the items of `train` (Items), a fresh random order each epoch, the last
    partial batch included (as the released DataLoader); a fixed seed, the caller's RNG untouched."""
    dev = train.rows.device
    gen = torch.Generator().manual_seed(SEED)
    with fork_rng(dev):
        torch.manual_seed(SEED)
        net = digit_cnn(train.images.shape[1:]).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        net.train()
        for epoch in range(1, epochs + 1):
            total = 0.0
            for idx in torch.randperm(len(train), generator=gen).to(dev).split(batch_size):
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(net(train.batch(idx)), train.labels[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            if log:
                log.info(f'  {modality} classifier epoch {epoch}/{epochs}: train loss {total / len(train):.4f}')
    return net.eval()


@torch.no_grad()
def predict_images(net, images, batch_size=1000):
    """Arg-max digit of every image (eval mode: deterministic, so each image is classified once)."""
    net.eval()
    return torch.cat([net(to_model_input(xb)).argmax(-1) for xb in images.split(batch_size)])


def test_accuracy(net, test):
    """Percent of the items of `test` (Items) classified right. An image that appears in several pairs
    counts once per pair, as when the released script iterates over the paired test set."""
    used, rows = test.rows.unique(return_inverse=True)  # classify only the images that some item uses
    return 100.0 * accuracy(predict_images(net, test.images[used])[rows], test.labels)


def cache_key(modality, source, train, epochs, batch_size):
    return {'modality': modality, 'source': source, 'train_set': train.description, 'n_train_items': len(train),
            'n_train_images': len(train.images), 'data': fingerprint(train.images, train.rows, train.labels),
            'epochs': epochs, 'batch_size': batch_size, 'lr': LR, 'seed': SEED}


def cache_path(data_dir, offline, key):
    digest = hashlib.blake2b(repr(sorted(key.items())).encode(), digest_size=6).hexdigest()
    return os.path.join(data_dir, 'classifiers', 'offline' if offline else 'real',
                        f"{key['modality']}_cnn_e{key['epochs']}_{digest}.pt")


def cached_network(path, key, build, train, what, device, log=None):
    """A trained network cached at `path` with `key` (a dict of everything that changes it): loaded when
    the file holds that key, else trained now (train() -> (net, extras)) and saved. Every classifier the
    analyses train (digits here, numbers in src/report/numbersense/classifiers.py) is cached through this.
    Returns (net in eval mode, extras saved with it, trained now?)."""
    if os.path.isfile(path):
        saved = load_torch(path, f'cached {what}', map_location=device)
        if saved.get('key') == key:
            net = build().to(device)
            net.load_state_dict(saved['state_dict'])
            return net.eval(), saved.get('extras', {}), False
        if log:
            log.info(f'{path} was trained with other data or settings: retraining it')
    net, extras = train()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_torch({'key': key, 'state_dict': net.state_dict(), 'extras': extras}, path)
    return net.eval(), extras, True


def load_or_train(modality, source, train, test, data_dir, offline, epochs, batch_size=256, log=None):
    """(classifier in eval mode, info dict) for `modality`: from the cache, or trained now and cached.

    train, test: Items of this modality; source: the data source (real or offline, which stand-in).
    info records the budget (epochs, batch size, steps), the sets and the test accuracy on `test`.
    """
    key = cache_key(modality, source, train, epochs, batch_size)
    path = cache_path(data_dir, offline, key)

    def fit():
        if log:
            log.info(f'training the {modality} digit classifier: {epochs} epochs over {train.description} '
                     f'({len(train):,} items, {steps(len(train), epochs, batch_size):,} steps of {batch_size}) '
                     f'-> {path}')
        t0 = time.time()
        net = train_classifier(modality, train, epochs, batch_size, log=log)
        return net, {'train_seconds': round(time.time() - t0, 1)}

    net, extras, trained_now = cached_network(path, key, lambda: digit_cnn(train.images.shape[1:]), fit,
                                              f'{modality} classifier',
                                              train.rows.device, log)
    info = {'path': path, 'trained_now': trained_now, **key, 'steps': steps(len(train), epochs, batch_size),
            'train_seconds': extras.get('train_seconds'), 'test_set': test.description, 'n_test_items': len(test),
            'test_accuracy': test_accuracy(net, test)}
    return net, info
