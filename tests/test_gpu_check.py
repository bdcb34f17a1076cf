"""bench/gpu_check.py without a GPU: the runs it stands for, the flags it benchmarks, the times it implies."""
import importlib.util
import os

import pytest

from src import numbersense_study as study
from src.cli import parse_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location('gpu_check', os.path.join(REPO, 'bench', 'gpu_check.py'))
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def test_the_runs_it_stands_for():
    steps = {name.split(': ')[1]: s for name, (_, s) in gpu_check.CONFIGS.items()}
    # the paper: 30 epochs of 1,682,040 pairs in batches of 128 (docs/baselines.md); the study's protocol:
    # 50 epochs of 938 (VAE) and 1,875 (MMVAE) steps (docs/numbersense.md)
    assert steps == {'mnist_svhn dreg K=30 looser, batch 128': 394_230, 'cmnist_oscn MMVAE': 93_750,
                     'cmnist VAE': 46_900, 'oscn VAE': 46_900}


@pytest.mark.parametrize('model', ['cmnist_oscn', 'cmnist', 'oscn'])
def test_the_number_sense_steps_are_the_studys(model):
    bench = vars(parse_args(gpu_check.numbersense_flags(model)))
    want = vars(parse_args(study.train_argv(study.resolve([]), model, 0)))
    for k in study.PROTOCOLS['noda2024']:
        if k not in ('epochs', 'data_dir', 'offline'):
            assert bench[k] == want[k], k


def test_the_table_of_implied_times():
    ms = {'paper': 100.0, 'cmnist_oscn MMVAE': 20.0, 'cmnist VAE': 4.0, 'oscn VAE': 6.0}
    results = {}
    for name in gpu_check.CONFIGS:
        key = 'paper' if name.startswith('paper') else name.split(': ')[1]
        results[(name, 'float32')] = {'step_ms': ms[key]}
        results[(name, 'amp')] = {'step_ms': ms[key] / 2, 'steady_step_ms': ms[key] / 4}  # the steady state wins
        results[(name, 'compile')] = None  # failed
    text = gpu_check.table({'name': 'Card X', 'torch': '2', 'count': 1}, results, ['float32', 'amp', 'compile'])
    assert 'Card X' in text and '| 100.0 | 25.0 | failed |' in text
    assert 'the paper run (394,230 steps): 11.0 h, 2.7 h, - |' in text  # 394,230 x 0.1 s = 10.95 h
    assert 'one epoch of the paper run (13,141 steps): float32 0.37 h, amp 0.09 h, compile -' in text
    study_h = 20 * (93_750 * 0.020 + 46_900 * 0.004 + 46_900 * 0.006) / 3600  # 20 seeds x 3 runs
    assert f'float32 {study_h:,.1f} h, amp {study_h / 4:,.1f} h, compile -' in text


def test_without_a_gpu_it_says_so(monkeypatch, capsys):
    monkeypatch.delenv('MMVAE_TEST_DEVICE', raising=False)
    monkeypatch.setattr(gpu_check.torch.cuda, 'is_available', lambda: False)
    assert gpu_check.main([]) == 2
    assert capsys.readouterr().err.startswith('error: no CUDA GPU here')
