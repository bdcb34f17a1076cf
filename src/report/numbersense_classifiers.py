"""Number classifiers (1..9) for the number-sense modalities, trained once on
the modality's training images and cached under <data-dir>/classifiers/.

They label generated images (reconstructions, cross-modal generations,
arithmetic results), so their own test accuracy is reported next to every
accuracy computed with them.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from src.data import BatchLoader, load_data
from src.files import load_torch, save_torch

VERSION = 1  # bump when the network or its training changes: old caches are retrained


class NumberClassifier(nn.Module):
    """Small CNN: (B, 3, H, W) in [0, 1] (H, W = 28 or 32) -> 9 logits for numbers 1..9."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7),  # 7x7 (28x28 input) or 8x8 -> 7x7 (32x32): one head for both
        )
        # The head sees the whole 7x7 map: counting needs where things are, not just what.
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(True), nn.Linear(128, 9))

    def forward(self, x):
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x, batch_size=1024):
        """Predicted numbers 1..9 (LongTensor on x's device) for images x (N, 3, H, W)."""
        self.eval()
        return torch.cat([self(b).argmax(-1) + 1 for b in x.split(batch_size)]) if len(x) else \
            torch.zeros(0, dtype=torch.long, device=x.device)


def _data_tag(args):
    return 'offline' if args.offline else 'real'


def classifier_path(modality, args):
    return os.path.join(args.data_dir, 'classifiers', f'numbersense_{modality}_{_data_tag(args)}.pt')


@torch.no_grad()
def accuracy(clf, data, device):
    """Fraction of a TensorData's items whose number the classifier gets right."""
    correct = 0
    for x, labels in BatchLoader(data, 1024):
        correct += (clf.predict(x.to(device)) == labels['number'].to(device)).sum().item()
    return correct / len(data)


def train_classifier(modality, args, device, epochs, log, batch_size=128):
    """Adam (lr 1e-3), cross-entropy; seeded, and without touching the caller's random stream."""
    train = load_data(modality, args, 'train')
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clf = NumberClassifier().to(device)
        opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
        loader = BatchLoader(train, batch_size, shuffle=True, seed=0)
        for epoch in range(1, epochs + 1):
            clf.train()
            total = 0.0
            for x, labels in loader:
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(clf(x.to(device)), labels['number'].to(device) - 1)
                loss.backward()
                opt.step()
                total += loss.item() * len(x)
            log.info(f'  {modality} classifier epoch {epoch}/{epochs}: train loss {total / len(train):.4f}')
    return clf, len(train)


def get_classifier(modality, args, device, epochs, log):
    """(classifier in eval mode, info dict with its test accuracy); trained on first use, then cached.

    The cache is per modality and data source (offline or real); one trained
    with other settings (epochs, data size, VERSION) is retrained.
    """
    path = classifier_path(modality, args)
    n_train = None
    if os.path.exists(path):
        saved = load_torch(path, f'cached {modality} classifier')
        n_train = len(load_data(modality, args, 'train'))
        if (saved.get('version'), saved.get('epochs'), saved.get('n_train')) == (VERSION, epochs, n_train):
            clf = NumberClassifier().to(device)
            clf.load_state_dict(saved['state'])
            clf.eval()
            return clf, {k: saved[k] for k in ('test_accuracy', 'epochs', 'n_train')} | {'path': path, 'cached': True}
        log.info(f'{path} was trained with other settings: retraining it')
    log.info(f'training the {modality} number classifier ({epochs} epochs) -> {path}')
    clf, n_train = train_classifier(modality, args, device, epochs, log)
    test_acc = accuracy(clf, load_data(modality, args, 'test'), device)
    log.info(f'  {modality} classifier test accuracy {100 * test_acc:.2f} %')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_torch({'state': clf.state_dict(), 'version': VERSION, 'epochs': epochs, 'n_train': n_train,
                'test_accuracy': test_acc}, path)
    clf.eval()
    return clf, {'test_accuracy': test_acc, 'epochs': epochs, 'n_train': n_train, 'path': path, 'cached': False}
