"""Training: Adam (amsgrad, lr 1e-3 as in the released src/main.py); each epoch
trains, tests, saves the model, the losses and the figures.

    run(args)
      open_run        a new run directory, or the checkpoint of the run to --resume
      setup_training  model, data, objectives, optimiser (bench/bench.py uses the same)
      restore         the training state of a checkpoint
      train_epochs    the epoch loop: train_epoch, test_epoch, save, figures
      finish          --logp, the final checkpoint

Long runs: a checkpoint every epoch (and every --checkpoint-every steps)
holds the full training state, so --resume continues a killed run to the
same result; SIGTERM/SIGINT checkpoint and exit (143/130); a non-finite loss
stops the run (or, with --skip-nonfinite, skips the batch). Under torchrun the
run is data-parallel (src/distributed.py); rank 0 alone writes files and logs.
"""
import contextlib
import datetime
import logging
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from . import checkpoint, distributed, figures
from .data import BatchLoader, load_data, vocab_size
from .data.tensors import spread_subset
from .errors import UserError
from .files import load_json, load_torch, save_json, save_torch
from .models import MODELS
from .numerics import cpu_denormals, host_memory
from .objectives import get_objective
from .report import analytics
from .rng import fork_rng, rng_states, seed_everything, set_rng_states
from .rundir import attach_log_file, discard_run_dir, new_run_dir, read_run, write_args
from .tracking import Tracker

log = logging.getLogger('mmvae')
LOGP_K = 5000


# ---------------------------------------------------------------- setup (shared with bench/bench.py)

@contextlib.contextmanager
def training_numerics(device, ieee_denormals=False, return_host_memory=False):
    """Distribution argument checks off: a NaN must reach the loss, on every rank alike, to be caught (or
    skipped) there rather than raise in one rank's check; the checks also cost time every step. On the
    CPU, subnormal numbers flushed to zero unless ieee_denormals (--ieee-denormals), and freed memory
    kept for the next step unless return_host_memory (--return-host-memory; both in src/numerics.py).
    On a GPU, float32 convolutions as on the CPU (cuDNN would use TF32; --amp is the fast path) and
    cuDNN's fastest algorithms for the fixed batch shapes."""
    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    if device.type == 'cuda':
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    try:
        with cpu_denormals(ieee_denormals), host_memory(keep=device.type == 'cpu' and not return_host_memory):
            yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)


def set_vocab_size(args, device):
    """The caption models' vocabulary size, from the training captions, into the flags (saved with the run).
    On a fork of the RNG: building the offline data must not move the training noise."""
    if MODELS[args.model].captions and not args.vocab_size:
        with fork_rng(device):
            args.vocab_size = vocab_size(args)


def build_model(args, device, pre_trained=True):
    model = MODELS[args.model](args).to(device)
    if args.pre_trained and pre_trained:
        path = read_run(args.pre_trained, '--pre-trained').weights
        state = load_torch(path, 'model weights file', map_location=device)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise UserError(f"{path} does not fit model {args.model!r} with these flags "
                            f"({first[0] if first else e}); was it trained with other flags?") from None
    return model


def load_datasets(model, args, device, main=True):
    """(train, test) data on the device. Built on a fork of the RNG, so that ranks that build the caches
    (rank 0, first) and ranks that read them stay in step."""
    with fork_rng(device):
        if not main:
            distributed.barrier()
        data = [load_data(model.dataset, args, split).to(device) for split in ('train', 'test')]
        if main:
            distributed.barrier()
    return data


def amp_objective(objective, device):
    """--amp: the training objective under bfloat16 autocast: the decoders' matrix products and
    convolutions run in bf16 (VAE.forward keeps the encoders float32; the log densities are
    float32). Parameters, gradients and Adam stay float32; test losses are float32."""
    def objective_bf16(model, x, K):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return objective(model, x, K)
    return objective_bf16


def compile_networks(model):
    """--compile: torch.compile every encoder and decoder in place (the state-dict keys do not change)."""
    for vae in model.vaes:
        vae.enc.compile()
        vae.dec.compile()


def build_objectives(args, model, device):
    """(training objective, test objective), as the model declares them (its joint rule, for a multimodal
    model): the test loss is the tight bound at the training K, as in the released code."""
    objectives = model.training_objectives(args)
    objective = get_objective(objectives, args.obj, args.looser, args.dreg_estimator == 'true')
    if args.amp:
        objective = amp_objective(objective, device)
    if args.compile:
        compile_networks(model)
    return objective, objectives.test


def build_optimizer(args, model):
    return torch.optim.Adam((p for p in model.parameters() if p.requires_grad), lr=args.lr, amsgrad=True)


# ---------------------------------------------------------------- the run and its state

@dataclass
class Progress:
    """Where training stands; what a checkpoint restores besides the weights and RNG states."""
    epoch: int = 0                    # epochs complete
    step: int = 0                     # training steps done in epoch + 1
    partial: dict | None = None       # that epoch's running sums (new_totals)
    losses: dict = field(default_factory=lambda: {'train': [], 'test': [], 'epoch_seconds': [],
                                                  'skipped_batches': []})
    last_good: str | None = None      # position of the newest checkpoint on disk
    cut: dict | None = None           # the last epoch, cut short by --max-steps, before its test (checkpoint.py)


@dataclass
class Run:
    """Everything the phases of a run share; fixed once set up."""
    args: object
    dir: str
    rank: int
    world: int
    device: torch.device
    stopper: checkpoint.GracefulStop
    model: torch.nn.Module = None
    optimizer: torch.optim.Optimizer = None
    objective: object = None
    test_objective: object = None
    train_data: object = None
    test_data: object = None
    train_loader: BatchLoader = None
    test_loader: BatchLoader = None
    figure_batch: object = None       # a fixed spread of test items for the figures (rank 0)
    tracker: Tracker = None
    step_fn: object = None

    @property
    def main(self):
        return self.rank == 0


def setup_training(args, device, rank=0, world=1, pre_trained=True):
    """Model, data, loaders, objectives and optimiser of a run (not yet restored from a checkpoint)."""
    seed_everything(args.seed)
    set_vocab_size(args, device)
    model = build_model(args, device, pre_trained)
    train_data, test_data = load_datasets(model, args, device, main=rank == 0)
    if args.max_test_items:  # a spread over the (class-ordered) test set
        test_data = test_data.take(spread_subset(len(test_data), args.max_test_items, test_data.sources[0].device))
    objective, test_objective = build_objectives(args, model, device)
    # The figures use one fixed batch spread evenly over the test set (the paired test sets are
    # ordered by class: their first batch would show a single digit).
    spread = spread_subset(len(test_data), min(args.batch_size, len(test_data)))
    return dict(model=model, optimizer=build_optimizer(args, model), objective=objective,
                test_objective=test_objective, train_data=train_data, test_data=test_data,
                train_loader=BatchLoader(train_data, args.batch_size, shuffle=True, seed=args.seed, rank=rank,
                                         world_size=world),
                test_loader=BatchLoader(test_data, args.batch_size, shuffle=False, rank=rank, world_size=world),
                figure_batch=test_data.gather(spread.to(test_data.sources[0].device)) if rank == 0 else None)


def run(args):
    """Train as the flags say; returns the run directory. A stop signal checkpoints and exits with
    SystemExit(143 or 130)."""
    rank, world, device = distributed.setup(args.no_cuda)
    stopper = checkpoint.GracefulStop()
    try:
        with training_numerics(device, args.ieee_denormals, args.return_host_memory):
            return _run(args, rank, world, device, stopper)
    finally:
        stopper.restore()
        distributed.teardown()


def _run(args, rank, world, device, stopper):
    if rank != 0:  # one copy of the messages: rank 0's
        for name in ('mmvae', 'src'):
            logging.getLogger(name).setLevel(logging.WARNING)
    ckpt, ckpt_path = open_checkpoint(args)
    if ckpt and is_finished(ckpt, args):
        return args.resume
    r = Run(args, args.resume or args.run_dir, rank, world, device, stopper,
            **setup_training(args, device, rank, world, pre_trained=ckpt is None))
    if ckpt:
        check_budget(ckpt, args, len(r.train_loader))
        ckpt = checkpoint.reopened(ckpt)  # a larger --max-steps or --epochs: the cut epoch goes on
    if r.main:
        r.dir = open_run_dir(r, ckpt, ckpt_path)
    log_setup(r, ckpt)
    progress = restore(r, ckpt, ckpt_path) if ckpt else Progress()
    r.step_fn = distributed.wrap(r.model, r.objective, device, K=args.K,
                                 example=r.train_data.gather(torch.arange(2, device=device)))
    purge_step = progress.epoch * len(r.train_loader) + progress.step + 1 if ckpt else None
    try:
        with writing(r, progress):
            if r.main:
                r.tracker = Tracker(r.dir, args.tensorboard, args.print_freq, purge_step=purge_step)
            if ckpt and progress.step == 0 and progress.epoch >= 1:
                epoch_figures(r, progress)  # the kill may have cut them short; the saved RNG draws the same ones
            train_epochs(r, progress)
            finish(r, progress)
    except Stop:
        log.info(f'stopped by {stopper.name}: checkpoint saved ({progress.last_good}); continue with: '
                 f'python main.py --resume {r.dir}')
        raise SystemExit(stopper.exit_code) from None
    except NonFinite as e:
        raise UserError(
            f"non-finite training loss ({e.value}) at epoch {e.epoch}, step {e.step} of {e.steps}: the run stopped.\n"
            f"  The last good checkpoint ({progress.last_good or 'none: the first epoch had not finished'}) is kept "
            f"in {r.dir}.\n"
            f"  Usual fixes: a smaller --K or likelihood scaling (--llik_scaling); check the data for NaN/inf "
            f"(delete the cached files under --data-dir to rebuild them); or skip such batches: "
            f"python main.py --resume {r.dir} --skip-nonfinite") from None
    finally:
        if r.tracker:
            r.tracker.close()
    capped = args.max_steps and args.max_steps < args.epochs * len(r.train_loader)
    log.info(f'done: {r.dir}' + (f' (--max-steps {args.max_steps} reached; to train it further: '
                                 f'{further(r.dir, args, False, True)})' if capped else ''))
    return r.dir


# ---------------------------------------------------------------- phases

def open_checkpoint(args):
    """(checkpoint, path) of the run to --resume ((None, None) when it has none yet); for a new run,
    check that --run-dir is free. Every rank has checked before rank 0 creates the directory."""
    ckpt, path = None, None
    if args.resume:
        ckpt, path = checkpoint.load(args.resume)  # on the CPU: RNG states must stay there
    else:
        check_new_run_dir(args.run_dir)
    distributed.barrier()
    return ckpt, path


def is_finished(ckpt, args):
    """Whether a finished run has nothing left to do under the flags now in force (a larger --epochs or
    --max-steps trains it further); if so, says so and prints the command that trains it further."""
    if not ckpt['finished'] or (args.logp and not os.path.isfile(os.path.join(args.resume, 'logp.json'))):
        return False
    steps = ckpt.get('steps_done')  # recorded by the final checkpoint only (None in the others)
    by_epochs = ckpt['epoch'] - bool(ckpt.get('cut')) >= args.epochs  # the epoch --max-steps cut is not done
    by_steps = bool(args.max_steps) and steps is not None and steps >= args.max_steps
    if not (by_epochs or by_steps):
        return False
    log.info(f'{args.resume} is already finished ({ckpt["epoch"]} epochs, {steps} training steps): nothing to do. '
             f'To train it further: {further(args.resume, args, by_epochs, by_steps)}')
    return True


def further(run_dir, args, by_epochs, by_steps):
    """The command that trains a finished run further: twice the budget that ended it."""
    more = ([f'--epochs {2 * args.epochs}'] if by_epochs else []) + \
        ([f'--max-steps {2 * args.max_steps}'] if by_steps else [])
    return f'python main.py --resume {shlex.quote(run_dir)} {" ".join(more)}'


def check_budget(ckpt, args, steps_per_epoch):
    """A resumed run can be trained on to the --epochs and --max-steps now in force, not back."""
    done = checkpoint.steps_trained(ckpt, steps_per_epoch)
    if ckpt['finished'] and 'cut' not in ckpt and done < ckpt['epoch'] * steps_per_epoch:
        raise UserError(f"--resume {args.resume}: --max-steps ended this run inside epoch {ckpt['epoch']}, and the "
                        f"older version of this project that trained it did not keep what continuing that epoch "
                        f"needs: start a new run (--pre-trained {args.resume} starts one from its weights)")
    budget = min(args.epochs * steps_per_epoch, args.max_steps or math.inf)
    if done > budget:
        raise UserError(f"--resume {args.resume}: the run has trained {done} steps ({checkpoint.position(ckpt)}), "
                        f"more than --epochs {args.epochs} and --max-steps {args.max_steps} allow ({budget}): "
                        f"drop the flags to keep the run's own, or give larger ones")


def check_new_run_dir(run_dir):
    """--run-dir must be new or empty: an existing run is continued with --resume, never overwritten."""
    if run_dir and os.path.exists(run_dir) and (not os.path.isdir(run_dir) or os.listdir(run_dir)):
        if os.path.isfile(os.path.join(run_dir, 'args.json')):
            raise UserError(f"--run-dir {run_dir} already holds a run: continue it with --resume {run_dir} "
                            f"(or train into another directory)")
        raise UserError(f"--run-dir {run_dir} exists and is not an empty directory: choose another one")


def open_run_dir(r, ckpt, ckpt_path):
    """The run directory (rank 0): created with args.json, or the resumed one with the resume recorded;
    run.log attached."""
    args = r.args
    if args.resume:
        attach_log_file(os.path.join(args.resume, 'run.log'))
        where = checkpoint.position(ckpt) if ckpt else 'the start (no checkpoint yet)'
        log.info(f'==== resuming {args.resume} from {where}{f" ({ckpt_path})" if ckpt else ""}')
        record_resume(args.resume, args, where, r.device, r.world)
        return args.resume
    made = not (args.run_dir and os.path.isdir(args.run_dir))
    if args.run_dir:
        os.makedirs(args.run_dir, exist_ok=True)
    run_dir = args.run_dir or new_run_dir(args.out_dir, args.experiment or experiment_name(args))
    try:
        attach_log_file(os.path.join(run_dir, 'run.log'))
        write_args(run_dir, args, r.train_data.source, r.device)
    except UserError:  # a full disk: without args.json the directory is no run; the same command runs again
        discard_run_dir(run_dir, made)
        raise
    return run_dir


def experiment_name(args):
    """The default --experiment: the model, and its joint posterior when not the MMVAE's."""
    multimodal = MODELS[args.model].multimodal and args.joint_posterior != 'moe'
    return f'{args.model}_{args.joint_posterior}' if multimodal else args.model


def record_resume(run_dir, args, position, device, world):
    """args.json keeps the flags a resume runs with (--epochs may grow) and a log of the resumes."""
    path = os.path.join(run_dir, 'args.json')
    saved = load_json(path, 'run flags file', dict)
    saved['flags'] = vars(args)
    saved.setdefault('resumed', []).append({
        'time': datetime.datetime.now().isoformat(timespec='seconds'), 'from': position,
        'device': str(device), 'world_size': world, 'command': sys.argv})
    save_json(saved, path)


def log_setup(r, ckpt):
    args = r.args
    if r.main:
        log.info(f'run directory: {r.dir}')
    if args.offline:
        log.info(f'OFFLINE DATA (not the paper\'s datasets): {r.train_data.source}')
    else:
        log.info(f'data: {r.train_data.source}')
    if args.pre_trained and ckpt is None:
        log.info(f'starting from the weights of {args.pre_trained}')
    log.info(f'model {args.model} on {r.device}: {sum(p.numel() for p in r.model.parameters()):,} parameters; '
             f'{len(r.train_data):,} training and {len(r.test_data):,} test items')
    if r.world > 1:
        log.info(f'data-parallel: {r.world} ranks, {args.batch_size} items per global batch')


def restore(r, ckpt, ckpt_path):
    """Weights, optimiser, loader and RNG states of a checkpoint; returns its Progress."""
    try:
        r.model.load_state_dict(ckpt['model'])
        r.optimizer.load_state_dict(ckpt['optimizer'])
    except (RuntimeError, ValueError, KeyError) as e:
        raise UserError(f"checkpoint {ckpt_path} does not fit model {r.args.model!r} with these flags "
                        f"({str(e).strip().splitlines()[0]})") from None
    losses = ckpt['losses']
    losses.setdefault('skipped_batches', [0] * len(losses['train']))
    r.train_loader.set_state(ckpt['loader'])
    set_rng_states(ckpt['rng'], r.device)
    return Progress(ckpt['epoch'], ckpt['step'], ckpt['partial'], losses, checkpoint.position(ckpt))


def save_checkpoint(r, progress, epochs_done, step, totals, loader_state, rng, finished=False, steps_done=None):
    if r.main:
        state = {'flags': vars(r.args), 'epoch': epochs_done, 'step': step, 'finished': finished,
                 'steps_done': steps_done, 'cut': progress.cut,
                 'model': r.model.state_dict(), 'optimizer': r.optimizer.state_dict(), 'losses': progress.losses,
                 'partial': totals, 'loader': loader_state, 'rng': rng, 'world_size': r.world}
        if r.tracker:
            r.tracker.flush()  # the events up to the checkpoint are on disk (or the run stops here)
        checkpoint.save(r.dir, state)
        progress.last_good = checkpoint.position(state)


def writing(r, progress):
    """A failed write into the run directory (a full disk, a quota: a WriteError of src/files.py, or an
    OSError) becomes one clear error naming the last good checkpoint and the --resume that continues."""
    return checkpoint.disk_errors(r.dir, lambda: progress.last_good)


def train_epochs(r, progress):
    """Epochs progress.epoch + 1 .. --epochs, each continuing a partly trained one where the checkpoint
    stopped: train, test, save weights and losses, checkpoint, figures."""
    for epoch in range(progress.epoch + 1, last_epoch(r) + 1):
        t0 = time.time()
        loader_state = r.train_loader.get_state()  # this epoch's order is drawn from it

        def save_step(step, totals, epoch=epoch, t0=t0, loader_state=loader_state):
            save_checkpoint(r, progress, epoch - 1, step, dict(totals, seconds=totals['seconds'] + time.time() - t0),
                            loader_state, rng_states(r.device))

        totals = train_epoch(r, epoch, save_step, progress.step, progress.partial)
        progress.step, progress.partial = 0, None
        rng_after_training = rng_states(r.device)
        try:
            test_loss = test_epoch(r.model, r.test_loader, r.test_objective, r.args.K, stopper=r.stopper)
        except Stop:
            # tested again on resume; the training of this epoch is kept: checkpoint at its last step, with
            # the RNG as it was then (the test draws that a resume repeats)
            save_checkpoint(r, progress, epoch - 1, steps_in_epoch(r, epoch),
                            dict(totals, seconds=totals['seconds'] + time.time() - t0), loader_state,
                            rng_after_training)
            raise
        if steps_in_epoch(r, epoch) < len(r.train_loader):  # --max-steps: kept to continue the epoch (checkpoint.py)
            progress.cut = {'step': steps_in_epoch(r, epoch), 'loader': loader_state, 'rng': rng_after_training,
                            'partial': dict(totals, seconds=totals['seconds'] + time.time() - t0)}
        end_epoch(r, progress, epoch, totals, test_loss, time.time() - t0)
        if distributed.all_sum([float(r.stopper.requested)], r.device)[0]:
            raise Stop


def last_epoch(r):
    """--epochs, or the epoch in which --max-steps ends the run."""
    if r.args.max_steps:
        return min(r.args.epochs, -(-r.args.max_steps // len(r.train_loader)))
    return r.args.epochs


def steps_in_epoch(r, epoch):
    """Training steps of `epoch`: the loader's batches, fewer in the epoch where --max-steps ends the run."""
    n = len(r.train_loader)
    return min(n, r.args.max_steps - (epoch - 1) * n) if r.args.max_steps else n


def epoch_end_step(r, epoch):
    """The global step at the end of `epoch` (the last one short where --max-steps ends the run)."""
    return (epoch - 1) * len(r.train_loader) + steps_in_epoch(r, epoch)


def end_epoch(r, progress, epoch, totals, test_loss, seconds):
    losses = progress.losses
    losses['train'].append(totals['loss'] / max(totals['items'], 1))
    losses['test'].append(test_loss)
    losses['epoch_seconds'].append(round(totals['seconds'] + seconds, 2))
    losses['skipped_batches'].append(totals['skipped'])
    if r.main:
        save_weights(r.model, r.dir)
        save_json(losses, os.path.join(r.dir, 'losses.json'))
        r.tracker.epoch(epoch, losses, len(r.train_loader), epoch_end_step(r, epoch))
    save_checkpoint(r, progress, epoch, 0, None, r.train_loader.get_state(), rng_states(r.device))
    progress.epoch = epoch
    log.info(f'====> epoch {epoch:3d}  train loss {losses["train"][-1]:10.4f}  test loss {test_loss:10.4f}  '
             f'({losses["epoch_seconds"][-1]:.1f} s)')
    if totals['skipped']:
        log.info(f'      epoch {epoch}: {totals["skipped"]} of {len(r.train_loader)} batches skipped '
                 f'(non-finite loss; --skip-nonfinite)')
    epoch_figures(r, progress)


def epoch_figures(r, progress):
    """Per-epoch figures (rank 0), on a fork of the RNG: the training noise does not depend on them."""
    if not r.main:
        return
    epoch = progress.epoch
    with fork_rng(r.device):
        paths = save_epoch_figures(r.model, r.figure_batch, r.dir, epoch, r.test_data.display)
        analytics.save_loss_curve(progress.losses, os.path.join(r.dir, 'figures', 'losses.png'))
        if not r.args.no_analytics:  # UMAP of latents, KL box plots
            analytics.save_epoch_analytics(r.model, r.figure_batch, r.dir, epoch)
        r.tracker.figures(paths, epoch_end_step(r, epoch))


def finish(r, progress):
    """--logp (the tight bound with K = 5000 on the test set), then the final checkpoint, with the random
    states from before --logp: a run trained further draws what a run that never stopped draws."""
    rng = rng_states(r.device)
    if r.args.logp:
        logp = -test_epoch(r.model, r.test_loader, r.test_objective, LOGP_K, desc=f'logp K={LOGP_K}',
                           stopper=r.stopper)
        log.info(f'test log-likelihood (IWAE, K = {LOGP_K}): {logp:.4f}')
        if r.main:
            save_json({'K': LOGP_K, 'test_log_likelihood': logp}, os.path.join(r.dir, 'logp.json'))
    save_checkpoint(r, progress, progress.epoch, 0, None, r.train_loader.get_state(), rng,
                    finished=True, steps_done=epoch_end_step(r, progress.epoch) if progress.epoch else 0)


# ---------------------------------------------------------------- one epoch

class Stop(Exception):
    """A stop signal (SIGTERM, SIGINT) reached the loop; every rank raises it at the same step."""


class NonFinite(Exception):
    def __init__(self, epoch, step, steps, value):
        super().__init__(f'non-finite loss {value} at epoch {epoch}, step {step}/{steps}')
        self.epoch, self.step, self.steps, self.value = epoch, step, steps, value


def new_totals():
    """Running sums of an epoch's training: loss (summed over items), items trained, batches skipped."""
    return {'loss': 0.0, 'items': 0, 'skipped': 0, 'seconds': 0.0}


def _progress_bar(batches, desc, total):
    return tqdm(batches, desc=desc, leave=False, disable=not sys.stderr.isatty() or not distributed.is_main(),
                dynamic_ncols=True, total=total)


def train_epoch(r, epoch, save_step=None, start=0, totals=None):
    """Train on the epoch's batches from `start` on (a resumed epoch continues its saved `totals`);
    returns the updated totals. r.step_fn(x, K) is the objective summed over this rank's share of the
    batch. save_step(step, totals) checkpoints after `step` steps: every --checkpoint-every steps, and
    when a stop signal arrived (then Stop is raised). A non-finite loss raises NonFinite, or is skipped."""
    args, loader = r.args, r.train_loader
    stop_at = steps_in_epoch(r, epoch)
    r.model.train()
    totals = dict(totals or new_totals())
    bar = _progress_bar(loader.iter_from(start), f'epoch {epoch} train', stop_at - start)
    for i, (x, _) in enumerate(bar, start):
        if i == stop_at:  # --max-steps
            break
        offset, size = loader.shard(i)
        r.optimizer.zero_grad(set_to_none=True)
        with distributed.global_batch(offset, size):
            value = r.step_fn(x, args.K)
        (-value * r.world).backward()  # DDP averages over ranks; the objective is a sum over the batch
        # one all-reduce: the global batch's loss, and whether any rank was asked to stop
        loss, stop = distributed.all_sum([-value.item(), float(r.stopper.requested)], r.device)
        apply_step(r, totals, loss, size, epoch, i)
        bar.set_postfix(loss=f'{totals["loss"] / max(totals["items"], 1):.2f}')
        if args.print_freq > 0 and i % args.print_freq == 0:
            log.info(f'  epoch {epoch} batch {i:5d}/{len(loader)}  loss/item {loss / size:.4f}')
        if r.tracker:
            r.tracker.step(loss / size, (epoch - 1) * len(loader) + i + 1)
        every = args.checkpoint_every and (i + 1) % args.checkpoint_every == 0 and i + 1 < stop_at
        if save_step is not None and (stop or every):
            save_step(i + 1, totals)
        if stop:
            raise Stop
    return totals


def apply_step(r, totals, loss, size, epoch, i):
    """Adam's step for a finite loss; a non-finite one stops the run, or is skipped (--skip-nonfinite)."""
    if math.isfinite(loss):
        r.optimizer.step()
        totals['loss'] += loss
        totals['items'] += size
    elif r.args.skip_nonfinite:
        totals['skipped'] += 1
        log.info(f'  epoch {epoch} step {i + 1}/{len(r.train_loader)}: non-finite loss ({loss}): '
                 f'batch skipped (--skip-nonfinite; {totals["skipped"]} this epoch)')
    else:
        raise NonFinite(epoch, i + 1, len(r.train_loader), loss)


@torch.no_grad()
def test_epoch(model, loader, objective, K, desc='test', stopper=None):
    """Minus the objective summed over the loader, per data point (all ranks' shares summed)."""
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for i, (x, _) in enumerate(_progress_bar(loader, desc, len(loader))):
        offset, size = loader.shard(i)
        with distributed.global_batch(offset, size):
            local = (x[0] if isinstance(x, list) else x).size(0)  # this rank's share may be empty
            value = -objective(model, x, K).item() if local > 0 else 0.0
        value, stop = distributed.all_sum([value, float(stopper is not None and stopper.requested)], device)
        total += value
        if stop:
            raise Stop
    return total / len(loader.data)


# ---------------------------------------------------------------- files of an epoch

@torch.no_grad()
def save_epoch_figures(model, x, run_dir, epoch, display=None):
    """Reconstructions and generations of an epoch under <run>/figures/; returns the image paths."""
    model.eval()
    fig_dir = os.path.join(run_dir, 'figures')
    os.makedirs(fig_dir, exist_ok=True)
    if any(vae.modality != 'image' for vae in model.vaes):
        return figures.save_cub_figures(model, x, display, fig_dir, epoch)  # captions, features: the data's display
    recon = os.path.join(fig_dir, f'recon_{epoch:03d}.png')
    show = spread_subset(len(x[0] if model.multimodal else x), figures.N_RECON)  # 8 items across the classes
    if model.multimodal:
        xs = [t[show.to(t.device)] for t in x]
        figures.save_cross_reconstruction(xs, model.reconstruct(xs), model.modalities, recon)
        gens = model.generate(figures.N_GEN)
    else:
        x = x[show.to(x.device)]
        figures.save_reconstruction(x, model.reconstruct(x), recon)
        gens = [model.generate(figures.N_GEN)]
    gen_paths = figures.save_generations(gens, model.modalities, os.path.join(fig_dir, f'gen_{{name}}_{epoch:03d}.png'))
    return [recon] + gen_paths


def save_weights(model, run_dir):
    """model.pt, plus vae_<modality>.pt per sub-model of a multimodal model (each atomic)."""
    save_torch(model.state_dict(), os.path.join(run_dir, 'model.pt'))
    if model.multimodal:
        for vae in model.vaes:
            save_torch(vae.state_dict(), os.path.join(run_dir, f'vae_{vae.name}.pt'))
