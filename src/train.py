"""The training loop (SPEC section 4): Adam (lr 1e-3, amsgrad); each epoch
train, test, save the model and losses, save reconstructions and generations.

Long runs (issue 6): checkpoints every epoch (and every --checkpoint-every
steps) hold the full training state, so --resume continues a killed run to
the same result; SIGTERM/SIGINT checkpoint and exit (143/130); a non-finite
loss stops the run (or, with --skip-nonfinite, skips the batch); under
torchrun the run is data-parallel (src/distributed.py).
"""
import datetime
import logging
import math
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from . import checkpoint, distributed, figures
from .data import BatchLoader, load_data
from .errors import UserError
from .files import load_json, load_torch, save_json, save_torch
from .models import MODELS
from .objectives import eval_objective, get_objective
from .report import analytics
from .rundir import attach_log_file, new_run_dir, write_args

log = logging.getLogger('mmvae')
LOGP_K = 5000


def is_multimodal(model):
    return hasattr(model, 'vaes')


def build_model(args, device, pre_trained=True):
    model = MODELS[args.model](args).to(device)
    if args.pre_trained and pre_trained:
        path = os.path.join(args.pre_trained, 'model.pt')
        state = load_torch(path, 'model weights file', map_location=device)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise UserError(f"{path} does not fit model {args.model!r} with these flags "
                            f"({first[0] if first else e}); was it trained with other flags?") from None
    return model


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
    for vae in getattr(model, 'vaes', [model]):
        vae.enc.compile()
        vae.dec.compile()


def x_size(x):
    return (x[0] if isinstance(x, list) else x).size(0)


def _progress(batches, desc, total):
    return tqdm(batches, desc=desc, leave=False, disable=not sys.stderr.isatty() or not distributed.is_main(),
                dynamic_ncols=True, total=total)


class Stop(Exception):
    """A stop signal (SIGTERM, SIGINT) reached the loop; every rank raises it at the same step."""


class NonFinite(Exception):
    def __init__(self, epoch, step, steps, value):
        super().__init__(f'non-finite loss {value} at epoch {epoch}, step {step}/{steps}')
        self.epoch, self.step, self.steps, self.value = epoch, step, steps, value


def new_totals():
    """Running sums of an epoch's training: loss (summed over items), items trained, batches skipped."""
    return {'loss': 0.0, 'items': 0, 'skipped': 0, 'seconds': 0.0}


def train_epoch(step_fn, model, optimizer, loader, K, epoch, stopper=None, save_step=None, start=0, totals=None,
                checkpoint_every=0, skip_nonfinite=False, print_freq=0):
    """Train on the epoch's batches from `start` on (a resumed epoch continues
    its saved `totals`); returns the updated totals.

    step_fn(x, K) is the objective summed over this rank's share of the batch
    (distributed.wrap). save_step(step, totals) checkpoints after `step` steps:
    every `checkpoint_every` steps and when a stop signal arrived (then Stop
    is raised). A non-finite loss raises NonFinite, or is skipped.
    """
    model.train()
    totals = dict(totals or new_totals())
    world = distributed.world_size()
    device = next(model.parameters()).device
    bar = _progress(loader.iter_from(start), f'epoch {epoch} train', len(loader) - start)
    for i, (x, _) in enumerate(bar, start):
        offset, size = loader.shard(i)
        optimizer.zero_grad(set_to_none=True)
        with distributed.global_batch(offset, size):
            value = step_fn(x, K)
        (-value * world).backward()  # DDP averages over ranks; the objective is a sum over the batch
        # one all-reduce: the global batch's loss, and whether any rank was asked to stop
        loss, stop = distributed.all_sum([-value.item(), float(stopper is not None and stopper.requested)], device)
        if math.isfinite(loss):
            optimizer.step()
            totals['loss'] += loss
            totals['items'] += size
        elif skip_nonfinite:
            totals['skipped'] += 1
            log.info(f'  epoch {epoch} step {i + 1}/{len(loader)}: non-finite loss ({loss}): '
                     f'batch skipped (--skip-nonfinite; {totals["skipped"]} this epoch)')
        else:
            raise NonFinite(epoch, i + 1, len(loader), loss)
        bar.set_postfix(loss=f'{totals["loss"] / max(totals["items"], 1):.2f}')
        if print_freq > 0 and i % print_freq == 0:
            log.info(f'  epoch {epoch} batch {i:5d}/{len(loader)}  loss/item {loss / size:.4f}')
        last = i + 1 == len(loader)
        if save_step is not None and (stop or (checkpoint_every and (i + 1) % checkpoint_every == 0 and not last)):
            save_step(i + 1, totals)
        if stop:
            raise Stop
    return totals


@torch.no_grad()
def test_epoch(model, loader, objective, K, desc='test', stopper=None):
    """Minus the objective summed over the loader, per data point (all ranks' shares summed)."""
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for i, (x, _) in enumerate(_progress(loader, desc, len(loader))):
        offset, size = loader.shard(i)
        with distributed.global_batch(offset, size):
            value = -objective(model, x, K).item() if x_size(x) > 0 else 0.0
        value, stop = distributed.all_sum([value, float(stopper is not None and stopper.requested)], device)
        total += value
        if stop:
            raise Stop
    return total / len(loader.data)


@torch.no_grad()
def save_epoch_figures(model, x, run_dir, epoch, names, display=None):
    model.eval()
    fig_dir = os.path.join(run_dir, 'figures')
    os.makedirs(fig_dir, exist_ok=True)
    if any(vae.modality != 'image' for vae in getattr(model, 'vaes', [model])):
        return figures.save_cub_figures(model, x, display, fig_dir, epoch)  # captions, features: the data's display
    if is_multimodal(model):
        xs = [t[:figures.N_RECON] for t in x]
        figures.save_cross_reconstruction(xs, model.reconstruct(xs), names,
                                          os.path.join(fig_dir, f'recon_{epoch:03d}.png'))
        gens = model.generate(figures.N_GEN)
    else:
        x = x[:figures.N_RECON]
        figures.save_reconstruction(x, model.reconstruct(x), os.path.join(fig_dir, f'recon_{epoch:03d}.png'))
        gens = [model.generate(figures.N_GEN)]
    figures.save_generations(gens, names, os.path.join(fig_dir, f'gen_{{name}}_{epoch:03d}.png'))


def save_weights(model, run_dir):
    """model.pt, plus vae_<modality>.pt per sub-model of a multimodal model (each atomic)."""
    state = model.state_dict()
    save_torch(state, os.path.join(run_dir, 'model.pt'))
    for vae in getattr(model, 'vaes', []):
        save_torch(vae.state_dict(), os.path.join(run_dir, f'vae_{vae.name}.pt'))


def seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)


def fork_rng(device):
    """Randomness drawn inside does not move the training RNG (figures, data caches)."""
    return torch.random.fork_rng(devices=[device] if device.type == 'cuda' else [])


def check_new_run_dir(run_dir):
    """--run-dir must be new or empty: an existing run is continued with --resume, never overwritten."""
    if run_dir and os.path.exists(run_dir) and (not os.path.isdir(run_dir) or os.listdir(run_dir)):
        if os.path.isfile(os.path.join(run_dir, 'args.json')):
            raise UserError(f"--run-dir {run_dir} already holds a run: continue it with --resume {run_dir} "
                            f"(or train into another directory)")
        raise UserError(f"--run-dir {run_dir} exists and is not an empty directory: choose another one")


def record_resume(run_dir, args, position, device, world):
    """args.json keeps the flags a resume runs with (--epochs may grow) and a log of the resumes."""
    path = os.path.join(run_dir, 'args.json')
    saved = load_json(path, 'run flags file')
    saved['flags'] = vars(args)
    saved.setdefault('resumed', []).append({
        'time': datetime.datetime.now().isoformat(timespec='seconds'), 'from': position,
        'device': str(device), 'world_size': world, 'command': sys.argv})
    save_json(saved, path)


def run(args):
    """Train as the flags say; returns the run directory.

    Under torchrun every rank runs this; rank 0 alone writes files and logs.
    A stop signal checkpoints and exits with SystemExit(143 or 130).
    """
    rank, world, device = distributed.setup(args.no_cuda)
    stopper = checkpoint.GracefulStop()
    # A NaN must reach the loss, on every rank alike, to be caught (or skipped) there, rather than
    # raise in a distribution's argument check on one rank; the checks also cost time every step.
    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        return _run(args, rank, world, device, stopper)
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)
        stopper.restore()
        distributed.teardown()


def _run(args, rank, world, device, stopper):
    main = rank == 0
    if not main:  # one copy of the messages: rank 0's
        for name in ('mmvae', 'src'):
            logging.getLogger(name).setLevel(logging.WARNING)
    ckpt, ckpt_path = None, None
    if args.resume:
        ckpt, ckpt_path = checkpoint.load(args.resume)  # on the CPU: RNG states must stay there
        if ckpt and ckpt['finished'] and ckpt['epoch'] >= args.epochs and not (
                args.logp and not os.path.isfile(os.path.join(args.resume, 'logp.json'))):
            log.info(f'{args.resume} is already finished ({ckpt["epoch"]} epochs): nothing to do '
                     f'(--resume {args.resume} --epochs N with a larger N trains it further)')
            return args.resume
    else:
        check_new_run_dir(args.run_dir)
    distributed.barrier()  # every rank has checked the run directory before rank 0 creates it

    seed_everything(args.seed)
    model = build_model(args, device, pre_trained=ckpt is None)
    multimodal = is_multimodal(model)
    with fork_rng(device):  # ranks that build data caches and ranks that read them stay in step
        if not main:
            distributed.barrier()  # rank 0 builds the caches first
        train_data = load_data(model.dataset, args, 'train').to(device)
        test_data = load_data(model.dataset, args, 'test').to(device)
        if main:
            distributed.barrier()

    run_dir = args.resume or args.run_dir
    if main:
        if args.resume:
            attach_log_file(os.path.join(run_dir, 'run.log'))
            where = checkpoint.position(ckpt) if ckpt else 'the start (no checkpoint yet)'
            log.info(f'==== resuming {run_dir} from {where}{f" ({ckpt_path})" if ckpt else ""}')
            record_resume(run_dir, args, where, device, world)
        else:
            if run_dir:
                os.makedirs(run_dir, exist_ok=True)
            else:
                run_dir = new_run_dir(args.out_dir, args.experiment or args.model)
            attach_log_file(os.path.join(run_dir, 'run.log'))
            write_args(run_dir, args, train_data.source, device)
        log.info(f'run directory: {run_dir}')
    if args.offline:
        log.info(f'OFFLINE DATA (not the paper\'s datasets): {train_data.source}')
    else:
        log.info(f'data: {train_data.source}')
    if args.pre_trained and ckpt is None:
        log.info(f'starting from the weights of {args.pre_trained}')
    log.info(f'model {args.model} on {device}: {sum(p.numel() for p in model.parameters()):,} parameters; '
             f'{len(train_data):,} training and {len(test_data):,} test items')
    if world > 1:
        log.info(f'data-parallel: {world} ranks, {args.batch_size} items per global batch')

    train_loader = BatchLoader(train_data, args.batch_size, shuffle=True, seed=args.seed, rank=rank, world_size=world)
    test_loader = BatchLoader(test_data, args.batch_size, shuffle=False, rank=rank, world_size=world)
    objective = get_objective(args.obj, multimodal, args.looser, args.dreg_estimator == 'true')
    test_obj = eval_objective(multimodal)
    if getattr(args, 'amp', False):
        objective = amp_objective(objective, device)
    if getattr(args, 'compile', False):
        compile_networks(model)
    if device.type == 'cuda':
        # float32 convolutions as on the CPU (torch lets cuDNN use TF32 by default; --amp is the
        # fast path); cuDNN picks the fastest algorithms for the fixed batch shapes
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    optimizer = torch.optim.Adam((p for p in model.parameters() if p.requires_grad), lr=1e-3, amsgrad=True)
    names = model.modalities if multimodal else [model.name]
    # Figures and analytics use one fixed batch spread over the test set (the paired test
    # sets are ordered by class: their first batch would show a single digit).
    spread = torch.randperm(len(test_data), generator=torch.Generator().manual_seed(0))[:args.batch_size]
    first_test_batch = test_data.gather(spread.to(test_data.sources[0].device)) if main else None

    losses = {'train': [], 'test': [], 'epoch_seconds': [], 'skipped_batches': []}
    done, start, partial = 0, 0, None  # epochs complete, steps done in the next one, its running sums
    if ckpt:
        try:
            model.load_state_dict(ckpt['model'])
            optimizer.load_state_dict(ckpt['optimizer'])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"checkpoint {ckpt_path} does not fit model {args.model!r} with these flags "
                            f"({str(e).strip().splitlines()[0]})") from None
        losses = ckpt['losses']
        losses.setdefault('skipped_batches', [0] * len(losses['train']))
        done, start, partial = ckpt['epoch'], ckpt['step'], ckpt['partial']
        train_loader.set_state(ckpt['loader'])
        checkpoint.set_rng_states(ckpt['rng'], device)
    last_good = [checkpoint.position(ckpt) if ckpt else None]
    step_fn = distributed.wrap(model, objective, device, example=train_data.gather(torch.arange(2, device=device)),
                               K=args.K)

    def save_checkpoint(epochs_done, step, totals, loader_state, rng, finished=False):
        if main:
            state = {'flags': vars(args), 'epoch': epochs_done, 'step': step, 'finished': finished,
                     'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'losses': losses,
                     'partial': totals, 'loader': loader_state, 'rng': rng, 'world_size': world}
            with checkpoint.disk_errors(run_dir, lambda: last_good[0]):
                checkpoint.save(run_dir, state)
            last_good[0] = checkpoint.position(state)

    def epoch_figures(epoch):
        """Per-epoch figures (rank 0), on a fork of the RNG: the training noise does not depend on them."""
        if main:
            with fork_rng(device), checkpoint.disk_errors(run_dir, lambda: last_good[0]):
                save_epoch_figures(model, first_test_batch, run_dir, epoch, names, test_data.display)
                analytics.save_loss_curve(losses, os.path.join(run_dir, 'figures', 'losses.png'))
                if not args.no_analytics:  # UMAP of latents, KL box plots (issue 3)
                    analytics.save_epoch_analytics(model, first_test_batch, run_dir, epoch)

    if ckpt and start == 0 and done >= 1:
        epoch_figures(done)  # the kill may have cut them short; drawn on the saved RNG, so the same figures

    try:
        for epoch in range(done + 1, args.epochs + 1):
            t0 = time.time()
            loader_state = train_loader.get_state()  # this epoch's order is drawn from it

            def save_step(step, totals):
                rng = checkpoint.rng_states(device)
                save_checkpoint(epoch - 1, step, dict(totals, seconds=totals['seconds'] + time.time() - t0),
                                loader_state, rng)

            totals = train_epoch(step_fn, model, optimizer, train_loader, args.K, epoch, stopper, save_step,
                                 start, partial, args.checkpoint_every, args.skip_nonfinite, args.print_freq)
            start, partial = 0, None
            rng_after_training = checkpoint.rng_states(device)
            try:
                test_loss = test_epoch(model, test_loader, test_obj, args.K, stopper=stopper)
            except Stop:
                # test again on resume; the training of this epoch is kept: checkpoint at its last step, with
                # the RNG as it was then (the test draws that a resume repeats)
                seconds = totals['seconds'] + time.time() - t0
                save_checkpoint(epoch - 1, len(train_loader), dict(totals, seconds=seconds), loader_state,
                                rng_after_training)
                raise
            losses['train'].append(totals['loss'] / max(totals['items'], 1))
            losses['test'].append(test_loss)
            losses['epoch_seconds'].append(round(totals['seconds'] + time.time() - t0, 2))
            losses['skipped_batches'].append(totals['skipped'])
            if main:
                with checkpoint.disk_errors(run_dir, lambda: last_good[0]):
                    save_weights(model, run_dir)
                    save_json(losses, os.path.join(run_dir, 'losses.json'))
            save_checkpoint(epoch, 0, None, train_loader.get_state(), checkpoint.rng_states(device))
            done = epoch
            log.info(f'====> epoch {epoch:3d}  train loss {losses["train"][-1]:10.4f}  test loss {test_loss:10.4f}  '
                     f'({losses["epoch_seconds"][-1]:.1f} s)')
            if totals['skipped']:
                log.info(f'      epoch {epoch}: {totals["skipped"]} of {len(train_loader)} batches skipped '
                         f'(non-finite loss; --skip-nonfinite)')
            epoch_figures(epoch)
            if distributed.all_sum([float(stopper.requested)], device)[0]:
                raise Stop

        if args.logp:
            logp = -test_epoch(model, test_loader, test_obj, LOGP_K, desc=f'logp K={LOGP_K}', stopper=stopper)
            log.info(f'test log-likelihood (IWAE, K = {LOGP_K}): {logp:.4f}')
            if main:
                with checkpoint.disk_errors(run_dir, lambda: last_good[0]):
                    save_json({'K': LOGP_K, 'test_log_likelihood': logp}, os.path.join(run_dir, 'logp.json'))
        save_checkpoint(done, 0, None, train_loader.get_state(), checkpoint.rng_states(device), finished=True)
    except Stop:
        log.info(f'stopped by {stopper.name}: checkpoint saved ({last_good[0]}); continue with: '
                 f'python main.py --resume {run_dir}')
        raise SystemExit(stopper.exit_code) from None
    except NonFinite as e:
        raise UserError(
            f"non-finite training loss ({e.value}) at epoch {e.epoch}, step {e.step} of {e.steps}: the run stopped.\n"
            f"  The last good checkpoint ({last_good[0] or 'none: the first epoch had not finished'}) is kept in "
            f"{run_dir}.\n"
            f"  Usual fixes: a smaller --K or likelihood scaling (--llik_scaling); check the data for NaN/inf "
            f"(delete the cached files under --data-dir to rebuild them); or skip such batches: "
            f"python main.py --resume {run_dir} --skip-nonfinite") from None
    log.info(f'done: {run_dir}')
    return run_dir
