"""Fault handling: SIGTERM (checkpoint, exit 143, resume to the same
result), non-finite losses, damaged files, a full disk (a file-size limit in a
subprocess: at the first weights write, at a checkpoint mid-epoch, in the
TensorBoard writer's thread, in the study runner, during an analysis), each
resumed to the result of an uninterrupted run. In-process runs of a tiny config."""
import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import src.numbersense_study as study
from main import main
from src import checkpoint, tracking, train
from src.cli import parse_args
from src.data import tensors
from src.data.digits import paired_indices
from src.errors import UserError
from src.report.numbersense import analyse as numbersense_analysis

# 4,000 MNIST digits / 200 = 20 steps per epoch
FLAGS = ['--model', 'mnist', '--offline', '--epochs', '1', '--batch-size', '200', '--K', '2', '--obj', 'iwae',
         '--no-analytics', '--checkpoint-every', '5']
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OMP_NUM_THREADS='1')  # the same threads as the in-process runs: the same floats


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


@pytest.fixture(scope='module')
def reference2(tmp_path_factory, data_dir, in_process_runs):
    """The same run, two epochs."""
    run = str(tmp_path_factory.mktemp('ref2') / 'run')
    assert main([*FLAGS, '--epochs', '2', '--data-dir', data_dir, '--run-dir', run]) == 0
    return run


def _same_result(run, ref):
    """Bit-identical weights and losses."""
    ref_w, w = (torch.load(os.path.join(d, 'model.pt')) for d in (ref, run))
    assert all(torch.equal(ref_w[k], w[k]) for k in ref_w)
    ref_l, losses = (json.load(open(os.path.join(d, 'losses.json'))) for d in (ref, run))
    assert (losses['train'], losses['test']) == (ref_l['train'], ref_l['test'])


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
    _same_result(run, reference)


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
    _same_result(run, reference)


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
    assert f'could not write {run}/{checkpoint.NEXT}: No space left on device' in err
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


# ---------------------------------------------------------------- a disk that fills up

def _filling_disk(limit):
    """For a subprocess: files can grow to `limit` bytes only (RLIMIT_FSIZE, no root needed), so a write past
    it fails as on a full disk (EFBIG, 'File too large', where a full disk says ENOSPC)."""
    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails, instead of the signal killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    return limit_files


def _run_on_filling_disk(script, argv, limit):
    return subprocess.run([sys.executable, script, *argv], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=600, preexec_fn=_filling_disk(limit))


def _one_error(p, *messages):
    """Exit status 2 and one `error:` line (the file, the OS's words, what to do), no traceback."""
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith('error: ') and sum(ln.startswith('error:') for ln in lines) == 1, p.stderr
    assert 'Traceback' not in p.stderr
    for m in messages:
        assert m in p.stderr, p.stderr


def _size(run, name):
    return os.path.getsize(os.path.join(run, name))


def _contents(d):
    return {os.path.relpath(os.path.join(base, f), d): hashlib.sha256(open(os.path.join(base, f), 'rb').read())
            .hexdigest() for base, _, names in os.walk(d) for f in names}


def test_disk_full_at_the_first_weights_write(reference, data_dir, tmp_path):
    run, limit = str(tmp_path / 'run'), 1_000_000
    assert _size(reference, 'args.json') < limit < _size(reference, 'model.pt')
    p = _run_on_filling_disk('main.py', [*FLAGS, '--checkpoint-every', '0', '--data-dir', data_dir,
                                         '--run-dir', run], limit)
    _one_error(p, f'could not write {run}/model.pt: File too large', 'the last good checkpoint is none yet',
               'fix: free some disk space (or raise the quota), then continue with: '
               f'python main.py --resume {run}')
    assert sorted(os.listdir(run)) == ['args.json', 'run.log']  # nothing half-written
    assert main(['--resume', run]) == 0  # space freed: the command the error gave
    _same_result(run, reference)


def test_disk_full_before_the_run_is_set_up(data_dir, tmp_path):
    """Without a complete args.json a directory is no run: it is undone, so that the same command runs again
    (a --run-dir the user made is emptied, not removed)."""
    for made_by_user in (False, True):
        run = str(tmp_path / f'run{made_by_user}')
        if made_by_user:
            os.mkdir(run)
        p = _run_on_filling_disk('main.py', [*FLAGS, '--data-dir', data_dir, '--run-dir', run], limit=500)
        _one_error(p, f'could not write {run}/args.json: File too large', 'then run the same command again')
        assert (os.listdir(run) == []) if made_by_user else not os.path.exists(run)


def test_disk_full_at_a_checkpoint_mid_epoch(reference, reference2, tmp_path):
    run, limit = _copy(reference, tmp_path), 5_000_000  # a finished first epoch
    assert _size(run, 'model.pt') < limit < _size(run, checkpoint.CKPT)
    before = _contents(run)
    p = _run_on_filling_disk('main.py', ['--resume', run, '--epochs', '2'], limit)  # checkpoint at epoch 2, step 5
    _one_error(p, f'could not write {run}/{checkpoint.NEXT}: File too large',
               'the last good checkpoint is epoch 1 complete', f'python main.py --resume {run}')
    after = _contents(run)
    assert {n: after[n] for n in (checkpoint.CKPT, checkpoint.PREV)} == \
        {n: before[n] for n in (checkpoint.CKPT, checkpoint.PREV)} and set(after) == set(before)
    assert main(['--resume', run, '--epochs', '2']) == 0
    _same_result(run, reference2)


def test_tensorboard_failing_stops_the_run_and_the_resumed_events_are_complete(monkeypatch, reference, data_dir,
                                                                              tmp_path, capsys):
    """TensorBoard's writer thread meets a full disk at step 10: the run stops with the error line before that
    step's checkpoint (no traceback from the thread, no hang); resumed, it ends as an uninterrupted run and its
    events hold every step once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.compat.tensorflow_stub.io import gfile
    append, step, full = gfile.LocalFileSystem.append, tracking.Tracker.step, []

    def filling(self, filename, file_content, binary_mode=False):
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return append(self, filename, file_content, binary_mode)

    def fill_at_step_10(self, loss, global_step):
        if global_step == 10:  # its event fails to be written, in the thread, just before the step's checkpoint
            full.append(True)
        step(self, loss, global_step)
    monkeypatch.setattr(gfile.LocalFileSystem, 'append', filling)
    monkeypatch.setattr(tracking.Tracker, 'step', fill_at_step_10)
    run = str(tmp_path / 'run')
    assert main([*FLAGS, '--tensorboard', '--data-dir', data_dir, '--run-dir', run]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: could not write {run}/tb (TensorBoard events): No space left on device')
    assert 'Traceback' not in err and 'Exception in thread' not in err
    assert 'the last good checkpoint is epoch 1, 5 training steps done' in err, err
    monkeypatch.undo()
    assert main(['--resume', run]) == 0
    _same_result(run, reference)
    acc = EventAccumulator(os.path.join(run, 'tb'), size_guidance={'scalars': 0}).Reload()
    assert [e.step for e in acc.Scalars('loss/train_step')] == list(range(1, 21))


def _study_flags(study_dir, data_dir):
    return ['--quick', '--offline', '--no-cuda', '--study-dir', study_dir, '--data-dir', data_dir, '--conditions',
            'cmnist', '--epochs', '1', '--K', '2', '--num-hidden-layers', '1', '--batch-size', '64', '--train-only']


def test_study_keeps_its_finished_runs_when_the_disk_fills(tiny_data, tmp_path):
    s = str(tmp_path / 'study')
    flags = _study_flags(s, tiny_data)
    study.main(flags + ['--seeds', '1'])
    seed0, seed1 = (os.path.join(s, 'cmnist', f'seed{k:03d}') for k in (0, 1))
    finished = _contents(seed0)
    p = _run_on_filling_disk('src/numbersense_study.py', flags + ['--seeds', '2'], limit=1_000_000)
    _one_error(p, f'could not write {seed1}/model.pt: File too large', f'python main.py --resume {seed1}')
    assert f'finished run {seed0}: not trained again' in p.stdout
    assert _contents(seed0) == finished and sorted(os.listdir(seed1)) == ['args.json', 'run.log']
    study.main(flags + ['--seeds', '2'])  # space freed: the same command
    assert _contents(seed0) == finished
    clean = str(tmp_path / 'clean')
    study.main(_study_flags(clean, tiny_data) + ['--seeds', '2', '--job', 'cmnist:1'])
    _same_result(seed1, os.path.join(clean, 'cmnist', 'seed001'))


def test_analysis_stops_cleanly_and_leaves_no_half_written_cache(tiny_data, tmp_path):
    """The number-sense analysis meets a full disk when it caches its number classifier: one error line, no
    cache file and no results; rerun, it gives what an analysis that never failed gives."""
    clean_data = shutil.copytree(tiny_data, tmp_path / 'clean_data')
    assert not os.path.exists(os.path.join(clean_data, 'classifiers'))
    run = str(tmp_path / 'run')
    assert main(['--model', 'cmnist', '--offline', '--epochs', '1', '--K', '2', '--num-hidden-layers', '1',
                 '--batch-size', '64', '--no-analytics', '--data-dir', tiny_data, '--run-dir', run]) == 0
    argv = ['--save-dir', run, '--classifier-epochs', '1', '--map', 'none']
    cache = os.path.join(tiny_data, 'classifiers')
    p = _run_on_filling_disk('src/report/numbersense/analyse.py', argv + ['--data-dir', tiny_data], 1_000_000)
    _one_error(p, f'could not write {cache}/numbersense_cmnist', ': File too large', 'run the same command again')
    assert os.listdir(cache) == [] and not os.path.exists(os.path.join(run, 'numbersense.json'))
    results = []
    for data in (tiny_data, str(clean_data)):  # space freed: the same command; and a clean analysis
        numbersense_analysis.main(argv + ['--data-dir', data])
        results.append(json.load(open(os.path.join(run, 'numbersense.json'))))
    assert [r['classifiers']['cmnist']['cached'] for r in results] == [False, False]
    assert results[0]['encoders'] == results[1]['encoders']
