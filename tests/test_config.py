"""main.py's parser: config files, no abbreviations, suggestions, --version, path checks, --lr."""
import json
import os
import subprocess
import sys

import pytest

from src.cli import build_parser, close, parse_args
from src.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, 'configs')


def test_config_sets_defaults_and_typed_flags_win(tmp_path):
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('model: mnist\nobj: dreg\nK: 7\nlearn-prior: true\nlr: 0.0005\nbatch_size: 64\n')
    a = parse_args(['--config', str(cfg), '--K', '3', '--out-dir', str(tmp_path)])
    assert (a.model, a.obj, a.K, a.learn_prior, a.lr, a.batch_size) == ('mnist', 'dreg', 3, True, 5e-4, 64)
    assert a.config == str(cfg)
    b = parse_args(['--config', str(cfg), '--out-dir', str(tmp_path)])
    assert b.K == 7
    (tmp_path / 'c.json').write_text(json.dumps({'model': 'svhn', 'epochs': 4}))
    assert parse_args(['--config', str(tmp_path / 'c.json'), '--out-dir', str(tmp_path)]).epochs == 4


def test_a_runs_args_json_works_as_a_config(tmp_path):
    saved = {'flags': dict(vars(build_parser().parse_args([])), model='svhn', K=9, looser=True,
                           run_dir=str(tmp_path / 'old'), resume=''), 'data_source': 'x', 'versions': {}}
    (tmp_path / 'args.json').write_text(json.dumps(saved))
    a = parse_args(['--config', str(tmp_path / 'args.json'), '--out-dir', str(tmp_path)])
    assert (a.model, a.K, a.looser) == ('svhn', 9, True)
    assert a.run_dir == ''  # where the old run lived is not inherited


@pytest.mark.parametrize('text, message', [
    ('epochs: 3\nlern_prior: true\n', "unknown flag 'lern_prior' (did you mean 'learn_prior'?)"),
    ('K: many\n', 'K must be an integer'),
    ('K: 2.5\n', 'K must be an integer'),
    ('learn-prior: 1\n', 'learn-prior must be true or false'),
    ('obj: elb\n', "'elb' is not one of elbo, iwae, dreg (did you mean 'elbo'?)"),
    ('lr: [1, 2]\n', 'lr must be a number'),
    ('- epochs\n', 'must map flag names to values'),
    ('epochs: [3\n', 'is not valid YAML'),
])
def test_bad_config_files(tmp_path, text, message):
    cfg = tmp_path / 'c.yaml'
    cfg.write_text(text)
    with pytest.raises(UserError) as e:
        parse_args(['--config', str(cfg), '--out-dir', str(tmp_path)])
    assert message in str(e.value)


def test_shipped_configs_parse():
    names = sorted(f for f in os.listdir(CONFIGS) if f.endswith('.yaml'))
    assert {'mnist_svhn.yaml', 'cubISft.yaml', 'cubIS.yaml', 'mnist.yaml', 'svhn.yaml'} <= set(names)
    for f in names:
        a = parse_args(['--config', os.path.join(CONFIGS, f)])
        assert a.model in f or f in ('numbersense_noda2024.yaml', 'quickstart.yaml'), f
    quick = parse_args(['--config', os.path.join(CONFIGS, 'quickstart.yaml')])
    assert quick.offline and quick.model == 'mnist_svhn'
    paper = parse_args(['--config', os.path.join(CONFIGS, 'mnist_svhn.yaml')])
    assert (paper.obj, paper.K, paper.looser, paper.learn_prior, paper.epochs, paper.batch_size,
            paper.latent_dim) == ('dreg', 30, True, True, 30, 128, 20)
    ft = parse_args(['--config', os.path.join(CONFIGS, 'cubISft.yaml')])
    assert (ft.K, ft.epochs, ft.batch_size, ft.latent_dim, ft.llik_scaling) == (50, 50, 64, 64, 0.002)


def test_no_abbreviations_and_suggestions(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit) as e:
        parser.parse_args(['--epoch', '3', '--learn'])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('error: unrecognized arguments: --epoch 3 --learn')
    assert '--epochs for --epoch' in err and '--learn-prior for --learn' in err
    with pytest.raises(SystemExit):
        parser.parse_args(['--model', 'mnist_svh'])
    assert 'did you mean mnist_svhn?' in capsys.readouterr().err
    assert close('--lat', ['--latent-dim', '--lr']) == '--latent-dim'
    assert close('--zzz', ['--latent-dim', '--lr']) is None


def test_help_states_each_default_once():
    parser = build_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        assert formatter._expand_help(action).count('default') <= 1, action.dest
    text = parser.format_help()
    assert '(default: 20)' in text and '(default: False)' not in text


@pytest.mark.slow
def test_version():
    p = subprocess.run([sys.executable, 'main.py', '--version'], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith('mmvae ') and 'torch ' in p.stdout


@pytest.mark.parametrize('argv, message', [
    (['--data-dir', '/dev/null/x'], '--data-dir /dev/null/x cannot be created: /dev/null is not a directory'),
    (['--lr', '0'], '--lr must be a positive number'),
    (['--lr', 'nan'], '--lr must be a positive number'),
    (['--llik_scaling', 'inf'], '--llik_scaling must be >= 0'),
    (['--vocab-size', '-1'], '--vocab-size must be >= 0'),
])
def test_bad_values(argv, message, tmp_path):
    with pytest.raises(UserError, match=message.replace('(', r'\(')):
        parse_args(argv + ['--out-dir', str(tmp_path)])


def test_out_dir_that_is_a_file_or_not_writable(tmp_path):
    (tmp_path / 'f').write_text('')
    with pytest.raises(UserError, match='is not a directory'):
        parse_args(['--out-dir', str(tmp_path / 'f')])
    with pytest.raises(UserError, match='cannot be created'):
        parse_args(['--run-dir', str(tmp_path / 'f' / 'run')])
    ro = read_only_dir(tmp_path)
    with pytest.raises(UserError, match='is not writable'):
        parse_args(['--out-dir', os.path.join(ro, 'runs')])


def read_only_dir(tmp_path):
    """A directory this process cannot write into: chmod 555 (not as root, who may write anyway), else /sys."""
    d = tmp_path / 'ro'
    d.mkdir()
    d.chmod(0o555)
    if not os.access(d, os.W_OK):
        return str(d)
    if os.path.isdir('/sys') and not _can_write('/sys'):
        return '/sys'
    pytest.skip('no read-only directory available to this user')


def _can_write(d):
    try:
        with open(os.path.join(d, '.mmvae_probe'), 'w'):
            pass
        os.remove(os.path.join(d, '.mmvae_probe'))
        return True
    except OSError:
        return False


def test_numbersense_config_is_the_study_protocol():
    from src.numbersense_study import NODA2024
    a = parse_args(['--config', os.path.join(CONFIGS, 'numbersense_noda2024.yaml'), '--model', 'cmnist_oscn'])
    assert {k: getattr(a, k) for k in NODA2024} == NODA2024


def test_main_help_shows_the_defaults(capsys):
    import main as main_module
    with pytest.raises(SystemExit) as e:
        main_module.main(['--help'])
    assert e.value.code == 0
    text = ' '.join(capsys.readouterr().out.split())  # unwrapped
    assert '(default: 20)' in text and '(default: mnist_svhn)' in text and 'model and objective' in text
