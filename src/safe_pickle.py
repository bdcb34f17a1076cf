"""Reading pickles written by others without running their code.

A pickle can call any importable function while it loads, so a file from
outside (a run folder of the released MMVAE code, the authors' CCA_emb.zip)
is read by an unpickler that admits a short list of constructors and refuses
everything else with a clear error:

- `load_namespace`: `args.rar` of the released code (`torch.save(args)`: an
  argparse.Namespace of plain values), through torch's own restricted
  (weights_only) unpickler with argparse.Namespace admitted;
- `load_array`: a plain `pickle.dump` of one numpy array or torch tensor
  (the released src/report/helper.py writes `cub.emb`, `cub.weights` and
  `cub.pc` this way); numpy's and torch's array constructors only.
"""
import argparse
import importlib
import io
import pickle
import warnings

import numpy as np
import torch

from .errors import UserError

PLAIN_TYPES = (str, int, float, bool, type(None))


def _numpy_multiarray():
    try:  # numpy >= 2 keeps it in numpy._core; numpy.core is a deprecated alias there
        return importlib.import_module('numpy._core.multiarray')
    except ImportError:  # numpy 1.x
        return importlib.import_module('numpy.core.multiarray')


def _tensor_from_bytes(b):
    """torch.storage._load_from_bytes without its weights_only=False: the storage bytes are
    themselves a torch file, read by torch's restricted unpickler."""
    return torch.load(io.BytesIO(b), weights_only=True)


def _array_globals():
    multiarray = _numpy_multiarray()
    allowed = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype,
               ('collections', 'OrderedDict'): dict,
               ('torch._utils', '_rebuild_tensor_v2'): torch._utils._rebuild_tensor_v2,
               ('torch.storage', '_load_from_bytes'): _tensor_from_bytes}
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):  # written by numpy 1.x or 2.x
        allowed[(module, '_reconstruct')] = multiarray._reconstruct
        allowed[(module, 'scalar')] = multiarray.scalar
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    allowed = None

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f'{module}.{name} is not a numpy array or torch tensor constructor') from None


def load_array(path, what):
    """The numpy array or torch tensor pickled in `path`; anything else is a UserError."""
    try:
        with open(path, 'rb') as f:
            unpickler = _ArrayUnpickler(f)
            unpickler.allowed = _array_globals()
            obj = unpickler.load()
    except FileNotFoundError:
        raise UserError(f'{what} not found: {path}') from None
    except Exception as e:  # refused global, truncated file, not a pickle
        raise UserError(f'{what} {path} was not read: it must be a pickled numpy array or torch tensor '
                        f'({type(e).__name__}: {e})') from None
    if not isinstance(obj, (np.ndarray, torch.Tensor)):
        raise UserError(f'{what} {path} holds a {type(obj).__name__}, not a numpy array or torch tensor')
    return obj


def _reason(e):
    """The line of torch's weights_only error that names what was refused (its first lines only
    suggest weights_only=False, which is exactly what must not be done with a file from outside)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    named = [line for line in lines if 'GLOBAL' in line or 'Unsupported' in line]
    return (named or lines or [type(e).__name__])[0]


def load_namespace(path, what):
    """The flags of an argparse.Namespace saved with torch.save, as a dict of plain values."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter('ignore')  # torch warns about pickle protocols it may not read: we say so below
            obj = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise UserError(f'{what} not found: {path}') from None
    except Exception as e:  # refused global, truncated file, not a torch file
        raise UserError(f'{what} {path} was not read: it must be an argparse.Namespace of plain values saved '
                        f'with torch.save ({_reason(e)})') from None
    if not isinstance(obj, argparse.Namespace):
        raise UserError(f'{what} {path} holds a {type(obj).__name__}, not an argparse.Namespace')
    flags = vars(obj)
    bad = sorted(k for k, v in flags.items() if not isinstance(v, PLAIN_TYPES))
    if bad:
        raise UserError(f'{what} {path}: flags {", ".join(bad)} are not plain values (str, number, bool, None)')
    return dict(flags)
