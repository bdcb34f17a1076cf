"""Tests for sentence embeddings and CCA (src/report/cca.py, SPEC section 6)."""

import numpy as np
import pytest


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


@pytest.mark.parametrize('reg', [0.0, 1e-3])
def test_cca_matches_whitening_svd(views, reg):
    X, Y = views
    k = 7
    c = R.fit_cca(X, Y, k=k, reg=reg)
    s, wx, wy = reference_cca(X, Y, k, reg)
    assert np.isrealobj(c.corrs) and np.isrealobj(c.wx) and np.isrealobj(c.wy)
    assert c.wx.shape == (12, k) and c.wy.shape == (9, k) and c.corrs.shape == (k,)
    np.testing.assert_allclose(c.corrs, s, atol=1e-6)
    assert np.all(np.diff(c.corrs) <= 0)                  # descending
    # same directions up to a joint sign per component
    sign = np.sign((c.wx * wx).sum(0))
    np.testing.assert_allclose(c.wx, wx * sign, atol=1e-6 * np.abs(wx).max())
    np.testing.assert_allclose(c.wy, wy * sign, atol=1e-6 * np.abs(wy).max())


def test_planted_correlations_recovered(views):
    X, Y = views
    c = R.fit_cca(X, Y, k=7, reg=0.0)
    np.testing.assert_allclose(c.corrs[:5], RHO, atol=0.02)
    assert np.all(c.corrs[5:] < 0.05)                     # nothing else is shared
    # the projected training views: unit variance, uncorrelated components,
    # per-component correlation equal to the canonical correlations
    px, py = R.cca_project(c, X, Y)
    np.testing.assert_allclose(np.cov(px.T), np.eye(7), atol=1e-8)
    np.testing.assert_allclose(np.cov(py.T), np.eye(7), atol=1e-8)
    np.testing.assert_allclose(R.canonical_correlations(c, X, Y), c.corrs, atol=1e-8)
    np.testing.assert_allclose(px.mean(0), 0, atol=1e-8)  # centred by training means


def test_ridge_shrinks_correlations_and_handles_rank_deficiency(views):
    X, Y = views
    c0 = R.fit_cca(X, Y, k=5, reg=0.0)
    c1 = R.fit_cca(X, Y, k=5, reg=0.1)
    assert np.all(c1.corrs < c0.corrs)
    # a rank-deficient view (as after removing the first pc) needs the ridge
    Yd = np.concatenate([Y, Y[:, :1] + Y[:, 1:2]], 1)
    c = R.fit_cca(X, Yd, k=5, reg=1e-6)
    assert np.all(np.isfinite(c.wy))
    np.testing.assert_allclose(c.corrs, c0.corrs, atol=1e-4)
    with pytest.raises(ValueError):
        R.fit_cca(X, Y, k=10)                             # k > min(dx, dy)
    with pytest.raises(ValueError):
        R.fit_cca(X, Y[:-1], k=3)


def test_cosine_score_matched_vs_shuffled(views):
    X, Y = views
    n = len(X) // 2
    c = R.fit_cca(X[:n], Y[:n], k=5)                      # fit on train, score held-out
    mean, sims = R.cca_score(c, X[n:], Y[n:])
    assert sims.shape == (len(X) - n,) and np.all(np.abs(sims) <= 1 + 1e-12)
    assert mean == pytest.approx(sims.mean())
    assert mean > 0.5
    perm = np.random.default_rng(1).permutation(len(X) - n)
    shuffled, _ = R.cca_score(c, X[n:], Y[n:][perm])
    assert abs(shuffled) < 0.03
    # CCA is affine invariant: re-mixing a view leaves the score unchanged
    M = np.random.default_rng(2).standard_normal((12, 12))
    c2 = R.fit_cca(X[:n] @ M + 3, Y[:n], k=5, reg=0.0)
    c0 = R.fit_cca(X[:n], Y[:n], k=5, reg=0.0)
    assert R.cca_score(c2, X[n:] @ M + 3, Y[n:])[0] == pytest.approx(
        R.cca_score(c0, X[n:], Y[n:])[0], abs=1e-6)


def test_cca_accepts_float32_and_torch(views):
    torch = pytest.importorskip('torch')
    X, Y = views
    c64 = R.fit_cca(X, Y, k=3)
    c32 = R.fit_cca(torch.from_numpy(X.astype(np.float32)), Y.astype(np.float32), k=3)
    np.testing.assert_allclose(c32.corrs, c64.corrs, atol=1e-5)
    px, py = R.cca_project(c32, None, Y)
    assert px is None and py.shape == (len(Y), 3)


# ---------------------------------------------------------------- SIF / pc

def test_sif_weights_by_hand():
    toks = [['a', 'b', '<eos>', '<pad>', '<pad>'], ['a', '<eos>', 'b', 'b']]
    # counted up to and including the first '<eos>': a 2, b 1, <eos> 2 (total 5)
    w = R.sif_weights(toks, a=0.1)
    assert set(w) == {'a', 'b', '<eos>'}
    assert w['a'] == pytest.approx(0.1 / (0.1 + 2 / 5))
    assert w['b'] == pytest.approx(0.1 / (0.1 + 1 / 5))
    assert w['<eos>'] == pytest.approx(0.1 / (0.1 + 2 / 5))
    w = R.sif_weights(toks, a=0.1, include_eos=False)     # a 2, b 1 (total 3)
    assert set(w) == {'a', 'b'} and w['b'] == pytest.approx(0.1 / (0.1 + 1 / 3))


def test_sentence_embeddings_by_hand():
    vecs = {'a': np.array([1.0, 0.0]), 'b': np.array([0.0, 2.0]),
            '<eos>': np.array([1.0, 1.0]), '<pad>': np.array([9.0, 9.0])}
    weights = {'a': 0.5, 'b': 0.25, '<eos>': 0.1}
    toks = [['a', 'b', '<eos>', '<pad>'], ['b', 'b', 'a'], ['<eos>', 'a']]
    emb = R.sentence_embeddings(toks, vecs, weights)
    np.testing.assert_allclose(emb[0], (0.5 * vecs['a'] + 0.25 * vecs['b'] + 0.1 * vecs['<eos>']) / 3)
    np.testing.assert_allclose(emb[1], (2 * 0.25 * vecs['b'] + 0.5 * vecs['a']) / 3)   # no eos: all
    np.testing.assert_allclose(emb[2], 0.1 * vecs['<eos>'])
    emb = R.sentence_embeddings(toks, vecs, weights, include_eos=False)
    np.testing.assert_allclose(emb[0], (0.5 * vecs['a'] + 0.25 * vecs['b']) / 2)
    np.testing.assert_allclose(emb[2], 0.0)                # empty caption -> zeros
    # unseen words get weight 1 (p(w) = 0)
    np.testing.assert_allclose(R.sentence_embeddings([['<pad>']], vecs, weights)[0], vecs['<pad>'])


def test_remove_first_pc_by_hand():
    emb = np.array([[2.0, 0.0], [-3.0, 0.0], [0.0, 1.0]])  # X'X = diag(13, 1): pc = +-e1
    out, pc = R.remove_first_pc(emb)
    np.testing.assert_allclose(np.abs(pc), [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(out, [[0, 0], [0, 0], [0, 1]], atol=1e-12)
    # the training pc is reused (and normalised) for other embeddings
    out2, pc2 = R.remove_first_pc(np.array([[5.0, 7.0]]), pc=2 * pc)
    np.testing.assert_allclose(out2, [[0.0, 7.0]], atol=1e-12)
    np.testing.assert_allclose(pc2, pc)
    # uncentred: a dominant common offset is what gets removed
    rng = np.random.default_rng(0)
    e = rng.normal(0, 0.1, (200, 4)) + np.array([3.0, 0, 0, 4.0])
    out, pc = R.remove_first_pc(e)
    np.testing.assert_allclose(np.abs(pc), [0.6, 0, 0, 0.8], atol=0.01)
    np.testing.assert_allclose(out @ pc, 0, atol=1e-12)


# ---------------------------------------------------------------- FastText

CORPUS = [s.split() + ['<eos>', '<pad>'] for s in [
    'this bird has a red crown and white belly',
    'a small bird with blue wings and a long black beak',
    'the bird has a short tail and yellow breast',
    'this bird is mostly brown with white wingbars',
] * 6]


def test_fasttext_plumbing():
    m1 = R.train_fasttext(CORPUS, vector_size=16, min_count=3, epochs=3, bucket=1000)
    m2 = R.train_fasttext(CORPUS, vector_size=16, min_count=3, epochs=3, bucket=1000)
    assert m1.wv.vector_size == 16 and m1.epochs == 3 and m1.window == 3
    assert 'crown' in m1.wv.key_to_index and '<eos>' in m1.wv.key_to_index
    np.testing.assert_array_equal(m1.wv['crown'], m2.wv['crown'])   # deterministic
    assert np.any(m1.wv['crimson'] != 0)                   # OOV word via char n-grams
    emb = R.SentenceEmbedder.fit(CORPUS, vector_size=16, epochs=3, bucket=1000)
    out = emb(CORPUS[:5] + [['an', 'unseen', 'caption', '<eos>']])
    assert out.shape == (6, 16) and np.all(np.isfinite(out))
    np.testing.assert_allclose(out @ emb.pc, 0, atol=1e-10)  # training pc removed
    # the same caption always embeds the same way
    np.testing.assert_allclose(out[0], emb([CORPUS[0]])[0])
