"""Pickles from outside: arrays, tensors and flag namespaces load; anything that would run code is refused."""
import argparse
import os
import pickle

import numpy as np
import pytest
import torch

from src.errors import UserError
from src.safe_pickle import load_array, load_namespace


class Evil:
    """Unpickling this runs a shell command: what a malicious file would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_arrays_and_tensors_round_trip(tmp_path):
    a = np.random.default_rng(0).standard_normal((7, 300)).astype(np.float32)
    v = torch.randn(300, 1, dtype=torch.float64)
    u = v @ v.T  # the released helper pickles the first component's projector u = v v^T this way
    for obj, name in ((a, 'cub.emb'), (u, 'cub.pc'), (np.arange(5.0), 'cub.weights')):
        with open(tmp_path / name, 'wb') as f:
            pickle.dump(obj, f)
        back = load_array(tmp_path / name, name)
        assert type(back) is type(obj)
        if isinstance(obj, torch.Tensor):
            assert back.dtype == obj.dtype and torch.equal(back, obj)
        else:
            assert back.dtype == obj.dtype and np.array_equal(back, obj)


def test_malicious_array_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / 'ran'
    with open(tmp_path / 'cub.emb', 'wb') as f:
        pickle.dump(Evil(marker), f)
    with pytest.raises(UserError, match='system'):
        load_array(tmp_path / 'cub.emb', 'word vectors file')
    assert not marker.exists()


def test_array_pickle_of_another_type_is_refused(tmp_path):
    with open(tmp_path / 'x', 'wb') as f:
        pickle.dump({'a': 1}, f)
    with pytest.raises(UserError, match='dict, not a numpy array'):
        load_array(tmp_path / 'x', 'SIF weights file')
    (tmp_path / 'y').write_bytes(b'not a pickle')
    with pytest.raises(UserError, match='must be a pickled numpy array'):
        load_array(tmp_path / 'y', 'SIF weights file')
    with pytest.raises(UserError, match='not found'):
        load_array(tmp_path / 'z', 'SIF weights file')


@pytest.mark.parametrize('zip_format', [True, False])  # torch >= 1.6 and the older format of 2019
def test_namespace_round_trip(tmp_path, zip_format):
    ns = argparse.Namespace(model='mnist_svhn', obj='dreg', K=30, looser=True, llik_scaling=0.0, cuda=True,
                            experiment='', pre_trained='', seed=1)
    torch.save(ns, tmp_path / 'args.rar', _use_new_zipfile_serialization=zip_format)
    assert load_namespace(tmp_path / 'args.rar', 'flags file') == vars(ns)


def test_malicious_namespace_is_refused_without_running(tmp_path):
    marker = tmp_path / 'ran'
    torch.save(Evil(marker), tmp_path / 'args.rar')
    with pytest.raises(UserError, match='GLOBAL'):
        load_namespace(tmp_path / 'args.rar', 'flags file')
    assert not marker.exists()


def test_namespace_of_other_values_is_refused(tmp_path):
    torch.save(argparse.Namespace(model='cubIS', weights=torch.ones(2)), tmp_path / 'a.rar')
    with pytest.raises(UserError, match='weights are not plain values'):
        load_namespace(tmp_path / 'a.rar', 'flags file')
    torch.save({'model': 'cubIS'}, tmp_path / 'b.rar')
    with pytest.raises(UserError, match='dict, not an argparse.Namespace'):
        load_namespace(tmp_path / 'b.rar', 'flags file')
