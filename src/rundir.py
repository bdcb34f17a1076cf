"""Run directories: a fresh directory per run, its flags as JSON, its log."""
import datetime
import importlib.metadata
import logging
import os
import platform
import subprocess
import sys
import tempfile

from .files import save_json

log = logging.getLogger('mmvae')
_buffer = []


class _Buffer(logging.Handler):
    """Keeps the records logged before the run directory exists, for run.log."""

    def emit(self, record):
        _buffer.append(record)


def setup_logging():
    """Everything logged under 'src' / 'mmvae' goes to stdout (and, once attached, run.log)."""
    fmt = logging.Formatter('%(message)s')
    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(fmt)
    buf = _Buffer()
    for name in ('mmvae', 'src'):
        lg = logging.getLogger(name)
        lg.handlers[:] = [stdout, buf]
        lg.setLevel(logging.INFO)
        lg.propagate = False


def attach_log_file(path):
    fh = logging.FileHandler(path)
    fh.setFormatter(logging.Formatter('%(message)s'))
    for r in _buffer:
        fh.emit(r)
    _buffer.clear()
    for name in ('mmvae', 'src'):
        lg = logging.getLogger(name)
        lg.handlers[:] = [h for h in lg.handlers if not isinstance(h, _Buffer)] + [fh]


def new_run_dir(out_dir, experiment):
    """A new, unique directory out_dir/experiment/<timestamp>-<random>; never reuses one."""
    parent = os.path.join(out_dir, experiment)
    os.makedirs(parent, exist_ok=True)
    stamp = datetime.datetime.now().strftime('%Y-%m-%dT%H-%M-%S-')
    return tempfile.mkdtemp(prefix=stamp, dir=parent)


def git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (out.stdout.strip() + ('-dirty' if dirty else '')) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions():
    v = {'python': platform.python_version()}
    for pkg in ('torch', 'torchvision', 'numpy'):
        try:
            v[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            v[pkg] = None
    return v


def write_args(run_dir, args, data_source, device):
    save_json({
        'flags': vars(args),
        'data_source': data_source,
        'offline_data': bool(args.offline),
        'device': str(device),
        'versions': versions(),
        'git_commit': git_commit(),
        'command': sys.argv,
        'started': datetime.datetime.now().isoformat(timespec='seconds'),
    }, os.path.join(run_dir, 'args.json'))
