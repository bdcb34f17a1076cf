"""What a run records for plotting and comparison, besides its checkpoint:

- <run>/metrics.csv, always: one row per epoch (epoch, step, train_loss,
  test_loss, seconds, skipped_batches), rewritten atomically each epoch, so
  `pandas.read_csv` reads it at any time;
- <run>/tb/, with --tensorboard: TensorBoard events (torch.utils.tensorboard)
  of the step loss (every --print-freq steps; every step when it is 0), the
  epoch losses, the epoch's reconstruction and generation figures, and the
  numbers of the analysis scripts run on the run (log_analysis).

Every value is logged at the global training step, so that a resumed run
purges what the killed one logged after its checkpoint (SummaryWriter's
purge_step) and its curves continue without duplicates. The events are flushed
before every checkpoint, and a failed write of them (a full disk, met by
TensorBoard's own writer thread) is a WriteError at the next call: the run
stops before its next checkpoint, so that a resumed run has every step once.
"""
import contextlib
import csv
import io
import os
import threading

import numpy as np
from PIL import Image

from .errors import UserError, WriteError
from .files import read_text, save_text

COLUMNS = ('epoch', 'step', 'train_loss', 'test_loss', 'seconds', 'skipped_batches')


def _writer(run_dir, purge_step=None):
    from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when asked for
    _quiet_writer_thread()
    with events(run_dir):
        return SummaryWriter(os.path.join(run_dir, 'tb'), purge_step=purge_step)


def _quiet_writer_thread():
    """TensorBoard writes its events from a thread, which keeps a failed write's OSError (a full disk) and
    raises it again at the writer's next call from the program, where events() makes it the error line: the
    thread is not to print its own traceback as well."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
    previous = threading.excepthook
    if getattr(previous, 'quiet_tensorboard', False):
        return

    def hook(args):
        if not (isinstance(args.thread, _AsyncWriterThread) and issubclass(args.exc_type, OSError)):
            previous(args)
    hook.quiet_tensorboard = True
    threading.excepthook = hook


@contextlib.contextmanager
def events(run_dir):
    """A failed write of TensorBoard events is a WriteError naming <run>/tb."""
    try:
        yield
    except OSError as e:
        raise WriteError(os.path.join(run_dir, 'tb') + ' (TensorBoard events)', e) from None


class Tracker:
    def __init__(self, run_dir, tensorboard=False, print_freq=0, purge_step=None):
        self.run_dir = run_dir
        self.every = max(print_freq, 1)
        self.writer = _writer(run_dir, purge_step) if tensorboard else None
        self.steps = []  # global step at the end of each epoch

    def step(self, loss_per_item, global_step):
        if self.writer and global_step % self.every == 0:
            with events(self.run_dir):
                self.writer.add_scalar('loss/train_step', loss_per_item, global_step)

    def epoch(self, epoch, losses, steps_per_epoch, global_step):
        """After epoch `epoch` (ending at `global_step`): metrics.csv from the whole loss history; the
        epoch's scalars."""
        save_text(metrics_csv(losses, steps_per_epoch, global_step), os.path.join(self.run_dir, 'metrics.csv'))
        if self.writer:
            with events(self.run_dir):
                for tag, key in (('loss/train', 'train'), ('loss/test', 'test'),
                                 ('time/epoch_seconds', 'epoch_seconds')):
                    self.writer.add_scalar(tag, losses[key][-1], global_step)
                self.writer.add_scalar('epoch', epoch, global_step)
                self.writer.flush()

    def figures(self, paths, global_step):
        """PNG figures as TensorBoard images, tagged by their name without the epoch: figures/recon, ..."""
        if not self.writer:
            return
        with events(self.run_dir):
            for path in paths:
                tag = os.path.splitext(os.path.basename(path))[0].rsplit('_', 1)[0]
                with Image.open(path) as im:
                    self.writer.add_image(f'figures/{tag}', np.asarray(im.convert('RGB')), global_step,
                                          dataformats='HWC')
            self.writer.flush()

    def flush(self):
        """Every event so far on disk: before each checkpoint, so that a run resumed from it (which purges the
        events logged after it) has every event up to it."""
        if self.writer:
            with events(self.run_dir):
                self.writer.flush()

    def close(self):
        """Close the events file. Called on the way out, also after a failed write (which raised its error
        already): a failure here is not raised again."""
        if self.writer:
            with contextlib.suppress(OSError):
                self.writer.close()


def metrics_csv(losses, steps_per_epoch, last_step):
    """The loss history as CSV text; the step column counts training steps: every epoch but the last is
    whole, the last ends at `last_step` (short where --max-steps ended the run)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator='\n')
    w.writerow(COLUMNS)
    skipped = losses.get('skipped_batches', [0] * len(losses['train']))
    rows = zip(losses['train'], losses['test'], losses['epoch_seconds'], skipped, strict=True)
    for e, (train, test, seconds, skip) in enumerate(rows, 1):
        w.writerow((e, min(e * steps_per_epoch, last_step), repr(train), repr(test), seconds, skip))
    return out.getvalue()


def last_step(run_dir):
    """The global step of a run's last finished epoch (metrics.csv), or 0."""
    path = os.path.join(run_dir, 'metrics.csv')
    if not os.path.lexists(path):
        return 0
    try:
        rows = list(csv.DictReader(io.StringIO(read_text(path, 'metrics file'), newline='')))
        return int(rows[-1]['step'])
    except (IndexError, KeyError, TypeError, ValueError, csv.Error):
        raise UserError(f"metrics file {path} is damaged: restore it, or delete it (the analysis' TensorBoard "
                        f"numbers then go to step 0)") from None


def log_analysis(run_dir, name, results):
    """The numbers of an analysis (a JSON-like dict) as TensorBoard scalars `<name>/<key>/<subkey>` at the
    run's last step, when the run was trained with --tensorboard (it has <run>/tb/); else nothing."""
    if not os.path.isdir(os.path.join(run_dir, 'tb')):
        return []
    scalars = list(_numbers(results, name))
    step = last_step(run_dir)
    w = _writer(run_dir)
    try:
        with events(run_dir):
            for tag, value in scalars:
                w.add_scalar(tag, value, step)
            w.flush()
    finally:
        with contextlib.suppress(OSError):
            w.close()
    return [tag for tag, _ in scalars]


def _numbers(obj, prefix):
    """(tag, number) for every number in nested dicts (not lists: per-item values are not curves)."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield prefix, float(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f'{prefix}/{k}')
