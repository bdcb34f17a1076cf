"""Model shapes, parametrisations and the registry (docs/reproduction.md, "Distributions"); the values of the
cross-modal matrix (which samples each decoder sees)."""
import argparse

import pytest
import torch
import torch.distributions as dist

from src.models import MODELS
from src.models.vae import ETA, softmax_scale
from tests import tiny


def flags(**kw):
    d = dict(latent_dim=20, num_hidden_layers=1, learn_prior=False, llik_scaling=0.)
    d.update(kw)
    return argparse.Namespace(**d)


def test_registry_names_classes_built_from_flags():
    for name in ('mnist', 'svhn', 'mnist_svhn'):
        assert MODELS[name].name == name
        assert isinstance(MODELS[name](flags()), torch.nn.Module)
    vae, pair = MODELS['mnist'](flags()), MODELS['mnist_svhn'](flags())
    assert vae.vaes == [vae] and vae.modalities == ['mnist']  # a VAE is a model of one modality, itself
    assert pair.modalities == ['mnist', 'svhn'] and [v.name for v in pair.vaes] == pair.modalities


@pytest.mark.parametrize('name, size', [('mnist', (1, 28, 28)), ('svhn', (3, 32, 32))])
def test_unimodal_shapes_and_distributions(name, size):
    m = MODELS[name](flags(latent_dim=7))
    x = torch.rand(5, *size)
    qz_x, px_z, zs = m(x, K=3)
    assert zs.shape == (3, 5, 7)
    assert isinstance(qz_x, dist.Laplace) and isinstance(px_z, dist.Laplace) and m.pz is dist.Laplace
    assert px_z.batch_shape == (3, 5, *size)
    assert torch.all(px_z.scale == 0.75)  # the released fixed likelihood scale
    assert 0 < px_z.mean.min() and px_z.mean.max() < 1
    loc, scale = m.enc(x)
    # posterior scale = softmax(v) * D + eta: sums to D (+ D eta)
    assert torch.allclose(scale.sum(-1), torch.full((5,), 7 + 7 * ETA), atol=1e-4)
    assert m.generate(6).shape == (6, *size)
    assert m.reconstruct(x).shape == x.shape


def test_mnist_mean_clamped_and_hidden_layers():
    m = MODELS['mnist'](flags(num_hidden_layers=3))
    assert len(m.enc.enc) == 3 and len(m.dec.dec) == 3
    with torch.no_grad():
        m.dec.fc3.bias.fill_(100.)  # sigmoid saturates at 1: clamp keeps 1 - eta
    mean, _ = m.dec(torch.zeros(2, 20))
    assert mean.max().item() == pytest.approx(1 - ETA)


@pytest.mark.parametrize('learn', [False, True])
def test_prior_parametrisation(learn):
    m = MODELS['mnist_svhn'](flags(learn_prior=learn, latent_dim=4))
    loc, scale = m.pz_params
    assert loc.shape == scale.shape == (1, 4)
    assert torch.all(loc == 0) and torch.allclose(scale, torch.ones(1, 4))  # softmax(0) * D, no eta
    assert m._pz_params[1].requires_grad is learn and m._pz_params[0].requires_grad is False
    with torch.no_grad():
        m._pz_params[1].copy_(torch.tensor([[0., 1., 2., 3.]]))
    assert torch.allclose(m.pz_params[1], torch.softmax(torch.tensor([0., 1., 2., 3.]), 0) * 4)


def test_llik_scaling_default_and_override():
    m = MODELS['mnist_svhn'](flags())
    assert m.vaes[0].llik_scaling == pytest.approx(3072 / 784) == pytest.approx(3.918, abs=1e-3)
    assert m.vaes[1].llik_scaling == 1.0
    m = MODELS['mnist_svhn'](flags(llik_scaling=2.5))
    assert m.vaes[0].llik_scaling == 2.5 and m.vaes[1].llik_scaling == 1.0


def test_mnist_svhn_cross_matrix():
    m = MODELS['mnist_svhn'](flags())
    x = [torch.rand(4, 1, 28, 28), torch.rand(4, 3, 32, 32)]
    qz_xs, px_zs, zss = m(x, K=2)
    assert len(qz_xs) == 2 and [z.shape for z in zss] == [(2, 4, 20)] * 2
    for e in range(2):  # row = encoder, column = decoder
        assert px_zs[e][0].batch_shape == (2, 4, 1, 28, 28)
        assert px_zs[e][1].batch_shape == (2, 4, 3, 32, 32)
    recon = m.reconstruct(x)
    assert recon[0][1].shape == (4, 3, 32, 32) and recon[1][0].shape == (4, 1, 28, 28)
    gens = m.generate(3)
    assert gens[0].shape == (3, 1, 28, 28) and gens[1].shape == (3, 3, 32, 32)


def test_state_dict_keys_match_released_code():
    keys = set(MODELS['mnist_svhn'](flags()).state_dict())
    for k in ('_pz_params.0', '_pz_params.1', 'vaes.0.enc.enc.0.0.weight', 'vaes.0.enc.fc21.weight',
              'vaes.0.dec.fc3.weight', 'vaes.1.enc.enc.0.weight', 'vaes.1.enc.c1.weight',
              'vaes.1.dec.dec.0.weight'):
        assert k in keys, k


@pytest.mark.parametrize('joint', ['moe', 'poe', 'mopoe'])
def test_cross_matrix_decodes_each_encoders_samples(joint):
    """forward's px_zs[e][d] is decoder d applied to the samples of q(z|x_e), the posterior of modality e
    alone under the joint rule (its own expert; with the product of experts, the product with the prior
    expert), written out on a tiny model with fixed noise; reconstruct shows the means of the same matrix."""
    torch.manual_seed(0)
    m = tiny.TinyPairFixed(tiny.params(joint=joint))
    with torch.no_grad():
        m._pz_params[1].copy_(torch.randn(1, 3))
    xs = [torch.rand(4, tiny.X), torch.rand(4, tiny.X)]
    qz_xs, px_zs, zss = m(xs, K=3)
    p_scale = softmax_scale(m._pz_params[1])
    for e, (vae, x) in enumerate(zip(m.vaes, xs, strict=True)):
        loc, scale = vae.enc(x)
        if joint == 'poe':  # precision-weighted with the prior expert N(0, p_scale)
            precision = scale ** -2 + p_scale ** -2
            loc, scale = loc * scale ** -2 / precision, precision ** -0.5
        z = loc + scale * m.eps[:3]
        assert torch.allclose(qz_xs[e].loc, loc) and torch.allclose(qz_xs[e].scale, scale)
        assert torch.allclose(zss[e], z)
        for d, decoder in enumerate(m.vaes):
            assert torch.allclose(px_zs[e][d].loc, decoder.dec(z)[0]), (e, d)
        recon = m.reconstruct(xs)
        for d, decoder in enumerate(m.vaes):
            assert torch.allclose(recon[e][d], decoder.dec(z[:1])[0].squeeze(0)), (e, d)
    assert [z.shape for z in m(xs)[2]] == [(1, 4, 3)] * 2  # one sample by default, as the released forward
    assert not any(t.requires_grad for row in m.reconstruct(xs) for t in row)  # figures: no graph kept
    assert not any(t.requires_grad for t in m.generate(5))
    assert not m.vaes[0].reconstruct(xs[0]).requires_grad and not m.vaes[0].generate(5).requires_grad
    with pytest.raises(ValueError):  # one input per modality
        m.experts(xs[:1])


@pytest.mark.parametrize('model, joint, ok', [('mnist', 'poe', False), ('mnist', 'moe', True),
                                               ('mnist_svhn', 'poe', True)])
def test_joint_posterior_applies_to_multimodal_models_only(model, joint, ok):
    from src.cli import check_model_flags, parse_args
    from src.errors import UserError
    argv = ['--model', model, '--joint-posterior', joint]
    if ok:
        check_model_flags(parse_args(argv))
    else:
        with pytest.raises(UserError, match='one modality'):
            check_model_flags(parse_args(argv))
