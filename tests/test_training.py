"""Training, in the fast tier, on the tiny models of tests/tiny.py: a few steps of src/train.py's loop lower the
loss of every objective of every joint rule; a run stopped by SIGTERM in the middle of an epoch and resumed ends
bit for bit where the uninterrupted run ends (weights, optimiser, losses, loader, every random state), from the
newest of its two checkpoints."""
import contextlib
import json
import logging
import os
import random
import signal
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from main import main
from src import checkpoint, distributed, train
from src import objectives as O
from src.cli import parse_args
from src.data import tensors
from src.errors import UserError
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


# ---------------------------------------------------------------- the step functions, value by value

def fixed_trainer(*flags):
    """A Run of the fixed-noise tiny pair (the objective a deterministic function of the weights)."""
    return trainer(['--model', 'tiny_pair_fixed', '--obj', 'iwae', '--K', '3', '--latent-dim', '3', '--batch-size',
                    '8', '--learn-prior', *flags])


class Messages(logging.Handler):
    """The messages logged to the project's logger (which need not propagate to pytest's)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def logged():
    """The messages the project's logger logs at INFO inside the block (a list, filled as they come)."""
    handler, log = Messages(), logging.getLogger('mmvae')
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield handler.messages
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


class Tracker:
    def __init__(self):
        self.steps = []

    def step(self, value, global_step):
        self.steps.append((value, global_step))


def test_train_epoch_sums_the_loss_reports_each_step_and_checkpoints_every_n():
    """32 items in batches of 8: four steps. The epoch's loss is minus the sum of the objective's values
    (a sum over each batch's items); each step is reported per item, numbered across epochs; the running
    loss is logged every --print-freq steps; a checkpoint is asked for every --checkpoint-every steps
    (not after the last one: the end of the epoch checkpoints)."""
    torch.manual_seed(0)
    r = fixed_trainer('--print-freq', '2', '--checkpoint-every', '2')
    values, batches, step = [], [], r.step_fn
    r.step_fn = lambda x, K: batches.append(x) or values.append(step(x, K)) or values[-1]
    r.tracker, saved = Tracker(), []
    with logged() as messages:
        totals = train.train_epoch(r, 3, save_step=lambda n, t: saved.append((n, dict(t))))
    got = [v.item() for v in values]
    assert len(got) == 4 and totals['items'] == 32 and totals['skipped'] == 0
    assert totals['loss'] == pytest.approx(-sum(got))
    assert r.tracker.steps == [(pytest.approx(-v / 8), 8 + i + 1) for i, v in enumerate(got)]
    assert saved == [(2, dict(totals, loss=pytest.approx(-sum(got[:2])), items=16))]
    logged_lines = [m for m in messages if 'loss/item' in m]
    assert [m.split('loss/item')[0].split() for m in logged_lines] == [['epoch', '3', 'batch', '0/4'],
                                                                  ['epoch', '3', 'batch', '2/4']]
    assert float(logged_lines[1].split()[-1]) == pytest.approx(-got[2] / 8, abs=1e-4)
    # a resumed epoch trains its batches from the step it stopped at, adding to its running sums
    state = r.train_loader.get_state()
    last = next(r.train_loader.iter_from(3))[0]
    r.train_loader.set_state(state)
    more = train.train_epoch(r, 3, start=3, totals=dict(totals, loss=1.0, items=5))
    assert len(values) == 5 and all(torch.equal(a, b) for a, b in zip(batches[-1], last, strict=True))
    assert more['items'] == 5 + 8 and more['loss'] == pytest.approx(1.0 - values[-1].item())


@pytest.mark.parametrize('every, saved', [('1', [1, 2, 3]), ('3', [3]), ('4', [])])
def test_checkpoint_every_n_steps_but_not_after_the_last(every, saved):
    """Four steps an epoch: a checkpoint after every n-th step, none after the last (the epoch's end saves)."""
    r, got = fixed_trainer('--checkpoint-every', every), []
    train.train_epoch(r, 1, save_step=lambda n, t: got.append(n))
    assert got == saved


def test_print_freq_one_logs_every_step():
    r = fixed_trainer('--print-freq', '1')
    with logged() as messages:
        train.train_epoch(r, 1)
    assert [m.split('loss/item')[0].split()[-1] for m in messages if 'loss/item' in m] == \
        ['0/4', '1/4', '2/4', '3/4']


def test_a_non_finite_loss_stops_or_is_skipped():
    r = fixed_trainer()
    step = r.step_fn
    calls = []

    def nan_at_2(x, K):
        calls.append(1)
        v = step(x, K)
        return v * float('nan') if len(calls) == 2 else v
    r.step_fn = nan_at_2
    with pytest.raises(train.NonFinite) as e:
        train.train_epoch(r, 1)
    assert (e.value.epoch, e.value.step, e.value.steps) == (1, 2, 4)
    r.args.skip_nonfinite = True
    calls.clear()
    with logged() as messages:
        totals = train.train_epoch(r, 1)
    assert totals['skipped'] == 1 and totals['items'] == 24
    assert [m.split(':')[0].split() for m in messages if 'non-finite' in m] == [['epoch', '1', 'step', '2/4']]
    calls[:] = [1]  # the first step of the next epoch non-finite: nothing trained yet when it is skipped
    totals = train.train_epoch(r, 2)
    assert totals['skipped'] == 1 and totals['items'] == 24


def test_test_epoch_is_the_per_item_test_bound_and_the_ranks_add_up():
    """test_epoch: minus the objective per test item, over batches with a short last one; with two ranks each
    tests its share of every batch (the last, of one item, leaves rank 1 nothing) and their sums are the
    whole; a stop request stops it."""
    r = fixed_trainer()
    data, objective, K = r.test_data, r.test_objective, 3
    whole = -objective(r.model, data.gather(torch.arange(len(data))), K).item() / len(data)
    assert len(data) == 12
    assert train.test_epoch(r.model, tensors.BatchLoader(data, 5), objective, K) == pytest.approx(whole)
    shares = [train.test_epoch(r.model, tensors.BatchLoader(data, 11, rank=k, world_size=2), objective, K)
              for k in (0, 1)]
    assert sum(shares) == pytest.approx(whole) and all(s != pytest.approx(whole) for s in shares)
    with pytest.raises(train.Stop):
        train.test_epoch(r.model, tensors.BatchLoader(data, 5), objective, K, stopper=SimpleNamespace(requested=True))
    grad_enabled = []
    spy = lambda *a: grad_enabled.append(torch.is_grad_enabled()) or objective(*a)  # noqa: E731
    train.test_epoch(r.model, tensors.BatchLoader(data, 5), spy, K)
    assert grad_enabled == [False] * 3  # evaluation keeps no graph


def test_restore_of_a_checkpoint_that_does_not_fit_is_an_error_line():
    """Missing optimiser state (KeyError), weights of other shapes (RuntimeError), an optimiser of other
    parameters (ValueError): one error line, with the first line of the cause."""
    r, other = fixed_trainer(), fixed_trainer('--latent-dim', '4')
    with pytest.raises(UserError, match='does not fit model'):
        train.restore(r, {'model': r.model.state_dict()}, 'ckpt.pt')
    with pytest.raises(UserError, match=r'\(Error\(s\) in loading state_dict'):
        train.restore(r, {'model': other.model.state_dict(), 'optimizer': r.optimizer.state_dict()}, 'ckpt.pt')
    fewer = torch.optim.Adam(list(r.model.parameters())[:2])
    with pytest.raises(UserError, match='does not fit model'):
        train.restore(r, {'model': r.model.state_dict(), 'optimizer': fewer.state_dict()}, 'ckpt.pt')


def test_restore_of_an_older_checkpoint_counts_no_skipped_batches(monkeypatch):
    """Checkpoints written before --skip-nonfinite have no skipped_batches: none were skipped."""
    r = fixed_trainer()
    monkeypatch.setattr(train, 'set_rng_states', lambda rng, device: None)
    ckpt = {'model': r.model.state_dict(), 'optimizer': r.optimizer.state_dict(), 'epoch': 2, 'step': 0,
            'partial': None, 'losses': {'train': [1.0, 2.0], 'test': [1.0, 2.0], 'epoch_seconds': [1.0, 1.0]},
            'loader': r.train_loader.get_state(), 'rng': None}
    monkeypatch.setattr(train.checkpoint, 'position', lambda state: 'here')
    assert train.restore(r, ckpt, 'ckpt.pt').losses['skipped_batches'] == [0, 0]


def test_a_checkpoint_flushes_the_tensorboard_events_first(tmp_path, monkeypatch):
    """A run stopped after a checkpoint has the events up to it on disk."""
    r, order = fixed_trainer(), []
    r.dir = str(tmp_path)
    r.tracker = SimpleNamespace(flush=lambda: order.append('flush'))
    monkeypatch.setattr(train.checkpoint, 'save', lambda d, state: order.append('save'))
    monkeypatch.setattr(train.checkpoint, 'position', lambda state: 'here')
    train.save_checkpoint(r, train.Progress(), 0, 1, train.new_totals(), r.train_loader.get_state(), {})
    assert order == ['flush', 'save']


@pytest.mark.parametrize('compile_', [False, True])
def test_networks_compiled_only_with_compile(compile_):
    """--compile wraps the decoders in torch.compile (lazily: nothing is compiled until a forward pass)."""
    r = fixed_trainer(*(['--compile'] if compile_ else []))
    train.build_objectives(r.args, r.model, r.device)
    assert [v.dec._compiled_call_impl is not None for v in r.model.vaes] == [compile_] * 2


@pytest.mark.parametrize('estimator', ['released', 'true'])
def test_build_objectives_gives_the_flags_objective(estimator):
    """--obj, --looser and --dreg-estimator choose the objective (its gradients tell the two estimators
    apart); no bfloat16 autocast without --amp; the test bound is the rule's."""
    r = trainer(['--model', 'tiny_pair_fixed', '--obj', 'dreg', '--looser', '--K', '3', '--latent-dim', '3',
                 '--learn-prior', '--dreg-estimator', estimator])
    m = r.model
    x = r.train_data.gather(torch.arange(8))
    built, test = train.build_objectives(r.args, m, r.device)
    assert test is O.m_iwae
    params = [p for p in m.parameters() if p.requires_grad]
    for true_dreg in (False, True):
        want = O.m_dreg_looser(m, x, 3, true_dreg=true_dreg)
        got = built(m, x, 3)
        assert got.item() == want.item()  # float32 throughout: the same operations
        grads = [torch.autograd.grad(v, params, allow_unused=True) for v in (got, want)]  # the parts' priors: unused
        same = all(a is b is None or torch.equal(a, b) for a, b in zip(*grads, strict=True))
        assert same == (true_dreg == (estimator == 'true'))


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


def sigterm_at_training_batch(monkeypatch, n):
    """Send this process SIGTERM as the n-th training batch (counted over epochs) is drawn; returns the
    loader's own iter_from, to put back before the resume."""
    iter_from, seen = tensors.BatchLoader.iter_from, []

    def terminated(self, start):
        for i, batch in enumerate(iter_from(self, start), start):
            if self.shuffle:
                seen.append(i)
                if len(seen) == n:
                    os.kill(os.getpid(), signal.SIGTERM)
            yield batch
    monkeypatch.setattr(tensors.BatchLoader, 'iter_from', terminated)
    return iter_from


def test_a_stopped_run_resumes_bit_for_bit_from_its_newest_checkpoint(runs, tmp_path, monkeypatch):
    reference = runs('reference')
    # SIGTERM during the second step of epoch 2: a checkpoint after 2 steps, beside the end of epoch 1's
    iter_from = sigterm_at_training_batch(monkeypatch, 6)
    with pytest.raises(SystemExit) as stop:
        runs('stopped')
    assert stop.value.code == 143
    run = str(tmp_path / 'stopped')
    newest, prev = (torch.load(os.path.join(run, f)) for f in (checkpoint.CKPT, checkpoint.PREV))
    assert (newest['epoch'], newest['step'], prev['epoch'], prev['step']) == (1, 2, 1, 0)
    assert not newest['finished'] and not prev['finished']
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


def test_a_stopped_max_steps_run_resumes_to_its_step_cap(runs, tmp_path, monkeypatch):
    """--max-steps 7 (epoch 2 ends after 3 of its 4 steps), stopped by SIGTERM in epoch 2 and resumed: the
    resume reads the unfinished checkpoint's steps (None until the end) and ends where the run that never
    stopped ends."""
    reference = runs('reference', '--max-steps', '7')
    iter_from = sigterm_at_training_batch(monkeypatch, 6)
    with pytest.raises(SystemExit):
        runs('stopped', '--max-steps', '7')
    run = str(tmp_path / 'stopped')
    assert torch.load(os.path.join(run, checkpoint.CKPT))['steps_done'] is None
    monkeypatch.setattr(tensors.BatchLoader, 'iter_from', iter_from)
    assert main(['--resume', run]) == 0
    ref, got = (torch.load(os.path.join(d, checkpoint.CKPT)) for d in (reference, run))
    assert got['finished'] and got['steps_done'] == ref['steps_done'] == 7
    assert got['losses']['train'] == ref['losses']['train'] and got['losses']['test'] == ref['losses']['test']
    assert all(torch.equal(ref['model'][k], got['model'][k]) for k in ref['model'])
    assert main(['--resume', run]) == 0  # finished: nothing to do
