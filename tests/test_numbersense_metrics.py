"""Number-sense measures and statistics (src/report/numbersense_metrics.py) on
cases with known answers, and the per-encoder analysis
(src/report/analyse_numbersense.py) on a hand-built model whose latent
geometry is known."""
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
from src.report import numbersense_metrics as nm
from src.report.analyse_numbersense import analyse_encoder, latent_map_figure


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
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    r = sxy / math.sqrt(sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys))
    assert nm.magnitude(means)['r'] == pytest.approx(r, abs=1e-12)
    assert 0.5 < r < 0.95  # a real, non-trivial case
    assert nm.magnitude(np.zeros((9, 2)))['r'] is None  # all classes in one point


# ---------------------------------------------------------------- statistics

def test_mean_ci():
    s = nm.mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * sd 1 / sqrt(3)
    assert (s['mean'], s['sd'], s['n']) == (2.0, 1.0, 3)
    assert s['lo'] == pytest.approx(2 - half) and s['hi'] == pytest.approx(2 + half)
    assert nm.mean_ci([4.0])['lo'] is None and nm.mean_ci([])['n'] == 0
    assert nm.mean_ci([1.0, None, 3.0])['n'] == 2


def test_welch_cohen_anova():
    x, y = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]
    assert nm.cohens_d(x, y) == pytest.approx(-3.0)
    w = nm.welch(x, y)
    assert w['t'] == pytest.approx(-3 / math.sqrt(2 / 3))  # (2 - 5) / sqrt(1/3 + 1/3)
    assert w['df'] == pytest.approx(4.0) and w['d'] == pytest.approx(-3.0)
    assert w['p'] == pytest.approx(0.021311641128756, rel=1e-6)
    a = nm.anova([x, y])
    assert a['F'] == pytest.approx(13.5)  # two groups: F = t^2 of the pooled t-test
    assert a['eta_sq'] == pytest.approx(13.5 / 17.5) and a['df'] == [1, 4]
    # Unequal variances: Welch's df differs from n - 2.
    w2 = nm.welch([1.0, 2.0, 3.0, 4.0], [0.0, 10.0, 20.0])
    vx, vy = (5 / 3) / 4, 100 / 3
    assert w2['df'] == pytest.approx((vx + vy) ** 2 / (vx ** 2 / 3 + vy ** 2 / 2))
    # No variance at all: the tests are undefined, not 'p = 0'.
    assert nm.welch([1.0, 1.0], [1.0, 1.0])['p'] is None
    assert nm.anova([[1.0, 1.0], [2.0, 2.0]])['F'] is None


def test_one_sample_vs_chance():
    r = nm.one_sample([0.2, 0.3, 0.4], nm.CHANCE)
    assert r['t'] == pytest.approx((0.3 - 1 / 9) / (0.1 / math.sqrt(3)))
    assert r['d'] == pytest.approx((0.3 - 1 / 9) / 0.1) and r['df'] == 2
    assert nm.one_sample([0.5, 0.5, 0.5], nm.CHANCE)['p'] is None


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
    opts = argparse.Namespace(silhouette_points=5000, seed=0, map='none', map_points=100)
    torch.manual_seed(0)
    # Prior N(0, 1) per dimension (softmax of zeros * D): noise far below the class gaps.
    prior = (vae.pz, vae.pz_params[1].detach())
    return analyse_encoder('known', vae, {'known': vae}, _data(), {'known': NearestClassifier(f)}, prior,
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
