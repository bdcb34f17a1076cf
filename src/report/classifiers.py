"""Digit classifiers that label generated MNIST and SVHN images (SPEC section 6).

The small CNNs of the released analyse_ms.py (the PyTorch MNIST example net
and its 3-channel twin). Each is trained once on the training images of its
modality and cached under <data-dir>/classifiers/<real|offline>/: offline
stand-in data and the real datasets never share a classifier, and a cache
whose recorded data source differs from the current one is retrained.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from src.files import load_torch, save_torch
from src.report.metrics import accuracy, fork_rng


class DigitCNN(nn.Module):
    """channels x side x side -> logits over 10 digits (the released analyse_ms classifiers)."""

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


CLASSIFIERS = {'mnist': lambda: DigitCNN(1, 28), 'svhn': lambda: DigitCNN(3, 32)}
SEED = 0  # fixed: a cached classifier depends only on the data and the epochs


def cache_path(data_dir, offline, modality, epochs):
    return os.path.join(data_dir, 'classifiers', 'offline' if offline else 'real', f'{modality}_cnn_e{epochs}.pt')


def train_classifier(modality, x_train, y_train, epochs, batch_size=256, lr=1e-3, log=None):
    """Adam + cross-entropy over shuffled batches; a fixed seed, the global RNG untouched."""
    dev = x_train.device
    gen = torch.Generator().manual_seed(SEED)
    with fork_rng(dev):
        torch.manual_seed(SEED)
        net = CLASSIFIERS[modality]().to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        net.train()
        for epoch in range(1, epochs + 1):
            total = 0.0
            for idx in torch.randperm(len(y_train), generator=gen).to(dev).split(batch_size):
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(net(x_train[idx]), y_train[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            if log:
                log.info(f'  {modality} classifier epoch {epoch}/{epochs}: train loss {total / len(y_train):.4f}')
    return net.eval()


@torch.no_grad()
def test_accuracy(net, x, y, batch_size=1000):
    net.eval()
    logits = torch.cat([net(xb) for xb in x.split(batch_size)])
    return accuracy(logits, y)


def load_or_train(modality, train, test, data_dir, offline, epochs, batch_size=256, log=None):
    """(classifier in eval mode, info dict) for `modality`, from the cache or trained now.

    train/test: TensorData of the modality's unpaired images (labels['digit']).
    The cache records the data source; a mismatch (or an unreadable file) retrains.
    """
    path = cache_path(data_dir, offline, modality, epochs)
    dev = train.sources[0].device
    want = {'source': train.source, 'n_train': len(train), 'n_test': len(test), 'epochs': epochs}
    if os.path.isfile(path):
        saved = load_torch(path, f'cached {modality} classifier', map_location=dev)
        if all(saved.get(k) == v for k, v in want.items()):
            net = CLASSIFIERS[modality]().to(dev)
            net.load_state_dict(saved['state_dict'])
            return net.eval(), {'path': path, 'trained_now': False, **want,
                                'test_accuracy': saved['test_accuracy']}
        if log:
            log.info(f'{path} was trained on other data ({saved.get("source")!r}): retraining it')
    if log:
        log.info(f'training the {modality} digit classifier ({epochs} epochs on {len(train):,} images: '
                 f'{train.source}) -> {path}')
    x_train = train.gather(torch.arange(len(train), device=dev))
    net = train_classifier(modality, x_train, train.labels['digit'], epochs, batch_size, log=log)
    acc = test_accuracy(net, test.gather(torch.arange(len(test), device=dev)), test.labels['digit'])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_torch({'state_dict': net.state_dict(), 'test_accuracy': acc, **want}, path)
    return net, {'path': path, 'trained_now': True, **want, 'test_accuracy': acc}
