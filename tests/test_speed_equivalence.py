"""The optimised computations equal the straightforward ones (docs/performance.md).

- the SVHN decoder (first layer as a matrix product, last as PhaseConvTranspose)
  against
  the released nn.Sequential decoder with the same weights: outputs and all
  gradients;
- every objective of mnist_svhn and svhn, optimised model against a
  reference (released SVHN decoder, torch's per-pixel log_prob) on the same
  samples: values and the gradients of every parameter;
- the written-out likelihood term against torch's log_prob;
- evaluation chunks bounded in memory; training chunks as released;
- --amp (bf16 autocast) and --compile are off by default; a short --amp run
  stays within AMP_TOLERANCE of float32.
"""
import argparse
import glob
import json
import os

import pytest
import torch
import torch.distributions as dist
import torch.nn as nn

import main as main_module
from src import objectives as O
from src.cli import parse_args
from src.data import BatchLoader, load_data
from src.models import MODELS
from src.models.svhn import Dec, PhaseConvTranspose
from src.objectives import model_objective
from src.train import amp_objective, compile_networks

D = 6  # latent dimension of the test models
AMP_TOLERANCE = 0.005  # relative difference of losses, --amp against float32 (measured: < 0.05%)


def flags(**kw):
    base = dict(latent_dim=D, num_hidden_layers=1, learn_prior=True, llik_scaling=0.)
    base.update(kw)
    return argparse.Namespace(**base)


class ReleasedSVHNDec(nn.Module):
    """The released decoder, verbatim: the Sequential applied to z viewed as (N, D, 1, 1)."""

    def __init__(self, latent_dim):
        super().__init__()
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 128, 4, 1, 0), nn.ReLU(True),
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.ReLU(True),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(True),
            nn.ConvTranspose2d(32, 3, 4, 2, 1), nn.Sigmoid(),
        )

    def forward(self, z):
        out = self.dec(z.view(-1, z.size(-1), 1, 1))
        return out.view(*z.size()[:-1], 3, 32, 32), torch.tensor(0.75).to(z.device)


def released_log_px_z(px_z, x, scaling):
    return px_z.log_prob(x).view(*px_z.batch_shape[:2], -1).sum(-1) * scaling


@pytest.fixture(autouse=True)
def one_thread():
    """These small problems run as fast on one thread, and much faster when the
    machine's cores are shared (no waiting for a second OpenMP thread)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(params=[torch.float64, torch.float32], ids=['float64', 'float32'])
def dtype(request):
    """Every tensor in this precision (torch.tensor(0.75) in the decoders included)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(request.param)
    yield request.param
    torch.set_default_dtype(old)


# Float64 shows the computations are the same math (to 1e-10). In float32 the
# objectives' log weights (about -1e4 for these untrained models) carry rounding
# errors of about 1e-3 nats, which the softmax over samples (w~) turns into
# relative differences of up to a few 1e-4 in dreg values and gradients.
TOL = {torch.float64: 1e-10, torch.float32: 2e-5}
TOL_OBJECTIVES = {torch.float64: 1e-10, torch.float32: 1e-3}


def assert_close(a, b, rtol):
    """|a - b| <= rtol * (largest |b|, at least 1): relative to the tensor's scale (gradients vary)."""
    scale = max(b.abs().max().item(), 1.0)
    assert (a - b).abs().max().item() <= rtol * scale, ((a - b).abs().max().item(), scale)


def test_svhn_decoder_equals_released(dtype):
    torch.manual_seed(0)
    fast, ref = Dec(D), ReleasedSVHNDec(D)
    ref.load_state_dict(fast.state_dict())  # the same keys: dec.0.weight, ...
    z = torch.randn(3, 5, D)
    target = torch.rand(3, 5, 3, 32, 32)
    outs, grads = [], []
    for dec in (fast, ref):
        zz = z.clone().requires_grad_()
        mean, scale = dec(zz)
        assert mean.shape == (3, 5, 3, 32, 32) and mean.is_contiguous() and scale.item() == 0.75
        ((mean - target).abs().sum() + mean.square().sum()).backward()  # a loss that reaches every weight
        outs.append(mean.detach())
        grads.append([zz.grad] + [p.grad for p in dec.parameters()])
    assert_close(outs[0], outs[1], TOL[dtype])
    for g_fast, g_ref in zip(*grads, strict=True):
        assert_close(g_fast, g_ref, TOL[dtype])


@pytest.mark.parametrize('c_in, c_out, h, w', [(32, 3, 16, 16), (5, 7, 3, 6), (4, 1, 1, 1)])
def test_phase_transposed_convolution_equals_torchs(c_in, c_out, h, w, dtype):
    torch.manual_seed(0)
    x, weight, bias = torch.randn(2, c_in, h, w), torch.randn(c_in, c_out, 4, 4), torch.randn(c_out)
    target = torch.randn(2, c_out, 2 * h, 2 * w)
    outs, grads = [], []
    for f in (PhaseConvTranspose.apply, lambda *a: nn.functional.conv_transpose2d(*a, stride=2, padding=1)):
        inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
        out = f(*inputs)
        outs.append(out.detach())
        grads.append(torch.autograd.grad((out * target).sum(), inputs))
    assert outs[0].shape == (2, c_out, 2 * h, 2 * w)
    assert_close(outs[0], outs[1], TOL[dtype])
    for g_phase, g_torch in zip(*grads, strict=True):
        assert_close(g_phase, g_torch, TOL[dtype])


@pytest.mark.parametrize('x_dtype', [torch.bfloat16, torch.float32])
def test_phase_transposed_convolution_under_bf16_autocast(x_dtype):
    """--amp: bfloat16 out and float32 gradients for float32 parameters, as torch's layer under autocast."""
    torch.manual_seed(0)
    x, weight, bias = torch.randn(2, 8, 5, 5), torch.randn(8, 3, 4, 4), torch.randn(3)
    res = []
    for f in (PhaseConvTranspose.apply, lambda *a: nn.functional.conv_transpose2d(*a, stride=2, padding=1)):
        inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = f(inputs[0].to(x_dtype), *inputs[1:])
        res.append((out, torch.autograd.grad(out.float().square().sum(), inputs)))
    (out, grads), (out_ref, grads_ref) = res
    assert out.dtype == out_ref.dtype == torch.bfloat16
    assert_close(out.float(), out_ref.float(), 1e-2)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert g.dtype == g_ref.dtype == torch.float32
        assert_close(g, g_ref, 2e-2)


def reference_of(model):
    """The same model and weights with the released SVHN decoder(s)."""
    ref = MODELS[model.name](model.params)
    for m_ref in [ref] + list(getattr(ref, 'vaes', [])):
        if m_ref.name == 'svhn':
            m_ref.dec = ReleasedSVHNDec(D)
    ref.load_state_dict(model.state_dict())
    assert ref.state_dict().keys() == model.state_dict().keys()
    return ref


def value_and_grads(model, objective, x, K, seed):
    torch.manual_seed(seed)  # the same reparameterisation noise for both models
    model.zero_grad(set_to_none=True)
    value = objective(model, x, K)
    value.backward()
    return value.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


MULTI = [('m_elbo', {}), ('m_iwae', {}), ('m_iwae_looser', {}), ('m_dreg', {}), ('m_dreg_looser', {}),
         ('m_dreg', {'true_dreg': True}), ('m_dreg_looser', {'true_dreg': True})]
UNI = [('elbo', {}), ('iwae', {}), ('dreg', {}), ('dreg', {'true_dreg': True})]


@pytest.mark.parametrize('model_name, objectives', [('mnist_svhn', MULTI), ('svhn', UNI)])
def test_objectives_equal_reference(model_name, objectives, dtype, monkeypatch):
    torch.manual_seed(1)
    model = MODELS[model_name](flags())
    with torch.no_grad():
        for m in [model] + list(getattr(model, 'vaes', [])):
            m._pz_params[1].normal_()  # a learned, non-uniform prior scale
    ref = reference_of(model)
    B, K = 5, 3
    g = torch.Generator().manual_seed(2)
    x = torch.rand(B, 3, 32, 32, generator=g)
    if model_name == 'mnist_svhn':
        x = [torch.rand(B, 1, 28, 28, generator=g), x]
    for name, kw in objectives:
        def objective(m, x, K, name=name, kw=kw):
            return O.OBJECTIVES[name](m, x, K, **kw)
        v_fast, g_fast = value_and_grads(model, objective, x, K, seed=3)
        with monkeypatch.context() as mp:
            mp.setattr(O, '_log_px_z', released_log_px_z)
            v_ref, g_ref = value_and_grads(ref, objective, x, K, seed=3)
        assert_close(v_fast, v_ref, TOL_OBJECTIVES[dtype])
        assert g_fast.keys() == g_ref.keys() and len(g_fast) > 4, name
        for n in g_ref:
            assert_close(g_fast[n], g_ref[n], TOL_OBJECTIVES[dtype])


@pytest.mark.parametrize('family', [dist.Laplace, dist.Normal])
def test_written_out_likelihood_equals_log_prob(family):
    torch.manual_seed(4)
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    loc = torch.rand(2, 4, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    fixed = family(loc, torch.tensor(0.75, dtype=torch.float64))  # scale broadcast: the fast path
    assert not any(fixed.scale.stride())
    value = O._log_px_z(fixed, x, 1.7)
    expected = family(loc, torch.full_like(loc, 0.75)).log_prob(x).sum((2, 3, 4)) * 1.7
    assert value.shape == (2, 4)
    assert torch.allclose(value, expected, rtol=1e-12)
    g, = torch.autograd.grad(value.sum(), loc)
    g_exp, = torch.autograd.grad(expected.sum(), loc)
    assert torch.allclose(g, g_exp, rtol=1e-12)
    # a scale per pixel takes torch's log_prob (the general path), with the same values
    per_pixel = family(loc, torch.full((2, 4, 3, 8, 8), 0.75, dtype=torch.float64))
    assert torch.allclose(O._log_px_z(per_pixel, x, 1.7), expected, rtol=1e-12)


def test_evaluation_chunks_bound_memory_training_chunks_as_released():
    x = [torch.zeros(128, 1, 28, 28), torch.zeros(128, 3, 32, 32)]
    # training (gradients on): the released rule; the paper's batch is one chunk
    assert O.chunk_size(x, 1000) == min(128, int(1e8 * (1 / (1000 * 784) + 1 / (1000 * 3072))))
    assert O.chunk_size(x, 30) == 128
    with torch.no_grad():
        # evaluation: at most 1e8 likelihood parameters per chunk, M * K * (784 + 3072) per item
        assert O.chunk_size(x, 1000) == int(1e8 / (1000 * 2 * (784 + 3072))) == 12
        assert O.chunk_size(x, 30) == 128  # the per-epoch test pass at the paper's K: one chunk
        assert O.chunk_size(x, 10 ** 6) == 1  # never fewer than one item
        assert O.chunk_size(x[1], 1000) == int(1e8 / (1000 * 3072))  # unimodal: the released rule


class FixedNoiseLaplace(dist.Laplace):
    """Posterior whose k-th sample uses the same noise for every item, so that
    splitting a batch into chunks does not change the samples."""
    eps = None

    def rsample(self, sample_shape=torch.Size()):
        return self.loc + self.scale * self.eps[:sample_shape[0]].unsqueeze(1)


def test_evaluation_in_chunks_equals_one_chunk(monkeypatch):
    torch.manual_seed(5)
    model = MODELS['mnist_svhn'](flags()).eval()
    FixedNoiseLaplace.eps = dist.Laplace(0., 1.).sample((10, D))
    for vae in model.vaes:
        vae.qz_x = FixedNoiseLaplace
    g = torch.Generator().manual_seed(6)
    x = [torch.rand(5, 1, 28, 28, generator=g), torch.rand(5, 3, 32, 32, generator=g)]
    K = 10
    with torch.no_grad():
        one = O.m_iwae(model, x, K)
        monkeypatch.setattr(O, 'MEMORY_BUDGET', 2 * K * 2 * (784 + 3072))  # 2 items per chunk
        assert len(O._chunks(x, K)) == 3
        chunked = O.m_iwae(model, x, K)
    assert torch.allclose(chunked, one, rtol=1e-6)


# ---------------------------------------------------------------- --amp and --compile

def test_amp_and_compile_off_by_default():
    args = parse_args(['--model', 'mnist_svhn'])
    assert args.amp is False and args.compile is False


def test_compile_keeps_the_state_dict_keys():
    """--compile compiles the networks in place: checkpoints keep the released keys."""
    model = MODELS['mnist_svhn'](flags())
    keys = list(model.state_dict())
    compile_networks(model)  # compiles lazily, at the first call
    assert list(model.state_dict()) == keys and all('_orig_mod' not in k for k in keys)


@pytest.mark.slow
def test_amp_training_steps_close_to_float32(offline_data_dir):
    """The paper's objective (m_dreg_looser) on real offline batches: the same model,
    batches and samples trained for a few Adam steps in float32 and under --amp's
    autocast: every step's loss within AMP_TOLERANCE."""
    args = argparse.Namespace(data_dir=offline_data_dir, offline=True, pair_multiplier=1)
    data = load_data('mnist_svhn', args, 'train')
    torch.manual_seed(7)
    model = MODELS['mnist_svhn'](flags(latent_dim=20))
    objective = model_objective(model, 'dreg', looser=True)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    losses = {}
    for name, obj in (('fp32', objective), ('amp', amp_objective(objective, torch.device('cpu')))):
        model.load_state_dict(init)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, amsgrad=True)
        losses[name] = []
        for i, (x, _) in zip(range(3), BatchLoader(data, 32, shuffle=True, seed=0), strict=False):  # same batches
            torch.manual_seed(100 + i)
            opt.zero_grad()
            loss = -obj(model, x, 4)
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    for a, b in zip(losses['amp'], losses['fp32'], strict=True):
        print(f'amp {a:.2f}  fp32 {b:.2f}  relative difference {abs(a - b) / abs(b):.1e}')
        assert a != b and abs(a - b) / abs(b) < AMP_TOLERANCE, (a, b)


@pytest.mark.slow
def test_amp_run_close_to_float32(offline_data_dir, tmp_path):
    """main.py --amp end to end: the same short run (seed, data, batches) in float32
    and with --amp; the per-epoch losses within AMP_TOLERANCE (relative)."""
    common = ['--model', 'mnist_svhn', '--obj', 'elbo', '--K', '1', '--learn-prior', '--epochs', '1',
              '--batch-size', '512', '--offline', '--pair-multiplier', '1', '--no-analytics',
              '--data-dir', offline_data_dir]
    losses = {}
    for name, extra in (('fp32', []), ('amp', ['--amp'])):
        out = tmp_path / name
        assert main_module.main(common + ['--out-dir', str(out)] + extra) == 0
        run, = glob.glob(os.path.join(out, 'mnist_svhn', '*'))
        losses[name] = json.load(open(os.path.join(run, 'losses.json')))
        assert json.load(open(os.path.join(run, 'args.json')))['flags']['amp'] is (name == 'amp')
    for key in ('train', 'test'):
        a, b = losses['amp'][key][0], losses['fp32'][key][0]
        assert a != b  # bf16 did run
        assert abs(a - b) / abs(b) < AMP_TOLERANCE, (key, a, b)


# ---------------------------------------------------------------- --amp's likelihood term

@pytest.mark.parametrize('family, p', [(dist.Laplace, 1), (dist.Normal, 2)])
def test_amp_likelihood_is_float32_on_the_bf16_means(family, p):
    """Under --amp the decoder means are bfloat16; the log density is the float32 one of those means
    (as torch's log_prob on them in float64), and its gradient is the float64 one, in bfloat16."""
    torch.manual_seed(8)
    x = torch.rand(4, 3, 8, 8)
    loc = torch.rand(2, 4, 3, 8, 8).to(torch.bfloat16).requires_grad_()
    w = torch.rand(2, 4)
    value = O._log_px_z(family(loc, torch.tensor(0.75)), x, 1.7)
    (value * w).sum().backward()
    loc64 = loc.detach().double().requires_grad_()
    expected = family(loc64, torch.full_like(loc64, 0.75)).log_prob(x.double()).sum((2, 3, 4)) * 1.7
    (expected * w.double()).sum().backward()
    assert value.dtype == torch.float32 and loc.grad.dtype == torch.bfloat16
    assert torch.allclose(value.double(), expected.detach(), rtol=1e-6)
    assert_close(loc.grad.double(), loc64.grad, 2 ** -7)  # bfloat16 has 8 significant bits
    assert (loc.grad.double() - loc64.grad).abs().max() > 0  # the gradient was computed in bfloat16


def test_amp_decoders_bf16_encoders_and_log_densities_float32():
    """amp_objective: the decoders' means bfloat16, the posteriors and every log weight float32."""
    model = MODELS['cmnist_oscn'](argparse.Namespace(**vars(flags()), arch='mlp', dist='normal',
                                                     joint_prior='laplace', joint_posterior='moe'))
    x = [torch.rand(3, 3, 28, 28), torch.rand(3, 3, 32, 32)]
    seen = {}
    orig = O._log_px_z

    def spy(px_z, x, scaling):
        seen.setdefault('loc', px_z.loc.dtype)
        out = orig(px_z, x, scaling)
        seen.setdefault('log_px_z', out.dtype)
        return out
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(O, '_log_px_z', spy)
        value = amp_objective(model_objective(model, 'dreg'), torch.device('cpu'))(model, x, 4)
    assert seen == {'loc': torch.bfloat16, 'log_px_z': torch.float32} and value.dtype == torch.float32
    assert model.experts(x)[0].loc.dtype == torch.float32
