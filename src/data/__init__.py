"""Datasets by name (src/data/registry.py): each model class names its dataset (`Model.dataset`).

load_data(name, args, split) -> TensorData for split 'train' or 'test'. Every module in this package is
imported, as src/models/ are, and each loader decorated with `@register_dataset(NAME)` lands in DATASETS:
adding a dataset is one new file.
"""
import importlib
import pkgutil

# Bound before the modules are imported, so that a dataset module may write `from src.data import
# TensorData, register_dataset`: the package is then still being imported, and only these names exist.
from .cub import vocab_size  # noqa: F401  (re-exported: the caption models' vocabulary size)
from .registry import DATASETS, load_data, register_dataset  # noqa: F401  (re-exported)
from .tensors import BatchLoader, TensorData  # noqa: F401  (re-exported)

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f'{__name__}.{_m.name}')
