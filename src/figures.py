"""Figures written during training: reconstructions and generations.

Image modalities of different sizes are shown side by side by zero-padding
to the largest size and broadcasting grey to three channels (MNIST next to SVHN).
CUB figures show captions as text cells and image features as the nearest
real image, with the captions also written to text files.
"""
import os
import textwrap

import matplotlib

matplotlib.use('Agg')  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402

from .files import atomic_write, save_figure, save_text  # noqa: E402

N_RECON = 8
N_GEN = 64


def to_display(x, size=None, channels=3):
    """(N, C, H, W) in [0, 1] -> (N, channels, *size): centred zero padding, grey -> RGB."""
    x = x.detach().float().cpu()
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        dh, dw = size[0] - x.shape[-2], size[1] - x.shape[-1]
        x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
    if x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    return x


def save_grid(x, path, nrow):
    """A batch of images (N, C, H, W) in [0, 1] as one PNG grid (torchvision's save_image, atomic)."""
    atomic_write(path, lambda f: save_image(x, f, nrow=nrow, format='png'))


def save_generations(samples, names, path_fmt):
    """One 8 x 8 grid per modality: path_fmt.format(name=...)."""
    paths = []
    for x, name in zip(samples, names, strict=True):
        path = path_fmt.format(name=name)
        save_grid(to_display(x[:N_GEN], channels=x.shape[1]), path, nrow=8)
        paths.append(path)
    return paths


def save_reconstruction(x, recon, path):
    """Unimodal: 8 inputs above their reconstructions."""
    save_grid(torch.cat([to_display(x[:N_RECON], channels=x.shape[1]),
                         to_display(recon[:N_RECON], channels=x.shape[1])]), path, nrow=N_RECON)


def save_cross_reconstruction(xs, recons, names, path):
    """Multimodal: an M x M matrix of panels; panel [e][d] shows 8 inputs of
    modality e (top) and their reconstructions by decoder d from q_e (bottom)."""
    size = max(x.shape[-2] for x in xs), max(x.shape[-1] for x in xs)
    M = len(xs)
    fig, axes = plt.subplots(M, M, figsize=(4.2 * M, 1.3 * M), squeeze=False)
    for e in range(M):
        for d in range(M):
            panel = torch.cat([to_display(xs[e][:N_RECON], size), to_display(recons[e][d][:N_RECON], size)])
            grid = make_grid(panel, nrow=N_RECON, padding=1, pad_value=1.0)
            ax = axes[e][d]
            ax.imshow(grid.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation='nearest')
            ax.set_title(f'{names[e]} -> {names[d]}', fontsize=9)
            ax.axis('off')
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


# ---------------------------------------------------------------- CUB: captions and image features

N_GEN_CAPTIONED = 32  # joint generations shown as image-plus-caption pairs
CAPTION_WRAP = 19     # characters per line of a caption cell


def to_cells(x, modality, display, split='train'):
    """A batch of one modality -> display cells: (3, H, W) images in [0, 1] or caption strings.

    Captions (ids or logits) are decoded up to '<eos>' with '<pad>' removed;
    feature vectors are shown as the nearest real image of `split` (inputs
    from the test set find their own image there).
    """
    if modality == 'caption':
        return display.captions(x)
    if modality == 'feature':
        return list(display.nearest_images(x, split))
    return list(to_display(x, channels=x.shape[1]))


def _draw_cells(fig, rows, row_labels, title=None):
    """Rows of cells (images or strings) on a (sub)figure, one axis per cell."""
    ncol = max(len(r) for r in rows)
    heights = [0.8 if isinstance(r[0], str) else 1.0 for r in rows]
    axes = fig.subplots(len(rows), ncol, squeeze=False, gridspec_kw={'height_ratios': heights})
    for i, row in enumerate(rows):
        for j in range(ncol):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row):
                ax.axis('off')
                continue
            cell = row[j]
            if isinstance(cell, str):
                ax.text(0.03, 0.97, textwrap.fill(cell, CAPTION_WRAP) or '(empty)', va='top', ha='left',
                        fontsize=5, family='monospace', transform=ax.transAxes)
                for s in ax.spines.values():
                    s.set_color('0.8')
            else:
                ax.imshow(cell.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation='nearest')
                ax.axis('off')
            if j == 0 and row_labels:
                ax.axis('on')  # for the label; an image cell keeps no frame
                ax.set_ylabel(row_labels[i], fontsize=7)
                if not isinstance(cell, str):
                    for sp in ax.spines.values():
                        sp.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=9)


def save_cells(rows, path, row_labels=None, title=None):
    """One figure of rows of cells (images or caption strings)."""
    ncol = max(len(r) for r in rows)
    fig = plt.figure(figsize=(1.15 * ncol, sum(0.95 if isinstance(r[0], str) else 1.15 for r in rows) + 0.3))
    _draw_cells(fig, rows, row_labels, title)
    save_figure(fig, path, dpi=100, bbox_inches='tight')


def save_caption_text(path, blocks):
    """Caption text file: blocks of (heading or None, [(tag, caption), ...]), lines '[TAG]  ==> caption'."""
    lines = []
    for heading, pairs in blocks:
        if heading:
            lines.append(f'== {heading} ==')
        for tag, caption in pairs:
            lines.append(f'{f"[{tag}]":8s}==> {caption}')
            if tag in ('RECON',):
                lines.append('')
        lines.append('')
    save_text('\n'.join(lines).rstrip() + '\n', path)


def save_cub_reconstruction(xs, recons, names, modalities, display, path, txt_path):
    """CUB reconstructions: an M x M matrix of panels ([e][d]: 8 test inputs of
    modality e above their reconstructions by decoder d from q_e), images and
    captions as cells; the caption panels also as text ([DATA] is the item's
    own caption, [RECON] the decoded one)."""
    M = len(xs)
    data = [to_cells(x, m, display, 'test') for x, m in zip(xs, modalities, strict=True)]
    fig = plt.figure(figsize=(1.15 * N_RECON * M, 2.3 * M + 0.3 * M))
    subs = fig.subfigures(M, M, squeeze=False, wspace=0.02, hspace=0.02)
    blocks = []
    for e in range(M):
        for d in range(M):
            out = to_cells(recons[e][d], modalities[d], display, 'train')
            _draw_cells(subs[e][d], [data[e], out], ['data', 'recon'], f'{names[e]} -> {names[d]}' if M > 1 else None)
            if modalities[d] == 'caption':
                blocks.append((f'{names[e]} -> {names[d]}' if M > 1 else None,
                               [p for pair in zip([('DATA', c) for c in data[d]], [('RECON', c) for c in out],
                                                  strict=True)
                                for p in pair]))
    save_figure(fig, path, dpi=100)
    if blocks:
        save_caption_text(txt_path, blocks)


def save_cub_generations(samples, modalities, display, path, txt_path):
    """Prior samples: image-plus-caption pairs (multimodal: images above their
    captions), or a grid of one modality; captions also as [GEN] text lines."""
    cells = [to_cells(s, m, display, 'train') for s, m in zip(samples, modalities, strict=True)]
    n = min(len(cells[0]), N_GEN_CAPTIONED if len(cells) > 1 or modalities[0] == 'caption' else N_GEN)
    rows, labels = [], []
    for s in range(0, n, N_RECON):
        for m, c in zip(modalities, cells, strict=True):
            rows.append(c[s:s + N_RECON])
            labels.append(m if len(cells) > 1 else None)
    save_cells(rows, path, labels if len(cells) > 1 else None)
    text = [c for m, c in zip(modalities, cells, strict=True) if m == 'caption']
    if text:
        save_caption_text(txt_path, [(None, [('GEN', c) for c in text[0]])])


def save_cub_figures(model, x, display, fig_dir, epoch):
    """Per-epoch figures of the CUB models: recon_XXX.png (+ .txt) and gen_XXX.png (+ .txt)."""
    vaes = model.vaes
    names, modalities = [v.name for v in vaes], [v.modality for v in vaes]
    # CUB items come 10 captions per image: from a batch in data order, every 10th item (as the
    # batch allows) shows 8 different birds
    B = (x[0] if len(vaes) > 1 else x).size(0)
    idx = torch.arange(0, B, min(10, max(1, B // N_RECON)))[:N_RECON]
    if len(vaes) > 1:
        xs = [t[idx.to(t.device)] for t in x]
        recons = model.reconstruct(xs)
        gens = model.generate(N_GEN)
    else:
        xs = [x[idx.to(x.device)]]
        recons = [[model.reconstruct(xs[0])]]
        gens = [model.generate(N_GEN)]
    recon, gen = (os.path.join(fig_dir, f'{kind}_{epoch:03d}') for kind in ('recon', 'gen'))
    save_cub_reconstruction(xs, recons, names, modalities, display, recon + '.png', recon + '.txt')
    save_cub_generations(gens, modalities, display, gen + '.png', gen + '.txt')
    return [recon + '.png', gen + '.png']
