"""summarise.py: mean, sd and 95 % CI over runs, against scipy; differing flags listed."""
import json
import os

import numpy as np
import pytest
from scipy import stats

from src.errors import UserError
from src.report import summarise


def fake_run(root, name, seed, latent_acc, joint, extra_flag=None):
    d = root / name
    d.mkdir(parents=True)
    flags = {'model': 'mnist_svhn', 'seed': seed, 'K': 30, 'run_dir': str(d)}
    if extra_flag:
        flags.update(extra_flag)
    (d / 'args.json').write_text(json.dumps({'flags': flags}))
    (d / 'analyse_ms.json').write_text(json.dumps({
        'seed': seed, 'seconds': 12.5, 'latent_accuracy': {'mnist': latent_acc, 'svhn': latent_acc / 2},
        'budget': {'latent_epochs': 30}, 'latent_accuracy_setup': {'mnist': {'lr': 1e-3}}, 'n_test_items': 500,
        'joint_coherence': joint, 'data_source': {'mnist': 'x'}, 'per_item': [1, 2, 3]}))
    (d / 'losses.json').write_text(json.dumps({'train': [3.0, 2.0], 'test': [3.5, 2.0 + seed]}))
    return str(d)


def test_summary_against_scipy(tmp_path, capsys):
    acc, joint = [91.0, 93.5, 90.25], [40.0, 44.0, 41.0]
    for s in range(3):
        fake_run(tmp_path / 'sweep', f'seed{s}', s, acc[s], joint[s])
    rows = {r['metric']: r for r in summarise.main([str(tmp_path / 'sweep'), '--out', str(tmp_path / 'out')])}
    assert set(rows) == {'analyse_ms/latent_accuracy/mnist', 'analyse_ms/latent_accuracy/svhn',
                         'analyse_ms/joint_coherence', 'final_test_loss'}  # seed, seconds, lists left out
    r = rows['analyse_ms/latent_accuracy/mnist']
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(acc), scale=stats.sem(acc))
    assert r['n'] == 3 and r['mean'] == pytest.approx(np.mean(acc)) and r['sd'] == pytest.approx(np.std(acc, ddof=1))
    assert (r['ci95_low'], r['ci95_high']) == pytest.approx((lo, hi))
    assert rows['final_test_loss']['mean'] == pytest.approx(3.0)
    out = capsys.readouterr().out
    assert '`--seed`: 0, 1, 2' in out and '--K' not in out  # only the flags that differ
    saved = json.load(open(tmp_path / 'out' / 'summary.json'))
    assert saved['differing_flags'] == {'seed': [0, 1, 2]} and len(saved['runs']) == 3
    import pandas as pd
    table = pd.read_csv(tmp_path / 'out' / 'summary.csv')
    assert list(table.columns) == ['metric', 'n', 'mean', 'sd', 'ci95_low', 'ci95_high'] and len(table) == 4
    assert os.path.isfile(tmp_path / 'out' / 'summary.md')


def test_a_single_run_gives_strict_json(tmp_path):
    """One run: no sd or interval, written as null (NaN is not JSON: jq and strict parsers refuse it)."""
    fake_run(tmp_path / 'one', 'seed0', 0, 91.0, 40.0)
    summarise.main([str(tmp_path / 'one'), '--out', str(tmp_path / 'out')])

    def refuse(constant):
        raise ValueError(f'{constant} in summary.json')
    saved = json.loads((tmp_path / 'out' / 'summary.json').read_text(), parse_constant=refuse)
    r = {r['metric']: r for r in saved['metrics']}['analyse_ms/latent_accuracy/mnist']
    assert (r['n'], r['mean'], r['sd'], r['ci95_low'], r['ci95_high']) == (1, 91.0, None, None, None)


def test_match_selects_metrics(tmp_path, capsys):
    run = fake_run(tmp_path, 'a', 1, 90.0, 40.0)
    rows = summarise.main([run, '--match', 'joint', '--match', 'final'])
    assert [r['metric'] for r in rows] == ['analyse_ms/joint_coherence', 'final_test_loss']
    with pytest.raises(UserError, match='no analysis results yet matching nothing'):
        summarise.main([run, '--match', 'nothing'])


def test_mixed_configurations_are_named(tmp_path, capsys):
    a = fake_run(tmp_path, 'a', 1, 90.0, 40.0)
    b = fake_run(tmp_path, 'b', 1, 80.0, 30.0, extra_flag={'K': 5})
    summarise.main([a, b])
    assert '`--K`: 30, 5' in capsys.readouterr().out


def test_bad_inputs(tmp_path):
    with pytest.raises(UserError, match='no such directory'):
        summarise.main([str(tmp_path / 'nope')])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(UserError, match='holds no run directory'):
        summarise.main([str(tmp_path / 'empty')])
    d = tmp_path / 'bare'
    d.mkdir()
    (d / 'args.json').write_text(json.dumps({'flags': {'model': 'mnist'}}))
    with pytest.raises(UserError, match='no analysis results yet'):
        summarise.main([str(d)])


def test_groups_side_by_side(tmp_path, capsys):
    """--by joint-posterior: each group's mean and 95 % t interval, as scipy gives them; the seeds that
    differ within a group are named; a flag no run has is an error."""
    acc = {'moe': [91.0, 93.5, 90.25], 'poe': [80.0, 84.0]}
    for g, values in acc.items():
        for s, a in enumerate(values):
            fake_run(tmp_path / 'runs', f'{g}{s}', s, a, 40.0, extra_flag={'joint_posterior': g})
    groups = summarise.main([str(tmp_path / 'runs'), '--by', 'joint-posterior', '--out', str(tmp_path / 'out')])
    assert list(groups) == ['moe', 'poe'] and [len(groups[g]['runs']) for g in groups] == [3, 2]
    for g, values in acc.items():
        r = {r['metric']: r for r in groups[g]['metrics']}['analyse_ms/latent_accuracy/mnist']
        lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
        assert r['mean'] == pytest.approx(np.mean(values))
        assert (r['ci95_low'], r['ci95_high']) == pytest.approx((lo, hi))
    out = capsys.readouterr().out
    assert '| metric | moe | poe |' in out
    assert f"| analyse_ms/latent_accuracy/mnist | {np.mean(acc['moe']):.4g} [" in out
    assert '- moe: flags that differ within the group: `--seed` 0, 1, 2' in out
    assert json.load(open(tmp_path / 'out' / 'summary.json'))['by'] == 'joint_posterior'
    with pytest.raises(UserError, match='none of the runs has that flag'):
        summarise.main([str(tmp_path / 'runs'), '--by', 'no-such-flag'])
