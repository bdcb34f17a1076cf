"""Number-sense measures (src/report/numbersense/metrics.py) on cases with
known answers, the number classifiers' architecture, and the per-encoder
analyses of both protocols (src/report/numbersense/analyse.py) on a
hand-built model whose latent geometry is known."""
import argparse
import logging
import math

import numpy as np
import pytest
import torch
import torch.distributions as dist
import torch.nn as nn

from src.data import TensorData
from src.models.vae import VAE
from src.report.numbersense import metrics as nm
from src.report.numbersense.analyse import analyse_encoder_extended, analyse_encoder_noda
from src.report.numbersense.classifiers import EncoderClassifier, NumberClassifier, make_classifier
from src.report.numbersense.figures import latent_map_figure

# ---------------------------------------------------------------- equations

def test_408_equations():
    eqs = nm.equations()
    assert len(eqs) == 408 and len(set(eqs)) == 408
    assert all(a != c and 1 <= a + b - c <= 9 for a, b, c in eqs)
    # Brute force over all 729 triples, written independently.
    count = 0
    for a in range(1, 10):
        for b in range(1, 10):
            for c in range(1, 10):
                count += a != c and 0 < a + b - c < 10
    assert count == 408
    assert (2, 3, 4) in eqs and (5, 1, 5) not in eqs and (1, 1, 3) not in eqs


def test_arithmetic_latents_and_accuracy():
    v = np.array([1.0, -2.0, 0.5])
    means = np.stack([n * v for n in range(1, 10)])
    eqs = [(2, 3, 4), (9, 1, 5), (1, 8, 2)]
    z = nm.arithmetic_latents(means, eqs)
    np.testing.assert_allclose(z, [1 * v, 5 * v, 7 * v])
    acc, by_result = nm.arithmetic_accuracy([1, 5, 6], eqs)  # last one wrong
    assert acc == pytest.approx(2 / 3)
    assert by_result == {1: 1.0, 5: 1.0, 7: 0.0}


# ---------------------------------------------------------------- latent measures

def test_class_means():
    numbers = np.repeat(np.arange(1, 10), 2)
    z = np.stack([numbers * 1.0, -numbers * 2.0], 1) + np.tile([[0.5, 0.0], [-0.5, 0.0]], (9, 1))
    np.testing.assert_allclose(nm.class_means(z, numbers), np.stack([np.arange(1, 10), -2 * np.arange(1, 10)], 1))
    with pytest.raises(ValueError, match=r'number\(s\) \[9\]'):
        nm.class_means(z[:-2], numbers[:-2])


def test_silhouette_separated_clusters_near_one():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(1, 10), 50)
    centres = rng.normal(size=(9, 5)) * 100
    z = centres[labels - 1] + rng.normal(size=(len(labels), 5)) * 0.01
    assert nm.silhouette(z, labels) > 0.999
    assert nm.silhouette(z, labels, sample_size=200) > 0.999  # subsampled
    # Labels unrelated to the geometry: near 0 or below.
    assert nm.silhouette(z, rng.permutation(labels)) < 0.05
    assert nm.silhouette(z, np.ones_like(labels)) is None


def test_magnitude_on_a_line_is_one():
    direction = np.array([3.0, -1.0, 2.0, 0.0])
    means = np.stack([5 + n * direction for n in range(1, 10)])
    res = nm.magnitude(means)
    assert res['n_pairs'] == 36
    assert res['r'] == pytest.approx(1.0, abs=1e-12)


def test_magnitude_known_value():
    """Numbers at positions n^2 on a line: r computed here by the textbook formula."""
    means = np.array([[n ** 2, 0.0] for n in range(1, 10)])
    xs, ys = [], []
    for i in range(1, 10):
        for j in range(i + 1, 10):
            xs.append(j - i)
            ys.append(j ** 2 - i ** 2)
    mx, my = sum(xs) / 36, sum(ys) / 36
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    r = sxy / math.sqrt(sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys))
    assert nm.magnitude(means)['r'] == pytest.approx(r, abs=1e-12)
    assert 0.5 < r < 0.95  # a real, non-trivial case
    assert nm.magnitude(np.zeros((9, 2)))['r'] is None  # all classes in one point


# ---------------------------------------------------------------- the analysis on a known model

class Enc(nn.Module):
    """Images are constant = number / 10; the latent of number n is (f(n), 0)."""

    def __init__(self, f):
        super().__init__()
        self.f = f
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        n = (x.mean((-3, -2, -1)) * 10).round()
        loc = torch.stack([self.f(n), torch.zeros_like(n)], -1)
        return loc, torch.full_like(loc, 0.5)


class Dec(nn.Module):
    """Latent z -> a constant image whose value is z[0] (what the classifier reads)."""

    def forward(self, z):
        return z[..., :1, None, None].expand(*z.shape[:-1], 3, 4, 4), torch.tensor(0.75)


class KnownVAE(VAE):
    name = 'known'
    data_size = (3, 4, 4)

    def __init__(self, f):
        params = argparse.Namespace(latent_dim=2, learn_prior=False)
        super().__init__(dist.Normal, dist.Normal, dist.Normal, Enc(f), Dec(), params)


class NearestClassifier:
    """Reads z[0] back from the image: the number n whose f(n) is nearest."""

    def __init__(self, f):
        self.pos = f(torch.arange(1, 10).float())

    def predict(self, x):
        v = x[:, 0, 0, 0]
        return (v[:, None] - self.pos[None]).abs().argmin(1) + 1


def _data(n_per=6):
    numbers = torch.arange(1, 10).repeat_interleave(n_per)
    colour = torch.arange(len(numbers)) % 4
    images = (numbers.float() / 10)[:, None, None, None].expand(-1, 3, 4, 4).contiguous()
    return TensorData([images], {'number': numbers, 'colour': colour})


def _analyse(f, tmp_path):
    vae = KnownVAE(f).eval()
    opts = argparse.Namespace(silhouette_points=5000, seed=0, map='none', map_points=100, title='test')
    torch.manual_seed(0)
    # Prior N(0, 1) per dimension (softmax of zeros * D): noise far below the class gaps.
    prior = (vae.pz, vae.pz_params[1].detach())
    return analyse_encoder_extended('known', vae, {'known': vae}, _data(), {'known': NearestClassifier(f)}, prior,
                                    opts, str(tmp_path), logging.getLogger('test'))


def test_additive_encoder_gives_perfect_arithmetic(tmp_path):
    res = _analyse(lambda n: 100.0 * n, tmp_path)
    assert res['arithmetic']['known']['accuracy'] == 1.0
    assert res['arithmetic']['known']['n_equations'] == 408
    assert res['magnitude']['r'] == pytest.approx(1.0, abs=1e-9)
    assert res['silhouette']['number'] == pytest.approx(1.0)  # identical latents within a number
    assert res['decoding_accuracy']['known'] == 1.0
    assert res['summary']['arithmetic_accuracy'] == 1.0
    assert (tmp_path / 'arithmetic_known_to_known.png').stat().st_size > 0


def test_non_additive_encoder_gets_the_expected_failures(tmp_path):
    """Numbers 6..9 shifted by 250: a + b - c lands on the wrong class exactly when the
    shifts do not cancel; the expected accuracy is counted here without noise."""
    def f(n):
        return 100.0 * n + 250.0 * (n >= 6)

    pos = {n: 100.0 * n + 250.0 * (n >= 6) for n in range(1, 10)}
    eqs = nm.equations()
    correct = 0
    for a, b, c in eqs:
        z = pos[a] + pos[b] - pos[c]
        correct += min(pos, key=lambda n: abs(pos[n] - z)) == a + b - c
    res = _analyse(f, tmp_path)
    assert 0 < correct < 408
    assert res['arithmetic']['known']['accuracy'] == pytest.approx(correct / 408)
    assert res['magnitude']['r'] < 1 - 1e-3


def test_latent_map_figure(tmp_path):
    rng = np.random.default_rng(0)
    labels = {'number': np.repeat(np.arange(1, 10), 4), 'colour': np.tile(np.arange(4), 9),
              'shape': np.arange(36) % 3}
    path = tmp_path / 'map.png'
    latent_map_figure(rng.normal(size=(36, 2)), labels, str(path), 'test')
    import matplotlib.image
    img = matplotlib.image.imread(str(path))
    assert img.shape[1] > 2 * img.shape[0]  # three panels side by side


# ---------------------------------------------------------------- the authors' measures

def test_magnitude_variants_as_the_authors_transform():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(9, 3))
    pairs = [(i, j) for i in range(9) for j in range(i + 1, 9)]
    diff = [abs(i - j) for i, j in pairs]

    def r_of(m, dist_fn=lambda d: d):
        dist = [dist_fn(np.linalg.norm(m[i] - m[j])) for i, j in pairs]
        return abs(np.corrcoef(diff, dist)[0, 1])

    v = nm.magnitude_variants(means)
    assert set(v) == set(nm.MAGNITUDE_VARIANTS) and len(v) == 9
    assert v['none']['abs_r'] == pytest.approx(r_of(means)) and v['none']['n_pairs'] == 36
    assert v['exp_mean']['abs_r'] == pytest.approx(r_of(np.exp(means)))
    assert v['pow_mean']['abs_r'] == pytest.approx(r_of(means ** 2))
    assert v['logmin_mean']['abs_r'] == pytest.approx(r_of(np.log(means - means.min() + 1e-16)))
    assert v['log_mean']['r'] is None  # log of a negative mean is NaN, as in theirs
    assert v['log_dist']['abs_r'] == pytest.approx(r_of(means, np.log))
    assert v['pow_dist']['abs_r'] == pytest.approx(r_of(means, np.square))
    assert v['exp_dist']['abs_r'] == pytest.approx(r_of(means, np.exp))
    # logmin of distances: their minimum is the zero diagonal, so log(d + 1e-16).
    assert v['logmin_dist']['abs_r'] == pytest.approx(r_of(means, lambda d: np.log(d + 1e-16)))
    assert v['log_mean']['abs_r'] is None
    pos = np.abs(means) + 0.1
    assert nm.magnitude(pos, mean_transform='log')['abs_r'] == pytest.approx(r_of(np.log(pos)))


def test_hand_picked_equations_and_nearest_class():
    assert len(nm.HAND_PICKED) == 10 and (1, 9, 8) in nm.HAND_PICKED and (3, 5, 2) in nm.HAND_PICKED
    assert all(1 <= a + b - c <= 9 for a, b, c in nm.HAND_PICKED)
    means = np.stack([np.arange(1, 10), np.zeros(9)], 1).astype(float)
    near, dist = nm.nearest_class(means, [[4.2, 0.0], [9.6, 0.1]])
    assert list(near) == [4, 9] and dist == pytest.approx([0.2, math.hypot(0.6, 0.1)])


def test_confusion():
    m = nm.confusion([1, 1, 2, 9], [1, 3, 2, 9])
    assert np.array(m).shape == (9, 9) and m[0][0] == 1 and m[0][2] == 1 and m[8][8] == 1 and np.sum(m) == 4


def test_classifier_architectures():
    """noda2024: the VAE's MLP encoder (4 x 400 -> 20, location head) then Linear(20, 9)."""
    clf = make_classifier('cmnist', 'noda2024')
    assert isinstance(clf, EncoderClassifier) and isinstance(make_classifier('oscn', 'extended'), NumberClassifier)
    linears = [m for m in clf.modules() if isinstance(m, nn.Linear)]
    shapes = [(m.in_features, m.out_features) for m in linears]
    assert shapes == [(2352, 400), (400, 400), (400, 400), (400, 400), (400, 20), (400, 20), (20, 9)]
    x = torch.rand(5, 3, 28, 28)
    assert torch.allclose(clf(x), clf.fc(clf.enc(x)[0]))
    assert clf.predict(x).min() >= 1 and clf.predict(x).max() <= 9
    assert [m.in_features for m in make_classifier('oscn', 'noda2024').modules()
            if isinstance(m, nn.Linear)][0] == 3 * 32 * 32


def _noda(f, tmp_path, n_train=3000, n_test=300):
    vae = KnownVAE(f).eval()
    opts = argparse.Namespace(seed=0, map='none', title='test')
    prior = (vae.pz, vae.pz_params[1].detach())
    torch.manual_seed(0)
    return analyse_encoder_noda('known', vae, {'known': vae}, _data(n_train // 9), _data(n_test // 9),
                                {'known': NearestClassifier(f)}, prior, opts, str(tmp_path),
                                logging.getLogger('test'))


def test_noda_analysis_sample_sizes(tmp_path):
    res = _noda(lambda n: 100.0 * n, tmp_path)
    assert res['n_items'] == 16 * 128 == 2048  # the first 16 shuffled training batches
    assert res['decoding']['known']['n_items'] == 128  # the first shuffled test batch
    assert np.sum(res['decoding']['known']['confusion']) == 128
    assert res['arithmetic']['known']['n_equations'] == 408
    assert np.sum(res['arithmetic']['known']['confusion']) == 408
    hand = res['hand_picked']['known']
    assert len(hand) == 10 and all(h['n_samples'] == 64 for h in hand.values())
    # Additive latents: perfect arithmetic, and m_a + m_b - m_c is nearest the class a + b - c.
    assert res['summary']['arithmetic_accuracy'] == 1.0 and res['summary']['reconstruction_accuracy'] == 1.0
    assert all(h['accuracy'] == 1.0 and h['nearest_class'] == h['target'] for h in hand.values())
    assert res['summary']['magnitude_abs_r'] == pytest.approx(1.0)
    assert (tmp_path / 'confusion_reconstruction_known_to_known.png').stat().st_size > 0
    assert (tmp_path / 'magnitude_known.png').stat().st_size > 0
