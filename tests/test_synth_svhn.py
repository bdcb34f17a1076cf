"""Tests for src/data/synth_svhn.py, the offline SVHN stand-in. Offline, a few seconds."""

import numpy as np
import pytest

from src.data.synth_svhn import generate_svhn_like

N_TRAIN, N_TEST = 2000, 500


@pytest.fixture(scope="module")
def data():
    return generate_svhn_like(N_TRAIN + N_TEST, seed=0)


def _grey_digit_positive(images):
    """Grey-level images, standardised per image, signed so the centre is brighter than the sides.

    This undoes colour and light-on-dark vs dark-on-light polarity, which a
    linear or nearest-centroid model on raw pixels cannot do by itself.
    """
    g = images.astype(np.float64).mean(axis=1)
    g = (g - g.mean(axis=(1, 2), keepdims=True)) / (g.std(axis=(1, 2), keepdims=True) + 1e-6)
    centre = g[:, 8:24, 12:20].mean(axis=(1, 2))
    sides = g[:, :, [0, 1, 30, 31]].mean(axis=(1, 2))
    sign = np.where(centre >= sides, 1.0, -1.0)
    return g * sign[:, None, None]


def _nearest_centroid_accuracy(features, labels):
    """Fit class means on the first N_TRAIN items, return accuracy on the rest."""
    f = features.reshape(len(features), -1)
    ftr, ytr, fte, yte = f[:N_TRAIN], labels[:N_TRAIN], f[N_TRAIN:], labels[N_TRAIN:]
    centroids = np.stack([ftr[ytr == k].mean(axis=0) for k in range(10)])
    dist = ((fte[:, None, :] - centroids[None]) ** 2).sum(axis=-1)
    return float((dist.argmin(axis=1) == yte).mean())


def test_shapes_dtypes_and_label_range(data):
    x, y = data
    assert x.shape == (N_TRAIN + N_TEST, 3, 32, 32) and x.dtype == np.uint8
    assert y.shape == (N_TRAIN + N_TEST,) and y.dtype == np.int64
    assert y.min() == 0 and y.max() == 9


def test_classes_balanced_and_shuffled():
    _, y = generate_svhn_like(1000, seed=5)
    assert np.array_equal(np.bincount(y, minlength=10), np.full(10, 100))
    assert not np.array_equal(y, np.arange(1000) % 10)      # not left in i % 10 order
    _, y = generate_svhn_like(23, seed=5)                     # n not a multiple of 10
    counts = np.bincount(y, minlength=10)
    assert counts.sum() == 23 and counts.max() - counts.min() <= 1


def test_empty():
    x, y = generate_svhn_like(0, seed=0)
    assert x.shape == (0, 3, 32, 32) and x.dtype == np.uint8
    assert y.shape == (0,) and y.dtype == np.int64


def test_deterministic_given_seed():
    xa, ya = generate_svhn_like(40, seed=3)
    xb, yb = generate_svhn_like(40, seed=3)
    assert xa.tobytes() == xb.tobytes() and np.array_equal(ya, yb)
    xc, _ = generate_svhn_like(40, seed=4)
    assert not np.array_equal(xa, xc)
    # Different images, not just a different order of the same ones.
    assert (np.abs(xa.astype(int) - xc.astype(int)).mean(axis=(1, 2, 3)) > 5).mean() > 0.9


def test_images_are_varied_colour_images(data):
    x, _ = data
    f = x.astype(np.float64)
    # Every image has real content (a digit on a background), not a flat field.
    assert (f.reshape(len(f), -1).std(axis=1) > 10).all()
    # Colour, not grey: the three channel means differ in most images.
    cm = f.mean(axis=(2, 3))
    spread = cm.max(axis=1) - cm.min(axis=1)
    assert (spread > 10).mean() > 0.5
    # Both polarities occur: light-on-dark and dark-on-light.
    g = f.mean(axis=1)
    centre_brighter = g[:, 10:22, 13:19].mean(axis=(1, 2)) > g.mean(axis=(1, 2))
    assert 0.25 < centre_brighter.mean() < 0.75
    # Backgrounds vary: the mean border colours are spread over the colour cube.
    border = np.concatenate([f[:, :, :2, :].reshape(len(f), 3, -1),
                             f[:, :, -2:, :].reshape(len(f), 3, -1)], axis=2).mean(axis=2)
    assert (border.std(axis=0) > 30).all()


def test_labelled_digit_is_centred(data):
    x, _ = data
    g = x.astype(np.float64).mean(axis=1)
    # Horizontal edge energy per column, averaged over images: neighbouring
    # digits are cut off at the sides, so the middle carries the most strokes.
    col_energy = np.abs(np.diff(g, axis=2)).mean(axis=(0, 1))
    middle = col_energy[12:19].mean()
    sides = np.r_[col_energy[:4], col_energy[-4:]].mean()
    assert middle > 1.2 * sides


def test_learnable_from_centre_not_from_sides(data):
    x, y = data
    g = _grey_digit_positive(x)
    # After undoing colour and polarity, even nearest-centroid reads the digit...
    assert _nearest_centroid_accuracy(g, y) > 0.4
    assert _nearest_centroid_accuracy(g[:, :, 10:22], y) > 0.4
    # ...but the border columns (cut-off neighbours) say little about the label.
    sides = np.concatenate([g[:, :, :5], g[:, :, 27:]], axis=2)
    assert _nearest_centroid_accuracy(sides, y) < 0.25


def test_not_trivial_on_raw_pixels(data):
    # Random colours and polarity defeat a raw-pixel nearest-centroid model
    # (it would do far better on a fixed-colour, MNIST-like rendering).
    x, y = data
    assert _nearest_centroid_accuracy(x.astype(np.float64) / 255.0, y) < 0.3
