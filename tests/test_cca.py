"""CCA of the CUB coherence metric (src/report/cca.py): the released solver (unit-norm stacked
eigenvectors of A w = lambda B w), its variant in the span of the data, the unit-variance variant, the cosine score;
against independent computations (whitening + SVD, numpy by hand)."""

import numpy as np
import pytest
import torch

from src.report import cca as R

RHO = np.array([0.95, 0.8, 0.6, 0.4, 0.2])


def planted_views(n=20000, dx=12, dy=9, seed=0):
    """Views sharing 5 latent factors with known canonical correlations RHO,
    mixed by random invertible matrices and shifted by random means."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, len(RHO)))
    ex = rng.standard_normal((n, len(RHO)))
    u = np.concatenate([z, rng.standard_normal((n, dx - len(RHO)))], 1)
    v = np.concatenate([RHO * z + np.sqrt(1 - RHO ** 2) * ex,
                        rng.standard_normal((n, dy - len(RHO)))], 1)
    X = u @ rng.standard_normal((dx, dx)) + rng.normal(0, 5, dx)
    Y = v @ rng.standard_normal((dy, dy)) + rng.normal(0, 5, dy)
    return X, Y


def reference_cca(X, Y, k, reg):
    """Independent two-view CCA: whiten each view, SVD of the cross-covariance."""
    n = len(X)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Cxx, Cyy, Cxy = Xc.T @ Xc / (n - 1), Yc.T @ Yc / (n - 1), Xc.T @ Yc / (n - 1)
    Cxx += reg * np.trace(Cxx) / len(Cxx) * np.eye(len(Cxx))
    Cyy += reg * np.trace(Cyy) / len(Cyy) * np.eye(len(Cyy))

    def inv_sqrt(C):
        w, V = np.linalg.eigh(C)
        return V @ np.diag(w ** -0.5) @ V.T

    Kx, Ky = inv_sqrt(Cxx), inv_sqrt(Cyy)
    U, s, Vt = np.linalg.svd(Kx @ Cxy @ Ky)
    return s[:k], Kx @ U[:, :k], Ky @ Vt[:k].T


@pytest.fixture(scope='module')
def views():
    return planted_views()


def stacked_reference(X, Y, k):
    """The released eigenvectors by another route: the canonical directions from whitening + SVD,
    each pair [wx; wy] scaled to unit Euclidean norm (the sign is free)."""
    s, wx, wy = reference_cca(X, Y, k, 0.0)
    w = np.concatenate([wx, wy])
    return s, w / np.linalg.norm(w, axis=0)


def test_covariances_of_repeated_rows():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(7, 5))
    image_of = np.array([0, 0, 1, 2, 2, 2, 4, 5, 6, 6, 0])   # image 3 has no caption
    Y = rng.normal(size=(11, 3))
    mx, my, Cxx, Cyy, Cxy = R.covariances(F, Y, image_of)
    C = np.cov(np.concatenate([F[image_of], Y], 1).T)        # numpy, on the repeated rows
    np.testing.assert_allclose(mx, F[image_of].mean(0))
    np.testing.assert_allclose(Cxx, C[:5, :5], atol=1e-12)
    np.testing.assert_allclose(Cyy, C[5:, 5:], atol=1e-12)
    np.testing.assert_allclose(Cxy, C[:5, 5:], atol=1e-12)


def test_released_cca_unit_norm_stacked_eigenvectors(views):
    X, Y = views
    k = 6
    c = R.fit_released(X, Y, k=k)
    assert c.wx.shape == (12, k) and c.wy.shape == (9, k) and np.isrealobj(c.wx)
    w = np.concatenate([c.wx, c.wy])
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1, atol=1e-10)        # unit Euclidean norm
    s, ref = stacked_reference(X, Y, k)
    np.testing.assert_allclose(c.corrs, s, atol=1e-8)                           # eigenvalues = correlations
    np.testing.assert_allclose(w * np.sign((w * ref).sum(0)), ref, atol=1e-6)   # same vectors, up to sign
    # they solve A w = lambda B w with 1e-12 on both diagonals
    mx, my, Cxx, Cyy, Cxy = R.covariances(X, Y)
    A = np.block([[np.zeros((12, 12)), Cxy], [Cxy.T, np.zeros((9, 9))]]) + 1e-12 * np.eye(21)
    B = np.block([[Cxx, np.zeros((12, 9))], [np.zeros((9, 12)), Cyy]]) + 1e-12 * np.eye(21)
    np.testing.assert_allclose(A @ w, B @ w * c.corrs, atol=1e-8 * np.abs(B).max())
    # so the projections are NOT unit-variance: each component is scaled by its vector's norm
    px, _ = R.cca_project(c, X, None)
    assert not np.allclose(px.std(0, ddof=1), 1, atol=0.05)


def test_released_score_by_hand(views):
    X, Y = views
    n = len(X) // 2
    c = R.fit_released(X[:n], Y[:n], k=4)
    mean, sims = R.cca_score(c, X[n:], Y[n:])
    px = (X[n:] - X[:n].mean(0)) @ c.wx                 # centred with the TRAINING means
    py = (Y[n:] - Y[:n].mean(0)) @ c.wy
    by_hand = (px * py).sum(1) / np.linalg.norm(px, axis=1) / np.linalg.norm(py, axis=1)
    np.testing.assert_allclose(sims, by_hand, atol=1e-12)
    assert mean == pytest.approx(by_hand.mean()) and mean > 0.5
    shuffled = R.cca_score(c, X[n:], Y[n:][np.random.default_rng(1).permutation(len(X) - n)])[0]
    assert abs(shuffled) < 0.03
    # the component scales matter: unit-variance directions (the earlier metric) score otherwise
    other = R.cca_score(R.fit_unit_variance(X[:n], Y[:n], k=4, reg=0.0), X[n:], Y[n:])[0]
    assert abs(other - mean) > 0.01


def test_span_leaves_out_directions_without_variance(views):
    X, Y = views
    full = R.fit_released(X, Y, k=5)
    same = R.fit_released(X, Y, k=5, in_span=True)      # both views span all dimensions: the released problem
    np.testing.assert_allclose(same.corrs, full.corrs, atol=1e-8)
    sign = np.sign((same.wx * full.wx).sum(0))
    np.testing.assert_allclose(same.wx * sign, full.wx, atol=1e-6)
    np.testing.assert_allclose(same.wy * sign, full.wy, atol=1e-6)
    # 40 images of 60-d features (fewer images than dimensions), 10 captions each; the text view without
    # one direction, as after the removal of the first component
    rng = np.random.default_rng(3)
    F = rng.normal(size=(40, 60))
    image_of = np.repeat(np.arange(40), 10)
    Yr = F[image_of][:, :5] @ rng.normal(size=(5, 6)) + rng.normal(size=(400, 6))
    v = rng.normal(size=6)
    v /= np.linalg.norm(v)
    Yr -= np.outer(Yr @ v, v)
    released = R.fit_released(F, Yr, k=3, image_of=image_of)
    assert R.degenerate(released.corrs) == 3                # eigenvalue 1 (or inf) directions first
    px, py = R.cca_project(released, F[image_of], Yr)
    np.testing.assert_allclose(px, 0, atol=1e-6)            # ... that carry no training variance
    spanned = R.fit_released(F, Yr, k=3, image_of=image_of, in_span=True)
    assert R.degenerate(spanned.corrs) == 0
    Qx = np.linalg.svd(F - F.mean(0), full_matrices=False)[2][:39].T   # the 39-d span of the centred images
    Qy = np.linalg.svd(Yr - Yr.mean(0), full_matrices=False)[2][:5].T  # the 5-d span of the text view
    s, ref = stacked_reference(F[image_of] @ Qx, Yr @ Qy, 3)
    np.testing.assert_allclose(spanned.corrs, s, atol=1e-6)
    w = np.concatenate([Qx.T @ spanned.wx, Qy.T @ spanned.wy])
    np.testing.assert_allclose(w * np.sign((w * ref).sum(0)), ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(np.concatenate([spanned.wx, spanned.wy]), axis=0), 1, atol=1e-10)
    # k is at most the smaller span
    assert R.fit_released(F, Yr, k=6, image_of=image_of, in_span=True).wx.shape == (60, 5)


def test_cca_accepts_float32_and_torch(views):
    X, Y = views
    c64 = R.fit_released(X, Y, k=3)
    c32 = R.fit_released(torch.from_numpy(X.astype(np.float32)), Y.astype(np.float32), k=3)
    np.testing.assert_allclose(c32.corrs, c64.corrs, atol=1e-5)
    px, py = R.cca_project(c32, None, Y)
    assert px is None and py.shape == (len(Y), 3)


@pytest.mark.parametrize('reg', [0.0, 1e-3])
def test_unit_variance_matches_whitening_svd(views, reg):
    X, Y = views
    k = 7
    c = R.fit_unit_variance(X, Y, k=k, reg=reg)
    s, wx, wy = reference_cca(X, Y, k, reg)
    assert np.isrealobj(c.corrs) and np.isrealobj(c.wx) and np.isrealobj(c.wy)
    assert c.wx.shape == (12, k) and c.wy.shape == (9, k) and c.corrs.shape == (k,)
    np.testing.assert_allclose(c.corrs, s, atol=1e-6)
    assert np.all(np.diff(c.corrs) <= 0)                  # descending
    # same directions up to a joint sign per component
    sign = np.sign((c.wx * wx).sum(0))
    np.testing.assert_allclose(c.wx, wx * sign, atol=1e-6 * np.abs(wx).max())
    np.testing.assert_allclose(c.wy, wy * sign, atol=1e-6 * np.abs(wy).max())


def test_unit_variance_planted_correlations_recovered(views):
    X, Y = views
    c = R.fit_unit_variance(X, Y, k=7, reg=0.0)
    np.testing.assert_allclose(c.corrs[:5], RHO, atol=0.02)
    assert np.all(c.corrs[5:] < 0.05)                     # nothing else is shared
    # the projected training views: unit variance, uncorrelated components,
    # per-component correlation equal to the canonical correlations
    px, py = R.cca_project(c, X, Y)
    np.testing.assert_allclose(np.cov(px.T), np.eye(7), atol=1e-8)
    np.testing.assert_allclose(np.cov(py.T), np.eye(7), atol=1e-8)
    np.testing.assert_allclose(R.canonical_correlations(c, X, Y), c.corrs, atol=1e-8)
    np.testing.assert_allclose(px.mean(0), 0, atol=1e-8)  # centred by training means
    # deterministic signs: each direction's largest image coefficient is positive
    assert np.all(c.wx[np.abs(c.wx).argmax(0), np.arange(7)] > 0)


def test_canonical_correlations_of_new_data_are_pearsons(views):
    """On data other than the training data (other means: the projections are not centred), each
    component's Pearson correlation, by numpy."""
    X, Y = views
    n = len(X) // 2
    c = R.fit_unit_variance(X[:n], Y[:n], k=4, reg=0.0)
    X2, Y2 = X[n:] + 7.0, Y[n:] - 3.0
    px, py = (X2 - c.mean_x) @ c.wx, (Y2 - c.mean_y) @ c.wy
    want = [np.corrcoef(px[:, j], py[:, j])[0, 1] for j in range(4)]
    np.testing.assert_allclose(R.canonical_correlations(c, X2, Y2), want, atol=1e-10)


def test_degenerate_counts_eigenvalues_at_one_and_above():
    """Non-finite, or at least 1 - tol (tol = 1e-6)."""
    assert R.degenerate([np.inf, np.nan, 1 + 1e-9, 1.0, 1 - 1e-6, 1 - 2e-6, 0.9, -1.0]) == 5


def test_span_keeps_the_directions_whose_sd_exceeds_rtol_times_the_largest():
    """Variances 1, 1e-8 (sd 1e-4 of the largest: kept), 1e-12 (sd exactly 1e-6 of it: not above), 1e-14, 0."""
    Q = R.span(np.diag([1.0, 1e-8, 1e-6 ** 2, 1e-14, 0.0]))
    assert Q.shape == (5, 2)
    np.testing.assert_array_equal(np.abs(Q[:2]).sum(0), [1, 1])


def test_k_from_one_to_the_smaller_view_and_the_defaults(views):
    """k = 1 .. min(dx, dy) for both solvers, 0 an error; without flags k = 40 (as released) and, for the
    unit-variance solver, a ridge of 1e-6 x trace / dim (whitening + SVD with that ridge); in the span,
    k is at most the smaller span, whichever view it is."""
    X, Y = views  # 12 and 9 dimensions
    for fit in (R.fit_released, R.fit_unit_variance):
        assert fit(X, Y, k=1).wx.shape == (12, 1) and fit(X, Y, k=9).wy.shape == (9, 9)
        with pytest.raises(ValueError, match=r'k=0 must be in \[1, 9\]'):
            fit(X, Y, k=0)
    rng = np.random.default_rng(5)
    X45 = rng.normal(size=(400, 45))
    Y45 = X45 @ rng.normal(size=(45, 45)) * 0.1 + rng.normal(size=(400, 45))
    assert R.fit_released(X45, Y45).wx.shape == (45, 40)
    c = R.fit_unit_variance(X45, Y45)
    np.testing.assert_allclose(c.corrs, reference_cca(X45, Y45, 40, 1e-6)[0], atol=1e-8)
    # the image view spans 3 dimensions, the text view 5: k = 3
    Xr = rng.normal(size=(400, 3)) @ rng.normal(size=(3, 6))
    Yr = Xr[:, :5] + rng.normal(size=(400, 5))
    assert R.fit_released(Xr, Yr, k=10, in_span=True).wx.shape == (6, 3)


def test_unit_variance_ridge_and_rank_deficiency(views):
    X, Y = views
    c0 = R.fit_unit_variance(X, Y, k=5, reg=0.0)
    c1 = R.fit_unit_variance(X, Y, k=5, reg=0.1)
    assert np.all(c1.corrs < c0.corrs)
    # a rank-deficient view (as after removing the first pc) needs the ridge
    Yd = np.concatenate([Y, Y[:, :1] + Y[:, 1:2]], 1)
    c = R.fit_unit_variance(X, Yd, k=5, reg=1e-6)
    assert np.all(np.isfinite(c.wy))
    np.testing.assert_allclose(c.corrs, c0.corrs, atol=1e-4)
    with pytest.raises(ValueError):
        R.fit_unit_variance(X, Y, k=10)                             # k > min(dx, dy)
    with pytest.raises(ValueError):
        R.fit_unit_variance(X, Y[:-1], k=3)
    with pytest.raises(ValueError):
        R.fit_released(X, Y, k=10)
