"""bench/rounds.py: which runs a round makes, and the ratios it prints from the JSON those runs write."""
import argparse
import importlib
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, 'docs', 'results', 'host_memory')  # files bench.py and peer_multivae.py wrote


@pytest.fixture
def rounds():
    sys.path.insert(0, os.path.join(ROOT, 'bench'))
    try:
        yield importlib.import_module('rounds')
    finally:
        sys.path.remove(os.path.join(ROOT, 'bench'))


def test_each_reference_runs_as_its_users_run_it(rounds):
    args = argparse.Namespace(threads=2, steps=10, multivae_python='/venv/bin/python')
    cmds = rounds.commands(args, 3)
    ours, released, multivae = (cmds[k][0] for k in ('this code', 'released', 'MultiVae'))
    assert '--return-host-memory' not in ours and '--released' not in ours
    assert released[:len(ours)] == ours and released[len(ours):] == ['--released', '--return-host-memory']
    assert multivae[:2] == ['/venv/bin/python', 'bench/peer_multivae.py'] and '--return-host-memory' in multivae
    for cmd in (ours, multivae):
        assert cmd[cmd.index('--threads') + 1] == '2' and cmd[cmd.index('--steps') + 1] == '10'
    assert [cmds[k][1] for k in cmds] == ['ours_3.json', 'released_3.json', 'multivae_3.json']
    assert 'MultiVae' not in rounds.commands(argparse.Namespace(threads=1, steps=5, multivae_python=''), 1)


def test_ratios_from_the_files_the_benchmarks_write(rounds, monkeypatch, capsys, tmp_path):
    files = {'ours': 'bench_paper_2threads_1.json', 'released': 'bench_paper_2threads_released_1.json',
             'multivae': 'multivae_paper_2threads_1.json'}
    data = {k: json.load(open(os.path.join(RESULTS, f))) for k, f in files.items()}
    monkeypatch.setattr(rounds, 'run', lambda cmd, path: data[os.path.basename(path).split('_')[0]])
    rounds.main(['--rounds', '2', '--out', str(tmp_path), '--multivae-python', 'python'])
    out = capsys.readouterr().out
    ours = data['ours'][0]['step_ms']
    released = data['released'][0]['released_step_ms']
    multivae = data['multivae']['median']['multivae']['wall_ms']
    assert f'released {released:,.0f} ms' in out and f'MultiVae {multivae:,.0f} ms' in out
    assert f'released / this code: median {released / ours:.2f}x' in out
    assert f'MultiVae / this code: median {multivae / ours:.2f}x' in out
    assert out.count('round ') == 2
