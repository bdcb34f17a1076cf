"""Training, in the fast tier, on the tiny models of tests/tiny.py: a few steps of src/train.py's loop lower the
loss of every objective of every joint rule; a run stopped by SIGTERM in the middle of an epoch and resumed ends
bit for bit where the uninterrupted run ends (weights, optimiser, losses, loader, every random state), from the
newest of its two checkpoints."""
import json
import os
import random
import signal
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from main import main
from src import checkpoint, distributed, train
from src.cli import parse_args
from src.data import tensors
from tests import tiny


@pytest.fixture(scope='module', autouse=True)
def tiny_models():
    with tiny.registered():
        yield


# ---------------------------------------------------------------- the direction of training

def trainer(flags):
    """src/train.py's Run for the flags, with the step function main.py builds (no run directory)."""
    args = parse_args(flags)
    device = torch.device('cpu')
    r = train.Run(args, None, 0, 1, device, SimpleNamespace(requested=False), **train.setup_training(args, device))
    r.step_fn = distributed.wrap(r.model, r.objective, device, K=args.K)
    return r


CASES = [(model, joint, obj, looser, estimator)
         for model, joints in (('tiny', ['moe']), ('tiny_pair', ['moe', 'poe', 'mopoe'])) for joint in joints
         for obj in ('elbo', 'iwae', 'dreg') for estimator in (('released', 'true') if obj == 'dreg' else ('released',))
         for looser in (False, True) if not looser or (model == 'tiny_pair' and obj != 'elbo' and joint != 'poe')]


@pytest.mark.parametrize('model, joint, obj, looser, estimator', CASES)
def test_ten_steps_raise_the_bound(model, joint, obj, looser, estimator):
    """Ten full-batch steps of train_epoch raise the tight bound (the rule's test objective, K = 256, the same
    noise before and after) by more than 0.03 nats per item; the tiny models gain 0.09 to 0.36. A step that
    climbs the loss, or an objective whose gradient points elsewhere, loses it."""
    torch.manual_seed(0)
    r = trainer(['--model', model, '--joint-posterior', joint, '--obj', obj, '--K', '4', '--latent-dim', '3',
                 '--batch-size', str(tiny.N_TRAIN), '--lr', '0.02', '--learn-prior', '--dreg-estimator', estimator,
                 '--epochs', '10', *(['--looser'] if looser else [])])
    x = r.train_data.gather(torch.arange(len(r.train_data)))

    def bound():
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(0)
            return r.test_objective(r.model, x, 256).item() / len(x)
    before = bound()
    for epoch in range(1, 11):  # one full-batch step each
        totals = train.train_epoch(r, epoch)
        assert totals['items'] == tiny.N_TRAIN and totals['skipped'] == 0
    after = bound()
    assert after > before + 0.03, (before, after)


# ---------------------------------------------------------------- stop and resume, bit for bit

FLAGS = ['--model', 'tiny_pair', '--obj', 'dreg', '--K', '3', '--latent-dim', '3', '--learn-prior', '--epochs', '2',
         '--batch-size', '8', '--no-analytics', '--checkpoint-every', '3']  # 32 items: 4 steps an epoch


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """main.py's runs in tmp_path, without the figures (drawn on a fork of the RNG: they move no random state;
    the tiny data are not images)."""
    monkeypatch.setattr(train, 'save_epoch_figures', lambda *a, **k: [])

    def run(name, *flags):
        random.seed(5)  # Python's generator is the run's to keep, not to seed
        assert main([*FLAGS, '--data-dir', str(tmp_path / 'data'), '--run-dir', str(tmp_path / name), *flags]) == 0
        return str(tmp_path / name)
    return run


def test_a_stopped_run_resumes_bit_for_bit_from_its_newest_checkpoint(runs, tmp_path, monkeypatch):
    reference = runs('reference')
    # SIGTERM during the second step of epoch 2: a checkpoint after 2 steps, beside the end of epoch 1's
    iter_from = tensors.BatchLoader.iter_from
    seen = []

    def terminated(self, start):
        for i, batch in enumerate(iter_from(self, start), start):
            if self.shuffle:
                seen.append(i)
                if len(seen) == 6:  # epoch 2, step index 1
                    os.kill(os.getpid(), signal.SIGTERM)
            yield batch
    monkeypatch.setattr(tensors.BatchLoader, 'iter_from', terminated)
    with pytest.raises(SystemExit) as stop:
        runs('stopped')
    assert stop.value.code == 143
    run = str(tmp_path / 'stopped')
    newest, prev = (torch.load(os.path.join(run, f)) for f in (checkpoint.CKPT, checkpoint.PREV))
    assert (newest['epoch'], newest['step'], prev['epoch'], prev['step']) == (1, 2, 1, 0)
    monkeypatch.setattr(tensors.BatchLoader, 'iter_from', iter_from)
    # every generator somewhere else: the resume must bring back the checkpoint's states
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    assert main(['--resume', run]) == 0
    resumed = json.load(open(os.path.join(run, 'args.json')))['resumed']
    assert [r['from'] for r in resumed] == ['epoch 2, 2 training steps done']  # the newer checkpoint

    ref, got = (torch.load(os.path.join(d, checkpoint.CKPT)) for d in (reference, run))
    assert got['finished'] and (got['epoch'], got['step']) == (2, 0)
    assert ref['model'].keys() == got['model'].keys()
    for k in ref['model']:
        assert torch.equal(ref['model'][k], got['model'][k]), k
    for k, state in ref['optimizer']['state'].items():
        assert all(torch.equal(v, got['optimizer']['state'][k][n]) for n, v in state.items())
    for key in ('train', 'test', 'skipped_batches'):
        assert got['losses'][key] == ref['losses'][key]
    assert torch.equal(got['loader'], ref['loader'])  # the shuffling generator's state
    assert torch.equal(got['rng']['torch'], ref['rng']['torch'])
    assert got['rng']['python'] == ref['rng']['python']
    assert got['rng']['numpy'][0] == ref['rng']['numpy'][0] and torch.equal(got['rng']['numpy'][1],
                                                                           ref['rng']['numpy'][1])
    assert got['rng']['numpy'][2:] == ref['rng']['numpy'][2:]
    ref_w, w = (torch.load(os.path.join(d, 'model.pt')) for d in (reference, run))
    assert all(torch.equal(ref_w[k], w[k]) for k in ref_w)
