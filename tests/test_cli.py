"""main.py end to end on --offline data: run outputs, --pre-trained, bad input."""
import glob
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

import main as main_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--offline', '--pair-multiplier', '1', '--batch-size', '128', '--K', '2', '--no-analytics']


def run_main(*argv):
    return main_module.main([str(a) for a in argv])


def only_run(out_dir, experiment):
    runs = glob.glob(os.path.join(out_dir, experiment, '*'))
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope='module')
def ms_run(offline_data_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('runs'))
    assert run_main('--model', 'mnist_svhn', '--obj', 'dreg', '--looser', '--epochs', 2, '--learn-prior',
                    '--tensorboard', '--print-freq', 5, '--data-dir', offline_data_dir, '--out-dir', out, *TINY) == 0
    return only_run(out, 'mnist_svhn')


@pytest.mark.slow
def test_run_directory_holds_everything(ms_run):
    saved = json.load(open(os.path.join(ms_run, 'args.json')))
    assert saved['flags']['model'] == 'mnist_svhn' and saved['flags']['K'] == 2
    assert saved['offline_data'] is True and 'generated SVHN stand-in' in saved['data_source']
    assert saved['versions']['torch'] and 'git_commit' in saved
    log = open(os.path.join(ms_run, 'run.log')).read()
    assert 'OFFLINE DATA' in log and 'epoch   2' in log
    state = torch.load(os.path.join(ms_run, 'model.pt'))  # safe (weights-only) loading
    assert '_pz_params.1' in state
    for m in ('mnist', 'svhn'):
        sub = torch.load(os.path.join(ms_run, f'vae_{m}.pt'))
        assert all(torch.equal(v, state[f"vaes.{0 if m == 'mnist' else 1}.{k}"]) for k, v in sub.items())
    losses = json.load(open(os.path.join(ms_run, 'losses.json')))
    assert len(losses['train']) == len(losses['test']) == 2
    # the second epoch (32 more steps) lowers both losses: training goes the right way end to end
    assert losses['train'][1] < losses['train'][0] and losses['test'][1] < losses['test'][0], losses
    figs = sorted(os.listdir(os.path.join(ms_run, 'figures')))
    for e in ('001', '002'):
        assert {f'recon_{e}.png', f'gen_mnist_{e}.png', f'gen_svhn_{e}.png'} <= set(figs)
    assert not glob.glob(os.path.join(ms_run, '**', '.*.tmp'), recursive=True)  # atomic writes left no temp files


@pytest.mark.slow
def test_metrics_csv_and_tensorboard(ms_run):
    import pandas as pd
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    losses = json.load(open(os.path.join(ms_run, 'losses.json')))
    m = pd.read_csv(os.path.join(ms_run, 'metrics.csv'))
    steps = 32  # 4,000 offline pairs in batches of 128
    assert list(m['epoch']) == [1, 2] and list(m['step']) == [steps, 2 * steps]
    assert list(m['train_loss']) == losses['train'] and list(m['test_loss']) == losses['test']
    acc = EventAccumulator(os.path.join(ms_run, 'tb'), size_guidance={'scalars': 0, 'images': 0}).Reload()
    tags = acc.Tags()
    assert {'loss/train', 'loss/test', 'loss/train_step', 'epoch'} <= set(tags['scalars'])
    assert {'figures/recon', 'figures/gen_mnist', 'figures/gen_svhn'} <= set(tags['images'])
    test = acc.Scalars('loss/test')
    assert [e.step for e in test] == [steps, 2 * steps]
    assert [e.value for e in test] == pytest.approx(losses['test'], rel=1e-6)
    assert [e.step for e in acc.Scalars('loss/train_step')] == list(range(5, 2 * steps + 1, 5))
    assert len(acc.Images('figures/recon')) == 2


def digest(d):
    h = hashlib.sha256()
    for f in sorted(glob.glob(os.path.join(d, '**'), recursive=True)):
        if os.path.isfile(f):
            h.update(f.encode() + open(f, 'rb').read())
    return h.hexdigest()


@pytest.mark.slow
def test_pretrained_continues_into_new_run(ms_run, offline_data_dir, tmp_path):
    before = digest(ms_run)
    from src.cli import parse_args
    from src.train import build_model
    args = parse_args(['--pre-trained', ms_run, '--epochs', '1', '--data-dir', offline_data_dir])
    assert args.obj == 'dreg' and args.looser and args.learn_prior and args.K == 2  # the run's flags
    assert args.epochs == 1  # typed now: overrides
    model = build_model(args, 'cpu')
    saved = torch.load(os.path.join(ms_run, 'model.pt'))
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert run_main('--pre-trained', ms_run, '--epochs', 1, '--data-dir', offline_data_dir,
                    '--out-dir', tmp_path) == 0
    new = only_run(str(tmp_path), 'mnist_svhn')
    assert json.load(open(os.path.join(new, 'args.json')))['flags']['pre_trained'] == ms_run
    assert digest(ms_run) == before  # the old run is never touched


@pytest.mark.slow
@pytest.mark.parametrize('argv, message', [
    (['--model', 'nope'], "invalid choice: 'nope'"),
    (['--obj', 'vae'], "invalid choice: 'vae'"),
    (['--K', '0'], '--K must be at least 1'),
    (['--batch-size', '0'], '--batch-size must be a positive integer'),
    (['--epochs', '-1'], '--epochs must be a positive integer'),
    (['--latent-dim', '0'], '--latent-dim must be a positive integer'),
    (['--pair-multiplier', '0'], '--pair-multiplier must be a positive integer'),
    (['--pre-trained', '/no/such/run'], 'no such run directory'),
])
def test_bad_flags_give_clear_errors(argv, message, tmp_path):
    p = subprocess.run([sys.executable, 'main.py', *argv, '--out-dir', str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert message in p.stderr and 'Traceback' not in p.stderr
    assert not os.listdir(tmp_path)  # nothing written


@pytest.mark.slow
def test_bad_pretrained_runs(ms_run, tmp_path, capsys):
    incomplete = tmp_path / 'incomplete'
    incomplete.mkdir()
    (incomplete / 'args.json').write_text(open(os.path.join(ms_run, 'args.json')).read())
    assert run_main('--pre-trained', incomplete) == 2
    assert 'model.pt is missing' in capsys.readouterr().err
    assert run_main('--pre-trained', ms_run, '--model', 'svhn') == 2
    assert 'was trained with --model mnist_svhn' in capsys.readouterr().err
    assert run_main('--pre-trained', ms_run, '--latent-dim', '5') == 2
    assert 'was trained with --latent-dim 20' in capsys.readouterr().err
    corrupt = tmp_path / 'corrupt'
    corrupt.mkdir()
    (corrupt / 'args.json').write_text('{"flags": {"model": "mnist_svhn"')
    (corrupt / 'model.pt').write_bytes(b'')
    assert run_main('--pre-trained', corrupt) == 2
    assert 'corrupt or truncated' in capsys.readouterr().err
    other = tmp_path / 'other'  # weights that do not fit the flags
    other.mkdir()
    flags = json.load(open(os.path.join(ms_run, 'args.json')))
    flags['flags']['latent_dim'] = 7
    (other / 'args.json').write_text(json.dumps(flags))
    (other / 'model.pt').write_bytes(open(os.path.join(ms_run, 'model.pt'), 'rb').read())
    assert run_main('--pre-trained', other, '--data-dir', tmp_path, '--out-dir', tmp_path) == 2
    assert 'does not fit model' in capsys.readouterr().err


def test_missing_data_names_dir_files_and_offline(tmp_path, monkeypatch, capsys):
    import torchvision

    def no_network(*a, **k):
        raise RuntimeError('Error downloading train-images-idx3-ubyte.gz: no network')
    monkeypatch.setattr(torchvision.datasets, 'MNIST', no_network)
    assert run_main('--model', 'mnist', '--data-dir', tmp_path / 'd', '--out-dir', tmp_path / 'o') == 2
    err = capsys.readouterr().err
    assert str(tmp_path / 'd') in err and 'train-images-idx3-ubyte' in err and '--offline' in err
    assert not (tmp_path / 'o').exists()  # no empty run directory


@pytest.mark.slow
def test_unimodal_run_and_help(offline_data_dir, tmp_path, monkeypatch):
    import src.train
    assert src.train.LOGP_K == 5000  # --logp uses K = 5000 as released; a small K keeps the test fast
    monkeypatch.setattr(src.train, 'LOGP_K', 50)
    assert run_main('--model', 'mnist', '--obj', 'iwae', '--epochs', 1, '--logp',
                    '--data-dir', offline_data_dir, '--out-dir', tmp_path, *TINY) == 0
    run = only_run(str(tmp_path), 'mnist')
    logp = json.load(open(os.path.join(run, 'logp.json')))
    assert logp['K'] == 50 and logp['test_log_likelihood'] < 0
    assert sorted(os.listdir(os.path.join(run, 'figures'))) == ['gen_mnist_001.png', 'losses.png', 'recon_001.png']
    p = subprocess.run([sys.executable, 'main.py', '--help'], cwd=ROOT, capture_output=True, text=True)
    for flag in ('--experiment', '--model', '--obj', '--K', '--looser', '--llik_scaling', '--batch-size',
                 '--epochs', '--latent-dim', '--num-hidden-layers', '--pre-trained', '--learn-prior', '--logp',
                 '--print-freq', '--no-analytics', '--no-cuda', '--seed', '--data-dir', '--offline',
                 '--pair-multiplier', '--dreg-estimator'):
        assert flag in p.stdout, flag


@pytest.mark.slow
def test_analysis_numbers_reach_tensorboard(ms_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from src.report import calculate_likelihoods
    out = calculate_likelihoods.main(['--save-dir', ms_run, '--iwae-samples', '3', '--max-items', '20'])
    acc = EventAccumulator(os.path.join(ms_run, 'tb'), size_guidance={'scalars': 0}).Reload()
    joint = acc.Scalars('likelihoods/joint')
    assert [e.step for e in joint] == [64] and joint[0].value == pytest.approx(out['joint'], rel=1e-6)
    assert 'likelihoods/marginal/mnist' in acc.Tags()['scalars']
