"""summarise.py: mean, sd and 95 % CI over runs, against scipy; the settings that differ listed, between runs,
within groups and between groups; n where a number is not every run's; coherences at chance marked, not
averaged (their chance levels: src/report/metrics.py, analyse_ms.py)."""
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from src.errors import UserError
from src.report import summarise


def fake_run(root, name, seed, latent_acc, joint, extra_flag=None, **analysis):
    d = root / name
    d.mkdir(parents=True)
    flags = {'model': 'mnist_svhn', 'seed': seed, 'K': 30, 'run_dir': str(d)}
    if extra_flag:
        flags.update(extra_flag)
    (d / 'args.json').write_text(json.dumps({'flags': flags}))
    (d / 'analyse_ms.json').write_text(json.dumps({
        'seed': seed, 'seconds': 12.5, 'latent_accuracy': {'mnist': latent_acc, 'svhn': latent_acc / 2},
        'budget': {'latent_epochs': 30}, 'latent_accuracy_setup': {'mnist': {'lr': 1e-3}}, 'n_test_items': 500,
        'joint_coherence': joint, 'data_source': {'mnist': 'x'}, 'per_item': [1, 2, 3],
        'chance': {'joint_coherence': {'level': 10.0, 'p_value': 1e-9}}, 'at_chance': [], **analysis}))
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
    assert f"| analyse_ms/latent_accuracy/mnist | 3 | {np.mean(acc):.4g} |" in out  # every run: n alone
    saved = json.load(open(tmp_path / 'out' / 'summary.json'))
    assert saved['differing_flags'] == {'--seed': [0, 1, 2]} and len(saved['runs']) == 3
    import pandas as pd
    table = pd.read_csv(tmp_path / 'out' / 'summary.csv')
    assert list(table.columns) == ['metric', 'runs', 'n', 'at_chance', 'mean', 'sd', 'ci95_low', 'ci95_high']
    assert len(table) == 4 and (table['runs'] == 3).all()
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
    """Flags and the analyses' own settings (their budget) alike."""
    a = fake_run(tmp_path, 'a', 1, 90.0, 40.0)
    b = fake_run(tmp_path, 'b', 1, 80.0, 30.0, extra_flag={'K': 5}, budget={'latent_epochs': 5})
    summarise.main([a, b])
    out = capsys.readouterr().out
    assert '`--K`: 30, 5' in out and '`analyse_ms.json budget/latent_epochs`: 30, 5' in out


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
    assert '- moe: settings that differ within the group: `--seed` 0, 1, 2' in out
    assert 'differ in more than' not in out  # nothing but the joint posterior (and the seeds within)
    saved = json.load(open(tmp_path / 'out' / 'summary.json'))
    assert saved['by'] == 'joint_posterior' and saved['differing_between_groups'] == {}
    with pytest.raises(UserError, match='none of the runs has that flag'):
        summarise.main([str(tmp_path / 'runs'), '--by', 'no-such-flag'])


def test_groups_that_differ_in_more_than_the_by_flag_are_headed_by_the_differences(tmp_path, capsys):
    """Other models, another --looser, another analysis budget in one group: each named with its value per group
    (in the markdown and summary.json), not only the --by flag."""
    for s in range(2):
        fake_run(tmp_path / 'runs', f'moe{s}', s, 90.0, 40.0, extra_flag={'joint_posterior': 'moe', 'looser': True})
        fake_run(tmp_path / 'runs', f'poe{s}', s, 80.0, 30.0, budget={'latent_epochs': 5},
                 extra_flag={'joint_posterior': 'poe', 'looser': False, 'model': 'cubISft'})
    summarise.main([str(tmp_path / 'runs'), '--by', 'joint-posterior', '--out', str(tmp_path / 'out')])
    out = capsys.readouterr().out
    assert '**The groups differ in more than `--joint-posterior`:**' in out
    for line in ('- `--looser`: moe True, poe False', '- `--model`: moe mnist_svhn, poe cubISft',
                 '- `analyse_ms.json budget/latent_epochs`: moe 30, poe 5'):
        assert line in out
    assert out.index('differ in more than') < out.index('| metric |')  # above the table
    between = json.load(open(tmp_path / 'out' / 'summary.json'))['differing_between_groups']
    assert set(between) == {'--looser', '--model', 'analyse_ms.json budget/latent_epochs'}
    assert between['--model'] == {'moe': 'mnist_svhn', 'poe': 'cubISft'}


def test_cells_say_n_where_not_every_run_gives_a_number(tmp_path, capsys):
    """Three moe runs, one without a likelihoods file: its cells say n = 2 of 3, the others (every run) do not;
    the CSV has runs and n in every row."""
    values = [-400.0, -410.0, None]
    for s, v in enumerate(values):
        run = fake_run(tmp_path / 'runs', f'moe{s}', s, 90.0 + s, 40.0, extra_flag={'joint_posterior': 'moe'})
        if v is not None:
            with open(os.path.join(run, 'likelihoods.json'), 'w') as f:
                json.dump({'joint': v}, f)
    groups = summarise.main([str(tmp_path / 'runs'), '--by', 'joint-posterior', '--out', str(tmp_path / 'out')])
    out = capsys.readouterr().out
    row = {r['metric']: r for r in groups['moe']['metrics']}['likelihoods/joint']
    assert (row['runs'], row['n'], row['mean']) == (3, 2, -405.0)
    lo, hi = stats.t.interval(0.95, 1, loc=-405.0, scale=stats.sem([-400.0, -410.0]))
    assert f'| likelihoods/joint | {-405.0:.4g} [{lo:.4g}, {hi:.4g}] (n = 2 of 3) |' in out
    assert f"| analyse_ms/latent_accuracy/mnist | {91.0:.4g} [" in out and out.count('(n = ') == 1
    import pandas as pd
    table = pd.read_csv(tmp_path / 'out' / 'summary.csv').set_index('metric')
    assert table.loc['likelihoods/joint', ['runs', 'n']].tolist() == [3, 2]
    assert table.loc['analyse_ms/latent_accuracy/mnist', ['runs', 'n']].tolist() == [3, 3]
    summarise.main([str(tmp_path / 'runs')])  # one table of all runs: the n column says it
    assert '| likelihoods/joint | 2 of 3 | -405 |' in capsys.readouterr().out


def test_a_coherence_at_chance_is_marked_not_averaged(tmp_path, capsys):
    """Classifiers that predict one class each agree 100 % by chance: joint_coherence computes 100 % and its chance
    level 100 %, the binomial test finds it not above, analyse_ms lists it in at_chance; summarise then leaves it out
    of the mean and says so in the cell. A group where every run is at chance shows no number."""
    from src.report import analyse_ms, metrics

    class OneClass(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full(x.shape[:1], 3), 10).float()

    decoded = SimpleNamespace(decode=lambda z: SimpleNamespace(mean=z))  # a decoder whose mean is z itself
    model = SimpleNamespace(pz=torch.distributions.Normal, pz_params=(torch.zeros(1, 4), torch.ones(1, 4)),
                            vaes=[decoded, decoded])
    tally = {}
    agree = metrics.joint_coherence(model, [OneClass(), OneClass()], n=500, batch_size=200, tally=tally)
    assert agree == 100.0 and tally[0].tolist() == tally[1].tolist() == [0, 0, 0, 500] + [0] * 6
    out = {'joint_coherence': agree, 'cross_coherence': {'a->b': 10.0, 'b->a': 60.0},
           'reconstruction_coherence': {'a': 50.0, 'b': 12.0}}
    labels = torch.full((10,), 100)  # 1,000 balanced digits
    ones = torch.tensor([0, 0, 0, 1000] + [0] * 6)
    spread = torch.tensor([100, 100, 100, 100, 100, 100, 100, 100, 150, 50])
    cross = {'labels': labels, (0, 1): ones, (1, 0): spread, (0, 0): spread, (1, 1): spread}
    chance, at = analyse_ms.coherence_chance(out, cross, tally, ['a', 'b'], 1000, 500)
    assert chance['joint_coherence']['level'] == 100.0 and chance['joint_coherence']['p_value'] == 1.0
    assert chance['cross_coherence/a->b']['level'] == pytest.approx(10.0)  # balanced digits: 10 %, whatever predicted
    assert chance['cross_coherence/b->a']['p_value'] < 1e-100
    # 12 % of 1,000 against 10 %: scipy's one-sided binomial test, as written out
    assert chance['reconstruction_coherence/b']['p_value'] == pytest.approx(stats.binom.sf(119, 1000, 0.1))
    assert at == ['cross_coherence/a->b', 'joint_coherence']  # 12 % of 1,000 is above 10 % at the 5 % level

    for s, (joint, at_chance) in enumerate([(100.0, ['joint_coherence']), (30.0, []), (20.0, [])]):
        fake_run(tmp_path / 'runs', f'moe{s}', s, 90.0, joint, extra_flag={'joint_posterior': 'moe'},
                 at_chance=at_chance)
        fake_run(tmp_path / 'runs', f'poe{s}', s, 90.0, 0.0, extra_flag={'joint_posterior': 'poe'},
                 at_chance=['joint_coherence'])
    groups = summarise.main([str(tmp_path / 'runs'), '--by', 'joint-posterior'])
    text = capsys.readouterr().out
    moe, poe = ({r['metric']: r for r in groups[g]['metrics']}['analyse_ms/joint_coherence'] for g in ('moe', 'poe'))
    assert (moe['n'], moe['at_chance'], moe['mean']) == (2, 1, 25.0)
    assert (poe['n'], poe['at_chance'], poe['mean']) == (0, 3, None)
    lo, hi = stats.t.interval(0.95, 1, loc=25.0, scale=stats.sem([30.0, 20.0]))
    assert (f'| analyse_ms/joint_coherence | 25 [{lo:.4g}, {hi:.4g}] (n = 2 of 3; 1 at chance) | '
            f'at chance (3 of 3) |') in text


def test_coherences_without_a_recorded_chance_level_are_named(tmp_path, capsys):
    """analyse_ms.json files from before chance levels were recorded: the table says which coherences could not be
    checked, in how many runs."""
    for s in range(2):
        run = fake_run(tmp_path / 'runs', f'seed{s}', s, 90.0, 40.0)
        if s:
            path = os.path.join(run, 'analyse_ms.json')
            data = json.load(open(path))
            del data['chance'], data['at_chance']
            json.dump(data, open(path, 'w'))
    summarise.main([str(tmp_path / 'runs'), '--out', str(tmp_path / 'out')])
    assert 'Chance level not recorded' in capsys.readouterr().out and 'analyse_ms/joint_coherence (1 run)' in \
        open(tmp_path / 'out' / 'summary.md').read()
    saved = json.load(open(tmp_path / 'out' / 'summary.json'))
    assert saved['chance_not_recorded'] == {'analyse_ms/joint_coherence': 1}
