"""Per-epoch latent analytics during training (as the released src/main.py draws them), and the loss curve.

On the first test batch: K posterior samples per item from each encoder and
as many prior samples, embedded together with UMAP and coloured by source;
box plots of the per-dimension KL(q_m || p) and, for multimodal models, of the
symmetrised KL between each pair of posteriors. Figures go to
<run>/figures/{emb_umap,kl_distance}_XXX.png (the released names), their data
to <run>/analytics/latents_XXX.json. The randomness used here is forked, so a
run with analytics trains exactly as one with --no-analytics.
"""
import os
from itertools import combinations

import matplotlib

matplotlib.use('Agg')  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from src.files import save_figure, save_json  # noqa: E402
from src.objectives import kl_divergence  # noqa: E402
from src.rng import fork_rng  # noqa: E402

ANALYTICS_K = 10  # samples per item, as the released analyse()


@torch.no_grad()
def latent_analytics(model, x, K=ANALYTICS_K):
    """Latent samples and KLs of one batch.

    Returns (zs (N, D) numpy: prior samples then each posterior's, source (N,)
    int, source names, kls: dict name -> (B, D) numpy of per-dimension KL).
    """
    model.eval()
    pz = model.pz(*model.pz_params)
    if model.multimodal:
        qz_xs, _, zss = model(x, K)
    else:
        qz_x, _, zs = model(x, K)
        qz_xs, zss = [qz_x], [zs]
    names = model.modalities
    B, D = zss[0].shape[1:]
    groups = [pz.sample(torch.Size([K, B])).reshape(-1, D)] + [zs.reshape(-1, D) for zs in zss]
    labels = ['prior p(z)'] + [f'q(z|{n})' for n in names]
    source = np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
    kls = {f'KL(q(z|{n}) || p(z))': kl_divergence(q, pz).cpu().numpy() for n, q in zip(names, qz_xs, strict=True)}
    for i, j in combinations(range(len(qz_xs)), 2):
        p, q = qz_xs[i], qz_xs[j]
        kls[f'J(q(z|{names[i]}), q(z|{names[j]}))'] = (0.5 * (kl_divergence(p, q) + kl_divergence(q, p))).cpu().numpy()
    return torch.cat(groups).cpu().numpy(), source, labels, kls


def embed_umap(zs, seed=0):
    """2-d UMAP embedding of (N, D) points (umap-learn; its first import takes a while)."""
    from umap import UMAP
    return UMAP(n_components=2, n_neighbors=min(15, len(zs) - 1), metric='euclidean',
                random_state=seed, n_jobs=1).fit_transform(zs)  # a seed makes UMAP single-threaded anyway


def plot_embedding(emb, source, labels, path):
    fig, ax = plt.subplots(figsize=(6, 5))
    colours = plt.get_cmap('tab10')
    for i, lab in enumerate(labels):
        pts = emb[source == i]
        ax.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.5, color=colours(i), label=lab)
    ax.legend(markerscale=4, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title('UMAP of latent samples')
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def plot_kls(kls, path):
    """One group of boxes per latent dimension, one box per KL type (quartiles; whiskers min and max)."""
    names = list(kls)
    D = next(iter(kls.values())).shape[-1]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * D + 2), 4.5))
    colours = plt.get_cmap('tab10')
    for i, n in enumerate(names):
        pos = np.arange(D) + (i - (len(names) - 1) / 2) * width
        # whiskers at the minimum and maximum
        bp = ax.boxplot(kls[n], positions=pos, widths=width * 0.9, patch_artist=True, whis=(0, 100))
        for box in bp['boxes']:
            box.set_facecolor(colours(i))
        bp['boxes'][0].set_label(n)
    ax.set_xticks(np.arange(D))
    ax.set_xticklabels([str(d) for d in range(D)], fontsize=7)
    ax.set_xlabel('latent dimension')
    ax.set_ylabel('KL (nats)')
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def kl_summary(v):
    """Per latent dimension, over the batch: what the box plot shows, plus the mean."""
    q = np.percentile(v, [0, 25, 50, 75, 100], axis=0).round(5)
    return {'min': q[0].tolist(), 'q1': q[1].tolist(), 'median': q[2].tolist(), 'q3': q[3].tolist(),
            'max': q[4].tolist(), 'mean': v.mean(0).round(5).tolist(), 'n_items': len(v)}


def save_epoch_analytics(model, x, run_dir, epoch, K=ANALYTICS_K):
    """UMAP and KL figures of one batch, and their data as JSON; returns the paths."""
    dev = (x[0] if isinstance(x, (list, tuple)) else x).device
    with fork_rng(dev):
        torch.manual_seed(epoch)
        zs, source, labels, kls = latent_analytics(model, x, K)
    emb = embed_umap(zs)
    fig_dir, data_dir = os.path.join(run_dir, 'figures'), os.path.join(run_dir, 'analytics')
    os.makedirs(fig_dir, exist_ok=True)
    os.makedirs(data_dir, exist_ok=True)
    paths = {'umap': os.path.join(fig_dir, f'emb_umap_{epoch:03d}.png'),
             'kl': os.path.join(fig_dir, f'kl_distance_{epoch:03d}.png'),
             'data': os.path.join(data_dir, f'latents_{epoch:03d}.json')}
    plot_embedding(emb, source, labels, paths['umap'])
    plot_kls(kls, paths['kl'])
    save_json({'epoch': epoch, 'K': K, 'sources': labels,
               'umap': {'x': np.round(emb[:, 0], 3).tolist(), 'y': np.round(emb[:, 1], 3).tolist(),
                        'source': source.tolist()},
               'kl_per_dimension': {n: kl_summary(v) for n, v in kls.items()}}, paths['data'])
    return paths


def save_loss_curve(losses, path):
    """Train and test loss (per data point) against the epoch."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ('train', 'test'):
        ys = losses.get(key, [])
        ax.plot(range(1, len(ys) + 1), ys, marker='o', label=key)
    ax.set_xlabel('epoch')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel('loss per data point')
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    save_figure(fig, path, dpi=100)
