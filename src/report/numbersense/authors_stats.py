"""The authors' statistics, exactly: the tests of their src/synthesize.py (run last by
their main.py) and of src/script/repeated-measure_anova.R (in their repository's
history: deleted in commit 64aa55a, read at 64aa55a^), on the per-run results
laid out as their synthesized.csv. docs/numbersense.md ("Statistics") gives the
file and line of each test.

Their frame has one row per (model, run, target modality) of the number
analysis (their analyse/<t>_1/analyse_result.csv; t = 0 CMNIST, 1 OSCN; a
VAE's only modality is t = 0), with their column names. Per target modality t:
- MMVAE encoder t against the matching VAE on magnitude_avg,
  magnitude_logmin_mean_avg, cluster_avg, mathematics_avg and reconst_txt_avg:
  scipy.stats.f_oneway, statsmodels OLS + anova_lm(typ=2), Welch's t
  (scipy.stats.ttest_ind(MMVAE, VAE, equal_var=False): t > 0 when MMVAE > VAE);
- the four magnitude columns as groups of one f_oneway, for the MMVAE encoder t
  and for each VAE (their loop runs the VAEs at both t: the same test twice, once
  here); their OLS next to it names an undefined variable and is always skipped;
- R anovakun(df, "sA", 4) on the same four columns of the MMVAE encoder t:
  seeds are the subjects, no sphericity correction (anovakun's default; it
  prints Mendoza's sphericity test, for one group Mauchly's, and the epsilons
  without applying them) and, where anovakun runs them, pairwise comparisons of
  the levels (paired t, Shaffer-adjusted, its default): only when the main
  effect's p < .10 (anovakun 4.8.5, their src/script/anovakun_485.txt:
  post.analyses follows up the effects that sig.sign marks "+" or better);
- scipy.stats.ttest_1samp against 1/9 (two-sided): reconstruction, cross
  (cross_{1-t}x{t}: the other encoder into decoder t) and arithmetic of the
  MMVAE at t; reconstruction and arithmetic of the matching VAE. Each cross
  test is listed under the encoder it comes from (cross_{e}x{d} under MMVAE
  encoder e), as every other table names a cross accuracy; their frame holds it
  in the row of decoder d.
"""
import numpy as np

from src.report import stats
from src.report.numbersense.metrics import CHANCE, MAGNITUDE_VARIANTS

MMVAE = 'MMVAE_CMNIST_OSCN'
VAE = {0: 'VAE_CMNIST', 1: 'VAE_OSCN'}
MODEL_OF = {'cmnist': VAE[0], 'oscn': VAE[1], 'cmnist_oscn': MMVAE}
ID_PREFIX = {VAE[0]: 'vae_cmnist_seed_', VAE[1]: 'vae_oscn_seed_', MMVAE: 'mmvae_cmnist_oscn_seed_'}  # main.py
MODALITIES = ('cmnist', 'oscn')  # their target_modality 0, 1
# Their column -> this project's per-encoder summary key (numbersense.json, encoders.<m>.summary).
MEASURES = {'cluster_avg': 'silhouette_number', 'mathematics_avg': 'arithmetic_accuracy',
            **{('magnitude_avg' if v == 'none' else f'magnitude_{v}_avg'): ('magnitude_abs_r' if v == 'none'
                                                                            else f'magnitude_{v}')
               for v in MAGNITUDE_VARIANTS}}
TRANSFORMS = ['magnitude_avg', 'magnitude_logmin_mean_avg', 'magnitude_exp_mean_avg', 'magnitude_pow_mean_avg']
R_TRANSFORMS = ['magnitude_avg', 'magnitude_exp_mean_avg', 'magnitude_pow_mean_avg', 'magnitude_logmin_mean_avg']
SYNTH, R_SCRIPT = 'src/synthesize.py', 'src/script/repeated-measure_anova.R at 64aa55a^'
POSTHOC_P = 0.10  # anovakun_485.txt: sig.sign marks p < .10 "+", and post.analyses follows up every marked effect


def reconst(t):
    return f'reconst_{t}x{t}_avg'


def cross(t):
    return f'cross_{1 - t}x{t}_avg'


def compared(t):
    """The columns of their MMVAE-vs-VAE tests at target modality t."""
    return ['magnitude_avg', 'magnitude_logmin_mean_avg', 'cluster_avg', 'mathematics_avg', reconst(t)]


def frame(results):
    """Their data frame from [(condition, seed, {modality: summary})]: one row per (model, seed, t).

    reconst_txt is the encoder's own reconstruction (their VAE_OSCN row is analysed at t = 0 and its
    value moved to reconst_1x1 by synthesize.py); cross_{1-t}x{t} of the MMVAE row t is the other
    encoder's cross-modal accuracy into decoder t. Missing values are NaN.
    """
    import pandas as pd
    rows = []
    for cond, seed, encoders in results:
        model = MODEL_OF[cond]
        for name, s in encoders.items():
            t = MODALITIES.index(name)
            row = {'id': f'{ID_PREFIX[model]}{seed}', 'model_name': model,
                   'target_modality': t if model == MMVAE else 0, 'target_property': 1, 'seed': seed,
                   **{col: s.get(key) for col, key in MEASURES.items()}, reconst(t): s.get('reconstruction_accuracy')}
            if model == MMVAE:
                row[cross(t)] = encoders.get(MODALITIES[1 - t], {}).get('cross_accuracy')
            rows.append(row)
    columns = ['id', 'model_name', 'target_modality', 'target_property', 'seed', *MEASURES,
               reconst(0), reconst(1), cross(0), cross(1)]
    return pd.DataFrame(rows, columns=columns).astype({c: float for c in columns[5:]})


def rows_of(df, model, t):
    """Their query: the MMVAE's rows of target modality t, or all rows of a VAE."""
    return df[(df.model_name == model) & ((df.target_modality == t) if model == MMVAE else True)]


def by_seed(rows, column):
    """[[seed, value]] of the finite values of a column (what the test uses), sorted by seed."""
    return sorted([int(s), float(v)] for s, v in zip(rows.seed, rows[column], strict=True) if np.isfinite(v))


def _values(pairs):
    return [v for _, v in pairs]


def _test(call, source, inputs, result, models, t):
    return {'call': call, 'source': source, 'inputs': inputs, 'models': models, 'target_modality': t, **result}


def mmvae_vs_vae(df, t, column):
    """perform_anova: f_oneway, OLS anova_lm (typ 2) and Welch's t of MMVAE encoder t vs the matching VAE."""
    mm, vae = by_seed(rows_of(df, MMVAE, t), column), by_seed(rows_of(df, VAE[t], t), column)
    inputs = {MMVAE: mm, VAE[t]: vae}
    models = [MMVAE, VAE[t]]
    groups = [_values(mm), _values(vae)]
    return {'column': column, 'means': {m: stats.mean_ci(g)['mean'] for m, g in zip(models, groups, strict=True)},
            'f_oneway': _test(f'scipy.stats.f_oneway({MMVAE}, {VAE[t]})', f'{SYNTH}:177', inputs,
                              stats.anova(groups), models, t),
            'anova_lm': _test(f"statsmodels anova_lm(ols('{column} ~ C(model_name)', data).fit(), typ=2)",
                              f'{SYNTH}:188-190', inputs, stats.ols_anova(dict(zip(models, groups, strict=True))),
                              models, t),
            'welch': _test(f'scipy.stats.ttest_ind({MMVAE}, {VAE[t]}, equal_var=False)', f'{SYNTH}:197-202',
                           inputs, stats.welch(*groups), models, t)}


def transforms_oneway(df, model, t):
    """perform_anova_logtrans: the four magnitude columns of one model as the groups of one f_oneway."""
    rows = rows_of(df, model, t)
    inputs = {c: by_seed(rows, c) for c in TRANSFORMS}
    return _test(f'scipy.stats.f_oneway({", ".join(TRANSFORMS)})', f'{SYNTH}:242', inputs,
                 stats.anova([_values(v) for v in inputs.values()]), [model], t)


def transforms_rm(df, t):
    """anovakun(df, "sA", 4) on the four magnitude columns of the MMVAE encoder t (seeds are the
    subjects; a seed with a missing value is left out, as anovakun does): the uncorrected F,
    the sphericity diagnostics it prints, and its pairwise comparisons where it runs them
    (main effect p < POSTHOC_P; else none, and `pairwise_run` False)."""
    rows = rows_of(df, MMVAE, t)
    inputs = {c: by_seed(rows, c) for c in R_TRANSFORMS}
    seeds = sorted({s for pairs in inputs.values() for s, _ in pairs})
    per_level = {c: [dict(inputs[c]).get(s) for s in seeds] for c in R_TRANSFORMS}
    rm = stats.anova_rm(per_level)
    rm['subjects'] = [seeds[i] for i in rm['subjects']]
    followed_up = rm['p'] is not None and rm['p'] < POSTHOC_P
    return {**_test('R anovakun(df, "sA", 4): no sphericity correction (statsmodels AnovaRM)',
                    f'{R_SCRIPT}:5-11,21-30', inputs, rm, [MMVAE], t),
            'sphericity': stats.sphericity(per_level), 'pairwise_run': followed_up,
            'pairwise_shaffer': stats.pairwise_paired(per_level) if followed_up else []}


def vs_chance(df, model, t, column):
    """perform_one_sample: scipy.stats.ttest_1samp(values, popmean=1/9), two-sided."""
    inputs = {model: by_seed(rows_of(df, model, t), column)}
    return {'column': column, **_test(f'scipy.stats.ttest_1samp({column}, popmean=1/9)', f'{SYNTH}:307-311',
                                      inputs, stats.one_sample(_values(inputs[model]), CHANCE), [model], t)}


def _present(df, model, t):
    return len(rows_of(df, model, t)) > 0


def family(df):
    """Every test of theirs that the frame's models allow, keyed by our group names."""
    out = {'mmvae_vs_vae': {}, 'transforms_oneway': {}, 'transforms_rm': {}, 'vs_chance': {}}
    for t, mod in enumerate(MODALITIES):
        mm, vae = f'MMVAE {mod} enc.', f'{mod} VAE'
        if _present(df, MMVAE, t) and _present(df, VAE[t], t):
            out['mmvae_vs_vae'][mod] = {c: mmvae_vs_vae(df, t, c) for c in compared(t)}
        if _present(df, MMVAE, t):
            out['transforms_oneway'][mm] = transforms_oneway(df, MMVAE, t)
            out['transforms_rm'][mm] = transforms_rm(df, t)
            out['vs_chance'][mm] = {reconst(t): vs_chance(df, MMVAE, t, reconst(t))}
            if _present(df, MMVAE, 1 - t):  # encoder t into decoder 1 - t: in their row of target 1 - t
                out['vs_chance'][mm][cross(1 - t)] = vs_chance(df, MMVAE, 1 - t, cross(1 - t))
            out['vs_chance'][mm]['mathematics_avg'] = vs_chance(df, MMVAE, t, 'mathematics_avg')
        if _present(df, VAE[t], t):
            out['transforms_oneway'][vae] = transforms_oneway(df, VAE[t], t)
            out['vs_chance'][vae] = {c: vs_chance(df, VAE[t], t, c) for c in (reconst(t), 'mathematics_avg')}
    return out


def named_tests(fam):
    """(name, test) of every test of their family with its own p-value. anova_lm is left out: for two
    groups it is f_oneway's F and p again."""
    for mod, cols in fam['mmvae_vs_vae'].items():
        for c, r in cols.items():
            yield f'{mod}: MMVAE vs VAE {c}, f_oneway', r['f_oneway']
            yield f'{mod}: MMVAE vs VAE {c}, Welch t', r['welch']
    for g, r in fam['transforms_oneway'].items():
        yield f'{g}: magnitude transforms, f_oneway', r
    for g, r in fam['transforms_rm'].items():
        yield f'{g}: magnitude transforms, anovakun sA', r
    for g, cols in fam['vs_chance'].items():
        for c, r in cols.items():
            yield f'{g}: {c} vs 1/9', r
