"""Datasets by name: each model class names its dataset (`Model.dataset`).

load_data(name, args, split) -> TensorData for split 'train' or 'test'.
"""
from .cub import (
    load_cub_captions,
    load_cub_features,
    load_cub_features_captions,
    load_cub_image_captions,
    load_cub_images,
    vocab_size,  # noqa: F401  (re-exported: the caption models' vocabulary size)
)
from .digits import load_mnist, load_mnist_svhn, load_svhn
from .numbersense_loaders import load_cmnist, load_cmnist_oscn, load_oscn
from .tensors import BatchLoader, TensorData  # noqa: F401  (re-exported)

DATASETS = {
    'mnist': load_mnist,
    'svhn': load_svhn,
    'mnist_svhn': load_mnist_svhn,
    'cmnist': load_cmnist,
    'oscn': load_oscn,
    'cmnist_oscn': load_cmnist_oscn,
    'cubI': load_cub_images,
    'cubS': load_cub_captions,
    'cubIS': load_cub_image_captions,
    'cubIft': load_cub_features,
    'cubISft': load_cub_features_captions,
}


def load_data(name, args, split):
    return DATASETS[name](args, split)
