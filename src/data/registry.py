"""Datasets by name, as models are (src/models/__init__.py): a loader function registers itself with
`@register_dataset(NAME)`; a model names its data with `dataset = NAME`. Every module in src/data/ is
imported at start-up (src/data/__init__.py), so a new dataset is one new file there.

A loader is f(args, split) -> TensorData for split 'train' or 'test' (src/data/tensors.py); multimodal
data hold one source per modality, in the model's modality order.
"""
import difflib

from ..errors import UserError

DATASETS = {}


def register_dataset(name):
    def register(loader):
        if name in DATASETS:
            raise ValueError(f'dataset {name!r} registered twice')
        DATASETS[name] = loader
        return loader
    return register


def load_data(name, args, split):
    if name not in DATASETS:
        near = difflib.get_close_matches(str(name), DATASETS, n=1)
        raise UserError(f"unknown dataset {name!r}{f' (did you mean {near[0]!r}?)' if near else ''}: the registered "
                        f"ones are {', '.join(sorted(DATASETS))} (a loader registers with @register_dataset)")
    return DATASETS[name](args, split)
