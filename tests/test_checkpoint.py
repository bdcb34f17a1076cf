"""Checkpoint files and random states (src/checkpoint.py, src/rng.py), without training: which checkpoint a
resume takes, what a damaged one leaves, that every generator's state survives a checkpoint file; a failed write
and the stop signals."""
import errno
import logging
import os
import random
import signal
import stat
import threading

import numpy as np
import pytest
import torch

from src import checkpoint
from src.errors import UserError, WriteError
from src.rng import fork_rng, rng_states, seed_everything, set_rng_states

CPU = torch.device('cpu')


def state(epoch, step, finished=False):
    return {'epoch': epoch, 'step': step, 'finished': finished, 'model': {'w': torch.full((2,), float(epoch))},
            'optimizer': {}, 'losses': {}, 'partial': None, 'loader': None, 'rng': None}


def test_save_keeps_two_and_load_takes_the_most_advanced(tmp_path):
    run = str(tmp_path)
    assert checkpoint.load(run) == (None, None)
    checkpoint.save(run, state(1, 0))
    checkpoint.save(run, state(1, 3))
    assert sorted(os.listdir(run)) == sorted([checkpoint.CKPT, checkpoint.PREV])  # no temporary file left
    got, path = checkpoint.load(run)
    assert (got['epoch'], got['step']) == (1, 3) and path == os.path.join(run, checkpoint.CKPT)
    assert 'time' in got
    # the ordering is by position, not by file name: epoch, then step, then finished
    for older, newer in ((state(2, 0), state(1, 3)), (state(1, 3), state(1, 2)), (state(2, 0, True), state(2, 0))):
        checkpoint.save(run, older)
        checkpoint.save(run, newer)
        got, path = checkpoint.load(run)
        assert (got['epoch'], got['step'], got['finished']) == (older['epoch'], older['step'], older['finished'])
        assert path == os.path.join(run, checkpoint.PREV)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    run = str(tmp_path)
    checkpoint.save(run, state(1, 0))
    checkpoint.save(run, state(2, 0))
    with open(os.path.join(run, checkpoint.CKPT), 'wb') as f:
        f.write(b'not a checkpoint')
    log = logging.getLogger('mmvae')  # main.py's logger need not propagate: its records are taken here
    log.addHandler(caplog.handler)
    try:
        got, path = checkpoint.load(run)
    finally:
        log.removeHandler(caplog.handler)
    assert got['epoch'] == 1 and path.endswith(checkpoint.PREV)
    assert f'using {path} (epoch 1 complete) instead' in caplog.text
    torch.save({'epoch': 3}, os.path.join(run, checkpoint.PREV))  # readable, but keys missing
    with pytest.raises(UserError, match='no readable checkpoint') as e:
        checkpoint.load(run)
    assert 'keys missing' in str(e.value) and '--pre-trained' in str(e.value)


def test_position_in_words():
    assert checkpoint.position({'epoch': 3, 'step': 0}) == 'epoch 3 complete'
    assert checkpoint.position({'epoch': 3, 'step': 7}) == 'epoch 4, 7 training steps done'


def draws():
    """One draw of every generator a run may use; numpy's and Python's Gaussians come in pairs (the second
    is cached in the generator's state)."""
    return (torch.rand(3).tolist(), np.random.rand(2).tolist(), np.random.randn(), random.random(),
            random.gauss(0, 1))


def test_every_random_state_survives_a_checkpoint_file(tmp_path):
    seed_everything(4)
    random.seed(4)
    np.random.randn()  # a cached second Gaussian in numpy's state
    random.gauss(0, 1)  # and in Python's
    checkpoint.save(str(tmp_path), dict(state(1, 0), rng=rng_states(CPU)))
    expected = draws()
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    saved, _ = checkpoint.load(str(tmp_path))  # through the restricted unpickler
    set_rng_states(saved['rng'], CPU)
    assert draws() == expected


def test_seeding_and_forking():
    seed_everything(11)
    first = (torch.rand(2).tolist(), np.random.rand(2).tolist())
    seed_everything(11)
    assert (torch.rand(2).tolist(), np.random.rand(2).tolist()) == first
    seed_everything(12)
    assert torch.rand(2).tolist() != first[0]
    seed_everything(11)
    with fork_rng():
        torch.rand(5)  # drawn on a fork: the training noise does not move
    assert torch.rand(2).tolist() == first[0]


def test_a_failed_write_names_the_file_and_the_last_good_checkpoint(tmp_path):
    run = str(tmp_path)
    full = OSError(errno.ENOSPC, 'No space left on device')
    with pytest.raises(UserError) as e, checkpoint.disk_errors(run, lambda: 'epoch 2 complete'):
        raise WriteError(os.path.join(run, 'model.pt'), full)
    msg = str(e.value)
    assert msg.startswith(f"could not write {os.path.join(run, 'model.pt')}: No space left on device.")
    assert 'the last good checkpoint is epoch 2 complete' in msg and 'free some disk space' in msg
    assert f'python main.py --resume {run}' in msg
    with pytest.raises(UserError) as e, checkpoint.disk_errors(run, lambda: None):
        raise OSError(errno.EROFS, 'Read-only file system', os.path.join(run, 'losses.json'))
    assert str(e.value).startswith(f"could not write {os.path.join(run, 'losses.json')}: Read-only file system.")
    assert 'none yet (the run had not finished a checkpoint)' in str(e.value)
    assert 'fix the permissions' in str(e.value)
    with pytest.raises(UserError, match=f'could not write {run}: '), checkpoint.disk_errors(run, lambda: None):
        raise OSError(errno.EDQUOT, 'Disk quota exceeded')  # no file name: the run directory is named
    with pytest.raises(FileNotFoundError), checkpoint.disk_errors(run, lambda: None):
        raise FileNotFoundError(errno.ENOENT, 'No such file or directory')  # a bug, not a fault: as it is


def test_directory_sync_is_best_effort(tmp_path, monkeypatch):
    """Some systems cannot open or fsync a directory: the renames are atomic all the same."""
    checkpoint._fsync_dir(str(tmp_path / 'absent'))
    calls, fsync = [], os.fsync

    def refuse_directories(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            calls.append(fd)
            raise OSError(errno.EINVAL, 'Invalid argument')
        fsync(fd)
    monkeypatch.setattr(os, 'fsync', refuse_directories)
    checkpoint.save(str(tmp_path), state(1, 0))
    assert calls and checkpoint.load(str(tmp_path))[0]['epoch'] == 1


def test_stop_signals():
    """SIGTERM and SIGINT ask the loop to stop (exit 143 or 130, as a shell reports them); a second Ctrl-C
    interrupts at once; restore() puts the previous handlers back."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stop = checkpoint.GracefulStop()
    try:
        assert not stop.requested and stop.name == 'a signal to another rank' and stop.exit_code == 143
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.exit_code == 143 and stop.name == 'SIGTERM'
        stop._handle(signal.SIGTERM, None)  # a second SIGTERM: still a graceful stop
        stop._handle(signal.SIGINT, None)
        assert stop.exit_code == 130 and stop.name == 'SIGINT'
        with pytest.raises(KeyboardInterrupt):
            stop._handle(signal.SIGINT, None)
    finally:
        stop.restore()
    assert {s: signal.getsignal(s) for s in before} == before
    assert checkpoint.EXIT_CODES == {signal.SIGTERM: 128 + 15, signal.SIGINT: 128 + 2}
    # outside the main thread no handler can be installed: a stop then comes from another rank's request
    made = []
    thread = threading.Thread(target=lambda: made.append(checkpoint.GracefulStop()))
    thread.start()
    thread.join()
    assert made and not made[0].requested and made[0]._previous == {}


def test_cuda_state_restored_on_a_gpu_only(monkeypatch):
    """A checkpoint's CUDA generator state goes back to the GPU a run resumes on, and is left alone when it
    resumes on the CPU (a GPU run moved to a CPU machine). torch.cuda's two calls stand in for a GPU."""
    restored = []
    monkeypatch.setattr(torch.cuda, 'get_rng_state', lambda device: torch.full((4,), 7, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, 'set_rng_state', lambda state, device: restored.append((state, device)))
    gpu = torch.device('cuda', 0)
    states = rng_states(gpu)
    assert torch.equal(states['cuda'], torch.full((4,), 7, dtype=torch.uint8))
    set_rng_states(states, CPU)
    assert restored == []
    set_rng_states(states, gpu)
    assert len(restored) == 1 and restored[0][0] is states['cuda'] and restored[0][1] == gpu
    set_rng_states(dict(states, cuda=None), gpu)  # a CPU run's checkpoint resumed on a GPU: nothing to restore
    assert len(restored) == 1 and rng_states(CPU)['cuda'] is None
