"""Writes that fail (a full disk, a quota): the atomic writers leave the previous file and no temporary
file, and say which file and why; log files and TensorBoard's writer thread report a failure once,
without tracebacks; the entry points turn such faults into one `error:` line. (Real full disks, via a
file-size limit, with training runs: tests/test_faults.py.)"""
import errno
import io
import logging
import os

import pytest
import torch

import main as main_module
from src import files, tracking, train
from src.errors import UserError, WriteError
from src.report.runs import run_script
from src.rundir import LogFile
from src.tracking import Tracker


class FillingFile:
    """A file on a disk with `room` bytes left: a write that does not fit fails with ENOSPC."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, b):
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def fill_disk(monkeypatch, room):
    fdopen = os.fdopen
    monkeypatch.setattr(os, 'fdopen', lambda fd, mode: FillingFile(fdopen(fd, mode), room))


def left_over(d):
    return sorted(n for n in os.listdir(d) if n.endswith('.tmp'))


@pytest.mark.parametrize('save, obj', [(files.save_torch, {'w': torch.arange(10_000.)}),
                                       (files.save_json, list(range(10_000))),
                                       (files.save_text, 'x' * 10_000)], ids=['torch', 'json', 'text'])
def test_a_failed_write_keeps_the_previous_file(monkeypatch, tmp_path, save, obj):
    path = tmp_path / 'out'
    path.write_bytes(b'previous content')
    fill_disk(monkeypatch, room=1000)
    with pytest.raises(WriteError) as e:
        save(obj, path)
    assert str(e.value).startswith(f'could not write {path}: No space left on device.\n  fix: free some disk space')
    assert 'run the same command again' in str(e.value)
    assert path.read_bytes() == b'previous content' and left_over(tmp_path) == []
    monkeypatch.undo()
    save(obj, path)  # space freed
    assert path.read_bytes() != b'previous content'


def test_torch_save_failure_is_told_as_the_os_error(monkeypatch, tmp_path):
    """torch.save answers a failed write of its zip writer with RuntimeError('... unexpected pos ...'),
    raised while handling the OSError: the OSError is what the user is told about."""
    obj = {'w': torch.arange(100_000.)}
    with pytest.raises((RuntimeError, OSError)) as e:
        torch.save(obj, FillingFile(io.BytesIO(), room=1000))
    assert files._os_error(e.value).errno == errno.ENOSPC
    fill_disk(monkeypatch, room=1000)
    with pytest.raises(WriteError, match='model.pt: No space left on device'):
        files.save_torch(obj, tmp_path / 'model.pt')
    assert os.listdir(tmp_path) == []


def test_a_bug_in_the_writer_is_not_a_disk_error(tmp_path):
    def broken(f):
        f.write(b'some')
        raise ValueError('a bug')
    with pytest.raises(ValueError, match='a bug'):
        files.atomic_write(tmp_path / 'out', broken)
    assert os.listdir(tmp_path) == []


def test_log_file_reports_a_full_disk_once(tmp_path, capsys):
    path = tmp_path / 'run.log'
    h = LogFile(str(path))
    log = logging.getLogger('test_files.logfile')
    log.handlers[:], log.propagate = [h], False
    log.warning('first line')
    h.stream = FillingFile(h.stream, room=0)
    for i in range(3):
        log.warning(f'line {i}')
    h.close()
    err = capsys.readouterr().err
    assert err == f'warning: could not write {path} (No space left on device): its messages go to stdout only ' \
                  f'from here\n'
    assert path.read_text() == 'first line\n'


def test_log_file_that_cannot_be_opened(tmp_path):
    os.mkdir(tmp_path / 'run.log')
    with pytest.raises(WriteError, match=r'run.log: Is a directory'):
        LogFile(str(tmp_path / 'run.log'))


@pytest.mark.filterwarnings('error::pytest.PytestUnhandledThreadExceptionWarning')  # a traceback from the thread
def test_tensorboard_writer_thread_failing(monkeypatch, tmp_path, capsys):
    """The writer's thread fails: the next call of the run raises one WriteError naming tb/, never a hang,
    and the thread prints no traceback of its own."""
    from tensorboard.compat.tensorflow_stub.io import gfile
    t = Tracker(str(tmp_path), tensorboard=True)

    def full(self, filename, file_content, binary_mode=False):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
    monkeypatch.setattr(gfile.LocalFileSystem, 'append', full)
    losses = {'train': [1.0], 'test': [1.0], 'epoch_seconds': [1.0]}
    with pytest.raises(WriteError, match=f'could not write {tmp_path}/tb \\(TensorBoard events\\): No space left'):
        for step in range(1, 6):
            t.step(0.5, step)
        t.epoch(1, losses, 5, 5)  # flushes: waits for the thread, which failed
    t.close()  # on the way out: no second error
    err = capsys.readouterr().err
    assert 'Traceback' not in err and 'Exception in thread' not in err
    assert (tmp_path / 'metrics.csv').is_file()  # written before the events


@pytest.mark.parametrize('code, message', [(errno.EDQUOT, 'Disk quota exceeded'),
                                           (errno.EROFS, 'Read-only file system')])
def test_entry_points_report_os_faults_in_one_line(monkeypatch, tmp_path, capsys, code, message):
    """An OSError of the machine reaching an entry point (from a write outside src/files.py, e.g. a
    directory made on a full quota) is one `error:` line naming the file; a bug keeps its traceback."""
    def fault(*a, **k):
        raise OSError(code, os.strerror(code), '/scratch/run/figures')
    monkeypatch.setattr(train, 'run', fault)
    argv = ['--model', 'mnist', '--data-dir', str(tmp_path), '--out-dir', str(tmp_path)]
    assert main_module.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: /scratch/run/figures: {message}.\n  fix: ') and err.count('error:') == 1
    with pytest.raises(SystemExit) as e:
        run_script(fault)
    assert e.value.code == 2 and capsys.readouterr().err.startswith(f'error: /scratch/run/figures: {message}')

    def bug(*a, **k):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), 'a path the code got wrong')
    monkeypatch.setattr(train, 'run', bug)
    with pytest.raises(FileNotFoundError):
        main_module.main(argv)
    with pytest.raises(FileNotFoundError):
        run_script(bug)


def test_user_errors_stay_user_errors(monkeypatch, tmp_path):
    def bad(*a, **k):
        raise UserError('a clear message')
    monkeypatch.setattr(train, 'run', bad)
    assert main_module.main(['--model', 'mnist', '--data-dir', str(tmp_path), '--out-dir', str(tmp_path)]) == 2


@pytest.mark.parametrize('content, message', [(b'\x89PNG\r\n', 'is not a UTF-8 text file'), (b'', 'is empty'),
                                              (b'epoch,step\n1,x\n', 'is damaged')])
def test_damaged_metrics_csv(tmp_path, content, message):
    """The step an analysis logs its numbers at in TensorBoard comes from metrics.csv: a damaged one is named."""
    (tmp_path / 'metrics.csv').write_bytes(content)
    with pytest.raises(UserError, match=f'metrics file {tmp_path}/metrics.csv {message}'):
        tracking.last_step(str(tmp_path))
    (tmp_path / 'metrics.csv').write_text('epoch,step\n1,20\n2,40\n')
    assert tracking.last_step(str(tmp_path)) == 40


def test_read_text(tmp_path):
    """UTF-8 text, a byte-order mark dropped; a bad byte is named by its place in the file."""
    path = tmp_path / 'flags.json'
    path.write_bytes(b'\xef\xbb\xbf{"epochs": 3}')
    assert files.read_text(path) == '{"epochs": 3}' and files.load_json(path) == {'epochs': 3}
    path.write_bytes(b'a' * 20_000 + b'\xe9t\xe9')
    with pytest.raises(UserError, match=r'is not a UTF-8 text file \(byte 20001 is 0xe9\)'):
        files.read_text(path)


def test_json_of_the_wrong_kind(tmp_path):
    """A file this project writes as a JSON object, found holding an array: one error naming both."""
    path = tmp_path / 'losses.json'
    path.write_text('[1, 2]')
    assert files.load_json(path, 'losses file') == [1, 2]
    with pytest.raises(UserError, match=r'losses file .*losses.json holds a JSON list, not the object'):
        files.load_json(path, 'losses file', dict)
    path.write_text('{"train": []}')
    with pytest.raises(UserError, match=r'holds a JSON dict, not the array'):
        files.load_json(path, 'losses file', list)


def test_study_with_a_losses_file_of_the_wrong_kind(tmp_path):
    """The study runner's count of a run's trained epochs: an error line, not an AttributeError."""
    from src.numbersense_study import trained_epochs
    (tmp_path / 'losses.json').write_text('{"train": [1.0, 0.5], "test": [1.1, 0.6]}')
    assert trained_epochs(str(tmp_path)) == 2
    (tmp_path / 'losses.json').write_text('"not an object"')
    with pytest.raises(UserError, match='losses file .* holds a JSON str, not the object'):
        trained_epochs(str(tmp_path))
