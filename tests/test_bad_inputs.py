"""Bad input, table-driven, across every entry point: exit status 2, one `error:` line, no traceback,
and nothing written (neither the output directory nor the run analysed changes)."""
import argparse
import contextlib
import hashlib
import io
import json
import os
import pickle

import pytest
import torch

import main as main_module
from src import numbersense_study
from src.cli import build_parser
from src.models import MODELS
from src.report import analyse_cub, analyse_ms, calculate_likelihoods, summarise
from src.report.numbersense import analyse as analyse_numbersense
from src.report.runs import run_script


def entry(module):
    """main(argv) of a script as its command line runs it: errors become `error:` lines and exit codes."""
    if module is main_module:
        return lambda argv: main_module.main(argv)

    def call(argv):
        run_script(lambda: module.main(argv))
        return 0
    return call


SCRIPTS = {'main.py': entry(main_module), 'calculate_likelihoods.py': entry(calculate_likelihoods),
           'analyse_ms.py': entry(analyse_ms), 'analyse_cub.py': entry(analyse_cub),
           'numbersense/analyse.py': entry(analyse_numbersense), 'numbersense_study.py': entry(numbersense_study),
           'summarise.py': entry(summarise)}


class Evil:
    def __reduce__(self):
        return os.system, ('touch /tmp/mmvae_bad_input_pwned',)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Run directories of several kinds, made without training: ours (mnist_svhn, mnist), damaged ones,
    foreign ones, and a released-code folder holding a malicious pickle."""
    root = tmp_path_factory.mktemp('runs')

    def ours(name, model, state=None, **flags):
        d = root / name
        d.mkdir()
        f = dict(vars(build_parser().parse_args(['--model', model])), offline=True, **flags)
        (d / 'args.json').write_text(json.dumps({'flags': f}))
        if state is None:
            torch.manual_seed(0)
            state = MODELS[model](argparse.Namespace(**f)).state_dict()
        torch.save(state, d / 'model.pt')
        return str(d)

    r = {'ms': ours('ms', 'mnist_svhn'), 'mnist': ours('mnist', 'mnist'), 'cmnist': ours('cmnist', 'cmnist')}
    r['truncated_ckpt'] = ours('truncated_ckpt', 'mnist')
    (root / 'truncated_ckpt' / 'checkpoint.pt').write_bytes(b'PK\x03\x04 truncated')
    r['foreign_ckpt'] = ours('foreign_ckpt', 'mnist')
    torch.save({'weights': torch.ones(2)}, root / 'foreign_ckpt' / 'checkpoint.pt')
    # an args.json of another model next to mnist_svhn weights
    r['other_model'] = ours('other_model', 'svhn', state=torch.load(os.path.join(r['ms'], 'model.pt')))
    evil = root / 'evil'
    evil.mkdir()
    torch.save(Evil(), evil / 'args.rar')
    torch.save(torch.load(os.path.join(r['mnist'], 'model.pt')), evil / 'model.rar')
    r['evil'] = str(evil)
    (root / 'a_file').write_text('not a directory')
    r['file'] = str(root / 'a_file')
    (root / 'bad.yaml').write_text('epochs: [3\n')
    r['bad_yaml'] = str(root / 'bad.yaml')
    emb = root / 'emb'
    emb.mkdir()
    with open(emb / 'cub.emb', 'wb') as f:
        pickle.dump(Evil(), f)
    r['evil_emb'] = str(emb)
    r['root'] = str(root)
    return r


def digest(d):
    h = hashlib.sha256()
    for base, dirs, files in sorted(os.walk(d)):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(base, f)
            h.update(p.encode() + open(p, 'rb').read())
    return h.hexdigest()


CASES = [
    # main.py: numbers, types, choices, abbreviations
    ('main.py', ['--K', '0'], '--K must be at least 1'),
    ('main.py', ['--K', 'many'], "argument --K: invalid int value: 'many'"),
    ('main.py', ['--batch-size', '-1'], '--batch-size must be a positive integer'),
    ('main.py', ['--epochs', '0'], '--epochs must be a positive integer'),
    ('main.py', ['--latent-dim', '0'], '--latent-dim must be a positive integer'),
    ('main.py', ['--lr', '-0.1'], '--lr must be a positive number'),
    ('main.py', ['--llik_scaling', 'nan'], '--llik_scaling must be >= 0'),
    ('main.py', ['--print-freq', '-2'], '--print-freq must be >= 0'),
    ('main.py', ['--checkpoint-every', '-1'], '--checkpoint-every must be >= 0'),
    ('main.py', ['--model', 'mnist_svh'], 'did you mean mnist_svhn?'),
    ('main.py', ['--epoch', '3'], 'did you mean --epochs?'),
    ('main.py', ['--learn'], 'did you mean --learn-prior?'),
    # main.py: paths
    ('main.py', ['--data-dir', '/dev/null/x'], 'cannot be created: /dev/null is not a directory'),
    ('main.py', ['--out-dir', '{file}'], 'is not a directory'),
    ('main.py', ['--run-dir', '{ms}'], 'already holds a run'),
    ('main.py', ['--resume', '{root}/none'], 'no such run directory'),
    ('main.py', ['--resume', '{truncated_ckpt}'], 'no readable checkpoint'),
    ('main.py', ['--resume', '{foreign_ckpt}'], 'is not a checkpoint of this project'),
    ('main.py', ['--pre-trained', '{other_model}'], 'does not fit model'),
    ('main.py', ['--pre-trained', '{evil}'], 'GLOBAL posix.system'),
    ('main.py', ['--config', '{root}/none.yaml'], 'cannot read it'),
    ('main.py', ['--config', '{bad_yaml}'], 'is not valid YAML'),
    # the analysis scripts
    ('calculate_likelihoods.py', ['--save-dir', '{root}/none'], 'no such run directory'),
    ('calculate_likelihoods.py', ['--save-dir', '{file}'], 'no such run directory'),
    ('calculate_likelihoods.py', ['--save-dir', '{ms}', '--iwae-samples', '0'], '--iwae-samples must be'),
    ('calculate_likelihoods.py', ['--save-dir', '{evil}'], 'GLOBAL posix.system'),
    ('calculate_likelihoods.py', ['--save-dir', '{ms}', '--data-dir', '/dev/null/x'], '/dev/null is not a directory'),
    ('calculate_likelihoods.py', ['--save-dir', '{ms}', '--iwae-sample', '5'], 'did you mean --iwae-samples?'),
    ('analyse_ms.py', ['--save-dir', '{cmnist}'], 'carry no digit labels'),
    ('analyse_ms.py', ['--save-dir', '{ms}', '--joint-samples', '0'], '--joint-samples must be a positive'),
    ('analyse_ms.py', ['--save-dir', '{ms}', '--classifier-epochs', 'x'], 'invalid int value'),
    ('analyse_ms.py', ['--save-dir', '{other_model}'], 'does not fit model'),
    ('analyse_cub.py', ['--save-dir', '{ms}'], 'a model of CUB images'),
    ('analyse_cub.py', ['--save-dir', '{ms}', '--cca-emb', '{evil_emb}'], 'a model of CUB images'),
    ('numbersense/analyse.py', ['--save-dir', '{ms}'], 'number-sense'),
    ('numbersense_study.py', ['--study-dir', '/dev/null/x'], '/dev/null'),
    ('numbersense_study.py', ['--seeds', '0'], '--seeds'),
    ('summarise.py', ['{root}/none'], 'no such directory'),
    ('summarise.py', ['{mnist}'], 'no analysis results yet'),
    ('summarise.py', ['{mnist}', '--out', '/dev/null/x'], '/dev/null is not a directory'),
]


@pytest.mark.parametrize('script, argv, message', CASES, ids=[f'{c[0]} {" ".join(c[1])}' for c in CASES])
def test_bad_input(runs, tmp_path, capsys, script, argv, message):
    argv = [a.format(**runs) for a in argv]
    out = tmp_path / 'out'
    extra = ['--out-dir', str(out)] if script == 'main.py' and '--out-dir' not in argv else []
    before = digest(runs['root'])
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            code = SCRIPTS[script](argv + extra)
        except SystemExit as e:
            code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[0].startswith('error: ') and sum(ln.startswith('error:') for ln in lines) == 1, err
    assert message in err and 'Traceback' not in err
    assert not out.exists() and digest(runs['root']) == before  # nothing written, nothing changed
    assert not os.path.exists('/tmp/mmvae_bad_input_pwned')


@pytest.mark.parametrize('script', sorted(SCRIPTS))
def test_help_states_each_default_once(script, capsys):
    """--help of every entry point: each flag's text names its default at most once."""
    with pytest.raises(SystemExit) as e:
        SCRIPTS[script](['--help'])
    assert e.value.code == 0
    text = capsys.readouterr().out
    blocks, block = [], []
    for line in text.splitlines():
        if line.startswith('  -') and block:  # a new flag's entry
            blocks.append(' '.join(block))
            block = []
        block.append(line)
    blocks.append(' '.join(block))
    assert len(blocks) >= 3  # usage, --help and at least one flag
    for b in blocks:
        assert b.count('default') <= 1, b
