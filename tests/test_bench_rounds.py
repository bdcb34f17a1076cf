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


def flags(**kw):
    return argparse.Namespace(**{'threads': 2, 'steps': 10, 'multivae_python': '', 'config': 'paper',
                                 'amp': False, 'metric': 'wall', **kw})


def test_each_reference_runs_as_its_users_run_it(rounds):
    cmds = rounds.commands(flags(multivae_python='/venv/bin/python'), 3)
    ours, released, multivae = (cmds[k][0] for k in ('this code', 'released', 'MultiVae'))
    assert '--return-host-memory' not in ours and '--released' not in ours and '--amp' not in ours
    assert released[:len(ours)] == ours and released[len(ours):] == ['--released', '--return-host-memory']
    assert multivae[:2] == ['/venv/bin/python', 'bench/peer_multivae.py'] and '--return-host-memory' in multivae
    for cmd in (ours, multivae):
        assert cmd[cmd.index('--threads') + 1] == '2' and cmd[cmd.index('--steps') + 1] == '10'
    assert [cmds[k][1] for k in cmds] == ['ours_3.json', 'released_3.json', 'multivae_3.json']
    assert 'MultiVae' not in rounds.commands(flags(), 1)


def test_amp_rounds_run_this_codes_two_steps_in_one_process(rounds):
    cmds = rounds.commands(flags(amp=True, config='numbersense', multivae_python='/venv/bin/python'), 1)
    assert list(cmds) == ['this code --amp', 'this code float32', 'released']  # MultiVae: paper float32 only
    amp, float32, released = cmds.values()
    assert amp[0][-2:] == ['--amp', '--float32'] and float32[0] is None and float32[1] == amp[1]
    assert '--amp' not in released[0] and released[0][-2:] == ['--released', '--return-host-memory']
    assert released[0][released[0].index('--model') + 1] == 'cmnist_oscn'


def fake_runs(monkeypatch, rounds, files):
    data = {k: json.load(open(os.path.join(RESULTS, f))) for k, f in files.items()}
    monkeypatch.setattr(rounds, 'run', lambda cmd, path: data[os.path.basename(path).split('_')[0]])
    return data


def test_float32_ratios_from_the_files_the_benchmarks_write(rounds, monkeypatch, capsys, tmp_path):
    data = fake_runs(monkeypatch, rounds, {'ours': 'bench_paper_2threads_1.json',
                                           'released': 'bench_paper_2threads_released_1.json',
                                           'multivae': 'multivae_paper_2threads_1.json'})
    rounds.main(['--rounds', '2', '--out', str(tmp_path), '--multivae-python', 'python'])
    out = capsys.readouterr().out
    ours = data['ours'][0]['step_ms']
    released = data['released'][0]['released_step_ms']
    multivae = data['multivae']['median']['multivae']['wall_ms']
    assert f'released {released:,.0f} ms' in out and f'MultiVae {multivae:,.0f} ms' in out
    assert f'released / this code: median {released / ours:.2f}x' in out
    assert f'MultiVae / this code: median {multivae / ours:.2f}x' in out
    assert out.count('round ') == 2


def test_amp_ratios_in_cpu_time(rounds, monkeypatch, capsys, tmp_path):
    data = fake_runs(monkeypatch, rounds, {'ours': 'bench_paper_1thread_amp_float32.json',
                                           'released': 'bench_paper_1thread_released.json'})
    rounds.main(['--rounds', '1', '--out', str(tmp_path), '--amp', '--threads', '1', '--metric', 'cpu'])
    out = capsys.readouterr().out
    amp, float32 = data['ours'][0]['step_cpu_ms'], data['ours'][0]['float32_step_cpu_ms']
    released = data['released'][0]['released_step_cpu_ms']
    assert 'round 1 (cpu time)' in out
    assert f'this code float32 / this code --amp: median {float32 / amp:.2f}x' in out
    assert f'released / this code --amp: median {released / amp:.2f}x' in out
