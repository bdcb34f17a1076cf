"""bench/amp_accuracy.py's comparison: --amp minus float32 seed by seed, and the paired test on it."""
import importlib.util
import math
import os

import pytest
from scipy.stats import t as student_t

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location('amp_accuracy', os.path.join(REPO, 'bench', 'amp_accuracy.py'))
amp_accuracy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(amp_accuracy)

F32 = {1: 10.0, 2: 12.0, 3: 11.0, 4: 9.0}
AMP = {1: 10.5, 2: 11.0, 3: 12.5}  # seed 4 has no --amp run yet: no pair


def rows():
    out = [{'config': 'ms', 'numerics': 'float32', 'seed': s, 'test_loss': v, 'same': 1.0} for s, v in F32.items()]
    out += [{'config': 'ms', 'numerics': 'amp', 'seed': s, 'test_loss': v, 'same': 1.0} for s, v in AMP.items()]
    return out + [{'config': 'ns', 'numerics': 'amp', 'seed': 1, 'test_loss': 0.0}]  # another configuration


def test_paired_differences_and_their_t_test():
    d = amp_accuracy.paired(rows(), 'ms', ['test_loss', 'same'])
    assert d['seeds'] == [1, 2, 3]
    assert d['test_loss']['per_seed'] == [0.5, -1.0, 1.5]
    assert d['test_loss']['mean'] == pytest.approx(1 / 3)
    # the paired t statistic by hand: mean difference over its standard error, n - 1 degrees of freedom
    diffs = [0.5, -1.0, 1.5]
    mean = sum(diffs) / 3
    se = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2 / 3)
    assert d['test_loss']['p_paired_t'] == pytest.approx(2 * student_t.sf(mean / se, 2))
    assert d['same'] == {'per_seed': [0.0, 0.0, 0.0], 'mean': 0.0, 'p_paired_t': None}  # no spread: no test


def test_the_table_shows_each_seed_and_the_float32_spread():
    a = amp_accuracy.parse(['summarise', '--out', 'x', '--configs', 'ms'])
    summary = {'ms float32': {'seeds': [1, 2, 3, 4], 'test_loss': {'mean': 10.5, 'sd': 2.0}},
               'ms amp': {'seeds': [1, 2, 3], 'test_loss': {'mean': 11.0, 'sd': 0.5}},
               'ms amp - float32': amp_accuracy.paired(rows(), 'ms', ['test_loss'])}
    table = amp_accuracy.markdown(summary, a)
    assert '### ms: seeds float32 [1, 2, 3, 4], --amp [1, 2, 3]' in table
    p = summary['ms amp - float32']['test_loss']['p_paired_t']
    assert f'| test_loss | 10.5 (2) | 11 (0.5) | +0.5 / -1 / +1.5 | +0.17 | {p:.2f} |' in table


def test_a_resumed_runs_curve_counts_each_step_once(tmp_path):
    """A run stopped in epoch 2 and resumed from its checkpoint at the end of epoch 1 logs epoch 2's first
    steps again: each step once, in order."""
    lines = ['  epoch 1 batch     0/3  loss/item 9.0', '  epoch 1 batch     2/3  loss/item 8.0',
             '  epoch 2 batch     0/3  loss/item 7.0', '==== resuming', '  epoch 2 batch     0/3  loss/item 7.0',
             '  epoch 2 batch     2/3  loss/item 6.0']
    (tmp_path / 'run.log').write_text('\n'.join(lines) + '\n')
    assert amp_accuracy.curve(str(tmp_path)) == ([1, 3, 4, 6], [9.0, 8.0, 7.0, 6.0])
