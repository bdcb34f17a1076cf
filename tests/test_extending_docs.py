"""The code of docs/extending.md works where the page puts it: each Python block (a whole file whose first
line names its place, e.g. `# src/data/blocks.py`) is written there in a copy of the repository, and every
`python main.py ...` command of the page runs in that copy for a few steps, in a subprocess.

A copy, not the checkout itself: the files are imported as a user's would be (every module of src/models/,
src/models/joint/ and src/data/ is imported at start-up), and nothing is left in the checkout if the test is
killed half-way."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, 'docs', 'extending.md')


def python_files(text):
    """{path: source} of the page's ```python blocks; each must begin with `# <path>`."""
    files = {}
    for block in re.findall(r'```python\n(.*?)```', text, re.S):
        first = block.split('\n', 1)[0]
        assert re.fullmatch(r'# src/[\w/]+\.py', first), f'a Python block of the page does not name its file: {first!r}'
        files[first[2:]] = block
    return files


def commands(text):
    """The page's `python main.py --...` commands, inline or in a ```bash block, in order."""
    return re.findall(r'python main\.py( --[^`\n]*)', text)


def test_the_page_names_four_files_and_their_commands():
    text = open(PAGE).read()
    files = python_files(text)
    assert sorted(files) == ['src/data/blocks.py', 'src/models/blocks.py', 'src/models/blocks_pair.py',
                             'src/models/joint/poe_noprior.py']
    for path in files:  # a new file, not one of the project's
        assert os.path.isdir(os.path.join(ROOT, os.path.dirname(path))) and not os.path.exists(os.path.join(ROOT, path))
    assert {c.split()[1] for c in commands(text)} == {'blocks', 'blocks_pair'}


@pytest.mark.slow
def test_the_snippets_train_where_the_page_puts_them(tmp_path):
    text = open(PAGE).read()
    repo = tmp_path / 'repo'
    os.makedirs(repo)
    shutil.copy(os.path.join(ROOT, 'main.py'), repo)
    for d in ('src', 'configs'):
        shutil.copytree(os.path.join(ROOT, d), repo / d, ignore=shutil.ignore_patterns('__pycache__'))
    for path, source in python_files(text).items():
        (repo / path).write_text(source)
    env = {**os.environ, 'PYTHONPATH': str(repo), 'OMP_NUM_THREADS': '1'}
    for i, flags in enumerate(commands(text)):
        out = tmp_path / f'runs{i}'
        argv = [*shlex.split(flags), '--max-steps', '3', '--max-test-items', '16', '--no-analytics',
                '--out-dir', str(out), '--data-dir', str(tmp_path / 'data')]
        done = subprocess.run([sys.executable, 'main.py', *argv], cwd=repo, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f'python main.py{flags}:\n{done.stderr[-3000:]}'
        (experiment,) = os.listdir(out)
        (run,) = os.listdir(out / experiment)
        run = out / experiment / run
        log = (run / 'run.log').read_text()
        assert 'generated blocks' in log and '(src/data/blocks.py)' in log  # the page's dataset, from its file
        losses = json.loads((run / 'losses.json').read_text())
        assert losses['train'] and all(v == v for v in losses['train'] + losses['test']), flags
        saved = json.loads((run / 'args.json').read_text())['flags']
        assert saved['max_steps'] == 3 and saved['model'] == shlex.split(flags)[1]
