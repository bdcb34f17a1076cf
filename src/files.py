"""Writing files so that a crash or a full disk never leaves a half-written one behind, and reading
them back with clear errors for files that are not what they should be."""
import json
import os
import tempfile

import torch

from .errors import UserError, WriteError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path, write):
    """write(f) into a temporary file next to `path`, flush to disk, then rename over it.

    The previous file at `path` stays intact until the new one is complete. A failure of the file system
    (a full disk, a quota, a read-only directory) leaves no temporary file and raises WriteError.
    """
    path = os.fspath(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or '.', prefix='.' + os.path.basename(path) + '.',
                                   suffix='.tmp')
        with os.fdopen(fd, 'wb') as f:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files: use the usual permissions
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        _remove(tmp)
        error = _os_error(e)
        if error is None:
            raise
        raise WriteError(path, error) from None


def _remove(tmp):
    if tmp is None:
        return
    try:
        os.remove(tmp)
    except OSError:
        pass  # already gone, or the directory turned read-only: nothing to clean


def _os_error(e):
    """The OSError behind a failed write, or None. torch.save reports a failed write of its zip writer as
    a RuntimeError ("unexpected pos ...") raised while handling the OSError: that OSError counts."""
    while isinstance(e, RuntimeError):
        e = e.__cause__ or e.__context__
    return e if isinstance(e, OSError) and e.errno is not None else None


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


def read_text(path, what='file'):
    """The content of a UTF-8 text file; a UserError naming the file when it is missing, a directory,
    unreadable, empty, or not text (binary bytes, NUL bytes left by a crash, another encoding)."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory, not a file: give the file itself") from None
    except OSError as e:
        raise UserError(f"{what} {path} cannot be read ({e.strerror or e})") from None
    try:
        text = data.decode('utf-8-sig')  # -sig: a byte-order mark, as some editors write, is dropped
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not a UTF-8 text file (byte {e.start + 1} is {data[e.start]:#04x}): "
                        f"binary data, or text in another encoding; give the right file, or save it as UTF-8") from None
    if '\x00' in text:
        raise UserError(f"{what} {path} is not a text file (it holds NUL bytes, as a file cut short by a crash "
                        f"may): restore it, or give the right file")
    if not text.strip():
        raise UserError(f"{what} {path} is empty: restore it, or give the right file")
    return text


def load_json(path, what='file', kind=None):
    """The JSON in `path`; kind=dict (or list) also requires that type at the top level."""
    text = read_text(path, what)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {path} is corrupt or truncated ({e}); "
                        f"restore it or start from another run") from None
    if kind is not None and not isinstance(obj, kind):
        raise UserError(f"{what} {path} holds a JSON {type(obj).__name__}, not the "
                        f"{'object' if kind is dict else 'array'} this project writes there; "
                        f"restore it or start from another run")
    return obj


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
