"""Freed host memory kept for the next step on the CPU by default, glibc's behaviour with
--return-host-memory (src/numerics.py; in every entry point: tests/test_denormals.py). Kept is
observed where it matters: a large tensor allocated and filled again costs no page faults, where
glibc maps it anew each time; bench.py's reference steps run with glibc's behaviour."""
import importlib
import os
import subprocess
import sys

import pytest
import torch

from src import numerics, train
from src.models import MODELS
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


FAULTS = """
import resource, sys, torch
from src.numerics import keep_host_memory
BLOCK = %d

def pages_faulted_per_block(cycles):
    # a BLOCK-sized tensor allocated, filled and freed, with small allocations in between as a step makes them
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        a = torch.empty(BLOCK // 4).fill_(1)
        small = [torch.empty(16) for _ in range(50)]
        del a, small
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / cycles / (BLOCK / 4096)

pages_faulted_per_block(1)
glibc = pages_faulted_per_block(3)
keep_host_memory(True)
pages_faulted_per_block(20)  # glibc's aligned blocks settle into the heap in the first cycles
print(glibc, pages_faulted_per_block(5))
""" % BLOCK


@glibc
def test_kept_memory_is_reused_without_page_faults():
    """In a fresh process (glibc's heap as it comes): page faults per 4 KiB page of a reused block."""
    out = subprocess.run([sys.executable, '-c', FAULTS], cwd=ROOT, capture_output=True, text=True, check=True)
    glibc, kept = map(float, out.stdout.split())
    assert glibc > 0.9 and kept < 0.01, (glibc, kept)


def test_host_memory_sets_and_restores():
    keep_host_memory(False)
    with host_memory(keep=True):
        assert host_memory_kept() is (numerics._glibc() is not None)
        with host_memory(keep=False):
            assert not host_memory_kept()
        assert host_memory_kept() is (numerics._glibc() is not None)
    assert not host_memory_kept()


@pytest.mark.parametrize('device, give_back, kept', [('cpu', False, True), ('cpu', True, False),
                                                     ('cuda', False, False)])
def test_training_numerics_keep_on_the_cpu_unless_returned_and_restore(device, give_back, kept):
    keep_host_memory(False)
    with train.training_numerics(torch.device(device), return_host_memory=give_back):
        assert host_memory_kept() is (kept and numerics._glibc() is not None)
    assert not host_memory_kept()


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
    run = {'model': MODELS['mnist'](args), 'objective': None, 'optimizer': None, 'train_data': [0]}
    with train.training_numerics(device):
        bench.training_steps(run, args, device, iter([(None, None)] * 4))
    assert seen == {'optimised': {True}, 'released': {False}}
