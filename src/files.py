"""Writing files so that a crash never leaves a half-written one behind."""
import json
import os
import tempfile

import torch

from .errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path, write):
    """write(f) into a temporary file next to `path`, flush to disk, then rename over it.

    The previous file at `path` stays intact until the new one is complete.
    """
    path = os.fspath(path)
    d = os.path.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(dir=d, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files: use the usual permissions
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_torch(obj, path):
    atomic_write(path, lambda f: torch.save(obj, f))


def save_json(obj, path):
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=False).encode()))


def save_text(text, path):
    atomic_write(path, lambda f: f.write(text.encode('utf-8')))


def save_figure(fig, path, **savefig_kwargs):
    """A matplotlib figure as PNG (atomic), then closed."""
    import matplotlib.pyplot as plt
    try:
        atomic_write(path, lambda f: fig.savefig(f, format='png', **savefig_kwargs))
    finally:
        plt.close(fig)


def load_json(path, what='file'):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {path} is corrupt or truncated ({e}); "
                        f"restore it or start from another run") from None


def load_torch(path, what='file', map_location='cpu'):
    """torch.load with the default safe loading (weights_only); clear errors for bad files."""
    try:
        return torch.load(path, map_location=map_location)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except Exception as e:  # truncated zip, pickle error, unsafe object...
        raise UserError(f"{what} {path} cannot be read ({type(e).__name__}: {e}); "
                        f"it is corrupt, truncated or not a torch file: delete it to rebuild "
                        f"it if it is a cache, or restore it from a backup") from None
