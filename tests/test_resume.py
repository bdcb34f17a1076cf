"""Resume: a run killed (kill -9) at any moment and resumed ends exactly
where an uninterrupted run ends; --run-dir / --resume rules; the cluster scripts
start or resume each seed's run directory. (SIGTERM: tests/test_faults.py.)"""
import csv
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from main import main
from src import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')  # the same threads in every run: same floats
# 4,000 MNIST digits / 200 = 20 steps per epoch, a step checkpoint every 3
FLAGS = ['--model', 'mnist', '--offline', '--epochs', '2', '--batch-size', '200', '--K', '2', '--obj', 'dreg',
         '--no-analytics', '--checkpoint-every', '3']


def _main_py(*args):
    return [sys.executable, 'main.py', *args]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp('data'))


pytestmark = [pytest.mark.usefixtures('in_process_runs'),  # tests/conftest.py
              pytest.mark.slow]  # training runs, subprocesses


@pytest.fixture(scope='module')
def reference(tmp_path_factory, data_dir, in_process_runs):
    """An uninterrupted run (in-process: one launch less)."""
    run = str(tmp_path_factory.mktemp('ref') / 'run')
    assert main([*FLAGS, '--data-dir', data_dir, '--run-dir', run]) == 0
    return run


def _position(run):
    """(epochs done, steps done) of the checkpoint a resume takes (the most advanced complete one of
    checkpoint.pt, .next.pt, .prev.pt: a kill may fall between writing the next one and its rename), or None."""
    try:
        s, _ = checkpoint.load(run)
        return (s['epoch'], s['step']) if s else None
    except Exception:
        return None


def _wait_until(proc, run, cond, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        pos = _position(run)
        if pos is not None and cond(pos):
            return pos
        assert proc.poll() is None, f'the run ended before the checkpoint we waited for: {proc.communicate()[0]}'
        time.sleep(0.05)
    raise AssertionError('timed out waiting for a checkpoint')


def test_killed_run_resumes_to_the_uninterrupted_result(reference, data_dir, tmp_path):
    run = str(tmp_path / 'run')
    flags = [*FLAGS, '--data-dir', data_dir]

    # 1. kill -9 somewhere after the first step checkpoint
    p = subprocess.Popen(_main_py(*flags, '--run-dir', run), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    _wait_until(p, run, lambda pos: pos[1] > 0)
    time.sleep(random.uniform(0, 0.5))
    p.kill()
    p.communicate()
    assert p.returncode == -signal.SIGKILL
    killed_at = _position(run)
    assert killed_at is not None and killed_at < (2, 0)

    # 2. resume to the end: the same weights, losses, optimizer and RNG state, bit for bit
    r = subprocess.run(_main_py(*flags, '--resume', run), cwd=ROOT, env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    ref_w, w = (torch.load(os.path.join(d, 'model.pt')) for d in (reference, run))
    assert ref_w.keys() == w.keys()
    for k in ref_w:
        assert torch.equal(ref_w[k], w[k]), k
    ref_l, losses = (json.load(open(os.path.join(d, 'losses.json'))) for d in (reference, run))
    assert losses['train'] == ref_l['train'] and losses['test'] == ref_l['test'] and losses['skipped_batches'] == [0, 0]
    ref_c, c = (torch.load(os.path.join(d, checkpoint.CKPT)) for d in (reference, run))
    assert c['finished'] and (c['epoch'], c['step']) == (2, 0)
    for k, v in ref_c['optimizer']['state'].items():
        assert all(torch.equal(v[n], c['optimizer']['state'][k][n]) for n in v)
    assert torch.equal(ref_c['rng']['torch'], c['rng']['torch'])
    assert open(os.path.join(run, 'run.log')).read().count('==== resuming') == 1
    resumed = json.load(open(os.path.join(run, 'args.json')))['resumed']
    assert [r['from'] for r in resumed] == [checkpoint.position({'epoch': killed_at[0], 'step': killed_at[1]})]


def further(out):
    """The command a finished run prints to train it further, as argv."""
    (command,) = re.findall(r'to train it further: (python main\.py [^\n)]*)', out, re.I)
    return shlex.split(command)


def test_run_dir_and_resume_rules(reference, data_dir, tmp_path, capsys):
    # a finished run: nothing to do, and the command that trains it further
    assert main(['--resume', reference]) == 0
    out = capsys.readouterr().out
    assert 'already finished (2 epochs, 40 training steps): nothing to do' in out
    assert further(out) == ['python', 'main.py', '--resume', reference, '--epochs', '4']
    # --run-dir never overwrites a run
    assert main([*FLAGS, '--data-dir', data_dir, '--run-dir', reference]) == 2
    assert f'already holds a run: continue it with --resume {reference}' in capsys.readouterr().err
    # flags typed with --resume must be the run's, except --epochs and run-control flags
    assert main(['--resume', reference, '--K', '5', '--seed', '2']) == 2
    err = capsys.readouterr().err
    assert '--K 5 (the run has 2)' in err and '--seed 2 (the run has 1)' in err
    assert main(['--resume', reference, '--run-dir', str(tmp_path / 'x')]) == 2
    assert 'drop --run-dir' in capsys.readouterr().err
    assert main(['--resume', str(tmp_path)]) == 2
    assert 'args.json is missing, so this is not a run directory' in capsys.readouterr().err
    assert main(['--checkpoint-every', '-1']) == 2
    # --epochs trains a finished run further, in place; args.json records it
    run = str(tmp_path / 'more')
    shutil.copytree(reference, run)
    assert main(['--resume', run, '--epochs', '3', '--K', '2']) == 0
    losses = json.load(open(os.path.join(run, 'losses.json')))
    ref = json.load(open(os.path.join(reference, 'losses.json')))
    assert len(losses['train']) == 3 and losses['train'][:2] == ref['train']
    saved = json.load(open(os.path.join(run, 'args.json')))
    assert saved['flags']['epochs'] == 3 and saved['resumed'][-1]['from'] == 'epoch 2 complete'
    # a budget below what the run has trained is refused before anything is written
    killed = str(tmp_path / 'killed')
    shutil.copytree(reference, killed)
    state, _ = checkpoint.load(killed)
    checkpoint.save(killed, dict(state, epoch=1, step=5, finished=False, steps_done=None))  # killed in epoch 2
    os.remove(os.path.join(killed, checkpoint.PREV))
    before = open(os.path.join(killed, 'run.log')).read()
    assert main(['--resume', killed, '--max-steps', '22']) == 2
    assert 'the run has trained 25 steps (epoch 2, 5 training steps done), more than --epochs 2 and --max-steps 22 ' \
           'allow (22)' in capsys.readouterr().err
    assert open(os.path.join(killed, 'run.log')).read() == before


# 4,000 MNIST digits / 250 = 16 steps per epoch: --max-steps 20 ends inside epoch 2, 40 inside epoch 3
CAPPED = ['--model', 'mnist', '--offline', '--epochs', '3', '--batch-size', '250', '--K', '2', '--obj', 'dreg',
          '--no-analytics']


def test_a_step_capped_run_trained_further_equals_the_longer_run(data_dir, tmp_path, capsys):
    """A run capped at 20 steps, trained on to 40 by the command it prints, equals a 40-step run bit for bit
    (weights, losses, optimizer and random states); the printed command runs as printed, in a shell's
    subprocess. Then --max-steps 0 trains it on to its --epochs."""
    flags = [*CAPPED, '--data-dir', data_dir]
    longer, run = str(tmp_path / 'longer'), str(tmp_path / 'run')
    assert main([*flags, '--max-steps', '40', '--run-dir', longer]) == 0
    capsys.readouterr()
    assert main([*flags, '--max-steps', '20', '--run-dir', run]) == 0
    assert further(capsys.readouterr().out) == ['python', 'main.py', '--resume', run, '--max-steps', '40']
    assert metric_steps(run) == [16, 20]  # the capped epoch ends at the cap, not at the loader's end
    assert main(['--resume', run]) == 0  # finished: nothing to do, and the same command
    out = capsys.readouterr().out
    assert 'already finished (2 epochs, 20 training steps): nothing to do' in out
    done = subprocess.run([sys.executable, *further(out)[1:]], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f'==== resuming {run} from epoch 2, 4 training steps done' in done.stdout + done.stderr

    ref, got = (torch.load(os.path.join(d, checkpoint.CKPT)) for d in (longer, run))
    assert got['finished'] and (got['epoch'], got['steps_done'], got['cut']['step']) == (3, 40, 8)
    for k in ref['model']:
        assert torch.equal(ref['model'][k], got['model'][k]), k
    for k, state in ref['optimizer']['state'].items():
        assert all(torch.equal(v, got['optimizer']['state'][k][n]) for n, v in state.items())
    for key in ('train', 'test', 'skipped_batches'):
        assert got['losses'][key] == ref['losses'][key] and len(got['losses'][key]) == 3
    for a, b in ((ref['rng'], got['rng']), (ref['cut']['rng'], got['cut']['rng'])):
        assert torch.equal(a['torch'], b['torch']) and a['python'] == b['python']
    assert torch.equal(ref['loader'], got['loader'])
    ref_w, w = (torch.load(os.path.join(d, 'model.pt')) for d in (longer, run))
    assert all(torch.equal(ref_w[k], w[k]) for k in ref_w)
    assert json.load(open(os.path.join(run, 'args.json')))['flags']['max_steps'] == 40
    assert metric_steps(run) == metric_steps(longer) == [16, 32, 40]

    # --max-steps 0: on to the run's 3 epochs, as a run without a cap
    assert main(['--resume', run, '--max-steps', '0']) == 0
    got = torch.load(os.path.join(run, checkpoint.CKPT))
    assert got['finished'] and (got['epoch'], got['steps_done'], got['cut']) == (3, 48, None)
    assert len(got['losses']['train']) == 3 and got['losses']['train'][:2] == ref['losses']['train'][:2]
    assert got['losses']['train'][2] != ref['losses']['train'][2]  # epoch 3 now has all its 16 steps
    assert metric_steps(run) == [16, 32, 48]


def metric_steps(run):
    with open(os.path.join(run, 'metrics.csv')) as f:
        return [int(row['step']) for row in csv.DictReader(f)]


# ------------------------------------------------------------------ cluster scripts

SCRIPTS = ['src/script/pbs_script', 'src/script/slurm_script']


@pytest.mark.parametrize('script', SCRIPTS)
def test_scripts_parse(script):
    r = subprocess.run(['bash', '-n', os.path.join(ROOT, script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _fake_python(tmp_path, body):
    """A stand-in for `python` that records its arguments (the scripts call PYTHON main.py ...)."""
    p = tmp_path / 'fakepython'
    p.write_text(f'#!/bin/bash\necho "$@" >> {tmp_path}/calls\n{body}\n')
    p.chmod(0o755)
    return str(p)


@pytest.mark.parametrize('script,seed_var', [(SCRIPTS[0], 'PBS_ARRAY_INDEX'), (SCRIPTS[1], 'SLURM_ARRAY_TASK_ID')])
def test_scripts_start_then_resume_the_seeds_run(tmp_path, script, seed_var):
    env = {k: v for k, v in ENV.items() if not k.startswith(('PBS_', 'SLURM_'))}
    env.update({seed_var: '7', 'REPO': ROOT, 'ENV_SETUP': ':', 'OUT_ROOT': str(tmp_path / 'out'),
                'EXPERIMENT': 'exp', 'FLAGS': '--model mnist --epochs 2',
                'PYTHON': _fake_python(tmp_path, 'exit 0')})
    run = tmp_path / 'out' / 'exp' / 'seed_7'
    for _ in range(2):
        r = subprocess.run(['bash', os.path.join(ROOT, script)], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        run.mkdir(exist_ok=True)
        (run / 'args.json').write_text('{}')  # as main.py would have written
    first, second = (tmp_path / 'calls').read_text().splitlines()
    assert first.startswith('main.py --model mnist --epochs 2 --seed 7') and first.endswith(f'--run-dir {run}')
    assert second.endswith(f'--resume {run}')
    assert '--checkpoint-every 500' in first
    log = (tmp_path / 'out' / 'exp' / 'logs' / 'seed_7.log').read_text()
    assert 'main.py exited with 0' in log


def test_slurm_script_passes_sigterm_on_and_reports_main_exit_code(tmp_path):
    # the stand-in behaves as main.py: on SIGTERM it "checkpoints" and exits 143
    fake = _fake_python(tmp_path, f'trap "touch {tmp_path}/got_term; exit 143" TERM\n'
                                  f'touch {tmp_path}/started\nfor i in $(seq 300); do sleep 0.1; done\nexit 0')
    env = {k: v for k, v in ENV.items() if not k.startswith(('PBS_', 'SLURM_'))}
    env.update({'REPO': ROOT, 'ENV_SETUP': ':', 'OUT_ROOT': str(tmp_path / 'out'), 'PYTHON': fake})
    p = subprocess.Popen(['bash', os.path.join(ROOT, SCRIPTS[1])], env=env)
    t0 = time.time()
    while not (tmp_path / 'started').exists():
        assert time.time() - t0 < 30 and p.poll() is None
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)  # what --signal=B:TERM@120 does
    assert p.wait(timeout=30) == 143
    assert (tmp_path / 'got_term').exists()
