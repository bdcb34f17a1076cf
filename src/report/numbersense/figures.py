"""Figures of the number-sense analyses (matplotlib, Agg): arithmetic grids, latent
maps, confusion matrices, the |i - j| vs latent-distance scatter."""
import numpy as np
import torch

from src.data.numbersense import COLOURS, SHAPES
from src.files import save_figure


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _img(x):
    return x.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def arithmetic_figure(eqs, preds, parts, result, path, title):
    """Rows: equations; columns: decoded m_a, m_b, m_c and the decoded (noisy) result.

    One image grid drawn once (a subplot per image is slow), labels as text.
    """
    plt = _plt()
    from torchvision.utils import make_grid
    pad = 2
    cells = torch.cat([torch.cat([parts[i], result[i:i + 1]]) for i in range(len(eqs))]).float().cpu().clamp(0, 1)
    grid = make_grid(cells, nrow=4, padding=pad, pad_value=1.0)
    h, w = cells.shape[-2:]
    fig, ax = plt.subplots(figsize=(4 * 0.9 + 1.6, len(eqs) * 0.9 + 0.5))
    ax.imshow(_img(grid), interpolation='nearest')
    for j, head in enumerate(['m_a', '+ m_b', '- m_c', '= decoded']):
        ax.text(pad + j * (w + pad) + w / 2, -1, head, ha='center', va='bottom', fontsize=7)
    for i, ((a, b, c), p) in enumerate(zip(eqs, preds, strict=True)):
        y = pad + i * (h + pad) + h / 2
        ax.text(-2, y, f'{a}+{b}-{c}={a + b - c}', ha='right', va='center', fontsize=7)
        ax.text(pad + 4 * (w + pad), y, f' read {p}', ha='left', va='center', fontsize=7,
                color='green' if p == a + b - c else 'red')
    ax.axis('off')
    ax.set_title(title, fontsize=8, pad=12)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def embed(z, method, seed, perplexity=None):
    if method == 'umap':
        import umap  # slow first import (numba)
        threads = torch.get_num_threads()
        try:  # seeded UMAP runs on one thread anyway
            return umap.UMAP(n_components=2, random_state=seed, n_jobs=1).fit_transform(z)
        finally:  # UMAP resets torch's thread count, which would slow the study's next training run
            torch.set_num_threads(threads)
    from sklearn.manifold import TSNE
    # perplexity 20 with random_state 0: the authors' analyse_tsne_2d (sklearn's default init)
    perplexity = min(perplexity or 30, len(z) - 1)
    return TSNE(n_components=2, random_state=seed, perplexity=perplexity).fit_transform(z)


LABEL_NAMES = {'number': [str(n) for n in range(1, 10)], 'colour': list(COLOURS), 'shape': list(SHAPES)}
COLOUR_DISPLAY = {'red': 'tab:red', 'green': 'tab:green', 'blue': 'tab:blue', 'white': 'dimgrey'}


def latent_map_figure(xy, labels, path, title):
    """One scatter panel per label (number, colour, shape), categories in the legend."""
    plt = _plt()
    keys = [k for k in ('number', 'colour', 'shape') if k in labels]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=False):
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
    save_figure(fig, path, dpi=100)


def confusion_figure(matrix, path, title):
    """A 9 x 9 confusion matrix (rows true, columns predicted), counts in the cells."""
    plt = _plt()
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(m, cmap='Blues')
    for i in range(9):
        for j in range(9):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha='center', va='center', fontsize=6,
                        color='white' if m[i, j] > m.max() / 2 else 'black')
    ax.set_xticks(range(9), [str(n) for n in range(1, 10)])
    ax.set_yticks(range(9), [str(n) for n in range(1, 10)])
    ax.set_xlabel('predicted number')
    ax.set_ylabel('true number')
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def distance_figure(diff, dist, r, path, title):
    """The authors' dist_relations plot: numerical distance |i - j| against latent distance."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(3.8, 3.2))
    ax.scatter(diff, dist, s=12)
    ax.set_xlabel('|i - j|')
    ax.set_ylabel('distance of class-mean latents')
    ax.set_title(f'{title}\nr = {r:.3f}' if r is not None else title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
