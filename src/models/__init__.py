"""Model registry: `--model NAME` -> class.

Every module in this package is imported, and each class decorated with
`@register` lands in MODELS under its `name`. Adding a model is one new file.
A class is built from the argparse Namespace of flags: `MODELS[name](args)`.
"""
import importlib
import pkgutil

MODELS = {}


def register(cls):
    if cls.name in MODELS:
        raise ValueError(f"model name {cls.name!r} registered twice")
    MODELS[cls.name] = cls
    return cls


for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
