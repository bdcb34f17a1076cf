"""Datasets by name: each model class names its dataset (`Model.dataset`).

load_data(name, args, split) -> TensorData for split 'train' or 'test'.
"""
from .digits import load_mnist, load_mnist_svhn, load_svhn
from .tensors import BatchLoader, TensorData  # noqa: F401  (re-exported)

DATASETS = {
    'mnist': load_mnist,
    'svhn': load_svhn,
    'mnist_svhn': load_mnist_svhn,
}


def load_data(name, args, split):
    return DATASETS[name](args, split)
