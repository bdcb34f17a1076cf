"""The GPU tier (`python -m pytest -m gpu`): what only a machine with CUDA can show. Skipped without one;
`python bench/gpu_check.py` runs it and the GPU benchmark in one go (docs/performance.md).

- the paper's training step (mnist_svhn, dreg, K 30, learnt prior, batch 128) on the GPU equals the CPU step
  on the same weights, batch and noise, to float32 tolerance, for each joint rule (moe and mopoe with
  --looser, poe) and both DReG estimators;
- --amp on the GPU: its loss and gradients against float32 on the same noise; main.py trains with it;
- a run stopped by SIGTERM and resumed on the GPU ends bit for bit where the uninterrupted run ends (the
  CUDA random state goes through the checkpoint; an MLP model, whose cuBLAS products repeat exactly);
- data-parallel training with NCCL on the GPUs present (two or more), against one process;
- the number-sense study for a few steps;
- the analyses of a GPU-trained run on a machine without a GPU (CUDA hidden).

MMVAE_TEST_DEVICE=cpu runs the tier's code on the CPU (the CPU is then compared with itself): a check of the
tests themselves, not evidence about a GPU.
"""
import glob
import json
import os
import subprocess
import sys

import pytest
import torch

import main as main_py
from src import checkpoint, train
from src.cli import parse_args
from src.data import BatchLoader, load_data, tensors
from src.models import MODELS
from src.models.multimodal import MultimodalVAE
from src.models.vae import VAE
from src.objectives import model_objective

DEVICE = torch.device(os.environ.get('MMVAE_TEST_DEVICE', 'cuda'))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(DEVICE.type == 'cuda' and not torch.cuda.is_available(),
                                                  reason='needs a CUDA GPU (MMVAE_TEST_DEVICE=cpu: a dry run)')]
PAPER = ['--model', 'mnist_svhn', '--obj', 'dreg', '--K', '30', '--learn-prior', '--batch-size', '128']


# ------------------------------------------------------------------ the same noise on both devices

def standard_noise(q, shape, g):
    """Standard draws of q's family (float64, on the CPU) in the order of the calls: z = loc + scale * eps."""
    if isinstance(q, torch.distributions.Laplace):
        u = torch.rand(shape, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12) * 2 - 1
        return -u.sign() * torch.log1p(-u.abs())  # the inverse CDF of Laplace(0, 1)
    if isinstance(q, torch.distributions.Normal):
        return torch.randn(shape, generator=g, dtype=torch.float64)
    raise TypeError(f'no standard noise for {type(q).__name__}')


@pytest.fixture
def cpu_noise(monkeypatch):
    """Every training sample from one seeded CPU generator: reseed(s) starts the stream again."""
    state = {}

    def rsample(self, q, K):
        loc, scale = torch.broadcast_tensors(q.loc, q.scale)
        eps = standard_noise(q, (K, *loc.shape), state['g'])
        return loc + scale * eps.to(loc.device, loc.dtype)

    def reseed(seed):
        state['g'] = torch.Generator().manual_seed(seed)
    for cls in (VAE, MultimodalVAE):
        monkeypatch.setattr(cls, 'rsample', rsample)
    return reseed


def one_step(flags, data_dir, device, reseed, amp=False):
    """Loss and gradients of one training step of main.py's objective, on `device`, from seed-0 weights."""
    args = parse_args([*flags, '--offline', '--data-dir', data_dir, '--pair-multiplier', '1'])
    torch.manual_seed(0)
    model = MODELS[args.model](args)  # built on the CPU: the same initial weights for both devices
    model = model.to(device)
    data = load_data(model.dataset, args, 'train')
    x, _ = next(iter(BatchLoader(data, args.batch_size, shuffle=False)))
    x = [t.to(device) for t in x]
    objective = model_objective(model, args.obj, args.looser, args.dreg_estimator == 'true')
    if amp:
        objective = train.amp_objective(objective, device)
    reseed(1)
    with train.training_numerics(device):
        loss = -objective(model, x, args.K)
        loss.backward()
    return loss.item(), {k: p.grad.detach().double().cpu() for k, p in model.named_parameters() if p.grad is not None}


def close(a, b, rtol):
    """Each gradient tensor within rtol of the other in norm (float32 sums run in other orders on a GPU)."""
    assert a.keys() == b.keys()
    worst = max(((a[k] - b[k]).norm() / (b[k].norm() + 1e-12)).item() for k in a)
    assert worst < rtol, worst
    return worst


@pytest.mark.parametrize('joint, estimator', [('moe', 'released'), ('moe', 'true'), ('mopoe', 'released'),
                                              ('poe', 'true')])
def test_the_paper_step_on_the_gpu_equals_the_cpu_step(joint, estimator, offline_data_dir, cpu_noise):
    flags = [*PAPER, '--joint-posterior', joint, '--dreg-estimator', estimator] + (['--looser'] if joint != 'poe'
                                                                                   else [])
    cpu_loss, cpu_grads = one_step(flags, offline_data_dir, torch.device('cpu'), cpu_noise)
    gpu_loss, gpu_grads = one_step(flags, offline_data_dir, DEVICE, cpu_noise)
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-5)
    close(gpu_grads, cpu_grads, 1e-3)


def test_amp_on_the_gpu(offline_data_dir, cpu_noise, tmp_path):
    f32_loss, f32_grads = one_step([*PAPER, '--looser'], offline_data_dir, DEVICE, cpu_noise)
    bf16_loss, bf16_grads = one_step([*PAPER, '--looser'], offline_data_dir, DEVICE, cpu_noise, amp=True)
    assert bf16_loss == pytest.approx(f32_loss, rel=5e-3)  # bfloat16 keeps 8 bits of mantissa
    close(bf16_grads, f32_grads, 0.1)
    assert main_py.main([*PAPER, '--looser', '--amp', '--offline', '--data-dir', offline_data_dir, '--pair-multiplier',
                         '1', '--max-steps', '4', '--max-test-items', '256', '--no-analytics',
                         '--run-dir', str(tmp_path / 'amp')]) == 0
    saved = json.load(open(tmp_path / 'amp' / 'args.json'))
    assert saved['flags']['amp'] and saved['device'].startswith(DEVICE.type)


# ------------------------------------------------------------------ resume, bit for bit

RESUME = ['--model', 'mnist', '--obj', 'dreg', '--K', '4', '--batch-size', '64', '--epochs', '1', '--max-steps', '6',
          '--checkpoint-every', '2', '--no-analytics', '--offline', '--pair-multiplier', '1']


def test_a_stopped_run_resumes_bit_for_bit_on_the_gpu(offline_data_dir, tmp_path, monkeypatch):
    from test_training import sigterm_at_training_batch
    run = lambda name, *extra: main_py.main([*RESUME, '--data-dir', offline_data_dir,  # noqa: E731
                                             '--run-dir', str(tmp_path / name), *extra])
    assert run('reference') == 0
    iter_from = sigterm_at_training_batch(monkeypatch, 4)
    with pytest.raises(SystemExit) as stop:
        run('stopped')
    assert stop.value.code == 143
    monkeypatch.setattr(tensors.BatchLoader, 'iter_from', iter_from)
    stopped = torch.load(tmp_path / 'stopped' / checkpoint.CKPT)
    assert 0 < stopped['step'] < 6 and not stopped['finished']
    assert (stopped['rng']['cuda'] is not None) == (DEVICE.type == 'cuda')
    torch.manual_seed(123)
    if DEVICE.type == 'cuda':
        torch.cuda.manual_seed_all(123)  # the resume must bring back the checkpoint's CUDA state
    assert main_py.main(['--resume', str(tmp_path / 'stopped')]) == 0
    ref, got = (torch.load(tmp_path / d / checkpoint.CKPT) for d in ('reference', 'stopped'))
    assert all(torch.equal(ref['model'][k], got['model'][k]) for k in ref['model'])
    assert got['losses']['train'] == ref['losses']['train'] and got['losses']['test'] == ref['losses']['test']
    if DEVICE.type == 'cuda':
        assert torch.equal(ref['rng']['cuda'], got['rng']['cuda'])


# ------------------------------------------------------------------ several GPUs, the study, a CPU-only machine

@pytest.mark.skipif(DEVICE.type != 'cuda' or torch.cuda.device_count() < 2,
                    reason='data-parallel training with NCCL needs two or more GPUs')
def test_data_parallel_training_with_nccl(offline_data_dir, tmp_path):
    n = torch.cuda.device_count()
    flags = [*PAPER, '--looser', '--offline', '--data-dir', offline_data_dir, '--pair-multiplier', '1',
             '--max-steps', '4', '--max-test-items', '256', '--no-analytics', '--epochs', '1']
    one = subprocess.run([sys.executable, 'main.py', *flags, '--run-dir', str(tmp_path / 'one')], cwd=REPO)
    ddp = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={n}',
                          'main.py', *flags, '--run-dir', str(tmp_path / 'ddp')], cwd=REPO)
    assert one.returncode == 0 and ddp.returncode == 0
    ref, got = (json.load(open(tmp_path / d / 'losses.json')) for d in ('one', 'ddp'))
    # the same global batches and noise; the all-reduce sums the gradients in another order
    assert got['train'][-1] == pytest.approx(ref['train'][-1], rel=1e-3)
    assert got['test'][-1] == pytest.approx(ref['test'][-1], rel=1e-3)


def test_the_number_sense_study_on_the_gpu(tiny_data, tmp_path):
    from src import numbersense_study as study
    study_dir = str(tmp_path / 'study')
    study.main(['--quick', '--offline', '--study-dir', study_dir, '--data-dir', tiny_data, '--seeds', '1', '--epochs',
                '1', '--K', '2', '--num-hidden-layers', '1', '--batch-size', '64', '--classifier-epochs', '1',
                '--map', 'none'])
    runs = [os.path.dirname(p) for p in glob.glob(os.path.join(study_dir, '**', 'args.json'), recursive=True)]
    assert len(runs) == 3
    for run in runs:
        assert json.load(open(os.path.join(run, 'args.json')))['device'].startswith(DEVICE.type)
        assert os.path.isfile(os.path.join(run, 'numbersense.json'))
    assert os.path.isfile(os.path.join(study_dir, 'summary.json'))


def test_a_gpu_trained_run_is_analysed_without_a_gpu(offline_data_dir, tmp_path):
    run = str(tmp_path / 'run')
    assert main_py.main([*PAPER, '--looser', '--offline', '--data-dir', offline_data_dir, '--pair-multiplier', '1',
                         '--max-steps', '3', '--max-test-items', '256', '--no-analytics', '--run-dir', run]) == 0
    assert json.load(open(os.path.join(run, 'args.json')))['device'].startswith(DEVICE.type)
    cpu_only = dict(os.environ, CUDA_VISIBLE_DEVICES='', PYTHONPATH=REPO)
    for argv in (['src/report/calculate_likelihoods.py', '--iwae-samples', '4', '--max-items', '40'],
                 ['src/report/analyse_ms.py', '--latent-epochs', '1', '--classifier-epochs', '1', '--batch-size',
                  '64', '--joint-samples', '200', '--max-items', '100']):
        r = subprocess.run([sys.executable, *argv, '--save-dir', run], cwd=REPO, env=cpu_only, capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
    for name in ('likelihoods.json', 'analyse_ms.json'):
        assert os.path.isfile(os.path.join(run, name))
