"""Checkpoints and graceful stops: long runs that survive kills, wall-time
limits, full disks and NaNs (docs/long-runs.md).

A checkpoint is the full training state: model and optimizer, the position
(epochs completed + training steps done in the next epoch), the loss history
and the running sums of the epoch in progress, the BatchLoader's generator
state at the start of that epoch (to redraw the same order) and the torch /
CUDA / numpy / python RNG states. Restoring it and training on gives the same
weights and losses as a run that never stopped.

Files in a run directory: checkpoint.pt (the newest) and checkpoint.prev.pt
(the one before). A new checkpoint is written completely to
checkpoint.next.pt (temporary file, flushed, fsynced, renamed: files.save_torch)
before it takes checkpoint.pt's place, so a kill or a full disk at any moment
leaves at least one complete checkpoint; load() takes the most advanced
readable one.

A run that --max-steps ends inside an epoch tests, saves and draws that epoch
as usual, and its checkpoints keep, as 'cut', the state at its last step
before the test (position, running sums, batch order, random states): a
larger --max-steps or --epochs reopens the epoch there (reopened()), so an
extended run equals a run given the larger budget from the start.
"""
import contextlib
import datetime
import logging
import os
import signal

from .errors import FAULTS, UserError, WriteError, what_to_do
from .files import load_torch, save_torch

log = logging.getLogger('mmvae')

CKPT, NEXT, PREV = 'checkpoint.pt', 'checkpoint.next.pt', 'checkpoint.prev.pt'
KEYS = ('epoch', 'step', 'finished', 'model', 'optimizer', 'losses', 'partial', 'loader', 'rng')


def position(state):
    """Human-readable position of a checkpoint."""
    e, s = state['epoch'], state['step']
    return f'epoch {e} complete' if s == 0 else f'epoch {e + 1}, {s} training steps done'


def steps_trained(state, steps_per_epoch):
    """Training steps a checkpoint has done in all (the final checkpoint records them as steps_done)."""
    if state.get('steps_done') is not None:
        return state['steps_done']
    if state.get('cut'):
        return (state['epoch'] - 1) * steps_per_epoch + state['cut']['step']
    return state['epoch'] * steps_per_epoch + state['step']


def reopened(state):
    """A checkpoint at the end of an epoch that --max-steps cut short, reopened at the cut: the epoch's last
    step before its test, with that epoch's entries taken off the loss history, so that training on gives
    what a run with the larger budget gives. Other checkpoints as they are."""
    cut = state.get('cut')
    if not cut:
        return state
    losses = {k: v[:-1] for k, v in state['losses'].items()}  # each a list with one entry per epoch
    return dict(state, epoch=state['epoch'] - 1, step=cut['step'], partial=cut['partial'], loader=cut['loader'],
                rng=cut['rng'], losses=losses, finished=False, steps_done=None, cut=None)


# ------------------------------------------------------------- save and load

def _fsync_dir(d):
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return  # some systems cannot open directories: the renames are still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(run_dir, state):
    """Write state as the newest checkpoint; the previous one becomes checkpoint.prev.pt."""
    state = dict(state, time=datetime.datetime.now().isoformat(timespec='seconds'))
    ckpt, nxt, prev = (os.path.join(run_dir, n) for n in (CKPT, NEXT, PREV))
    save_torch(state, nxt)  # complete and on disk, or absent
    if os.path.exists(ckpt):
        os.replace(ckpt, prev)
    os.replace(nxt, ckpt)
    _fsync_dir(run_dir)


def _check(state, path):
    if not isinstance(state, dict) or any(k not in state for k in KEYS):
        raise UserError(f"checkpoint {path} is not a checkpoint of this project (keys missing)")
    return state


def load(run_dir, map_location='cpu'):
    """The most advanced readable checkpoint of run_dir as (state, path), or (None, None) if it has none.

    A damaged file is passed over with a warning when a good one remains; when
    none is readable the error names every file and what is wrong with it.
    """
    good, bad = [], []
    for name in (CKPT, NEXT, PREV):
        path = os.path.join(run_dir, name)
        if not os.path.exists(path):
            continue
        try:
            good.append((_check(load_torch(path, 'checkpoint', map_location=map_location), path), path))
        except UserError as e:
            bad.append(str(e))
    if not good:
        if bad:
            raise UserError(
                f"cannot resume {run_dir}: no readable checkpoint.\n  " + '\n  '.join(bad) +
                f"\n  fix: restore the file from a backup if you have one; otherwise start the run again "
                f"(remove {run_dir} or train into another directory). model.pt, if present, holds the weights "
                f"of the last finished epoch: --pre-trained {run_dir} starts a new run from them")
        return None, None
    state, path = max(good, key=lambda sp: (sp[0]['epoch'], sp[0]['step'], sp[0]['finished']))
    for b in bad:
        log.warning(f'warning: {b}\n  using {path} ({position(state)}) instead')
    return state, path


@contextlib.contextmanager
def disk_errors(run_dir, last_good):
    """A failed write (full disk, quota, permissions) becomes one clear error: the file, the OS's words,
    the last good checkpoint, and the --resume that continues.

    Files are written atomically (src/files.py), so the failed one keeps its previous content and the last
    good checkpoint is intact.
    """
    try:
        yield
    except WriteError as e:
        raise _stopped(run_dir, e.path, e.error, last_good()) from None
    except OSError as e:
        if e.errno not in FAULTS:
            raise
        raise _stopped(run_dir, e.filename or run_dir, e, last_good()) from None


def _stopped(run_dir, path, error, last_good):
    return UserError(
        f"could not write {path}: {error.strerror or error}.\n"
        f"  The run directory keeps its previous files, none half-written; the last good checkpoint is "
        f"{last_good or 'none yet (the run had not finished a checkpoint)'}.\n"
        f"  fix: {what_to_do(error)}, then continue with: python main.py --resume {run_dir} "
        f"(a run directory can also be moved to another disk and resumed there)")


# ------------------------------------------------------------ graceful stops

EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}  # 128 + signal number, as a shell reports


class GracefulStop:
    """SIGTERM (what PBS and Slurm send at the wall-time limit, and torchrun
    forwards) and SIGINT (Ctrl-C) ask the training loop to stop at the next
    step: it saves a checkpoint and exits with 143 (SIGTERM) or 130 (SIGINT).
    A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.signal = None
        self._previous = {}
        for s in EXIT_CODES:
            try:
                self._previous[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread (e.g. called from a test thread)
                pass

    def _handle(self, signum, frame):
        if self.signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    @property
    def requested(self):
        return self.signal is not None

    @property
    def exit_code(self):
        return EXIT_CODES.get(self.signal, 143)

    @property
    def name(self):
        return signal.Signals(self.signal).name if self.signal else 'a signal to another rank'

    def restore(self):
        for s, h in self._previous.items():
            signal.signal(s, h)
