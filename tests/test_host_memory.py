"""Freed host memory kept for the next step on the CPU by default, glibc's behaviour with
--return-host-memory (src/numerics.py), in every entry point: training (main.py, the study), the
benchmarks and the analysis scripts. Kept is observed where it matters: a large tensor allocated
and filled again costs no page faults, where glibc maps it anew each time."""
import importlib
import os
import resource
import sys

import pytest
import torch

import main as main_module
import src.numbersense_study as study
from src import numerics, train
from src.cli import parse_args
from src.numerics import host_memory, host_memory_kept, keep_host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = 48 << 20  # above glibc's largest mmap threshold (32 MiB): mapped afresh each time unless kept
glibc = pytest.mark.skipif(numerics._glibc() is None, reason='the C library is not glibc')


class Reached(BaseException):
    """Raised where an entry point starts its work: the host memory state is recorded there."""


@pytest.fixture(autouse=True)
def state_restored():
    before = host_memory_kept()
    yield
    keep_host_memory(before)


def pages_faulted_per_block(cycles):
    """Page faults per 4 KiB page of a BLOCK-sized tensor allocated, filled and freed `cycles` times, with
    small allocations in between as a training step makes them."""
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        a = torch.empty(BLOCK // 4).fill_(1)
        small = [torch.empty(16) for _ in range(50)]
        del a, small
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / cycles / (BLOCK / 4096)


@glibc
def test_kept_memory_is_reused_without_page_faults():
    keep_host_memory(False)
    with host_memory(keep=True):
        assert host_memory_kept()
        pages_faulted_per_block(20)  # glibc's aligned blocks settle into the heap in the first cycles
        assert pages_faulted_per_block(5) < 0.01
    assert not host_memory_kept()
    numerics._glibc().malloc_trim(0)  # what was kept goes back: glibc maps every block anew again
    assert pages_faulted_per_block(3) > 0.9


@pytest.mark.parametrize('device, give_back, kept', [('cpu', False, True), ('cpu', True, False),
                                                     ('cuda', False, False)])
def test_training_numerics_keep_on_the_cpu_unless_returned_and_restore(device, give_back, kept):
    keep_host_memory(False)
    with train.training_numerics(torch.device(device), return_host_memory=give_back):
        assert host_memory_kept() is (kept and numerics._glibc() is not None)
    assert not host_memory_kept()


def test_flag_default_off_and_not_compared_on_a_study_resume():
    assert parse_args([]).return_host_memory is False
    assert parse_args(['--return-host-memory']).return_host_memory is True
    assert 'return_host_memory' not in study.expected_flags(['--return-host-memory'])  # no effect on results


def record_at(monkeypatch, module, name, seen):
    def reached(*a, **k):
        seen.append(host_memory_kept())
        raise Reached
    monkeypatch.setattr(module, name, reached)


@glibc
@pytest.mark.parametrize('flag', [[], ['--return-host-memory']])
def test_main_and_the_study_with_the_flag(flag, monkeypatch, tmp_path):
    seen = []
    record_at(monkeypatch, train, 'setup_training', seen)
    with pytest.raises(Reached):
        main_module.main(['--model', 'mnist', '--out-dir', str(tmp_path), '--no-cuda', *flag])
    opts = study.resolve(['--offline', '--study-dir', str(tmp_path / 's'), '--data-dir', str(tmp_path), '--no-cuda',
                          *flag])
    with pytest.raises(Reached):
        study.train(opts, 'cmnist', 0, resume=False)
    analyse = importlib.import_module('src.report.numbersense.analyse')
    record_at(monkeypatch, analyse, 'analyse', seen)
    keep_host_memory(bool(flag))  # the opposite: the study's analysis sets it
    with pytest.raises(Reached):
        study.analyse(opts, str(tmp_path))
    assert seen == [not flag] * 3


@glibc
@pytest.mark.parametrize('script', ['src.report.analyse_ms', 'src.report.analyse_cub',
                                    'src.report.calculate_likelihoods', 'src.report.numbersense.analyse'])
@pytest.mark.parametrize('flag', [[], ['--return-host-memory']])
def test_analysis_scripts_with_the_flag(script, flag, monkeypatch, tmp_path):
    module = importlib.import_module(script)
    seen = []
    record_at(monkeypatch, module, 'load_run', seen)
    keep_host_memory(bool(flag))  # the opposite of what the script must set
    with pytest.raises(Reached):
        module.main(['--save-dir', str(tmp_path), '--no-cuda', *flag])
    assert seen == [not flag]


@glibc
def test_bench_runs_the_released_step_with_glibcs_behaviour(monkeypatch):
    """bench.py --released: this code's step with memory kept, the released one as its users run it."""
    sys.path.insert(0, os.path.join(ROOT, 'bench'))
    try:
        bench = importlib.import_module('bench')
    finally:
        sys.path.pop(0)
    seen = {}

    def step(model, opt, objective, x, K, device, released=False):
        seen.setdefault('released' if released else 'optimised', set()).add(host_memory_kept())
        return 1.0, 1.0, 1.0
    monkeypatch.setattr(bench, 'timed_step', step)
    args = bench.bench_parser().parse_args(['--model', 'mnist', '--offline', '--released', '--no-cuda'])
    args.first_steps, args.steps = 1, 1
    device = torch.device('cpu')
    run = {'model': torch.nn.Linear(1, 1), 'objective': None, 'optimizer': None, 'train_data': [0]}
    monkeypatch.setattr(bench, 'released_model', lambda run, args, device: (torch.nn.Linear(1, 1), None, None,
                                                                             (True, False)))
    with train.training_numerics(device):
        bench.training_steps(run, args, device, iter([(None, None)] * 4))
    assert seen == {'optimised': {True}, 'released': {False}}
