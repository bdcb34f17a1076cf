"""calculate_likelihoods.py and analyse_ms.py end to end on a short --offline run,
the per-epoch analytics and --logp of training, and bad --save-dir input."""
import argparse
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from scipy import stats

import main as main_py
from src.cli import build_parser
from src.data import load_data
from src.files import save_json, save_torch
from src.models import MODELS
from src.report import analyse_ms, calculate_likelihoods
from src.report import classifiers as C
from src.report.runs import run_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOGP_K = 3


@pytest.fixture(scope='module')
def trained_run(offline_data_dir, tmp_path_factory):
    """One epoch of mnist_svhn on the offline data, with analytics and --logp (K patched small)."""
    out = tmp_path_factory.mktemp('runs')
    mp = pytest.MonkeyPatch()
    mp.setattr('src.train.LOGP_K', LOGP_K)
    try:
        rc = main_py.main(['--model', 'mnist_svhn', '--offline', '--epochs', '1', '--pair-multiplier', '1',
                           '--obj', 'elbo', '--K', '1', '--batch-size', '64', '--logp',
                           '--out-dir', str(out), '--data-dir', offline_data_dir])
    finally:
        mp.undo()
    assert rc == 0
    (run,) = [os.path.join(out, 'mnist_svhn', d) for d in os.listdir(os.path.join(out, 'mnist_svhn'))]
    return run


def script(name, *argv, module=False):
    cmd = [sys.executable] + (['-m', f'src.report.{name}'] if module else [os.path.join('src', 'report', f'{name}.py')])
    return subprocess.run(cmd + list(argv), cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_training_writes_analytics_loss_curve_and_logp(trained_run):
    figs = os.listdir(os.path.join(trained_run, 'figures'))
    assert {'emb_umap_001.png', 'kl_distance_001.png', 'losses.png'} <= set(figs)
    with open(os.path.join(trained_run, 'analytics', 'latents_001.json')) as f:
        a = json.load(f)
    assert a['sources'] == ['prior p(z)', 'q(z|mnist)', 'q(z|svhn)']
    n = 3 * a['K'] * 64  # prior + two posteriors, K samples of the first test batch
    assert len(a['umap']['x']) == len(a['umap']['source']) == n
    assert all(math.isfinite(v) for v in a['umap']['x'])
    kl = a['kl_per_dimension']
    assert len(kl) == 3 and all(v['n_items'] == 64 and len(v['median']) == 20 for v in kl.values())
    v = kl['KL(q(z|mnist) || p(z))']
    assert min(v['min']) >= 0 and all(a <= b <= c <= d <= e for a, b, c, d, e in
                                      zip(v['min'], v['q1'], v['median'], v['q3'], v['max'], strict=True))

    with open(os.path.join(trained_run, 'logp.json')) as f:
        logp = json.load(f)
    with open(os.path.join(trained_run, 'losses.json')) as f:
        test_loss = json.load(f)['test'][-1]
    assert logp['K'] == LOGP_K and math.isfinite(logp['test_log_likelihood'])
    # the same tight bound at about the same K as the test loss (K = 1): about minus it
    assert logp['test_log_likelihood'] == pytest.approx(-test_loss, rel=0.02)
    with open(os.path.join(trained_run, 'run.log')) as f:
        assert f'test log-likelihood (IWAE, K = {LOGP_K})' in f.read()


@pytest.mark.slow
def test_no_analytics_skips_umap_but_draws_the_loss_curve(offline_data_dir, tmp_path):
    rc = main_py.main(['--model', 'mnist', '--offline', '--epochs', '1', '--K', '1', '--batch-size', '500',
                       '--no-analytics', '--out-dir', str(tmp_path), '--data-dir', offline_data_dir])
    assert rc == 0
    (run,) = [os.path.join(tmp_path, 'mnist', d) for d in os.listdir(os.path.join(tmp_path, 'mnist'))]
    figs = set(os.listdir(os.path.join(run, 'figures')))
    assert 'losses.png' in figs and not any(f.startswith(('emb_umap', 'kl_distance')) for f in figs)
    assert not os.path.exists(os.path.join(run, 'analytics'))


@pytest.mark.slow
def test_scripts_end_to_end(trained_run):
    r = script('calculate_likelihoods', '--save-dir', trained_run, '--iwae-samples', '4', '--max-items', '60',
               '--chunk-items', '25')
    assert r.returncode == 0, r.stderr
    r = script('analyse_ms', '--save-dir', trained_run, '--latent-epochs', '1', '--classifier-epochs', '2',
               '--batch-size', '64', '--joint-samples', '1500', '--max-items', '300', module=True)
    assert r.returncode == 0, r.stderr

    with open(os.path.join(trained_run, 'likelihoods.json')) as f:
        lik = json.load(f)
    assert lik['K'] == 4 and lik['n_items'] == 60 and lik['offline_data'] is True
    assert 'pair multiplier 1' in lik['test_set'] and 'offline' in lik['data_source']
    values = [lik['joint'], *lik['marginal'].values(), *[v for row in lik['cross'].values() for v in row.values()]]
    assert len(values) == 7 and all(math.isfinite(v) and v < 0 for v in values)
    # Laplace(scale 0.75) densities on [0, 1] pixels are below 1/1.5 each: log p(x) < -n_pixels * log 1.5
    assert lik['marginal']['mnist'] < -784 * math.log(1.5) + 50
    assert lik['joint'] < lik['marginal']['svhn']  # the joint adds the (scaled) MNIST term

    with open(os.path.join(trained_run, 'analyse_ms.json')) as f:
        ms = json.load(f)
    # 63 steps of training have not taught the model the digits yet: its latents and cross generations are at
    # chance (10 %, 1,000 and 300 test items), in percent
    chance = [*ms['latent_accuracy'].values(), *ms['cross_coherence'].values(),
              *ms['reconstruction_coherence'].values()]
    assert len(chance) == 6 and all(abs(p - 10) < 5 for p in chance), chance
    # ... and so says the analysis: each coherence's chance level (about 10 %: balanced digits), its test
    levels = {k: v['level'] for k, v in ms['chance'].items() if k != 'test'}
    assert len(levels) == 5 and all(abs(levels[k] - 10) < 1 for k in levels if 'joint' not in k), levels
    for key, value in ms['cross_coherence'].items():  # one-sided binomial test over the 300 pairs, as scipy gives it
        c = ms['chance'][f'cross_coherence/{key}']
        assert c['p_value'] == pytest.approx(stats.binom.sf(round(value * 3) - 1, 300, c['level'] / 100))
        assert (f'cross_coherence/{key}' in ms['at_chance']) == (c['p_value'] >= 0.05)
    assert sum(ms['chance']['joint_coherence']['predicted_classes']['svhn']) == 1500
    assert (ms['joint_coherence'] * 1500 / 100) == pytest.approx(round(ms['joint_coherence'] * 15))  # of 1,500
    assert set(ms['cross_coherence']) == {'mnist->svhn', 'svhn->mnist'}
    assert ms['joint_coherence_samples'] == 1500 and '300 of 1,000 pairs' in ms['cross_coherence_test_set']
    # the digit CNNs learn in two epochs over the 4,000 pairs (pair multiplier 1): far above chance
    assert ms['classifiers']['mnist']['test_accuracy'] > 30 and ms['classifiers']['svhn']['test_accuracy'] > 30
    assert ms['protocol'].startswith('shortened') and ms['budget']['classifier_epochs'] == 2

    # each analysis has its own log, and neither overwrote the other or run.log
    logs = {n: open(os.path.join(trained_run, n)).read() for n in ('likelihoods.log', 'analyse_ms.log', 'run.log')}
    assert 'log p(mnist) with q(z|svhn) as proposal' in logs['likelihoods.log']
    assert 'joint coherence' in logs['analyse_ms.log'] and 'log p(' not in logs['analyse_ms.log']
    assert 'coherence' not in logs['likelihoods.log'] and '====> epoch   1' in logs['run.log']
    assert 'OFFLINE' in logs['likelihoods.log'] and 'OFFLINE' in logs['analyse_ms.log']

    # the classifiers are cached under the data dir, keyed by data, pairing and budget; a second analysis
    # (here: a direct call with the same paired items) finds them
    with open(os.path.join(trained_run, 'args.json')) as f:
        data_dir = json.load(f)['flags']['data_dir']
    for m in ('mnist', 'svhn'):
        info = ms['classifiers'][m]
        assert info['trained_now'] and os.path.isfile(info['path']) and info['epochs'] == 2
        assert os.sep + os.path.join('classifiers', 'offline') + os.sep in info['path']
    args = argparse.Namespace(data_dir=data_dir, offline=True, pair_multiplier=1)
    train, test = [C.modality_items(load_data('mnist_svhn', args, split), 0, split) for split in ('train', 'test')]
    info = ms['classifiers']['mnist']
    train.description = info['train_set']
    net, again = C.load_or_train('mnist', info['source'], train, test, data_dir, True, epochs=2, batch_size=64)
    assert not again['trained_now'] and again['path'] == info['path']
    assert again['test_accuracy'] == pytest.approx(info['test_accuracy'])


def fake_run(tmp_path, data_dir, model='mnist', files=('args.json', 'model.pt')):
    """A run directory of an untrained model, written as main.py writes one."""
    run = tmp_path / f'{model}_run'
    run.mkdir()
    args = build_parser().parse_args(['--model', model, '--offline', '--data-dir', data_dir])
    if 'args.json' in files:
        save_json({'flags': vars(args)}, str(run / 'args.json'))
    if 'model.pt' in files:
        torch.manual_seed(0)
        save_torch(MODELS[model](args).state_dict(), str(run / 'model.pt'))
    return str(run)


@pytest.mark.slow
def test_unimodal_run(offline_data_dir, tmp_path):
    run = fake_run(tmp_path, offline_data_dir, 'mnist')
    lik = calculate_likelihoods.main(['--save-dir', run, '--iwae-samples', '3', '--max-items', '20'])
    assert lik['n_items'] == 20 and math.isfinite(lik['log_likelihood']) and lik['test_set'] == 'test set'
    out = analyse_ms.main(['--save-dir', run, '--latent-epochs', '1'])
    # an untrained encoder's means are small beside its posterior scales (softmax(0) * D = 1): chance, 10 %
    assert list(out['latent_accuracy']) == ['mnist'] and abs(out['latent_accuracy']['mnist'] - 10) < 4
    assert out['latent_accuracy_setup']['mnist']['epochs'] == 10  # 10x for unimodal runs, as released
    assert 'cross_coherence' not in out and 'joint_coherence' not in out
    assert 'do not apply' in open(os.path.join(run, 'analyse_ms.log')).read()
    assert os.path.isfile(os.path.join(run, 'likelihoods.json'))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['calculate_likelihoods', 'analyse_ms'])
def test_bad_save_dir_is_a_clear_error(name, tmp_path, monkeypatch, capsys):
    r = script(name, '--save-dir', str(tmp_path / 'nope'))  # as a user runs it
    assert r.returncode == 2 and r.stderr.startswith('error: ') and 'no such run directory' in r.stderr
    assert 'Traceback' not in r.stderr
    run = fake_run(tmp_path, str(tmp_path), 'mnist_svhn', files=('args.json',))  # died before its first epoch
    monkeypatch.setattr(sys, 'argv', [name, '--save-dir', run])
    with pytest.raises(SystemExit) as e:
        run_script({'calculate_likelihoods': calculate_likelihoods, 'analyse_ms': analyse_ms}[name].main)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith('error: ') and 'incomplete: model.pt is missing' in err
    assert not os.path.exists(os.path.join(run, f"{'likelihoods' if name[0] == 'c' else 'analyse_ms'}.log"))


@pytest.mark.parametrize('name, flags, message', [
    ('calculate_likelihoods', ['--iwae-samples', '0'], '--iwae-samples must be a positive integer, got 0'),
    ('calculate_likelihoods', ['--max-items', '-2'], '--max-items must be >= 0'),
    ('analyse_ms', ['--latent-epochs', '-1'], '--latent-epochs must be a positive integer, got -1'),
    ('analyse_ms', ['--joint-samples', '0'], '--joint-samples must be a positive integer, got 0'),
])
def test_bad_flags_are_clear_errors(name, flags, message, tmp_path, monkeypatch, capsys):
    mod = {'calculate_likelihoods': calculate_likelihoods, 'analyse_ms': analyse_ms}[name]
    monkeypatch.setattr(sys, 'argv', [name, '--save-dir', str(tmp_path), *flags])
    with pytest.raises(SystemExit) as e:
        run_script(mod.main)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f'error: {message}') and 'Traceback' not in err
