"""Fault handling: SIGTERM (checkpoint, exit 143, resume to the same
result), non-finite losses, damaged files, a full disk. In-process runs of a tiny config."""
import errno
import json
import os
import shutil
import signal

import pytest
import torch

from main import main
from src import checkpoint, train
from src.cli import parse_args
from src.data import tensors
from src.data.digits import paired_indices
from src.errors import UserError

# 4,000 MNIST digits / 200 = 20 steps per epoch
FLAGS = ['--model', 'mnist', '--offline', '--epochs', '1', '--batch-size', '200', '--K', '2', '--obj', 'iwae',
         '--no-analytics', '--checkpoint-every', '5']


pytestmark = [pytest.mark.usefixtures('in_process_runs'),  # tests/conftest.py
              pytest.mark.slow]  # training runs, subprocesses


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp('data'))


@pytest.fixture(scope='module')
def reference(tmp_path_factory, data_dir, in_process_runs):
    """A finished one-epoch run (not to be modified: tests copy it)."""
    run = str(tmp_path_factory.mktemp('ref') / 'run')
    assert main([*FLAGS, '--data-dir', data_dir, '--run-dir', run]) == 0
    return run


def _copy(run, tmp_path):
    dst = str(tmp_path / 'run')
    shutil.copytree(run, dst)
    return dst


def _poison(monkeypatch, bad_step):
    """Training batch number bad_step (1-based) of every epoch gets a NaN pixel."""
    iter_from = tensors.BatchLoader.iter_from

    def poisoned(self, start):
        for i, (x, labels) in enumerate(iter_from(self, start), start):
            if self.shuffle and i + 1 == bad_step:
                x = x.clone()
                x[0, 0, 0, 0] = float('nan')
            yield x, labels
    monkeypatch.setattr(tensors.BatchLoader, 'iter_from', poisoned)


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(monkeypatch, data_dir, tmp_path, capsys):
    _poison(monkeypatch, bad_step=8)
    run = str(tmp_path / 'run')
    assert main([*FLAGS, '--data-dir', data_dir, '--run-dir', run]) == 2
    err = capsys.readouterr().err
    assert 'non-finite training loss (nan) at epoch 1, step 8 of 20: the run stopped' in err
    assert f'last good checkpoint (epoch 1, 5 training steps done) is kept in {run}' in err
    assert '--K' in err and '--llik_scaling' in err and f'--resume {run} --skip-nonfinite' in err
    state, _ = checkpoint.load(run)
    assert (state['epoch'], state['step']) == (0, 5)
    assert torch.isfinite(torch.cat([v.flatten() for v in state['model'].values()])).all()

    # the suggested fix: resume, skipping the batch
    assert main(['--resume', run, '--skip-nonfinite']) == 0
    losses = json.load(open(os.path.join(run, 'losses.json')))
    assert losses['skipped_batches'] == [1] and all(map(torch.isfinite, torch.tensor(losses['train'])))
    log = open(os.path.join(run, 'run.log')).read()
    assert 'epoch 1 step 8/20: non-finite loss (nan): batch skipped' in log
    assert 'epoch 1: 1 of 20 batches skipped' in log


def test_skip_nonfinite_from_the_start_counts_each_epoch(monkeypatch, data_dir, tmp_path):
    _poison(monkeypatch, bad_step=3)
    run = str(tmp_path / 'run')
    assert main([*FLAGS, '--epochs', '2', '--skip-nonfinite', '--data-dir', data_dir, '--run-dir', run]) == 0
    assert json.load(open(os.path.join(run, 'losses.json')))['skipped_batches'] == [1, 1]


def test_sigterm_during_training_checkpoints_and_resumes_to_the_same_result(monkeypatch, reference, data_dir,
                                                                           tmp_path, capsys):
    iter_from = tensors.BatchLoader.iter_from

    def terminated(self, start):
        for i, batch in enumerate(iter_from(self, start), start):
            if self.shuffle and i == 6:
                os.kill(os.getpid(), signal.SIGTERM)  # arrives during training step 7
            yield batch
    monkeypatch.setattr(tensors.BatchLoader, 'iter_from', terminated)
    run = str(tmp_path / 'run')
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as e:
        main([*FLAGS, '--data-dir', data_dir, '--run-dir', run])
    assert e.value.code == 143  # the process exit code
    assert signal.getsignal(signal.SIGTERM) is handler  # the run's handler is gone
    assert (f'stopped by SIGTERM: checkpoint saved (epoch 1, 7 training steps done); continue with: '
            f'python main.py --resume {run}') in capsys.readouterr().out
    state, _ = checkpoint.load(run)
    assert (state['epoch'], state['step']) == (0, 7)
    monkeypatch.setattr(tensors.BatchLoader, 'iter_from', iter_from)
    assert main(['--resume', run]) == 0
    ref_w, w = (torch.load(os.path.join(d, 'model.pt')) for d in (reference, run))
    assert all(torch.equal(ref_w[k], w[k]) for k in ref_w)
    ref_l, losses = (json.load(open(os.path.join(d, 'losses.json'))) for d in (reference, run))
    assert (losses['train'], losses['test']) == (ref_l['train'], ref_l['test'])


def test_sigterm_during_the_test_pass_resumes_to_the_same_result(monkeypatch, reference, data_dir, tmp_path):
    real_test_epoch = train.test_epoch

    def interrupted(*args, **kw):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the test pass runs
        return real_test_epoch(*args, **kw)
    monkeypatch.setattr(train, 'test_epoch', interrupted)
    run = str(tmp_path / 'run')
    with pytest.raises(SystemExit) as e:
        main([*FLAGS, '--data-dir', data_dir, '--run-dir', run])
    assert e.value.code == 143
    state, _ = checkpoint.load(run)
    assert (state['epoch'], state['step'], state['finished']) == (0, 20, False)  # training done, test pending
    monkeypatch.setattr(train, 'test_epoch', real_test_epoch)
    assert main(['--resume', run]) == 0
    ref_w, w = (torch.load(os.path.join(d, 'model.pt')) for d in (reference, run))
    assert all(torch.equal(ref_w[k], w[k]) for k in ref_w)
    ref_l, losses = (json.load(open(os.path.join(d, 'losses.json'))) for d in (reference, run))
    assert (losses['train'], losses['test']) == (ref_l['train'], ref_l['test'])


def test_damaged_checkpoint(reference, tmp_path, capsys):
    run = _copy(reference, tmp_path)
    ckpt, prev = os.path.join(run, checkpoint.CKPT), os.path.join(run, checkpoint.PREV)
    with open(ckpt, 'r+b') as f:
        f.truncate(os.path.getsize(ckpt) // 2)
    # the previous checkpoint is intact: used, with a warning naming the damaged file
    assert main(['--resume', run]) == 0
    out = capsys.readouterr().out
    assert f'checkpoint {ckpt} cannot be read' in out and f'using {prev} (epoch 1 complete) instead' in out
    # no readable checkpoint at all: an error naming the file
    os.remove(prev)
    with open(ckpt, 'wb') as f:
        f.write(b'PK\x03\x04 truncated')
    assert main(['--resume', run]) == 2
    err = capsys.readouterr().err
    assert f'cannot resume {run}: no readable checkpoint' in err and f'checkpoint {ckpt} cannot be read' in err


def test_damaged_args_json(reference, tmp_path):
    run = _copy(reference, tmp_path)
    path = os.path.join(run, 'args.json')
    text = open(path).read()
    open(path, 'w').write(text[:len(text) // 2])
    with pytest.raises(UserError, match=f'run flags file {path} is corrupt or truncated'):
        parse_args(['--resume', run])


def test_damaged_pairing_index(tmp_path):
    labels = torch.tensor([0, 1, 0, 1])
    paired_indices('x', labels, labels, 1, str(tmp_path), 'train')  # builds and caches the index
    path = tmp_path / 'pairs' / 'x_train_dm1.pt'
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match=f'pairing index file {path} cannot be read.*delete it to rebuild it'):
        paired_indices('x', labels, labels, 1, str(tmp_path), 'train')


def _disk_full_for_checkpoints(monkeypatch):
    """torch.save into a checkpoint file writes some bytes, then the disk is full."""
    real_save = torch.save

    def save(obj, f, *a, **kw):
        if isinstance(obj, dict) and 'rng' in obj:  # a checkpoint
            f.write(b'partial bytes')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **kw)
    monkeypatch.setattr(torch, 'save', save)


def test_full_disk_keeps_the_previous_checkpoint(monkeypatch, reference, tmp_path, capsys):
    run = _copy(reference, tmp_path)
    before = {n: open(os.path.join(run, n), 'rb').read() for n in (checkpoint.CKPT, checkpoint.PREV)}
    _disk_full_for_checkpoints(monkeypatch)
    assert main(['--resume', run, '--epochs', '2']) == 2
    err = capsys.readouterr().err
    assert f'could not write into the run directory {run}' in err and 'No space left on device' in err
    assert 'the last good checkpoint is epoch 1 complete' in err and f'--resume {run}' in err
    # both checkpoints untouched, no temporary files left behind
    assert {n: open(os.path.join(run, n), 'rb').read() for n in before} == before
    assert not [n for n in os.listdir(run) if n.endswith('.tmp') or n == checkpoint.NEXT]
    monkeypatch.undo()
    state, path = checkpoint.load(run)
    assert path.endswith(checkpoint.CKPT) and state['finished']


def test_save_keeps_the_newest_two(tmp_path):
    run = str(tmp_path)
    base = {'step': 0, 'finished': False, 'model': {}, 'optimizer': {}, 'losses': {}, 'partial': None,
            'loader': None, 'rng': None}
    for e in (1, 2, 3):
        checkpoint.save(run, dict(base, epoch=e))
    assert torch.load(os.path.join(run, checkpoint.CKPT))['epoch'] == 3
    assert torch.load(os.path.join(run, checkpoint.PREV))['epoch'] == 2
    # killed between the two renames: checkpoint.pt is gone, the complete new one is still found
    os.replace(os.path.join(run, checkpoint.CKPT), os.path.join(run, checkpoint.NEXT))
    state, path = checkpoint.load(run)
    assert state['epoch'] == 3 and path.endswith(checkpoint.NEXT)
