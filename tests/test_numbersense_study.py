"""The number-sense study runner: its protocols (noda2024, extended), main.py
flags passing through, deviations recorded, the cluster commands; end to end
(--quick, offline data, shrunk further by flags and a 10-digits-per-class
MNIST cache) with resumption; and the analysis script's command line."""
import json
import os
import shlex
import subprocess
import sys

import pandas as pd
import pytest
import torch

import src.numbersense_study as study
from src.cli import parse_args
from src.errors import UserError
from src.report.numbersense.authors_stats import named_tests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUPS = ['cmnist VAE', 'MMVAE cmnist enc.', 'oscn VAE', 'MMVAE oscn enc.']
opts_of = study.resolve


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """On a small shared CPU, two OpenMP threads spin against other processes and make these
    tiny batches ~10x slower; one thread is plenty here. Restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def flags(study_dir, data_dir):
    return ['--quick', '--offline', '--no-cuda', '--study-dir', study_dir, '--data-dir', data_dir, '--seeds', '2',
            '--epochs', '1', '--K', '2', '--num-hidden-layers', '1', '--batch-size', '64', '--classifier-epochs', '1',
            '--map', 'none']


def run_dirs(study_dir):
    return sorted(os.path.join(r, d) for r, ds, fs in os.walk(study_dir) for d in ds
                  if os.path.isfile(os.path.join(r, d, 'args.json')))


@pytest.fixture(scope='module')
def finished_study(tiny_data, tmp_path_factory):
    s = str(tmp_path_factory.mktemp('study'))
    study.main(flags(s, tiny_data))
    return s


# ---------------------------------------------------------------- protocols and flags (fast)

def test_noda2024_is_the_default_and_the_authors_configuration():
    opts = opts_of([])
    a = parse_args(study.train_argv(opts, 'cmnist_oscn', 7))
    assert (a.num_hidden_layers, a.latent_dim, a.obj, a.K, a.batch_size, a.epochs) == (4, 20, 'dreg', 20, 128, 50)
    assert (a.arch, a.dist, a.joint_prior, a.seed, a.pair_multiplier) == ('mlp', 'normal', 'laplace', 7, 2)
    assert (a.numbersense_data, a.learn_prior, a.looser, a.llik_scaling, a.dreg_estimator) == \
        ('noda2024', False, False, 0.0, 'released')
    assert opts.protocol == 'noda2024' and opts.seed_list == list(range(20)) and opts.deviations == {}
    assert opts.classifier_epochs == 50 and opts.map == 'tsne'


def test_extended_protocol():
    opts = opts_of(['--protocol', 'extended'])
    a = parse_args(study.train_argv(opts, 'oscn', 1))
    assert (a.pair_multiplier, a.numbersense_data, a.K, a.epochs) == (1, 'extended', 20, 50)
    assert opts.seed_list == list(range(1, 21)) and opts.classifier_epochs == 3 and opts.map == 'umap'
    assert opts.study_dir.endswith('numbersense_extended')


def test_main_flags_pass_through_and_overrides_are_recorded():
    opts = opts_of(['--amp', '--checkpoint-every', '50', '--K', '5', '--llik_scaling', '2.0', '--learn-prior'])
    argv = study.train_argv(opts, 'cmnist_oscn', 0)
    a = parse_args(argv)
    assert (a.amp, a.checkpoint_every, a.K, a.llik_scaling, a.learn_prior) == (True, 50, 5, 2.0, True)
    assert opts.deviations == {'K': {'value': 5, 'protocol': 20}, 'llik_scaling': {'value': 2.0, 'protocol': 0.0},
                               'learn_prior': {'value': True, 'protocol': False}}
    assert '--K 5 (protocol: 20)' in study.deviation_text(opts)
    # The study's own flags are not main.py flags; --quick is recorded as deviations too.
    assert '--protocol' not in argv and '--seeds' not in argv
    assert set(opts_of(['--quick']).deviations) == {'epochs', 'K'}


def test_per_run_flags_are_the_studys():
    for flag in (['--seed', '3'], ['--model', 'oscn'], ['--run-dir', 'x'], ['--resume', 'x']):
        with pytest.raises(UserError, match='the study sets these for each run'):
            opts_of(flag)


def test_print_commands_writes_nothing(tmp_path, capsys):
    s = str(tmp_path / 'study')
    study.main(['--quick', '--offline', '--seeds', '2', '--study-dir', s, '--data-dir', 'd', '--print-commands'])
    lines = capsys.readouterr().out.splitlines()
    assert os.listdir(tmp_path) == []  # printed only: not even the study directory
    jobs = [ln for ln in lines if ' --job ' in ln and not ln.startswith('#')]
    assert len(jobs) == 6 and any(ln.endswith('--job cmnist_oscn:1') for ln in jobs)
    assert any(ln.endswith('--prepare') for ln in lines) and any(ln.endswith('--stats-only') for ln in lines)
    # The commented main.py commands are valid main.py flags with the protocol resolved.
    mains = [shlex.split(ln.lstrip('# '))[2:] for ln in lines if ln.startswith('#    python main.py')]
    assert len(mains) == 6
    a = parse_args(mains[0])
    assert (a.model, a.seed, a.epochs, a.K, a.obj, a.num_hidden_layers, a.offline, a.pair_multiplier) == \
        ('cmnist', 0, study.QUICK_MAIN['epochs'], study.QUICK_MAIN['K'], 'dreg', 4, True, 2)
    # A job line reproduces the same study (same resolved flags) for one run.
    job = opts_of(shlex.split(jobs[-1])[2:])
    assert job.job == ('cmnist_oscn', 1) and job.epochs == study.QUICK_MAIN['epochs'] and job.study_dir == s
    out = tmp_path / 'cmds.sh'
    study.main(['--quick', '--offline', '--seeds', '2', '--study-dir', s, '--data-dir', 'd',
                '--write-commands', str(out)])
    assert capsys.readouterr().out == '' and out.read_text().splitlines() == lines
    assert not os.path.exists(s)


def test_command_line_errors(tmp_path):
    for cmd in ([sys.executable, 'src/numbersense_study.py', '--job', 'svhn:1', '--study-dir', str(tmp_path)],
                [sys.executable, 'src/numbersense_study.py', '--seed', '2', '--study-dir', str(tmp_path)],
                [sys.executable, '-m', 'src.report.numbersense.analyse', '--save-dir', str(tmp_path / 'nope')]):
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.startswith('error: ') and 'Traceback' not in r.stderr


# ---------------------------------------------------------------- end to end (slow)

@pytest.mark.slow
def test_study_end_to_end(finished_study):
    s = finished_study
    runs = run_dirs(s)
    assert len(runs) == 6  # 2 seeds x 3 conditions
    for run in runs:
        res = json.load(open(os.path.join(run, 'numbersense.json')))
        saved = json.load(open(os.path.join(run, 'args.json')))
        assert saved['offline_data'] is True and res['offline_data'] is True and res['protocol'] == 'noda2024'
        assert saved['flags']['epochs'] == 1 and saved['flags']['pair_multiplier'] == 2
        cond = saved['flags']['model']
        assert run == os.path.join(s, cond, f"seed{saved['flags']['seed']:03d}")  # deterministic
        assert set(res['encoders']) == ({'cmnist', 'oscn'} if cond == 'cmnist_oscn' else {cond})
        for enc, r in res['encoders'].items():
            # Tiny data: all training items (fewer than 16 batches of 128), one test batch.
            assert r['arithmetic'][enc]['n_equations'] == 408
            assert 0 <= r['summary']['arithmetic_accuracy'] <= 1
            assert -1 <= r['summary']['silhouette_number'] <= 1
            assert r['decoding'][enc]['n_items'] == 128
        assert os.path.isfile(os.path.join(run, 'numbersense.log'))
    mm = json.load(open(os.path.join(s, 'cmnist_oscn', 'seed000', 'numbersense.json')))['encoders']
    assert 'silhouette_shape' in mm['cmnist']['summary']  # the OSCN partner's shape
    summary = json.load(open(os.path.join(s, 'summary.json')))
    assert summary['n_runs'] == 6 and summary['missing'] == [] and summary['offline_data'] is True
    assert summary['protocol'] == 'noda2024' and summary['accuracy_unit'] == 'fraction'
    assert set(summary['deviations']) == {'epochs', 'K', 'num_hidden_layers', 'batch_size'}
    assert list(summary['groups']) == GROUPS
    for g in GROUPS:
        for m in ('silhouette_number', 'silhouette_colour', 'magnitude_abs_r', 'arithmetic_accuracy'):
            stats = summary['groups'][g][m]
            assert stats['n'] == 2 and sorted(seed for seed, _ in stats['values']) == [0, 1]
            assert stats['mean'] == pytest.approx(sum(v for _, v in stats['values']) / 2)
    assert 'silhouette_shape' not in summary['groups']['cmnist VAE']
    # The authors' family: their columns, calls and per-seed inputs; MMVAE minus VAE.
    cmp_ = summary['authors']['mmvae_vs_vae']['cmnist']['magnitude_avg']
    mm_vals = [v for _, v in summary['groups']['MMVAE cmnist enc.']['magnitude_abs_r']['values']]
    assert cmp_['means']['MMVAE_CMNIST_OSCN'] == pytest.approx(sum(mm_vals) / 2)
    assert cmp_['welch']['inputs']['MMVAE_CMNIST_OSCN'] == summary['groups']['MMVAE cmnist enc.']['magnitude_abs_r'][
        'values'] and cmp_['welch']['n'] == [2, 2] and 'equal_var=False' in cmp_['welch']['call']
    assert cmp_['f_oneway']['df'] == [1, 2] and cmp_['anova_lm']['df'] == [1, 2] and 'p_holm' not in cmp_['welch']
    assert set(summary['authors']['vs_chance']) == set(GROUPS)
    assert set(summary['authors']['transforms_rm']) == {'MMVAE cmnist enc.', 'MMVAE oscn enc.'}
    assert summary['authors']['transforms_rm']['MMVAE oscn enc.']['df'] == [3, 3]  # 4 columns, 2 seeds
    fam = list(named_tests(summary['authors']))
    assert len(fam) == 36 and [x['name'] for x in summary['ours']['authors_holm']] == [
        n for n, t in fam if t['p'] is not None]
    assert 'silhouette_number' in summary['ours']['mmvae_encoders_paired']
    assert summary['stale'] == [] and {r['analysis'] for r in summary['runs']} == {'current'}
    # Budgets in steps, from the runs' metrics.csv.
    for cond, b in summary['budget'].items():
        steps = int(open(os.path.join(s, cond, 'seed000', 'metrics.csv')).read().split()[-1].split(',')[1])
        assert b['steps'] == steps and b['epochs'] == 1
        assert b['fraction_of_protocol_steps'] == pytest.approx(steps / (50 * (1875 if cond == 'cmnist_oscn' else 938)))
    frame = pd.read_csv(os.path.join(s, 'synthesized.csv'))
    assert len(frame) == 8 and set(frame.model_name) == {'VAE_CMNIST', 'VAE_OSCN', 'MMVAE_CMNIST_OSCN'}
    assert os.path.getsize(os.path.join(s, 'summary.png')) > 0
    assert os.path.getsize(os.path.join(s, 'magnitude_vs_silhouette.png')) > 0
    md = open(os.path.join(s, 'summary.md')).read()
    assert "## The authors' tests" in md and "## Ours (not in the authors' family)" in md
    assert md.index("## The authors' tests") < md.index('## Ours') and 'OFFLINE DATA' in md and '| oscn VAE |' in md
    assert '## Training budget (optimiser steps)' in md
    assert 'steps (1 epochs of the offline data;' in open(os.path.join(s, 'study.log')).read()
    assert 'Deviations from protocol noda2024: ' in md and '--epochs 1 (protocol: 50)' in md
    assert '/tmp' not in md.splitlines()[0]  # titled with the study's name, never a temporary path


@pytest.mark.slow
def test_jobs_side_by_side_give_the_same_study(finished_study, tiny_data, tmp_path, monkeypatch):
    """--jobs 2: the same runs and summary as one job at a time (each job a process with 1 of the
    2 cores, as the in-process study here has one thread); a rerun resumes, training nothing."""
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1})
    s = str(tmp_path / 'jobs')
    study.main(flags(s, tiny_data) + ['--jobs', '2'])
    assert [os.path.relpath(r, s) for r in run_dirs(s)] == [os.path.relpath(r, finished_study)
                                                            for r in run_dirs(finished_study)]
    for run in run_dirs(s):
        with open(os.path.join(run, 'args.json')) as f:
            assert json.load(f)['flags']['seed'] in (0, 1)
    def summary(d):
        with open(os.path.join(d, 'summary.json')) as f:
            return json.loads(f.read().replace(d, 'STUDY'))
    assert summary(s) == summary(finished_study)
    log = open(os.path.join(s, 'study.log')).read()
    assert '6 jobs, 2 at a time, 1 threads each' in log and log.count('job done') == 6
    assert os.path.isfile(os.path.join(s, 'jobs', 'cmnist_oscn_seed001.log'))
    mtimes = {r: os.path.getmtime(os.path.join(r, 'model.pt')) for r in run_dirs(s)}
    study.main(flags(s, tiny_data) + ['--jobs', '2'])
    assert all(os.path.getmtime(os.path.join(r, 'model.pt')) == t for r, t in mtimes.items())


@pytest.mark.slow
def test_study_resumes(finished_study, tiny_data):
    s = finished_study
    before = run_dirs(s)
    mtimes = {r: os.path.getmtime(os.path.join(r, 'model.pt')) for r in before}
    victim = os.path.join(s, 'cmnist_oscn', 'seed000')
    os.remove(os.path.join(victim, 'numbersense.json'))
    study.main(flags(s, tiny_data))
    assert run_dirs(s) == before  # nothing new
    assert all(os.path.getmtime(os.path.join(r, 'model.pt')) == mtimes[r] for r in before)  # nothing retrained
    assert os.path.isfile(os.path.join(victim, 'numbersense.json'))  # the missing analysis redone
    log = open(os.path.join(s, 'study.log')).read()
    assert log.count('not trained again') >= 6


@pytest.mark.slow
def test_study_trains_further_and_refuses_other_flags(finished_study, tiny_data):
    s = finished_study
    one = flags(s, tiny_data) + ['--conditions', 'cmnist', '--seeds', '1']  # argparse: the last value wins
    run = os.path.join(s, 'cmnist', 'seed000')
    with pytest.raises(UserError, match=r"--K 2 \(study: 3\)"):
        study.main(one + ['--K', '3'])
    study.main(one + ['--epochs', '2'])  # more epochs: the run is resumed, then analysed again
    assert len(json.load(open(os.path.join(run, 'losses.json')))['train']) == 2
    assert json.load(open(os.path.join(run, 'numbersense.json')))['epochs'] == 2
    assert 'resum' in open(os.path.join(run, 'run.log')).read()
    with pytest.raises(UserError, match=r'--epochs 2 \(study: 1\)'):
        study.main(one)  # fewer epochs than trained: refused, not silently mixed


@pytest.mark.slow
def test_prepare_and_stats_only(finished_study, tiny_data, tmp_path):
    s = str(tmp_path / 'fresh')
    study.main(flags(s, tiny_data) + ['--prepare'])
    log = open(os.path.join(s, 'study.log')).read()
    assert 'cmnist_oscn train: 720 items' in log and 'oscn number classifier: test accuracy' in log
    assert not run_dirs(s)  # prepared, nothing trained
    # --stats-only recomputes the summary of finished runs without training (the cmnist runs
    # may have been trained further by another test: left out).
    runs = run_dirs(finished_study)
    study.main(flags(finished_study, tiny_data) + ['--stats-only', '--conditions', 'oscn', 'cmnist_oscn'])
    after = json.load(open(os.path.join(finished_study, 'summary.json')))
    assert after['n_runs'] == 4 and run_dirs(finished_study) == runs
    assert after['groups']['cmnist VAE'] == {}
    for g, cond, enc in (('oscn VAE', 'oscn', 'oscn'), ('MMVAE cmnist enc.', 'cmnist_oscn', 'cmnist')):
        per_run = [[seed, json.load(open(os.path.join(finished_study, cond, f'seed{seed:03d}', 'numbersense.json')))
                    ['encoders'][enc]['summary']['magnitude_abs_r']] for seed in (0, 1)]
        assert after['groups'][g]['magnitude_abs_r']['values'] == per_run
    # Other analysis settings: --stats-only analyses nothing, leaves those runs out and names them.
    study.main(flags(finished_study, tiny_data) + ['--stats-only', '--conditions', 'oscn', '--classifier-epochs', '2'])
    stale = json.load(open(os.path.join(finished_study, 'summary.json')))
    assert stale['n_runs'] == 0 and [x['run'] for x in stale['stale']] == ['oscn:0', 'oscn:1']
    assert stale['stale'][0]['differences'] == ['classifier_epochs: 1 (requested 2)']
    assert 'oscn:1: classifier_epochs: 1 (requested 2)' in open(os.path.join(finished_study, 'summary.md')).read()
