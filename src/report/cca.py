"""CCA between image features and sentence embeddings, and the cosine score of the CUB coherence metric.

As released (src/report/helper.py `cca`, the default here, `fit_released`): with the
covariances of the training pairs (1/(N-1)), A = [[0, Cxy], [Cyx, 0]] holds the
cross-covariances and B = blockdiag(Cxx, Cyy) the covariances; 1e-12 is added to the
diagonals of both, and the generalised eigenproblem A w = lambda B w is solved by
scipy.linalg.eig, whose eigenvectors w = [w_image; w_text] have unit Euclidean norm.
The k (40) eigenvectors of the largest eigenvalues (real parts) are the projections.
Score (`cca_score`): the mean cosine similarity of (x - mean_x) P_x and (y - mean_y) P_y,
the training means removed.

The unit norm of the stacked eigenvector fixes the scale of each component, and the
cosine similarity depends on it. Variants, by flag:
- in_span=True: the same eigenproblem solved in the span of each view's centred training
  data (the directions whose standard deviation exceeds 1e-6 of the largest one). Every
  direction without training variance in a view is an eigenvector of A w = lambda B w
  with eigenvalue 1 (or infinite, numerically) that projects the training data to 0,
  and the released solver takes those first. The text view always has one (the first
  component removed from every embedding); the image view has them when the features
  span fewer dimensions than they have. Here they are left out, and k is at most the
  smaller span. Where each view spans all its dimensions but that one, it is the
  released problem with the removed component's place taken by the next direction.
- `fit_unit_variance`: canonical directions scaled to unit variance on the training
  data, from the symmetric solver scipy.linalg.eigh with a ridge relative to each
  view's scale (this project's earlier metric).
"""
from collections import namedtuple

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

CCA = namedtuple('CCA', 'mean_x mean_y wx wy corrs')
CCA.__doc__ = """Fitted CCA: training means, projections wx (dx, k), wy (dy, k) and the eigenvalues corrs (k,),
descending (the canonical correlations when the problem is well-posed)."""


def _f64(a):
    if torch.is_tensor(a):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def covariances(X, Y, image_of=None):
    """(mean_x, mean_y, Cxx, Cyy, Cxy), all with 1/(N-1), of the pairs (X[image_of[n]], Y[n]).

    image_of=None pairs the rows of X and Y directly. With image_of (each image's features
    paired with several captions) the sums run over the distinct images, weighted by
    their number of captions: the same numbers without repeating rows of X.
    """
    X, Y = _f64(X), _f64(Y)
    image_of = np.arange(len(X)) if image_of is None else np.asarray(image_of)
    if len(image_of) != len(Y):
        raise ValueError(f'X and Y must pair up: {len(image_of)} vs {len(Y)} rows')
    n = len(Y)
    counts = np.bincount(image_of, minlength=len(X)).astype(np.float64)
    mx, my = counts @ X / n, Y.mean(0)
    Xc, Yc = X - mx, Y - my
    Ysum = np.zeros((len(X), Y.shape[1]))
    np.add.at(Ysum, image_of, Yc)  # per image: the sum of its captions' centred embeddings
    return mx, my, (Xc.T * counts) @ Xc / (n - 1), Yc.T @ Yc / (n - 1), Xc.T @ Ysum / (n - 1)


def span(C, rtol=1e-6):
    """Orthonormal basis (d, r) of the directions of a covariance matrix C whose standard deviation
    exceeds rtol times the largest one."""
    var, vecs = np.linalg.eigh(C)
    return vecs[:, var > var.max() * rtol ** 2][:, ::-1]


def fit_released(X, Y, k=40, image_of=None, eps=1e-12, in_span=False):
    """The released CCA (module docstring); in_span=True solves it in the span of each view."""
    mx, my, Cxx, Cyy, Cxy = covariances(X, Y, image_of)
    Qx = Qy = None
    if in_span:
        Qx, Qy = span(Cxx), span(Cyy)
        Cxx, Cyy, Cxy = Qx.T @ Cxx @ Qx, Qy.T @ Cyy @ Qy, Qx.T @ Cxy @ Qy
        k = min(k, Cxy.shape[0], Cxy.shape[1])
    dx, dy = Cxy.shape
    if not 1 <= k <= min(dx, dy):
        raise ValueError(f'k={k} must be in [1, {min(dx, dy)}] (the dimensions of the two views)')
    A = np.zeros((dx + dy, dx + dy))
    A[:dx, dx:], A[dx:, :dx] = Cxy, Cxy.T
    B = scipy.linalg.block_diag(Cxx, Cyy)
    A[np.diag_indices_from(A)] += eps
    B[np.diag_indices_from(B)] += eps
    values, vectors = scipy.linalg.eig(A, B)  # unit-norm eigenvectors
    top = np.argsort(values)[::-1][:k]  # numpy's order of complex numbers, as released
    w = vectors[:, top].real
    wx, wy = (w[:dx], w[dx:]) if Qx is None else (Qx @ w[:dx], Qy @ w[dx:])  # orthonormal Q: norms kept
    return CCA(mx, my, wx, wy, values[top].real)


def fit_unit_variance(X, Y, k=40, image_of=None, reg=1e-6):
    """CCA as the symmetric problem A v = rho B v (scipy.linalg.eigh), B with a ridge relative to each
    view's scale (reg x trace / dim), directions scaled so that each view's projections have unit
    variance on the training data, deterministic signs."""
    mx, my, Cxx, Cyy, Cxy = covariances(X, Y, image_of)
    dx, dy = Cxy.shape
    if not 1 <= k <= min(dx, dy):
        raise ValueError(f'k={k} must be in [1, {min(dx, dy)}] (the dimensions of the two views)')
    Cxx[np.diag_indices(dx)] += reg * np.trace(Cxx) / dx
    Cyy[np.diag_indices(dy)] += reg * np.trace(Cyy) / dy
    A = np.zeros((dx + dy, dx + dy))
    A[:dx, dx:], A[dx:, :dx] = Cxy, Cxy.T
    B = scipy.linalg.block_diag(Cxx, Cyy)
    vals, vecs = scipy.linalg.eigh(A, B, subset_by_index=[dx + dy - k, dx + dy - 1])
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    # eigh gives v'Bv = 1, shared equally by the two views when rho > 0: sqrt(2) makes each one unit-variance
    wx, wy = vecs[:dx] * np.sqrt(2), vecs[dx:] * np.sqrt(2)
    s = np.sign(wx[np.abs(wx).argmax(0), np.arange(k)])
    s[s == 0] = 1
    return CCA(mx, my, wx * s, wy * s, vals)


def cca_project(cca, X=None, Y=None):
    """-> (X_proj, Y_proj), each (n, k): centred with the TRAINING means, then projected (None for a
    view not given)."""
    px = None if X is None else (_f64(X) - cca.mean_x) @ cca.wx
    py = None if Y is None else (_f64(Y) - cca.mean_y) @ cca.wy
    return px, py


def cca_score(cca, X, Y):
    """-> (mean cosine similarity, per-pair cosine similarities (n,)) of paired rows of X and Y
    (torch's cosine_similarity, as released)."""
    px, py = cca_project(cca, X, Y)
    sims = F.cosine_similarity(torch.from_numpy(px), torch.from_numpy(py)).numpy()
    return float(sims.mean()), sims


def canonical_correlations(cca, X, Y):
    """Per-component Pearson correlation of the projected views on (X, Y)."""
    px, py = cca_project(cca, X, Y)
    px, py = px - px.mean(0), py - py.mean(0)
    return (px * py).sum(0) / np.sqrt((px ** 2).sum(0) * (py ** 2).sum(0))


def degenerate(corrs, tol=1e-6):
    """How many eigenvalues are not proper correlations (non-finite, or 1 and above): directions of
    A w = lambda B w without training variance, which the released solver ranks first."""
    corrs = np.asarray(corrs)
    return int((~np.isfinite(corrs) | (corrs >= 1 - tol)).sum())
