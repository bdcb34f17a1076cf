"""Figures written during training: reconstructions and generations.

Image modalities of different sizes are shown side by side by zero-padding
to the largest size and broadcasting grey to three channels (MNIST next to SVHN).
"""
import matplotlib

matplotlib.use('Agg')  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402

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


def save_generations(samples, names, path_fmt):
    """One 8 x 8 grid per modality: path_fmt.format(name=...)."""
    paths = []
    for x, name in zip(samples, names):
        path = path_fmt.format(name=name)
        save_image(to_display(x[:N_GEN], channels=x.shape[1]), path, nrow=8)
        paths.append(path)
    return paths


def save_reconstruction(x, recon, path):
    """Unimodal: 8 inputs above their reconstructions."""
    save_image(torch.cat([to_display(x[:N_RECON], channels=x.shape[1]),
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
    fig.savefig(path, dpi=100)
    plt.close(fig)
