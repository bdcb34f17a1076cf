"""Run directories: a fresh directory per run, its flags as JSON, its log; and
reading a finished run back (ours, or a run folder of the released code)."""
import contextlib
import datetime
import importlib.metadata
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from .errors import UserError, WriteError
from .files import load_json, save_json
from .safe_pickle import load_namespace

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


class LogFile(logging.FileHandler):
    """A log file (run.log, an analysis' log) that a full disk cannot turn into tracebacks: the first
    failed write is reported once on stderr and the file is written no more; the messages still go to
    stdout, and the next write of a result stops the program with its `error:` line."""

    def __init__(self, path, mode='a'):
        self.failed = False
        try:
            super().__init__(path, mode, encoding='utf-8')
        except OSError as e:
            raise WriteError(path, e) from None
        self.setFormatter(logging.Formatter('%(message)s'))

    def emit(self, record):
        if not self.failed:
            super().emit(record)

    def handleError(self, record):
        e = sys.exc_info()[1]
        if not isinstance(e, OSError):
            return super().handleError(record)
        self.failed = True
        print(f'warning: could not write {self.baseFilename} ({e.strerror or e}): '
              f'its messages go to stdout only from here', file=sys.stderr)

    def close(self):
        with contextlib.suppress(OSError):  # flushing what a failed write left: reported already
            super().close()


def attach_log_file(path):
    fh = LogFile(path)
    for r in _buffer:
        fh.emit(r)
    _buffer.clear()
    for name in ('mmvae', 'src'):
        lg = logging.getLogger(name)
        lg.handlers[:] = [h for h in lg.handlers if not isinstance(h, _Buffer)] + [fh]


def detach_log_files():
    """Close the log files of the 'mmvae' and 'src' loggers (run.log): a run is over, or its directory undone."""
    for name in ('mmvae', 'src'):
        lg = logging.getLogger(name)
        for h in [h for h in lg.handlers if isinstance(h, logging.FileHandler)]:
            h.close()
            lg.removeHandler(h)


def new_run_dir(out_dir, experiment):
    """A new, unique directory out_dir/experiment/<timestamp>-<random>; never reuses one."""
    parent = os.path.join(out_dir, experiment)
    try:
        os.makedirs(parent, exist_ok=True)
        stamp = datetime.datetime.now().strftime('%Y-%m-%dT%H-%M-%S-')
        return tempfile.mkdtemp(prefix=stamp, dir=parent)
    except OSError as e:
        raise WriteError(e.filename or parent, e) from None


def discard_run_dir(run_dir, made):
    """Undo a run directory whose set-up failed before its args.json was complete (e.g. a full disk), so that
    the same command can run again: its files are removed, and the directory itself when this run made it."""
    detach_log_files()
    if made:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for name in os.listdir(run_dir):
        with contextlib.suppress(OSError):
            os.remove(os.path.join(run_dir, name))


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


# ---------------------------------------------------------------- reading a run back

OURS = ('args.json', 'model.pt')
RELEASED = ('args.rar', 'model.rar')  # src/main.py of the released code: torch.save(args), torch.save(state_dict)


@dataclass
class SavedRun:
    flags: dict      # the run's flags (argparse dests), as saved
    weights: str     # path of its state dict
    released: bool   # written by the released code (args.rar + model.rar)


def read_run(run_dir, flag):
    """The flags and weights file of a run directory written by main.py (args.json + model.pt) or by the
    released code (args.rar, a pickled argparse Namespace read by a restricted unpickler, + model.rar).
    `flag` names the command-line flag that gave run_dir, for the error messages."""
    if not run_dir or not os.path.isdir(run_dir):
        raise UserError(f"{flag} {run_dir!r}: no such run directory (give a directory written by main.py, or a "
                        f"run folder of the released code holding args.rar and model.rar)")
    has = {f: os.path.lexists(os.path.join(run_dir, f)) for f in OURS + RELEASED}  # a directory: said on reading
    if all(has[f] for f in OURS):
        path = os.path.join(run_dir, 'args.json')
        saved = load_json(path, 'run flags file')
        flags = saved.get('flags') if isinstance(saved, dict) else None
        if not isinstance(flags, dict) or 'model' not in flags:
            raise UserError(f"{path} holds no flags: is {run_dir} a run directory of this project?")
        return SavedRun(flags, os.path.join(run_dir, 'model.pt'), False)
    if all(has[f] for f in RELEASED):
        flags = load_namespace(os.path.join(run_dir, 'args.rar'), 'flags file of the released code')
        if 'model' not in flags:
            raise UserError(f"{os.path.join(run_dir, 'args.rar')} has no 'model' flag: it is not the args.rar "
                            f"of a released MMVAE run")
        flags.pop('cuda', None)  # the released main.py adds it after parsing; it is not a flag
        return SavedRun(flags, os.path.join(run_dir, 'model.rar'), True)
    missing = [f for f in (OURS if any(has[f] for f in OURS) or not any(has.values()) else RELEASED) if not has[f]]
    raise UserError(f"{flag} {run_dir} is incomplete: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                    f"missing (a run directory holds "
                    f"args.json and model.pt, or args.rar and model.rar from the released code; was the run "
                    f"interrupted before its first epoch ended?)")
