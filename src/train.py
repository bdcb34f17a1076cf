"""The training loop (SPEC section 4): Adam (lr 1e-3, amsgrad); each epoch
train, test, save the model and losses, save reconstructions and generations."""
import logging
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from . import figures
from .data import BatchLoader, load_data
from .errors import UserError
from .files import load_torch, save_json, save_torch
from .models import MODELS
from .objectives import eval_objective, get_objective
from .rundir import attach_log_file, new_run_dir, write_args

log = logging.getLogger('mmvae')
LOGP_K = 5000


def is_multimodal(model):
    return hasattr(model, 'vaes')


def build_model(args, device):
    model = MODELS[args.model](args).to(device)
    if args.pre_trained:
        path = os.path.join(args.pre_trained, 'model.pt')
        state = load_torch(path, 'model weights file', map_location=device)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise UserError(f"{path} does not fit model {args.model!r} with these flags "
                            f"({first[0] if first else e}); was it trained with other flags?") from None
    return model


def x_size(x):
    return (x[0] if isinstance(x, list) else x).size(0)


def _progress(loader, desc):
    return tqdm(loader, desc=desc, leave=False, disable=not sys.stderr.isatty(), dynamic_ncols=True)


def train_epoch(model, loader, objective, optimizer, K, epoch, print_freq=0):
    """One pass over the training pairs; returns the loss per data point."""
    model.train()
    total, seen = 0.0, 0
    bar = _progress(loader, f'epoch {epoch} train')
    for i, (x, _) in enumerate(bar):
        optimizer.zero_grad(set_to_none=True)
        loss = -objective(model, x, K)
        loss.backward()
        optimizer.step()
        total += loss.item()
        seen += x_size(x)
        bar.set_postfix(loss=f'{total / seen:.2f}')
        if print_freq > 0 and i % print_freq == 0:
            log.info(f'  epoch {epoch} batch {i:5d}/{len(loader)}  loss/item {loss.item() / x_size(x):.4f}')
    return total / len(loader.data)


@torch.no_grad()
def test_epoch(model, loader, objective, K, desc='test'):
    """Minus the objective summed over the loader, per data point."""
    model.eval()
    total = 0.0
    for x, _ in _progress(loader, desc):
        total += -objective(model, x, K).item()
    return total / len(loader.data)


@torch.no_grad()
def save_epoch_figures(model, x, run_dir, epoch, names):
    model.eval()
    fig_dir = os.path.join(run_dir, 'figures')
    os.makedirs(fig_dir, exist_ok=True)
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


def run(args):
    """Train as the flags say; returns the run directory."""
    device = torch.device('cuda' if torch.cuda.is_available() and not args.no_cuda else 'cpu')
    seed_everything(args.seed)
    model = build_model(args, device)
    multimodal = is_multimodal(model)
    train_data = load_data(model.dataset, args, 'train').to(device)
    test_data = load_data(model.dataset, args, 'test').to(device)

    run_dir = new_run_dir(args.out_dir, args.experiment or args.model)
    attach_log_file(os.path.join(run_dir, 'run.log'))
    write_args(run_dir, args, train_data.source, device)
    log.info(f'run directory: {run_dir}')
    if args.offline:
        log.info(f'OFFLINE DATA (not the paper\'s datasets): {train_data.source}')
    else:
        log.info(f'data: {train_data.source}')
    if args.pre_trained:
        log.info(f'starting from the weights of {args.pre_trained}')
    log.info(f'model {args.model} on {device}: {sum(p.numel() for p in model.parameters()):,} parameters; '
             f'{len(train_data):,} training and {len(test_data):,} test items')

    train_loader = BatchLoader(train_data, args.batch_size, shuffle=True, seed=args.seed)
    test_loader = BatchLoader(test_data, args.batch_size, shuffle=False)
    objective = get_objective(args.obj, multimodal, args.looser, args.dreg_estimator == 'true')
    test_obj = eval_objective(multimodal)
    optimizer = torch.optim.Adam((p for p in model.parameters() if p.requires_grad), lr=1e-3, amsgrad=True)
    names = model.modalities if multimodal else [model.name]
    first_test_batch = next(iter(test_loader))[0]

    losses = {'train': [], 'test': [], 'epoch_seconds': []}
    for epoch in range(1, args.epochs + 1):
        t0 = time.time()
        train_loss = train_epoch(model, train_loader, objective, optimizer, args.K, epoch, args.print_freq)
        test_loss = test_epoch(model, test_loader, test_obj, args.K)
        losses['train'].append(train_loss)
        losses['test'].append(test_loss)
        losses['epoch_seconds'].append(round(time.time() - t0, 2))
        save_weights(model, run_dir)
        save_json(losses, os.path.join(run_dir, 'losses.json'))
        save_epoch_figures(model, first_test_batch, run_dir, epoch, names)
        log.info(f'====> epoch {epoch:3d}  train loss {train_loss:10.4f}  test loss {test_loss:10.4f}  '
                 f'({time.time() - t0:.1f} s)')

    if args.logp:
        logp = -test_epoch(model, test_loader, test_obj, LOGP_K, desc=f'logp K={LOGP_K}')
        log.info(f'test log-likelihood (IWAE, K = {LOGP_K}): {logp:.4f}')
        save_json({'K': LOGP_K, 'test_log_likelihood': logp}, os.path.join(run_dir, 'logp.json'))
    log.info(f'done: {run_dir}')
    return run_dir
