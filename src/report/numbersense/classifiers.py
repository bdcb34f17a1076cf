"""Number classifiers (1..9) for the number-sense modalities, trained once on
the modality's training images and cached under <data-dir>/classifiers/.

protocol noda2024: the authors' classifier (their src/models/classifier_cmnist.py
and classifier_oscn.py): the VAE's MLP encoder (4 x 400 -> 20, its mean head)
then Linear(20, 9), cross-entropy, Adam 1e-3 amsgrad, batch 128, 50 epochs.
protocol extended: a small CNN (NumberClassifier), 3 epochs.

They label generated images (reconstructions, cross-modal generations,
arithmetic results), so their own test accuracy is reported next to every
accuracy computed with them.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from src.data import BatchLoader, load_data
from src.models.cmnist import DATA_SIZE as CMNIST_SIZE
from src.models.cmnist import MLPEnc
from src.models.oscn import DATA_SIZE as OSCN_SIZE
from src.report.classifiers import cached_network
from src.report.metrics import accuracy
from src.rng import fork_rng

VERSION = 2  # bump when a network or its training changes: old caches are retrained
DATA_SIZES = {'cmnist': CMNIST_SIZE, 'oscn': OSCN_SIZE}


class _Predict:
    @torch.no_grad()
    def predict(self, x, batch_size=1024):
        """Predicted numbers 1..9 (LongTensor on x's device) for images x (N, 3, H, W)."""
        self.eval()
        return torch.cat([self(b).argmax(-1) + 1 for b in x.split(batch_size)]) if len(x) else \
            torch.zeros(0, dtype=torch.long, device=x.device)


class EncoderClassifier(_Predict, nn.Module):
    """The authors' classifier: the VAE's MLP encoder (its location head) -> Linear(latent, 9)."""

    def __init__(self, modality, latent_dim=20, num_hidden_layers=4):
        super().__init__()
        self.enc = MLPEnc(DATA_SIZES[modality], latent_dim, num_hidden_layers)
        self.fc = nn.Linear(latent_dim, 9)

    def forward(self, x):
        return self.fc(self.enc(x)[0])


class NumberClassifier(_Predict, nn.Module):
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


def make_classifier(modality, protocol):
    return EncoderClassifier(modality) if protocol == 'noda2024' else NumberClassifier()


def _data_tag(args):
    from src.data.numbersense_loaders import protocol_of
    return ('noda2024_' if protocol_of(args) == 'noda2024' else '') + ('offline' if args.offline else 'real')


def classifier_path(modality, args, protocol):
    return os.path.join(args.data_dir, 'classifiers', f'numbersense_{modality}_{protocol}_{_data_tag(args)}.pt')


@torch.no_grad()
def test_accuracy(clf, data, device):
    """Fraction of a TensorData's items whose number the classifier gets right."""
    pred = torch.cat([clf.predict(x.to(device)) for x, _ in BatchLoader(data, 1024)])
    return accuracy(pred, data.labels['number'].to(device))


def train_classifier(modality, args, device, epochs, log, protocol, batch_size=128):
    """Adam (lr 1e-3; amsgrad for noda2024, as the authors' runner), cross-entropy; seeded, and
    without touching the caller's random stream."""
    train = load_data(modality, args, 'train')
    with fork_rng(device):
        torch.manual_seed(0)
        clf = make_classifier(modality, protocol).to(device)
        opt = torch.optim.Adam(clf.parameters(), lr=1e-3, amsgrad=protocol == 'noda2024')
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


def get_classifier(modality, args, device, epochs, log, protocol='noda2024'):
    """(classifier in eval mode, info dict with its test accuracy (a fraction)); trained on first
    use, then cached (src/report/classifiers.py: cached_network), per modality, classifier protocol,
    data (protocol, offline or real), training-set size, epochs and VERSION."""
    path = classifier_path(modality, args, protocol)
    n_train = len(load_data(modality, args, 'train'))
    key = {'version': VERSION, 'modality': modality, 'protocol': protocol, 'data': _data_tag(args),
           'n_train': n_train, 'epochs': epochs}

    def fit():
        log.info(f'training the {modality} number classifier ({protocol}, {epochs} epochs) -> {path}')
        clf, _ = train_classifier(modality, args, device, epochs, log, protocol)
        return clf, {'test_accuracy': test_accuracy(clf, load_data(modality, args, 'test'), device)}

    clf, extras, trained_now = cached_network(path, key, lambda: make_classifier(modality, protocol), fit,
                                              f'{modality} number classifier', device, log)
    if trained_now:
        log.info(f'  {modality} classifier test accuracy {100 * extras["test_accuracy"]:.2f} %')
    return clf, {'test_accuracy': extras['test_accuracy'], 'epochs': epochs, 'n_train': n_train, 'path': path,
                 'cached': not trained_now, 'protocol': protocol}
