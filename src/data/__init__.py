"""Datasets by name (src/data/registry.py): each model class names its dataset (`Model.dataset`).

load_data(name, args, split) -> TensorData for split 'train' or 'test'. Importing the loader modules
registers their datasets.
"""
from . import cub, digits, numbersense_loaders  # noqa: F401  (they register their datasets)
from .cub import vocab_size  # noqa: F401  (re-exported: the caption models' vocabulary size)
from .registry import DATASETS, load_data, register_dataset  # noqa: F401  (re-exported)
from .tensors import BatchLoader, TensorData  # noqa: F401  (re-exported)
