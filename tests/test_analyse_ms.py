"""The MNIST-SVHN analysis computes what the released analyse_ms.py / calculate_likelihoods.py compute:
digit classifiers over the paired training set, cached by everything that changes them; the released
budget by default; likelihood averages against a by-hand computation."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from src.cli import build_parser
from src.data import load_data
from src.data.tensors import spread_subset
from src.files import save_json, save_torch
from src.models import MODELS
from src.report import analyse_ms, calculate_likelihoods
from src.report import classifiers as C
from src.report import metrics as Mx
from src.report.runs import load_run


def tiny_items(n_images=30, rows=None, seed=0, description='tiny'):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n_images, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    digit = torch.arange(n_images) % 10
    rows = torch.arange(n_images) if rows is None else rows
    return C.Items(images, rows, digit[rows], description)


# ---------------------------------------------------------------- digit classifiers

def test_classifier_trains_over_the_pairs_images():
    """Items given by a pairing index train exactly as the materialised paired images would (one image per
    pair, repeated images seen once per pair), and take ceil(n / batch) Adam steps per epoch."""
    rows = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6])  # 23 pairs
    paired = tiny_items(rows=rows)
    materialised = C.Items(paired.images[rows], torch.arange(len(rows)), paired.labels, 'materialised')
    calls = []
    step = torch.optim.Adam.step
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.Adam, 'step', lambda self, *a, **k: calls.append(1) or step(self, *a, **k))
        a = C.train_classifier('mnist', paired, epochs=2, batch_size=10)
    assert len(calls) == C.steps(23, 2, 10) == 2 * 3
    b = C.train_classifier('mnist', materialised, epochs=2, batch_size=10)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert not a.training


def test_classifier_loss_is_the_released_one():
    """The released nets return log_softmax and train with CrossEntropyLoss: the same loss as on logits."""
    logits = torch.randn(7, 10)
    y = torch.randint(0, 10, (7,))
    assert torch.allclose(F.cross_entropy(F.log_softmax(logits, -1), y), F.cross_entropy(logits, y))


def test_test_accuracy_counts_each_pair():
    """On a paired test set an image counts once per pair it is in (the released loop over test pairs)."""
    torch.manual_seed(0)
    net = C.DigitCNN(1, 28).eval()
    rows = torch.tensor([0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4])
    test = tiny_items(n_images=5, rows=rows)
    with torch.no_grad():
        pred = net(test.images.float() / 255).argmax(-1)
    labels = torch.tensor([int(pred[0]), int(pred[0]), int(pred[0]) + 1, int(pred[1]), 0, 0, 0, 0, 0, 0, 0]) % 10
    test = C.Items(test.images, rows, labels, 'paired')
    hand = sum(int(pred[r] == y) for r, y in zip(rows.tolist(), labels.tolist(), strict=True)) / len(rows)
    assert C.test_accuracy(net, test) == pytest.approx(100.0 * hand)


def test_subset_spans_the_items():
    items = tiny_items(rows=torch.arange(30).repeat_interleave(4))  # 120 class-ordered pairs
    sub = items.subset(40)
    assert len(sub) == 40 and sorted(set(sub.labels.tolist())) == list(range(10))
    assert torch.equal(sub.rows, items.rows[spread_subset(120, 40)]) and items.subset(0) is items


def test_cache_is_keyed_by_data_pairing_and_budget(tmp_path):
    d = str(tmp_path)
    items = tiny_items(rows=torch.arange(30).repeat(2), description='paired x2')
    net, info = C.load_or_train('mnist', 'src A', items, items, d, True, epochs=1, batch_size=16)
    assert info['trained_now'] and info['steps'] == 4 and info['n_train_items'] == 60
    assert os.sep + os.path.join('classifiers', 'offline') + os.sep in info['path']
    again, info2 = C.load_or_train('mnist', 'src A', items, items, d, True, epochs=1, batch_size=16)
    assert not info2['trained_now'] and info2['path'] == info['path']
    assert info2['test_accuracy'] == info['test_accuracy']
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values(),
                                                     strict=True))
    changed = {
        'source': ('src B', items, 1, 16),
        'pairing': ('src A', tiny_items(rows=torch.arange(30).repeat(3), description='paired x3'), 1, 16),
        'images': ('src A', tiny_items(seed=1, rows=torch.arange(30).repeat(2), description='paired x2'), 1, 16),
        'epochs': ('src A', items, 2, 16),
        'batch size': ('src A', items, 1, 8),
    }
    paths = {info['path']}
    for what, (source, train, epochs, bs) in changed.items():
        _, i = C.load_or_train('mnist', source, train, items, d, True, epochs=epochs, batch_size=bs)
        assert i['trained_now'] and i['path'] not in paths, what
        paths.add(i['path'])
    key = C.cache_key('mnist', 'src A', items, 1, 16)
    assert C.cache_path(d, True, key) != C.cache_path(d, False, key)  # real and offline data never share one
    save_torch({'state_dict': net.state_dict(), 'key': {**key, 'epochs': 99}}, info['path'])  # a stale file
    assert C.load_or_train('mnist', 'src A', items, items, d, True, epochs=1, batch_size=16)[1]['trained_now']


# ---------------------------------------------------------------- analyse_ms: protocol and sets

def test_defaults_are_the_released_protocol():
    cmd = analyse_ms.parse_args(['--save-dir', 'x'])
    assert (cmd.latent_epochs, cmd.classifier_epochs, cmd.joint_samples, cmd.batch_size) == (30, 30, 10000, 256)
    assert cmd.train_items == 0 and cmd.max_items == 0 and not cmd.unpaired
    assert analyse_ms.released_protocol(cmd) == 'released'
    quick = analyse_ms.parse_args(['--save-dir', 'x', '--classifier-epochs', '1', '--unpaired'])
    assert analyse_ms.released_protocol(quick) == 'shortened or variant: --classifier-epochs 1, --unpaired True'


def fake_run(tmp_path, data_dir, model='mnist_svhn', *flags):
    """A run directory of an untrained model, as main.py writes one."""
    run = tmp_path / f'{model}_run'
    run.mkdir()
    args = build_parser().parse_args(['--model', model, '--offline', '--data-dir', data_dir, *flags])
    save_json({'flags': vars(args)}, str(run / 'args.json'))
    torch.manual_seed(0)
    save_torch(MODELS[model](args).state_dict(), str(run / 'model.pt'))
    return str(run)


@pytest.fixture(scope='module')
def ms_run(offline_data_dir, tmp_path_factory):
    return fake_run(tmp_path_factory.mktemp('ms'), offline_data_dir, 'mnist_svhn', '--pair-multiplier', '1')


@pytest.mark.slow
def test_classifiers_use_the_paired_sets_and_record_the_budget(ms_run, offline_data_dir):
    out = analyse_ms.main(['--save-dir', ms_run, '--latent-epochs', '1', '--classifier-epochs', '1',
                           '--train-items', '300', '--max-items', '100', '--joint-samples', '200'])
    assert out['protocol'].startswith('shortened') and out['budget']['train_items'] == 300
    assert out['budget']['pair_multiplier'] == 1 and out['budget']['classifier_epochs'] == 1
    args = load_run(ms_run)[0]
    paired = {s: load_data('mnist_svhn', args, s) for s in ('train', 'test')}
    for m, name in enumerate(('mnist', 'svhn')):
        info, setup = out['classifiers'][name], out['latent_accuracy_setup'][name]
        assert 'paired train set (pair multiplier 1)' in info['train_set'] and info['n_train_items'] == 300
        assert info['steps'] == 2 and info['epochs'] == 1 and info['n_test_items'] == len(paired['test'])
        assert setup['steps'] == 2 and setup['n_test_items'] == len(paired['test']) == 1000
        # the cached net, tested by hand on the paired test images of this modality
        net = C.digit_cnn(paired['train'].sources[m].shape[1:])
        net.load_state_dict(torch.load(info['path'])['state_dict'])
        test = paired['test']
        pred = C.predict_images(net, test.sources[m])[test.index[m]]
        assert info['test_accuracy'] == pytest.approx(100.0 * (pred == test.labels['digit']).float().mean().item())
        train = C.modality_items(paired['train'], m, '').subset(300)
        assert info['data'] == C.fingerprint(train.images, train.rows, train.labels)


@pytest.mark.slow
@pytest.mark.parametrize('joint', ['poe', 'mopoe'])
def test_other_joint_posteriors_encode_with_their_own_unimodal_posterior(offline_data_dir, tmp_path, joint):
    """The latent classifier of each modality trains on samples of that modality's posterior under the run's
    rule: for MVAE the expert times the prior expert (written out here), for MoPoE the expert alone."""
    run = fake_run(tmp_path, offline_data_dir, 'mnist_svhn', '--pair-multiplier', '1', '--joint-posterior', joint)
    out = analyse_ms.main(['--save-dir', run, '--latent-epochs', '1', '--classifier-epochs', '1',
                           '--train-items', '300', '--max-items', '100', '--joint-samples', '200'])
    assert out['joint_posterior'] == joint and set(out['cross_coherence']) == {'mnist->svhn', 'svhn->mnist'}
    args, model = load_run(run)
    paired = {s: load_data('mnist_svhn', args, s) for s in ('train', 'test')}
    prior_scale = model.pz_params[1]
    for m, vae in enumerate(model.vaes):
        def posterior(x, vae=vae):
            loc, scale = vae.enc(x)
            if joint == 'mopoe':
                return torch.distributions.Normal(loc, scale)
            precision = scale ** -2 + prior_scale ** -2  # the prior expert N(0, s_p^2)
            return torch.distributions.Normal(loc * scale ** -2 / precision, precision.rsqrt())
        train = C.modality_items(paired['train'], m, '').subset(300)
        test = C.modality_items(paired['test'], m, '')
        acc, _ = Mx.latent_accuracy(posterior, train.images, train.labels, test.images, test.labels, 1, 256,
                                    seed=args.seed, lr=analyse_ms.LATENT_LR, train_rows=train.rows, test_rows=test.rows)
        assert out['latent_accuracy'][vae.name] == pytest.approx(acc, abs=1e-9)


@pytest.mark.slow
def test_unpaired_variant(ms_run):
    out = analyse_ms.main(['--save-dir', ms_run, '--latent-epochs', '1', '--classifier-epochs', '1', '--unpaired',
                           '--train-items', '200', '--max-items', '50', '--joint-samples', '100'])
    assert 'unpaired svhn train images' in out['classifiers']['svhn']['train_set']
    assert out['classifiers']['svhn']['n_train_images'] == 20000  # every SVHN stand-in image, not the paired ones
    assert out['latent_accuracy_setup']['mnist']['test_set'] == 'the unpaired mnist test images'
    assert '--unpaired True' in out['protocol']


@pytest.mark.slow
def test_unimodal_runs_get_ten_times_the_latent_epochs(offline_data_dir, tmp_path):
    run = fake_run(tmp_path, offline_data_dir, 'mnist')
    out = analyse_ms.main(['--save-dir', run, '--latent-epochs', '1', '--train-items', '256'])
    setup = out['latent_accuracy_setup']['mnist']
    assert setup['epochs'] == 10 and setup['steps'] == 10 and setup['test_set'] == 'the unpaired mnist test images'
    assert 'classifiers' not in out


# ---------------------------------------------------------------- likelihoods

def hand_terms(model, xs, K):
    """Per-item joint, marginal and cross estimates written out with explicit loops (the released formulas)."""
    pz = model.pz(*model.pz_params)
    qs = [v.qz_x(*v.enc(x)) for v, x in zip(model.vaes, xs, strict=True)]
    zs = [q.rsample([K]) for q in qs]
    M = len(xs)
    lpx = [[model.vaes[d].decode(zs[e]).log_prob(xs[d]).flatten(2).sum(-1) for d in range(M)] for e in range(M)]
    lq = [[qs[m].log_prob(zs[e]).sum(-1) for m in range(M)] for e in range(M)]
    lpz = [pz.log_prob(zs[e]).sum(-1) for e in range(M)]
    lmix = [torch.logsumexp(torch.stack(lq[e]), 0) - math.log(M) for e in range(M)]
    scale = [v.llik_scaling for v in model.vaes]
    joint = torch.cat([lpz[e] + sum(scale[d] * lpx[e][d] for d in range(M)) - lmix[e] for e in range(M)])
    joint = torch.logsumexp(joint, 0) - math.log(M * K)
    marginal = [torch.logsumexp(torch.cat([lpz[e] + lpx[e][d] - lmix[e] for e in range(M)]), 0) - math.log(M * K)
                for d in range(M)]
    cross = [[torch.logsumexp(lpz[e] + lpx[e][d] - lq[e][e], 0) - math.log(K) for d in range(M)] for e in range(M)]
    return joint, marginal, cross


@pytest.mark.slow
@torch.no_grad()
def test_likelihoods_average_the_hand_computed_terms(ms_run):
    lik = calculate_likelihoods.main(['--save-dir', ms_run, '--iwae-samples', '3', '--max-items', '20',
                                      '--chunk-items', '7'])
    args, model = load_run(ms_run)
    data = load_data('mnist_svhn', args, 'test')
    torch.manual_seed(args.seed)
    sums = {'joint': 0.0, 'm': [0.0, 0.0], 'c': [[0.0, 0.0], [0.0, 0.0]]}
    for idx in spread_subset(len(data), 20).split(7):
        j, mg, cr = hand_terms(model, data.gather(idx), 3)
        sums['joint'] += j.sum().item()
        for d in range(2):
            sums['m'][d] += mg[d].sum().item()
            for e in range(2):
                sums['c'][e][d] += cr[e][d].sum().item()
    assert lik['joint'] == pytest.approx(sums['joint'] / 20, rel=1e-5)
    names = ['mnist', 'svhn']
    for d in range(2):
        assert lik['marginal'][names[d]] == pytest.approx(sums['m'][d] / 20, rel=1e-5)
        for e in range(2):
            assert lik['cross'][names[e]][names[d]] == pytest.approx(sums['c'][e][d] / 20, rel=1e-5)
    assert lik['n_items'] == 20 and lik['n_test_items'] == 1000 and lik['protocol'].startswith('shortened')
    assert model.vaes[0].llik_scaling == pytest.approx(3072 / 784)


@pytest.mark.slow
def test_unimodal_likelihood_is_iwae(offline_data_dir, tmp_path):
    run = fake_run(tmp_path, offline_data_dir, 'svhn')
    lik = calculate_likelihoods.main(['--save-dir', run, '--iwae-samples', '4', '--max-items', '6'])
    args, vae = load_run(run)
    data = load_data('svhn', args, 'test')
    torch.manual_seed(args.seed)
    with torch.no_grad():
        x = data.gather(spread_subset(len(data), 6))
        q = vae.qz_x(*vae.enc(x))
        z = q.rsample([4])
        lw = vae.pz(*vae.pz_params).log_prob(z).sum(-1) + vae.decode(z).log_prob(x).flatten(2).sum(-1) \
            - q.log_prob(z).sum(-1)
    hand = (torch.logsumexp(lw, 0) - math.log(4)).mean().item()
    assert lik['log_likelihood'] == pytest.approx(hand, rel=1e-5) and lik['test_set'] == 'test set'
    assert 'joint' not in lik
