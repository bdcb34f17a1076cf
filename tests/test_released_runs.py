"""Run folders written by the released code (args.rar: a pickled argparse Namespace; model.rar: a state
dict) load for --pre-trained and the analyses; a pickle that would run code is refused."""
import argparse
import math
import os

import pytest
import torch

import main as main_module
from src.cli import build_parser, parse_args
from src.errors import UserError
from src.models import MODELS
from src.report import analyse_ms, calculate_likelihoods
from src.report.runs import load_run
from src.train import build_model


def released_flags(model, **kw):
    """The Namespace the released src/main.py saves: its own flags (not ours), plus `cuda`."""
    flags = dict(experiment='', model=model, obj='dreg', K=30, looser=True, llik_scaling=0., batch_size=128,
                 epochs=30, latent_dim=20, num_hidden_layers=1, pre_trained='', learn_prior=True, logp=False,
                 print_freq=0, no_analytics=False, no_cuda=False, seed=1, cuda=True)
    return argparse.Namespace(**{**flags, **kw})


def released_folder(path, flags, state):
    path.mkdir()
    torch.save(flags, path / 'args.rar', _use_new_zipfile_serialization=False)  # torch of 2019
    torch.save(state, path / 'model.rar')
    return str(path)


def random_model(name, **kw):
    args = build_parser().parse_args(['--model', name])
    for k, v in kw.items():
        setattr(args, k, v)
    torch.manual_seed(0)
    model = MODELS[name](args)
    for p in model.parameters():
        p.data.normal_()  # not the initial weights: loading must really replace them
    return model


def same_weights(model, state):
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_load_run_of_a_released_folder(tmp_path):
    ref = random_model('mnist_svhn', learn_prior=True)
    run = released_folder(tmp_path / 'ms', released_flags('mnist_svhn'), ref.state_dict())
    args, model = load_run(run, offline=True, data_dir=str(tmp_path / 'data'))
    assert (args.model, args.K, args.looser, args.learn_prior) == ('mnist_svhn', 30, True, True)
    assert args.offline and args.data_dir == str(tmp_path / 'data') and not hasattr(args, 'cuda')
    assert same_weights(model, ref.state_dict()) and not model.training


def test_caption_vocabulary_comes_from_the_weights(tmp_path):
    """The released caption models fix the vocabulary in the code (1,590 words); the folder does not say
    it, and loading must not need the data: the embedding's rows tell it."""
    ref = random_model('cubIS', vocab_size=37, latent_dim=8)
    run = released_folder(tmp_path / 'cub', released_flags('cubIS', latent_dim=8, K=50, batch_size=64),
                          ref.state_dict())
    args, model = load_run(run, data_dir=str(tmp_path / 'nowhere'))
    assert args.vocab_size == 37 and same_weights(model, ref.state_dict())


def test_pretrained_from_a_released_folder(tmp_path):
    ref = random_model('mnist_svhn', learn_prior=True)
    run = released_folder(tmp_path / 'ms', released_flags('mnist_svhn'), ref.state_dict())
    args = parse_args(['--pre-trained', run, '--epochs', '1', '--offline', '--out-dir', str(tmp_path / 'o')])
    assert (args.obj, args.K, args.looser, args.epochs, args.pre_trained) == ('dreg', 30, True, 1, run)
    assert same_weights(build_model(args, 'cpu'), ref.state_dict())


@pytest.mark.slow
def test_analysis_scripts_on_a_released_folder(tmp_path, offline_data_dir):
    """The flags of the released code predate --data-dir and --offline: the scripts take them, read the
    folder and write their results beside its files, which stay as they were."""
    ref = random_model('mnist_svhn', learn_prior=True)
    run = released_folder(tmp_path / 'ms', released_flags('mnist_svhn'), ref.state_dict())
    before = {n: open(os.path.join(run, n), 'rb').read() for n in ('args.rar', 'model.rar')}
    common = ['--save-dir', run, '--offline', '--data-dir', offline_data_dir]
    lik = calculate_likelihoods.main([*common, '--iwae-samples', '3', '--max-items', '20'])
    assert lik['n_items'] == 20 and lik['offline_data'] is True
    assert all(math.isfinite(v) and v < 0 for v in (lik['joint'], *lik['marginal'].values()))
    # the released pair multiplier (30) is the one the folder's run used, so the test pairs are those
    assert 'pair multiplier 30' in lik['test_set']
    ms = analyse_ms.main([*common, '--latent-epochs', '1', '--classifier-epochs', '1', '--train-items', '400',
                          '--max-items', '100', '--joint-samples', '200'])
    assert set(ms['cross_coherence']) == {'mnist->svhn', 'svhn->mnist'}
    assert ms['budget']['classifier_epochs'] == 1 and ms['protocol'].startswith('shortened')
    for name in ('likelihoods.json', 'analyse_ms.json', 'analyse_ms.log'):
        assert os.path.isfile(os.path.join(run, name))
    assert before == {n: open(os.path.join(run, n), 'rb').read() for n in before}


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_malicious_args_rar_is_refused(tmp_path, capsys):
    marker = tmp_path / 'ran'
    run = released_folder(tmp_path / 'evil', Evil(marker), random_model('mnist').state_dict())
    with pytest.raises(UserError, match='GLOBAL'):
        load_run(run)
    assert main_module.main(['--pre-trained', run, '--out-dir', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: flags file of the released code') and 'Traceback' not in err
    assert not marker.exists() and not (tmp_path / 'o').exists()


def test_incomplete_or_foreign_folders(tmp_path):
    half = tmp_path / 'half'
    half.mkdir()
    torch.save(released_flags('mnist'), half / 'args.rar')
    with pytest.raises(UserError, match='model.rar is missing'):
        load_run(str(half))
    other = released_folder(tmp_path / 'other', released_flags('mnist', latent_dim=5),
                            random_model('mnist').state_dict())
    with pytest.raises(UserError, match='does not fit model'):
        load_run(other)
    unknown = released_folder(tmp_path / 'unknown', released_flags('mnist_cub'), {})
    with pytest.raises(UserError, match="unknown model 'mnist_cub'"):
        load_run(unknown)


def test_offline_flag_must_match_our_runs(tmp_path):
    model = random_model('mnist')
    run = tmp_path / 'ours'
    run.mkdir()
    import json
    (run / 'args.json').write_text(json.dumps({'flags': dict(vars(build_parser().parse_args(['--model', 'mnist'])),
                                                             offline=False)}))
    torch.save(model.state_dict(), run / 'model.pt')
    assert same_weights(load_run(str(run))[1], model.state_dict())
    with pytest.raises(UserError, match='was trained on real data'):
        load_run(str(run), offline=True)
