"""The number-sense statistics: the authors' family of tests (src/report/numbersense/
authors_stats.py) against scipy / statsmodels called as their synthesize.py calls
them, on fixed numbers laid out as their data frame; ours apart (our_stats.py);
models not above chance flagged; stale analyses re-run by the study."""
import ast
import json
import logging
import os

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats as sps
from statsmodels.formula.api import ols
from statsmodels.stats.anova import AnovaRM

import src.numbersense_study as study
from src.report.numbersense import authors_stats as A
from src.report.numbersense import summary, summary_md
from src.report.numbersense.metrics import MAGNITUDE_VARIANTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = (0, 1, 2, 3)
# Fixed per-seed values: (measure, encoder of the MMVAE or the VAE) -> 4 seeds.
MM = {'cmnist': dict(silhouette_number=[0.02, 0.05, 0.04, 0.07], arithmetic_accuracy=[0.20, 0.25, 0.18, 0.30],
                     reconstruction_accuracy=[0.70, 0.80, 0.75, 0.72], cross_accuracy=[0.30, 0.22, 0.26, 0.28]),
      'oscn': dict(silhouette_number=[-0.10, -0.12, -0.05, -0.09], arithmetic_accuracy=[0.12, 0.10, 0.13, 0.11],
                   reconstruction_accuracy=[0.60, 0.50, 0.55, 0.65], cross_accuracy=[0.40, 0.35, 0.45, 0.38])}
VAE = {'cmnist': dict(silhouette_number=[-0.02, -0.01, -0.03, 0.00], arithmetic_accuracy=[0.10, 0.12, 0.09, 0.11],
                      reconstruction_accuracy=[0.40, 0.45, 0.38, 0.42]),
       'oscn': dict(silhouette_number=[-0.12, -0.13, -0.11, -0.10], arithmetic_accuracy=[0.11, 0.12, 0.10, 0.13],
                    reconstruction_accuracy=[0.50, 0.52, 0.48, 0.55])}


def _magnitudes(base, seed):
    """magnitude_abs_r and its variants: distinct values per variant and seed; log of the means undefined."""
    out = {}
    for i, v in enumerate(MAGNITUDE_VARIANTS):
        key = 'magnitude_abs_r' if v == 'none' else f'magnitude_{v}'
        out[key] = None if v == 'log_mean' else round(base + 0.03 * i + 0.011 * seed * (i % 3) + 0.007 * seed, 4)
    return out


def _summary(table, mod, seed, base):
    s = {m: v[seed] for m, v in table[mod].items()}
    return {**s, **_magnitudes(base, seed), 'silhouette_colour': 0.2 + 0.01 * seed}


def results():
    out = []
    for seed in SEEDS:
        out.append(('cmnist', seed, {'cmnist': _summary(VAE, 'cmnist', seed, 0.30)}))
        out.append(('oscn', seed, {'oscn': _summary(VAE, 'oscn', seed, 0.50)}))
        out.append(('cmnist_oscn', seed, {'cmnist': _summary(MM, 'cmnist', seed, 0.60),
                                          'oscn': _summary(MM, 'oscn', seed, 0.80)}))
    return out


@pytest.fixture(scope='module')
def df():
    return A.frame(results())


def test_their_data_frame(df):
    assert len(df) == 4 * len(SEEDS)  # VAE_CMNIST, VAE_OSCN, and the MMVAE at t = 0 and t = 1
    row = df[(df.model_name == 'MMVAE_CMNIST_OSCN') & (df.target_modality == 1) & (df.seed == 2)].iloc[0]
    assert row['id'] == 'mmvae_cmnist_oscn_seed_2' and row['target_property'] == 1
    assert row['reconst_1x1_avg'] == MM['oscn']['reconstruction_accuracy'][2] and np.isnan(row['reconst_0x0_avg'])
    # cross_0x1 of the OSCN row: the CMNIST encoder into the OSCN decoder (our cmnist encoder's cross_accuracy).
    assert row['cross_0x1_avg'] == MM['cmnist']['cross_accuracy'][2] and np.isnan(row['cross_1x0_avg'])
    assert row['cluster_avg'] == MM['oscn']['silhouette_number'][2] and row['mathematics_avg'] == 0.13
    vo = df[df.model_name == 'VAE_OSCN']
    # Their VAE_OSCN is analysed at t = 0; synthesize.py moves its reconstruction to reconst_1x1.
    assert set(vo.target_modality) == {0} and vo.reconst_0x0_avg.isna().all()
    assert list(vo.reconst_1x1_avg) == VAE['oscn']['reconstruction_accuracy']
    assert df.magnitude_log_mean_avg.isna().all() and df.magnitude_avg.notna().all()


def _their_query(df, t, col):
    """synthesize.py perform_anova's selection, written as theirs (query strings, pivot by id)."""
    vae_name = A.VAE[t]
    q = f"(model_name in ['MMVAE_CMNIST_OSCN'] and target_modality == {t}) or model_name in ['{vae_name}']"
    long = df.query(q)[['id', 'model_name', col]].copy()
    long['id'] = long['id'].str.replace('mmvae_cmnist_oscn_', '').str.replace('vae_oscn_', '').str.replace(
        'vae_cmnist_', '')
    return long, pd.pivot(data=long, index='id', columns='model_name', values=col)


@pytest.mark.parametrize('t', [0, 1])
def test_mmvae_vs_vae_as_their_perform_anova(df, t):
    for col in A.compared(t):
        long, wide = _their_query(df, t, col)
        r = A.mmvae_vs_vae(df, t, col)
        f = sps.f_oneway(wide['MMVAE_CMNIST_OSCN'], wide[A.VAE[t]])
        assert (r['f_oneway']['F'], r['f_oneway']['p']) == (pytest.approx(f.statistic), pytest.approx(f.pvalue))
        table = sm.stats.anova_lm(ols(f'{col} ~ C(model_name)', data=long).fit(), typ=2)
        assert r['anova_lm']['F'] == pytest.approx(table.loc['C(model_name)', 'F'])
        assert r['anova_lm']['p'] == pytest.approx(table.loc['C(model_name)', 'PR(>F)'])
        assert r['anova_lm']['sum_sq'] == pytest.approx(list(table['sum_sq']))
        w = sps.ttest_ind(wide['MMVAE_CMNIST_OSCN'], wide[A.VAE[t]], equal_var=False)
        assert (r['welch']['t'], r['welch']['p']) == (pytest.approx(w.statistic), pytest.approx(w.pvalue))
        assert r['f_oneway']['inputs']['MMVAE_CMNIST_OSCN'] == [[s, v] for s, v in zip(
            SEEDS, wide['MMVAE_CMNIST_OSCN'], strict=True)]
    # Direction: MMVAE minus VAE. The CMNIST MMVAE encoder reconstructs better than the VAE: t > 0.
    rec = A.mmvae_vs_vae(df, 0, 'reconst_0x0_avg')
    assert rec['welch']['t'] > 0 and rec['means']['MMVAE_CMNIST_OSCN'] > rec['means']['VAE_CMNIST']
    assert A.mmvae_vs_vae(df, 1, 'cluster_avg')['welch']['t'] > 0  # -0.09 against -0.115


def test_transforms_as_their_perform_anova_logtrans(df):
    for model, t in (('MMVAE_CMNIST_OSCN', 0), ('MMVAE_CMNIST_OSCN', 1), ('VAE_CMNIST', 0), ('VAE_OSCN', 1)):
        q = (f'(model_name in [{model!r}] and target_modality == {t})' if model.startswith('MMVAE')
             else f'model_name in [{model!r}]')
        wide = df.query(q)[A.TRANSFORMS]
        ref = sps.f_oneway(*[wide[c] for c in ['magnitude_avg', 'magnitude_logmin_mean_avg',
                                               'magnitude_exp_mean_avg', 'magnitude_pow_mean_avg']])
        r = A.transforms_oneway(df, model, t)
        assert (r['F'], r['p'], r['df']) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue), [3, 12])


@pytest.mark.parametrize('t', [0, 1])
def test_repeated_measures_as_their_r_script(df, t):
    """anovakun(df[MMVAE & target t, four columns], "sA", 4): seeds as subjects, no correction."""
    sub = df[(df.model_name == 'MMVAE_CMNIST_OSCN') & (df.target_modality == t)]
    cols = ['magnitude_avg', 'magnitude_exp_mean_avg', 'magnitude_pow_mean_avg', 'magnitude_logmin_mean_avg']
    long = sub.melt(id_vars='seed', value_vars=cols, var_name='level', value_name='value')
    ref = AnovaRM(long, 'value', 'seed', within=['level']).fit().anova_table.loc['level']
    r = A.transforms_rm(df, t)
    assert (r['F'], r['p'], r['df']) == (pytest.approx(ref['F Value']), pytest.approx(ref['Pr > F']), [3, 9])
    m = sub[cols].to_numpy()  # the textbook F, subjects x levels
    n, k = m.shape
    g = m.mean()
    ss_a, ss_s = n * ((m.mean(0) - g) ** 2).sum(), k * ((m.mean(1) - g) ** 2).sum()
    ss_e = ((m - g) ** 2).sum() - ss_a - ss_s
    assert r['F'] == pytest.approx((ss_a / (k - 1)) / (ss_e / ((k - 1) * (n - 1))))
    assert r['subjects'] == list(SEEDS) and r['sphericity']['W'] is not None  # 4 seeds, 4 levels: defined
    assert r['p'] < 0.10 and r['pairwise_run'] and len(r['pairwise_shaffer']) == 6
    few = A.transforms_rm(df[df.seed < 3], t)  # 3 seeds < 4 levels: no sphericity test, as anovakun
    assert few['df'] == [3, 6] and few['sphericity']['W'] is None and few['sphericity']['eps_gg'] is not None


def test_no_pairwise_comparisons_where_anovakun_runs_none(df):
    """anovakun follows up a main effect only when its p < .10 (anovakun_485.txt, post.analyses and sig.sign):
    four magnitude columns with equal means over the seeds give no pairwise comparisons."""
    flat = df.copy()
    rows = (flat.model_name == 'MMVAE_CMNIST_OSCN') & (flat.target_modality == 0)
    flat.loc[rows, A.R_TRANSFORMS] = [[0.50, 0.52, 0.48, 0.50], [0.60, 0.58, 0.62, 0.60], [0.55, 0.55, 0.57, 0.53],
                                      [0.40, 0.42, 0.38, 0.40]]
    r = A.transforms_rm(flat, 0)
    long = flat[rows].melt(id_vars='seed', value_vars=A.R_TRANSFORMS, var_name='level', value_name='value')
    assert r['p'] == pytest.approx(AnovaRM(long, 'value', 'seed', within=['level']).fit().anova_table.loc[
        'level', 'Pr > F']) and r['p'] >= 0.10
    assert not r['pairwise_run'] and r['pairwise_shaffer'] == []
    text = summary_md.authors_transforms({'transforms_oneway': {}, 'transforms_rm': {'MMVAE cmnist enc.': r}})
    assert f"none for MMVAE cmnist enc. (p = {r['p']:.2g})" in '\n'.join(text)


def test_vs_chance_as_their_perform_one_sample(df):
    """A cross test is listed under its encoder (cross_0x1: the CMNIST encoder into the OSCN decoder, the group
    table's cross_accuracy of MMVAE cmnist enc.), though their frame holds it in the OSCN row."""
    fam = A.family(df)
    assert set(fam['vs_chance']['MMVAE cmnist enc.']) == {'reconst_0x0_avg', 'cross_0x1_avg', 'mathematics_avg'}
    assert set(fam['vs_chance']['oscn VAE']) == {'reconst_1x1_avg', 'mathematics_avg'}
    r = fam['vs_chance']['MMVAE cmnist enc.']['cross_0x1_avg']
    ref = sps.ttest_1samp(MM['cmnist']['cross_accuracy'], popmean=1 / 9)  # the CMNIST encoder into the OSCN decoder
    assert (r['t'], r['p'], r['df']) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue), 3)
    assert r['target_modality'] == 1  # their row: target OSCN
    r = fam['vs_chance']['oscn VAE']['reconst_1x1_avg']
    assert r['t'] == pytest.approx(sps.ttest_1samp(VAE['oscn']['reconstruction_accuracy'], 1 / 9).statistic)


def test_the_family_and_ours_apart(df):
    fam = A.family(df)
    names = [n for n, _ in A.named_tests(fam)]
    assert len(names) == 2 * 5 * 2 + 4 + 2 + (3 + 2) * 2 == 36  # f_oneway + Welch, transforms, RM, vs chance
    values = {g: {} for g, _, _ in summary.GROUPS}
    for cond, seed, encs in results():
        for g, gcond, enc in summary.GROUPS:
            if gcond == cond:
                for m, v in encs[enc].items():
                    if v is not None:
                        values[g].setdefault(m, []).append([seed, v])
    st, _ = summary.statistics({g: {m: values[g].get(m, []) for m in summary.METRICS + summary.MAGNITUDES}
                                for g in values}, results())
    ours = st['ours']
    assert len(ours['authors_holm']) == 36 and all('p_holm' not in t for _, t in A.named_tests(st['authors']))
    holm = {x['name']: x for x in ours['authors_holm']}
    ps = [x['p'] for x in ours['authors_holm']]
    from statsmodels.stats.multitest import multipletests
    assert [x['p_holm'] for x in ours['authors_holm']] == pytest.approx(list(multipletests(ps, method='holm')[1]))
    assert holm['cmnist: MMVAE vs VAE cluster_avg, Welch t']['p'] == st['authors']['mmvae_vs_vae']['cmnist'][
        'cluster_avg']['welch']['p']
    # Ours: the _dist variants enter only our all-variant AnovaRM (log of the means left out).
    rm = ours['magnitude_all_variants_rm']['MMVAE cmnist enc.']
    assert rm['dropped_levels'] == ['magnitude_log_mean'] and rm['df'] == [7, 21]
    assert set(ours['mmvae_vs_vae_silhouettes']['cmnist']) == {'silhouette_colour'}
    assert 'p_holm' in ours['mmvae_encoders_paired']['silhouette_number']
    gg = ours['rm_gg_corrected']['MMVAE oscn enc.']
    assert gg['p'] >= gg['p_uncorrected'] and gg['F'] == pytest.approx(st['authors']['transforms_rm'][
        'MMVAE oscn enc.']['F'])
    assert st['not_above_chance'] == {}  # every group reconstructs above 1/9 here


def test_a_model_at_chance_is_flagged(df):
    res = [(c, s, {e: dict(v, reconstruction_accuracy=[0.10, 0.12, 0.11, 0.115][s]) if c == 'oscn' else v
                   for e, v in encs.items()}) for c, s, encs in results()]
    values = {g: {m: [] for m in summary.METRICS + summary.MAGNITUDES} for g, _, _ in summary.GROUPS}
    for cond, seed, encs in res:
        for g, gcond, enc in summary.GROUPS:
            if gcond == cond:
                for m in values[g]:
                    if encs[enc].get(m) is not None:
                        values[g][m].append([seed, encs[enc][m]])
    st, _ = summary.statistics(values, res)
    assert list(st['not_above_chance']) == ['oscn VAE']
    a = st['authors']
    assert a['mmvae_vs_vae']['oscn']['cluster_avg']['welch']['flag'].startswith('oscn VAE: reconstruction accuracy')
    assert a['mmvae_vs_vae']['cmnist']['cluster_avg']['welch']['flag'] is None
    assert a['transforms_oneway']['oscn VAE']['flag'] and not a['transforms_oneway']['MMVAE oscn enc.']['flag']


# ---------------------------------------------------------------- stale analyses

def test_a_stale_analysis_is_analysed_again(tmp_path, monkeypatch):
    """A finished run whose numbersense.json was made with other settings is re-analysed; a current one is not."""
    opts = study.resolve(['--quick', '--offline', '--study-dir', str(tmp_path), '--seeds', '1'])
    run = study.run_dir(opts, 'oscn', 0)
    os.makedirs(run)
    flags = study.expected_flags(study.train_argv(opts, 'oscn', 0))
    json.dump({'flags': flags}, open(os.path.join(run, 'args.json'), 'w'))
    json.dump({'train': [1.0] * opts.epochs}, open(os.path.join(run, 'losses.json'), 'w'))
    calls = []
    monkeypatch.setattr(study, 'analyse', lambda o, r: calls.append(r))
    monkeypatch.setattr(study, 'log_budget', lambda *a: None)
    settings = study.requested_settings(opts, 'oscn', 0)
    current = {'epochs': opts.epochs, 'settings': settings}
    for stored, again in ((current, False), ({**current, 'settings': {**settings, 'classifier_epochs': 50}}, True),
                          ({**current, 'epochs': 1}, True), ({'epochs': opts.epochs}, True)):
        json.dump(stored, open(os.path.join(run, 'numbersense.json'), 'w'))
        calls.clear()
        study.do_job(opts, 'oscn', 0)
        assert calls == ([run] if again else [])
    json.dump({**current, 'settings': {**settings, 'classifier_epochs': 50}},
              open(os.path.join(run, 'numbersense.json'), 'w'))
    state, diff = study.analysis_state(opts, 'oscn', 0)
    assert state == 'stale' and diff == [f'classifier_epochs: 50 (requested {opts.classifier_epochs})']
    # Another --map or --classifier-epochs makes it stale too; --map-points is no noda2024 setting.
    assert study.analysis_state(study.resolve(['--quick', '--offline', '--study-dir', str(tmp_path), '--seeds', '1',
                                               '--classifier-epochs', '50']), 'oscn', 0)[0] == 'current'
    assert study.requested_settings(study.resolve(['--map-points', '7']), 'oscn', 0) == \
        study.requested_settings(study.resolve([]), 'oscn', 0)
    assert study.requested_settings(study.resolve(['--map', 'none']), 'oscn', 0)['tsne_perplexity'] is None


def test_the_summary_names_and_leaves_out_stale_runs(tmp_path):
    runs = []
    for cond, seed, encs in results():
        path = tmp_path / cond / f'seed{seed:03d}'
        path.mkdir(parents=True)
        (path / 'numbersense.json').write_text(json.dumps({'encoders': {e: {'summary': s} for e, s in encs.items()}}))
        runs.append({'condition': cond, 'seed': seed, 'path': str(path), 'training': 'finished', 'analysis': 'current',
                     'differences': [], 'budget': None})
    runs[0].update(analysis='stale', differences=['map: none (requested tsne)'])
    opts = type('O', (), dict(study_dir=str(tmp_path), protocol='noda2024', offline=True, deviations={},
                              seed_list=list(SEEDS), conditions=['cmnist', 'oscn', 'cmnist_oscn']))()
    out = summary.aggregate(opts, logging.getLogger('test'), runs, 'flags', '', ['--x'])
    assert out['stale'] == [{'run': 'cmnist:0', 'differences': ['map: none (requested tsne)']}]
    assert out['n_runs'] == 11
    assert [s for s, _ in out['groups']['cmnist VAE']['silhouette_number']['values']] == [1, 2, 3]
    md = (tmp_path / 'summary.md').read_text()
    assert 'cmnist:0: map: none (requested tsne)' in md and 'left out of the statistics' in md
    frame = pd.read_csv(tmp_path / 'synthesized.csv')  # their layout, readable by their R script
    assert len(frame) == 15 and {'model_name', 'target_modality', 'magnitude_logmin_mean_avg'} <= set(frame.columns)


def test_the_report_does_not_import_the_runner():
    """The runner depends on the report, never the other way round: no module under src/report
    imports src.numbersense_study, at its top or inside a function."""
    importers = []
    for folder, _, files in os.walk(os.path.join(ROOT, 'src', 'report')):
        for f in files:
            if f.endswith('.py'):
                path = os.path.join(folder, f)
                for node in ast.walk(ast.parse(open(path).read())):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        names = [getattr(node, 'module', None) or '', *(a.name for a in node.names)]
                        if any('numbersense_study' in n for n in names):
                            importers.append(os.path.relpath(path, ROOT))
    assert importers == []



# ---------------------------------------------------------------- a study folder, recomputed from summary.json

def _vals(pairs):
    return [v for _, v in pairs]


@pytest.fixture(scope='module')
def stats_only_study(tmp_path_factory):
    """A finished offline study folder holding only small files (no weights): each run's args.json,
    losses.json, metrics.csv and numbersense.json with the fixed numbers above, then --stats-only."""
    d = tmp_path_factory.mktemp('study')
    argv = ['--offline', '--seeds', str(len(SEEDS)), '--first-seed', '0', '--epochs', '10', '--study-dir', str(d)]
    opts = study.resolve(argv)
    for cond, seed, encs in results():
        run = study.run_dir(opts, cond, seed)
        os.makedirs(run)
        flags = study.expected_flags(study.train_argv(opts, cond, seed))
        json.dump({'flags': flags}, open(os.path.join(run, 'args.json'), 'w'))
        json.dump({'train': [1.0] * 10}, open(os.path.join(run, 'losses.json'), 'w'))
        open(os.path.join(run, 'metrics.csv'), 'w').write('epoch,step\n9,1017\n10,1130\n')
        result = {'epochs': 10, 'settings': study.requested_settings(opts, cond, seed),
                  'encoders': {e: {'summary': s} for e, s in encs.items()}}
        json.dump(result, open(os.path.join(run, 'numbersense.json'), 'w'))
    study.main(argv + ['--stats-only'])
    return d, argv


def test_summary_tests_recompute_from_their_recorded_inputs(stats_only_study):
    """Every authors' test in summary.json is recomputed from its recorded per-seed inputs with scipy /
    statsmodels alone, and those inputs are the runs' own numbersense.json values."""
    d, _ = stats_only_study
    s = json.load(open(d / 'summary.json'))
    a = s['authors']
    assert s['n_runs'] == 12 and s['offline_data'] and s['stale'] == [] and s['missing'] == []
    assert len(list(A.named_tests(a))) == 36
    for t, (mod, cols) in enumerate(a['mmvae_vs_vae'].items()):
        assert mod == A.MODALITIES[t] and list(cols) == A.compared(t)
        for col, r in cols.items():
            mm, vae = (_vals(r['welch']['inputs'][m]) for m in r['welch']['models'])
            assert len(mm) == len(vae) == len(SEEDS)
            w = sps.ttest_ind(mm, vae, equal_var=False)
            assert (r['welch']['t'], r['welch']['p']) == (pytest.approx(w.statistic), pytest.approx(w.pvalue))
            f = sps.f_oneway(mm, vae)
            assert (r['f_oneway']['F'], r['f_oneway']['p']) == (pytest.approx(f.statistic), pytest.approx(f.pvalue))
            long = pd.DataFrame([(m, v) for m in r['anova_lm']['models'] for v in _vals(r['anova_lm']['inputs'][m])],
                                columns=['model_name', col])
            table = sm.stats.anova_lm(ols(f'{col} ~ C(model_name)', data=long).fit(), typ=2)
            assert r['anova_lm']['F'] == pytest.approx(table.loc['C(model_name)', 'F'])
            assert r['anova_lm']['p'] == pytest.approx(table.loc['C(model_name)', 'PR(>F)'])
    for g, cols in a['vs_chance'].items():
        for r in cols.values():
            ref = sps.ttest_1samp(_vals(next(iter(r['inputs'].values()))), 1 / 9)
            assert (r['t'], r['p'], r['df']) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue), 3), g
    for r in a['transforms_rm'].values():
        assert list(r['inputs']) == A.R_TRANSFORMS
        long = pd.DataFrame([(seed, c, v) for c, pairs in r['inputs'].items() for seed, v in pairs],
                            columns=['seed', 'level', 'value'])
        ref = AnovaRM(long, 'value', 'seed', within=['level']).fit().anova_table.loc['level']
        assert (r['F'], r['p'], r['df']) == (pytest.approx(ref['F Value']), pytest.approx(ref['Pr > F']), [3, 9])
    for r in a['transforms_oneway'].values():
        ref = sps.f_oneway(*[_vals(v) for v in r['inputs'].values()])
        assert (r['F'], r['p']) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    # The inputs are the runs' own analysis files: the OSCN encoder of the MMVAE, seed 1.
    run = json.load(open(d / 'cmnist_oscn' / 'seed001' / 'numbersense.json'))
    assert [1, run['encoders']['oscn']['summary']['magnitude_abs_r']] in \
        a['transforms_rm']['MMVAE oscn enc.']['inputs']['magnitude_avg']
    assert a['vs_chance']['MMVAE cmnist enc.']['cross_0x1_avg']['inputs']['MMVAE_CMNIST_OSCN'] == [
        [seed, v] for seed, v in zip(SEEDS, MM['cmnist']['cross_accuracy'], strict=True)]
    # Budgets in steps, with the share of the protocol's (50 epochs of the real data, batch 128).
    b = s['budget']['cmnist']
    assert (b['steps'], b['epochs']) == (1130, 10)
    assert b['fraction_of_protocol_steps'] == pytest.approx(1130 / (50 * 938))
    # synthesized.csv is their data frame of these runs (in the study's order: condition, then seed).
    in_order = sorted(results(), key=lambda r: (study.CONDITIONS.index(r[0]), r[1]))
    pd.testing.assert_frame_equal(pd.read_csv(d / 'synthesized.csv'), A.frame(in_order), check_dtype=False)


def test_stats_only_again_gives_the_same_summary(stats_only_study, tmp_path):
    """The statistics of a copy of the study folder (its small files only) are the same: anyone can
    recompute summary.json from the per-run analysis files without retraining."""
    import shutil
    d, argv = stats_only_study
    copy = tmp_path / 'copy'
    shutil.copytree(d, copy, ignore=shutil.ignore_patterns('summary.*', 'synthesized.csv', '*.png', 'study.log'))
    study.main([*argv[:-1], str(copy), '--stats-only'])
    new, old = (json.load(open(x / 'summary.json')) for x in (copy, d))
    for k in ('groups', 'authors', 'ours', 'budget', 'not_above_chance', 'stale', 'missing'):
        assert new[k] == old[k], k
    assert (copy / 'synthesized.csv').read_text() == (d / 'synthesized.csv').read_text()


def _same(a, b, path=''):
    """Equal JSON values, floats to 1e-9 relative (another scipy may move the last bits)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            _same(a[k], b[k], f'{path}.{k}')
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f'{path}[{i}]')
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12, nan_ok=True), path
    else:
        assert a == b, path


def test_published_offline_study_recomputes(tmp_path):
    """docs/numbersense.md's offline tables are docs/results/numbersense_offline/summary.json: the
    statistics of its committed per-run files, recomputed now, are the published ones (a change to the
    statistics that moves a published number fails here, until the results are recomputed)."""
    import shutil
    published = os.path.join(ROOT, 'docs', 'results', 'numbersense_offline')
    copy = tmp_path / 'numbersense_offline'
    shutil.copytree(published, copy, ignore=shutil.ignore_patterns('summary.*', 'synthesized.csv', '*.png',
                                                                   'study.log'))
    study.main(['--offline', '--seeds', '3', '--epochs', '10', '--study-dir', str(copy), '--stats-only'])
    new, old = (json.load(open(os.path.join(x, 'summary.json'))) for x in (copy, published))
    assert old['n_runs'] == 9 and old['stale'] == [] and old['missing'] == []
    for k in ('groups', 'authors', 'ours', 'budget', 'not_above_chance', 'measures'):
        _same(old[k], new[k], k)
    pd.testing.assert_frame_equal(pd.read_csv(copy / 'synthesized.csv'),
                                  pd.read_csv(os.path.join(published, 'synthesized.csv')), rtol=1e-9)
