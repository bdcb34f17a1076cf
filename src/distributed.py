"""Data-parallel training: `torchrun --nproc_per_node N main.py ...`.

torchrun starts N copies of main.py and tells each its rank through the
environment (RANK, LOCAL_RANK, WORLD_SIZE); without torchrun everything here
is a no-op for a single process (rank 0 of 1).

How N ranks train exactly the model one process would (up to float rounding):
- Data: every rank draws the same epoch order and keeps its own share of each
  global batch (BatchLoader.shard), so the shares add up to the global batch.
- Gradients: the objectives are SUMS over the batch, while DDP averages the
  ranks' gradients; each rank therefore back-propagates world_size * its
  share's sum, and the average is the gradient of the global sum.
- Noise: the reparameterised samples come from the global torch RNG, whose
  state every rank keeps identical (same seed; figures are drawn under
  fork_rng). Each rank draws the noise of the whole global batch and keeps its
  own rows (rsample below: every posterior sample of training), so item i gets the noise it gets in a
  single process, whatever the number of ranks. This holds when a batch is
  evaluated in one chunk (objectives.chunk_size; always so for the paper's
  settings); a chunked batch still gets fresh, independent noise.
- The objective runs inside the DDP module's forward (ObjectiveModule), so the
  prior parameters it uses outside model.forward are seen by DDP;
  find_unused_parameters covers those an objective never touches (the
  sub-models' priors of a multimodal model, the unused cross terms of m_elbo).
  The dreg hooks act on the samples, before DDP's all-reduce, so they need
  nothing special.
- BatchNorm: on GPUs converted to SyncBatchNorm (statistics of the global
  batch); on the CPU torch has no SyncBatchNorm, so a model with BatchNorm
  trained on several CPU ranks normalises per rank (a warning says so).
"""
import contextlib
import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn

from .rng import fork_rng

log = logging.getLogger('mmvae')


def world():
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1)), int(os.environ.get('LOCAL_RANK', 0))


def default_device(no_cuda=False, local_rank=None):
    """The device everything runs on: this process's GPU when there is one (and --no-cuda is not given),
    else the CPU. Training, the analyses, the data caches and the benchmark all choose it here."""
    if not torch.cuda.is_available() or no_cuda:
        return torch.device('cpu')
    return torch.device('cuda' if local_rank is None else f'cuda:{local_rank}')


def setup(no_cuda=False):
    """Join the process group if torchrun started us; returns (rank, world size, device)."""
    rank, size, local = world()
    if size == 1:
        return 0, 1, default_device(no_cuda)
    device = default_device(no_cuda, local)
    cuda = device.type == 'cuda'
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group('nccl' if cuda else 'gloo', timeout=timedelta(minutes=30),
                                **({'device_id': device} if cuda else {}))
    return rank, size, device


def teardown():
    if dist.is_initialized():
        dist.destroy_process_group()


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier():
    if dist.is_initialized():
        dist.barrier()


def all_sum(values, device):
    """Sum a list of floats over the ranks (one all-reduce); a plain list in a single process."""
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


class ObjectiveModule(nn.Module):
    """objective(model, x, K) as a module, so that DDP sees every parameter the
    objective uses (priors included) inside its forward."""

    def __init__(self, model, objective, unused=()):
        super().__init__()
        self.model = model
        self.objective = objective
        self.unused = set(unused)

    def forward(self, x, K):
        if (x[0] if isinstance(x, list) else x).size(0) == 0:
            # an empty share (global batch smaller than the world): contributes zero
            # gradients to the parameters the objective uses, as DDP's all-reduce needs
            return sum(p.sum() for n, p in self.model.named_parameters()
                       if p.requires_grad and n not in self.unused) * 0.
        return self.objective(self.model, x, K)


def unused_parameters(model, objective, x, K):
    """Trainable parameters the objective never reaches (found by one small
    backward pass, on a fork of the RNG): e.g. the sub-models' priors of a
    multimodal model with --learn-prior."""
    training = model.training
    model.eval()  # no BatchNorm statistics are updated; which parameters are reached does not change
    with fork_rng(x_device(x)):
        model.zero_grad(set_to_none=True)
        objective(model, x, K).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    model.train(training)
    return unused


def x_device(x):
    return (x[0] if isinstance(x, list) else x).device


def wrap(model, objective, device, example=None, K=1):
    """f(x, K) -> the objective summed over this rank's share of the batch;
    back-propagate world_size() times it, so that DDP's gradient average is
    the gradient of the global sum. `example` (a batch) finds the parameters
    the objective leaves unused."""
    if world_size() == 1:
        return lambda x, K: objective(model, x, K)
    unused = unused_parameters(model, objective, example, K) if example is not None else ['unknown']
    if device.type == 'cuda':
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        log.warning('warning: BatchNorm on several CPU ranks normalises each rank\'s share separately '
                    '(torch has no SyncBatchNorm on the CPU): the run differs from a single process')
    return nn.parallel.DistributedDataParallel(ObjectiveModule(model, objective, unused),
                                               device_ids=[device.index] if device.type == 'cuda' else None,
                                               find_unused_parameters=bool(unused))


# ------------------------------------------------ the noise of the global batch

_SHARD = None  # (offset, global batch size) of this rank's share of the current batch


@contextlib.contextmanager
def global_batch(offset, size):
    """Within this block, rsample draws the noise of the global batch."""
    global _SHARD
    prev, _SHARD = _SHARD, ((offset, size) if world_size() > 1 else None)
    try:
        yield
    finally:
        _SHARD = prev


def rsample(q, sample_shape=torch.Size()):
    """q.rsample(sample_shape), except inside global_batch on several ranks: the rows of this rank's share
    of a draw for the whole global batch, so that item i gets the noise it gets in a single process. Every
    posterior sample of training goes through here (VAE.rsample, MultimodalVAE.rsample), whatever the joint
    posterior it comes from. Location-scale families only (all the models' posteriors); others draw locally
    (still a valid estimator, other noise than a single process)."""
    n = q.batch_shape[0] if q.batch_shape else 0
    if _SHARD is None or _SHARD[0] + n > _SHARD[1]:
        return q.rsample(sample_shape)
    if set(q.arg_constraints) != {'loc', 'scale'}:
        _warn_unsharded(type(q).__name__)
        return q.rsample(sample_shape)
    offset, total = _SHARD
    # other ranks' rows get harmless parameters (0, 1): only the noise is shared
    loc, scale = torch.broadcast_tensors(q.loc, q.scale)
    full = type(q)(*[torch.cat([f(offset, *p.shape[1:], dtype=p.dtype, device=p.device), p,
                                f(total - offset - n, *p.shape[1:], dtype=p.dtype, device=p.device)])
                     for f, p in ((torch.zeros, loc), (torch.ones, scale))])
    return full.rsample(sample_shape).narrow(len(sample_shape), offset, n)


_warned = set()


def _warn_unsharded(name):
    if name not in _warned:
        _warned.add(name)
        log.warning(f'warning: {name} posteriors are not sharded: with several ranks the noise differs from a '
                    f'single-process run (still a valid estimator)')
