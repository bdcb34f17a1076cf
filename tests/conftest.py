"""Shared fixtures: offline data generated once per test session."""
import argparse

import pytest


@pytest.fixture(scope='session')
def offline_data_dir(tmp_path_factory):
    """A --data-dir with the offline MNIST/SVHN stand-ins and pairs already built."""
    d = tmp_path_factory.mktemp('data')
    from src.data import load_data
    args = argparse.Namespace(data_dir=str(d), offline=True, pair_multiplier=1)
    for split in ('train', 'test'):
        load_data('mnist_svhn', args, split)
    return str(d)
