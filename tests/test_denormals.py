"""Subnormal numbers flushed to zero on the CPU by default, IEEE behaviour with --ieee-denormals,
and host memory kept, glibc's behaviour with --return-host-memory (src/numerics.py), in every entry
point: training (main.py, the study), the benchmarks and the analysis scripts. The flush is observed
where it matters: a product with a subnormal result, computed by all of torch's threads, gives 0
(kept memory's page faults: tests/test_host_memory.py)."""
import importlib
import os
import sys

import pytest
import torch

import main as main_module
import src.numbersense_study as study
from src import numerics, train
from src.cli import parse_args
from src.numerics import flushes_denormals, host_memory_kept, keep_host_memory, set_flush_denormal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Reached(BaseException):
    """Raised where an entry point starts its work: the flush state is recorded there."""


@pytest.fixture(autouse=True)
def two_threads_state_restored():
    """Two threads (the OpenMP team has a worker thread to reach); the flush state restored after."""
    n, before = torch.get_num_threads(), flushes_denormals()
    torch.set_num_threads(2)
    yield
    set_flush_denormal(before)
    torch.set_num_threads(n)


def test_set_flush_denormal_reaches_every_openmp_thread():
    x = torch.full((1 << 20,), numerics.SUBNORMAL_PROBE)
    set_flush_denormal(False)
    assert int(torch.count_nonzero(x * 1e-10)) == x.numel() and not flushes_denormals()
    torch.set_flush_denormal(True)  # torch's own call: this thread only (its share of the product is flushed)
    assert 0 < int(torch.count_nonzero(x * 1e-10)) < x.numel()
    set_flush_denormal(True)
    assert int(torch.count_nonzero(x * 1e-10)) == 0 and flushes_denormals()
    assert float(torch.tensor(1e-30) * 1e-10) == 0.0 and float(torch.tensor(1e-30) * 1e-7) != 0.0  # normal: kept


@pytest.mark.parametrize('ieee', [False, True])
def test_training_numerics_flush_unless_ieee_and_restore(ieee):
    set_flush_denormal(False)
    with train.training_numerics(torch.device('cpu'), ieee_denormals=ieee):
        assert flushes_denormals() is not ieee
    assert not flushes_denormals()


FLAGS = [[], ['--ieee-denormals'], ['--return-host-memory']]
GLIBC = numerics._glibc() is not None


def state():
    """(subnormals flushed, host memory kept) now."""
    return flushes_denormals(), host_memory_kept()


def expected(flag):
    """What an entry point on the CPU sets for these flags."""
    return flag != ['--ieee-denormals'], flag != ['--return-host-memory'] and GLIBC


def set_opposite(flag):
    flush, keep = expected(flag)
    set_flush_denormal(not flush)
    keep_host_memory(not keep)


def record_at(monkeypatch, module, name, seen):
    def reached(*a, **k):
        seen.append(state())
        raise Reached
    monkeypatch.setattr(module, name, reached)


def test_flags_default_off_and_which_are_compared_on_a_study_resume():
    for flag in ('ieee_denormals', 'return_host_memory'):
        assert getattr(parse_args([]), flag) is False
        assert getattr(parse_args(['--' + flag.replace('_', '-')]), flag) is True
    assert 'ieee_denormals' in study.expected_flags(['--ieee-denormals'])  # changes results
    assert 'return_host_memory' not in study.expected_flags(['--return-host-memory'])  # does not


@pytest.mark.parametrize('flag', FLAGS)
def test_main_and_the_study_train_with_the_flag(flag, monkeypatch, tmp_path):
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
    set_opposite(flag)  # the study's analysis sets them
    with pytest.raises(Reached):
        study.analyse(opts, str(tmp_path))
    assert seen == [expected(flag)] * 3


@pytest.mark.parametrize('script', ['src.report.analyse_ms', 'src.report.analyse_cub',
                                    'src.report.calculate_likelihoods', 'src.report.numbersense.analyse'])
@pytest.mark.parametrize('flag', FLAGS)
def test_analysis_scripts_with_the_flag(script, flag, monkeypatch, tmp_path):
    module = importlib.import_module(script)
    seen = []
    record_at(monkeypatch, module, 'load_run', seen)
    set_opposite(flag)  # the script must set them
    with pytest.raises(Reached):
        module.main(['--save-dir', str(tmp_path), '--no-cuda', *flag])
    assert seen == [expected(flag)]


@pytest.mark.parametrize('flag', FLAGS)
def test_benchmarks_with_the_flag(flag, monkeypatch):
    sys.path.insert(0, os.path.join(ROOT, 'bench'))
    try:
        bench = importlib.import_module('bench')
        denormals = importlib.import_module('denormals')
    finally:
        sys.path.pop(0)
    seen = []
    record_at(monkeypatch, bench, 'measure', seen)
    with pytest.raises(Reached):
        bench.run_one(bench.bench_parser().parse_args(['--no-cuda', *flag]), 'test')
    record_at(monkeypatch, denormals, 'setup_training', seen)
    with pytest.raises(Reached):  # counts subnormals: IEEE whatever the flag
        denormals.main(['--model', 'mnist', '--no-cuda', *flag])
    assert seen == [expected(flag), (False, expected(flag)[1])]
