"""Number-sense models (cmnist, oscn, cmnist_oscn): shapes, distributions,
scales, likelihood scaling, and their flags."""
import math

import pytest
import torch
import torch.distributions as dist
import torch.nn as nn

from src.cli import ARCH_FLAGS, build_parser, parse_args
from src.errors import UserError
from src.models import MODELS
from src.objectives import model_objective

D = 20


def params(*argv):
    return build_parser().parse_args(list(argv))


def batch(name, B=4):
    size = {'cmnist': (3, 28, 28), 'oscn': (3, 32, 32)}
    if name == 'cmnist_oscn':
        return [torch.rand(B, *size['cmnist']), torch.rand(B, *size['oscn'])]
    return torch.rand(B, *size[name])


@pytest.mark.parametrize('arch', ['mlp', 'cnn'])
@pytest.mark.parametrize('name,size', [('cmnist', (3, 28, 28)), ('oscn', (3, 32, 32))])
def test_unimodal_shapes_and_distributions(name, size, arch):
    torch.manual_seed(0)
    model = MODELS[name](params('--model', name, '--arch', arch, '--num-hidden-layers', '4'))
    assert model.data_size == size and model.dataset == name
    x = batch(name)
    qz_x, px_z, zs = model(x, K=3)
    assert zs.shape == (3, 4, D)
    assert isinstance(qz_x, dist.Normal) and isinstance(px_z, dist.Normal)
    assert model.pz is dist.Normal
    assert px_z.mean.shape == (3, 4, *size)
    assert ((px_z.mean > 0) & (px_z.mean < 1)).all()
    assert torch.allclose(px_z.stddev, torch.tensor(0.75))
    # Posterior scale softmax(v) * D + eta: the D scales sum to D (+ D * eta).
    assert torch.allclose(qz_x.scale.sum(-1), torch.full((4,), D + D * 1e-6))
    # Prior: zero loc, scale softmax(0) * D = 1.
    loc, scale = model.pz_params
    assert torch.equal(loc, torch.zeros(1, D)) and torch.allclose(scale, torch.ones(1, D))
    assert model.llik_scaling == 1.0
    assert model.generate(5).shape == (5, *size)
    assert model.reconstruct(x).shape == x.shape


def test_mlp_has_the_published_shape():
    """--num-hidden-layers 4 of 400 units, in the encoder and the decoder."""
    model = MODELS['cmnist'](params('--model', 'cmnist', '--num-hidden-layers', '4'))
    enc = [m for m in model.enc.modules() if isinstance(m, nn.Linear)]
    dec = [m for m in model.dec.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in enc] == \
        [(2352, 400), (400, 400), (400, 400), (400, 400), (400, D), (400, D)]
    assert [(m.in_features, m.out_features) for m in dec] == \
        [(D, 400), (400, 400), (400, 400), (400, 400), (400, 2352)]
    oscn = MODELS['oscn'](params('--model', 'oscn', '--num-hidden-layers', '4'))
    assert oscn.enc.enc[0][0].in_features == 3072 and oscn.dec.fc3.out_features == 3072


def test_laplace_family_flag():
    model = MODELS['cmnist'](params('--model', 'cmnist', '--dist', 'laplace'))
    qz_x, px_z, _ = model(batch('cmnist'), K=2)
    assert isinstance(qz_x, dist.Laplace) and isinstance(px_z, dist.Laplace) and model.pz is dist.Laplace


@pytest.mark.parametrize('arch', ['mlp', 'cnn'])
def test_mmvae_joint_prior_scaling_and_cross_decoding(arch):
    model = MODELS['cmnist_oscn'](params('--model', 'cmnist_oscn', '--arch', arch))
    assert model.modalities == ['cmnist', 'oscn']
    assert model.pz is dist.Laplace  # joint prior Laplace, unimodal parts Normal
    assert torch.allclose(model.pz_params[1], torch.ones(1, D))
    assert model.vaes[0].llik_scaling == pytest.approx((3 * 32 * 32) / (3 * 28 * 28))
    assert model.vaes[0].llik_scaling == pytest.approx(1.3061224489795917)
    assert model.vaes[1].llik_scaling == 1.0
    qz_xs, px_zs, zss = model(batch('cmnist_oscn'), K=2)
    assert all(isinstance(q, dist.Normal) for q in qz_xs)
    assert [[tuple(p.mean.shape) for p in row] for row in px_zs] == \
        [[(2, 4, 3, 28, 28), (2, 4, 3, 32, 32)]] * 2
    gen = model.generate(3)
    assert gen[0].shape == (3, 3, 28, 28) and gen[1].shape == (3, 3, 32, 32)


def test_llik_scaling_flag_and_joint_prior_flag():
    model = MODELS['cmnist_oscn'](params('--model', 'cmnist_oscn', '--llik_scaling', '2.5',
                                         '--joint-prior', 'normal'))
    assert model.vaes[0].llik_scaling == 2.5 and model.vaes[1].llik_scaling == 1.0
    assert model.pz is dist.Normal


@pytest.mark.parametrize('name', ['cmnist', 'oscn', 'cmnist_oscn'])
def test_dreg_trains(name):
    """One dreg step: finite objective, gradients reach both networks."""
    torch.manual_seed(0)
    model = MODELS[name](params('--model', name, '--num-hidden-layers', '2'))
    obj = model_objective(model, 'dreg')
    value = obj(model, batch(name), 3)
    assert math.isfinite(value.item())
    (-value).backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_flags_are_number_sense_only():
    assert 'arch' in ARCH_FLAGS
    args = parse_args(['--model', 'cmnist', '--arch', 'cnn', '--dist', 'laplace'])
    assert (args.arch, args.dist, args.joint_prior) == ('cnn', 'laplace', 'laplace')
    for flag, value in (('--arch', 'cnn'), ('--dist', 'laplace'), ('--joint-prior', 'normal')):
        with pytest.raises(UserError, match=f'{flag} only applies to the number-sense models'):
            parse_args(['--model', 'mnist', flag, value])
    parse_args(['--model', 'mnist'])  # defaults are fine for every model


def test_mlp_decoder_means_are_clamped_as_the_authors():
    """DecMLP of the released number-sense code clamps sigmoid means to [1e-6, 1 - 1e-6]."""
    model = MODELS['cmnist'](params('--model', 'cmnist', '--num-hidden-layers', '1'))
    with torch.no_grad():
        model.dec.fc3.bias[:10] = 100.0   # sigmoid(100) rounds to 1 in float32
        model.dec.fc3.bias[10:20] = -100.0  # sigmoid(-100) ~ 4e-44
    mean, scale = model.dec(torch.zeros(2, D))
    flat = mean.flatten(1)
    assert torch.all(flat[:, :10] == torch.tensor(1 - 1e-6, dtype=torch.float32))
    assert torch.all(flat[:, 10:20] == torch.tensor(1e-6, dtype=torch.float32))
    assert float(scale) == 0.75


def test_numbersense_data_flag():
    assert parse_args(['--model', 'cmnist_oscn']).numbersense_data == 'noda2024'
    assert parse_args(['--model', 'oscn', '--numbersense-data', 'extended']).numbersense_data == 'extended'
    with pytest.raises(UserError, match='--numbersense-data only applies to the number-sense models'):
        parse_args(['--model', 'mnist', '--numbersense-data', 'extended'])
