"""The five CUB models (the released vae_cub_*.py, mmvae_cub_*.py): shapes, distributions and scales, tied
caption embedding/output weights, the caption likelihood with id 0 ignored."""
import argparse
import math

import pytest
import torch
import torch.distributions as dist
import torch.nn.functional as F

from src.models import MODELS
from src.models.cub_sent import CaptionCategorical
from src.objectives import _log_px_z, model_objective
from src.report.metrics import chunk_items, likelihood_terms

V, D, B, K = 23, 6, 3, 4
ETA = 1e-6


def params(**kw):
    p = dict(latent_dim=D, learn_prior=False, llik_scaling=0., vocab_size=V, num_hidden_layers=1)
    p.update(kw)
    return argparse.Namespace(**p)


def data(name, n=B):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(n, 3, 64, 64, generator=g)
    cap = torch.randint(0, V, (n, 32), generator=g)
    ft = torch.randn(n, 2048, generator=g) * 3
    return {'cubI': img, 'cubS': cap, 'cubIft': ft, 'cubIS': [img, cap], 'cubISft': [ft, cap]}[name]


@pytest.fixture(scope='module')
def models():
    torch.manual_seed(0)
    return {n: MODELS[n](params()).eval() for n in ('cubI', 'cubS', 'cubIft', 'cubIS', 'cubISft')}


DECODED = {'cubI': (3, 64, 64), 'cubS': (32, V), 'cubIft': (2048,), 'cubSft': (32, V)}
FAMILIES = {  # prior, posterior, likelihood (docs/reproduction.md)
    'cubI': (dist.Laplace, dist.Laplace, dist.Laplace),
    'cubS': (dist.Normal, dist.Normal, CaptionCategorical),
    'cubIft': (dist.Normal, dist.Normal, dist.Laplace),
}


@pytest.mark.parametrize('name', ['cubI', 'cubS', 'cubIft'])
def test_unimodal_shapes_and_families(models, name):
    m = models[name]
    x = data(name)
    qz_x, px_z, zs = m(x, K)
    assert zs.shape == (K, B, D) and qz_x.batch_shape == (B, D)
    assert isinstance(m.pz(*m.pz_params), FAMILIES[name][0]) and isinstance(qz_x, FAMILIES[name][1])
    assert isinstance(px_z, FAMILIES[name][2])
    assert tuple(px_z.mean.shape) == (K, B, *DECODED[name])
    assert _log_px_z(px_z, x, 1.0).shape == (K, B)
    assert tuple(m.generate(5).shape) == (5, *DECODED[name])
    assert tuple(m.reconstruct(x).shape) == (B, *DECODED[name])
    if name != 'cubS':  # fixed likelihood scale 0.01
        assert torch.allclose(px_z.scale, torch.tensor(0.01))
    if name == 'cubI':
        assert px_z.mean.min() > 0 and px_z.mean.max() < 1  # sigmoid
    # prior: zero loc, scale softplus(raw) + eta; raw starts at 0
    loc, scale = m.pz_params
    assert torch.equal(loc, torch.zeros(1, D)) and torch.allclose(scale, torch.full((1, D), math.log(2) + ETA))


@pytest.mark.parametrize('name,parts', [('cubIS', ('cubI', 'cubS')), ('cubISft', ('cubIft', 'cubSft'))])
def test_multimodal_shapes_priors_and_scaling(models, name, parts):
    m = models[name]
    x = data(name)
    assert m.modalities == list(parts)
    qz_xs, px_zs, zss = m(x, K)
    for e in range(2):
        assert zss[e].shape == (K, B, D)
        for d in range(2):
            assert tuple(px_zs[e][d].mean.shape) == (K, B, *DECODED[parts[d]])
    recon = m.reconstruct(x)
    assert [[tuple(r.shape) for r in row] for row in recon] == [[(B, *DECODED[p]) for p in parts]] * 2
    assert [tuple(g.shape) for g in m.generate(7)] == [(7, *DECODED[p]) for p in parts]
    loc, scale = m.pz_params
    if name == 'cubIS':  # Laplace, softmax(raw) * D + eta
        assert isinstance(m.pz(loc, scale), dist.Laplace)
        assert torch.allclose(scale, torch.full((1, D), 1 + ETA))
        assert m.vaes[0].llik_scaling == pytest.approx(32 / (3 * 64 * 64))
    else:  # Normal, softplus(raw) + eta
        assert isinstance(m.pz(loc, scale), dist.Normal)
        assert torch.allclose(scale, torch.full((1, D), math.log(2) + ETA))
        assert m.vaes[0].llik_scaling == pytest.approx(32 / 2048)
    assert m.vaes[1].llik_scaling == 1.0
    assert MODELS[name](params(llik_scaling=0.002)).vaes[0].llik_scaling == 0.002  # the flag replaces the default
    for vae in m.vaes:  # released: the unimodal VAEs share the joint prior's parameters
        assert vae._pz_params is m._pz_params


def test_encoder_scales_are_softplus_plus_eta(models):
    """CUB encoders: scale = softplus(v) + eta (checked with a constant head)."""
    m = models['cubI']
    with torch.no_grad():
        m.enc.c2.weight.zero_()
        m.enc.c2.bias.fill_(0.3)
    _, scale = m.enc(data('cubI'))
    assert torch.allclose(scale, torch.full((B, D), F.softplus(torch.tensor(0.3)).item() + ETA))
    m = MODELS['cubIft'](params())
    with torch.no_grad():
        m.enc.fc22.weight.zero_()
        m.enc.fc22.bias.fill_(-2.0)
    _, scale = m.enc(data('cubIft'))
    assert torch.allclose(scale, torch.full((B, D), F.softplus(torch.tensor(-2.0)).item() + ETA))
    m = MODELS['cubS'](params())
    with torch.no_grad():
        m.enc.c2.weight.zero_()  # bias-free heads: v = 0
    _, scale = m.eval().enc(data('cubS'))
    assert torch.allclose(scale, torch.full((B, D), math.log(2) + ETA))


def test_architectures_as_released(models):
    s, sft = models['cubS'], models['cubISft'].vaes[1]
    assert s.enc.embedding.weight.shape == (V, 128) and s.enc.embedding.padding_idx == 0
    convs = [c for c in s.enc.enc if isinstance(c, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 128, 128] and all(c.bias is None for c in convs)
    assert [c.kernel_size for c in convs] == [(4, 4)] * 3 + [(1, 4)] * 2
    assert s.enc.c1.bias is None
    convs = [c for c in sft.enc.enc if isinstance(c, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256, 512] and all(c.bias is not None for c in convs)
    deconvs = [c for c in sft.dec.dec if isinstance(c, torch.nn.ConvTranspose2d)]
    assert [c.out_channels for c in deconvs] == [512, 256, 128, 64, 32, 1]
    i = models['cubI']
    assert [c.out_channels for c in i.enc.enc if isinstance(c, torch.nn.Conv2d)] == [64, 128, 256, 512]
    ft = models['cubIft']
    assert [m.out_features for m in ft.enc.modules() if isinstance(m, torch.nn.Linear)] == [1024, 512, 256, D, D]
    assert [m.out_features for m in ft.dec.modules() if isinstance(m, torch.nn.Linear)] == [256, 512, 1024, 2048]


@pytest.mark.parametrize('which', ['cubS', 'cubISft'])
def test_embedding_and_output_weights_are_tied(models, which):
    m = MODELS[which](params())
    vae = m if which == 'cubS' else m.vaes[1]
    assert vae.dec.toVocabSize.weight is vae.enc.embedding.weight
    n_tensors = sum(1 for _ in m.parameters())
    assert n_tensors == len({id(p) for p in m.parameters()})  # counted once
    state = m.state_dict()
    prefix = '' if which == 'cubS' else 'vaes.1.'
    assert torch.equal(state[prefix + 'dec.toVocabSize.weight'], state[prefix + 'enc.embedding.weight'])
    # one training step moves both together (the output layer's gradient reaches the embedding)
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    before = vae.enc.embedding.weight.detach().clone()
    obj = model_objective(m, 'elbo')
    (-obj(m, data(which), 1)).backward()
    assert vae.dec.toVocabSize.weight.grad is vae.enc.embedding.weight.grad
    opt.step()
    assert not torch.equal(before, vae.enc.embedding.weight) and vae.dec.toVocabSize.weight is vae.enc.embedding.weight
    # the embedding of id 0 gets a gradient only through the output layer (padding_idx = 0 in the look-up)
    assert vae.enc.embedding.padding_idx == 0


def test_caption_likelihood_ignores_id_0_and_scores_padding():
    """A quirk of the released code, kept: log p(x|z) per token is minus the cross-entropy with token id 0
    ('<exc>', the unknown word) ignored; the '<pad>' tokens (id 1) ARE scored."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 32, V, generator=g)
    x = torch.randint(3, V, (3, 32), generator=g)
    x[:, 20] = 2                       # '<eos>'
    x[:, 21:] = 1                      # '<pad>'
    x[0, 5] = 0                        # unknown words
    x[2, 0] = 0
    px = CaptionCategorical(logits)
    lp = px.log_prob(x)
    assert lp.shape == (2, 3, 32) and px.batch_shape == (2, 3, 32)
    by_hand = torch.log_softmax(logits, -1).gather(-1, x.expand(2, 3, 32).unsqueeze(-1)).squeeze(-1)
    by_hand = torch.where(x == 0, torch.zeros(()), by_hand)
    assert torch.allclose(lp, by_hand, atol=1e-6)
    assert (lp[:, 0, 5] == 0).all() and (lp[:, 2, 0] == 0).all()
    assert (lp[:, :, 21:] < 0).all()   # padding scored
    # the objectives sum it over the 32 tokens
    assert torch.allclose(_log_px_z(px, x, 1.0), by_hand.sum(-1), atol=1e-5)
    # mean holds the logits (released convention), mode the arg-max ids
    assert px.mean is logits and torch.equal(px.mode, logits.argmax(-1))
    assert px.sample().shape == (2, 3, 32)


def test_objectives_and_likelihood_terms_run(models):
    """The paper's objective trains each model; calculate_likelihoods' terms work on them."""
    for name in ('cubI', 'cubS', 'cubIft', 'cubIS', 'cubISft'):
        m = MODELS[name](params(learn_prior=True)).train()
        value = model_objective(m, 'dreg', looser=True)(m, data(name), 2)
        assert torch.isfinite(value)
        (-value).backward()
        assert all(p.grad is not None for p in m.parameters() if p.requires_grad and p.dim() > 1)
    for name in ('cubIS', 'cubISft'):
        m = models[name]
        t = likelihood_terms(m, data(name), 3)
        assert t['joint'].shape == (B,) and torch.isfinite(t['joint']).all()
        assert all(torch.isfinite(c).all() for row in t['cross'] for c in row)
        assert chunk_items(m, 3) >= 1
