"""Sentence embeddings and CCA for the CUB coherence metric (SPEC section 6).

Pipeline (paper section 5, released evaluation code):
  1. FastText (300-d, window 3, min count 3, 10 epochs) on the training
     captions (`train_fasttext`).
  2. Smooth-inverse-frequency weights a / (a + p(w)), a = 1e-3, with p(w) the
     token frequency in the training captions (`sif_weights`).
  3. Sentence embedding = (1/n) sum_i weight(t_i) * vec(t_i) over the n tokens
     up to the first '<eos>' (`sentence_embeddings`); this is the SIF average
     of Arora et al. (divided by the token count, not by the weight sum).
  4. Remove the projection on the first principal component of the TRAINING
     embeddings (`remove_first_pc`), reusing that component for test and
     generated captions. As in the SIF reference code (TruncatedSVD), the
     component is the first right singular vector of the uncentred matrix.
  5. CCA with k = 40 between image features and sentence embeddings, fitted
     on training pairs (`fit_cca`); score = mean cosine similarity between the
     two views after centring (training means) and projecting (`cca_score`).

'<eos>' handling: the released code truncates a caption after its first
'<eos>' and keeps that token (`s[:where(s == 2)[0][0] + 1]`), so '<eos>' is
part of every embedding (with a small SIF weight, being frequent).
`include_eos=True` reproduces that; False drops it. Token lists are lists of
strings (decode ids with `src.data.captions.ids_to_tokens`); the released code
trained FastText on the full decoded 32-token sequences, pads included.

CCA normalisation: canonical directions are scaled to unit variance on the
training data (w' C w = 1 with the ridge-regularised covariance). Cosine
similarity depends on this per-dimension scaling, so it is fixed here and
documented rather than left to an eigen-solver's arbitrary normalisation.
"""
from collections import namedtuple

import numpy as np
import scipy.linalg
import scipy.sparse

EOS = '<eos>'


# ---------------------------------------------------------------- embeddings

def _truncate(tokens, include_eos=True):
    """Tokens up to the first '<eos>' (kept if include_eos)."""
    try:
        j = tokens.index(EOS)
    except ValueError:
        return list(tokens)
    return list(tokens[:j + 1] if include_eos else tokens[:j])


def train_fasttext(token_lists, vector_size=300, window=3, min_count=3, epochs=10,
                   seed=1, workers=1, bucket=2000000, **kwargs):
    """Train a gensim 4 FastText model on token lists (lists of strings).

    workers=1 keeps training deterministic for a given seed (gensim's own
    multi-threading is not). bucket is the number of hashed char-n-gram rows
    (gensim's default 2e6 x vector_size float32 = 2.4 GB at 300-d; a smaller
    value saves memory at the cost of more n-gram hash collisions).
    """
    from gensim.models import FastText
    token_lists = [list(t) for t in token_lists]
    model = FastText(vector_size=vector_size, window=window, min_count=min_count,
                     seed=seed, workers=workers, bucket=bucket, **kwargs)
    model.build_vocab(corpus_iterable=token_lists)
    model.train(corpus_iterable=token_lists, total_examples=len(token_lists),
                epochs=epochs)
    return model


def sif_weights(token_lists, a=1e-3, include_eos=True):
    """dict word -> a / (a + p(w)), p(w) = count(w) / total count.

    Counted over the same tokens that are embedded: each caption up to its
    first '<eos>' (included if include_eos).
    """
    counts = {}
    for toks in token_lists:
        for t in _truncate(toks, include_eos):
            counts[t] = counts.get(t, 0) + 1
    total = sum(counts.values())
    return {w: a / (a + c / total) for w, c in counts.items()}


def sentence_embeddings(token_lists, model, weights, include_eos=True,
                        unseen_weight=1.0):
    """(N, dim) float64 SIF averages: (1/n) sum_i weights[t_i] * vec(t_i).

    model: a gensim FastText/Word2Vec model, its KeyedVectors (`.wv`), or any
    mapping word -> vector. Words absent from `weights` get `unseen_weight`
    (1.0 = a / (a + 0), the SIF weight of a word of frequency zero). A caption
    with no tokens gets the zero vector.
    """
    kv = model.wv if hasattr(model, 'wv') else model
    sents = [_truncate(t, include_eos) for t in token_lists]
    vocab = {}
    rows, cols, vals = [], [], []
    for n, toks in enumerate(sents):
        for t in toks:
            j = vocab.setdefault(t, len(vocab))
            rows.append(n)
            cols.append(j)
            vals.append(weights.get(t, unseen_weight) / len(toks))
    if not vocab:
        raise ValueError('no tokens to embed')
    words = list(vocab)          # dict order == column index
    E = np.stack([np.asarray(kv[w], dtype=np.float64) for w in words])
    # Sparse (N, U) weight matrix times (U, dim) word vectors: one matmul instead
    # of a Python loop per caption. Duplicate (row, col) entries are summed.
    S = scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(len(sents), len(words)))
    return np.asarray(S @ E)


def remove_first_pc(emb, pc=None):
    """-> (emb - (emb . pc) pc, pc); pc fitted here (unit norm) if not given.

    Fit on the training embeddings and pass the returned pc for test and
    generated ones. pc is the first right singular vector of the uncentred
    matrix (as sklearn's TruncatedSVD in the SIF code).
    """
    emb = np.asarray(emb, dtype=np.float64)
    if pc is None:
        _, _, vt = np.linalg.svd(emb, full_matrices=False)
        pc = vt[0]
    pc = np.asarray(pc, dtype=np.float64).reshape(-1)
    pc = pc / np.linalg.norm(pc)
    return emb - np.outer(emb @ pc, pc), pc


class SentenceEmbedder:
    """FastText model + SIF weights + training pc, bundled: fit once, then call.

    emb = SentenceEmbedder.fit(train_tokens)(any_tokens)
    """

    def __init__(self, model, weights, pc, include_eos=True):
        self.model, self.weights, self.pc, self.include_eos = model, weights, pc, include_eos

    @classmethod
    def fit(cls, token_lists, a=1e-3, include_eos=True, **fasttext_kwargs):
        model = train_fasttext(token_lists, **fasttext_kwargs)
        weights = sif_weights(token_lists, a, include_eos)
        emb = sentence_embeddings(token_lists, model, weights, include_eos)
        _, pc = remove_first_pc(emb)
        return cls(model, weights, pc, include_eos)

    def __call__(self, token_lists):
        emb = sentence_embeddings(token_lists, self.model, self.weights, self.include_eos)
        return remove_first_pc(emb, self.pc)[0]


# ---------------------------------------------------------------- CCA

CCA = namedtuple('CCA', 'mean_x mean_y wx wy corrs')
CCA.__doc__ = """Fitted CCA: training means, projections wx (dx, k), wy (dy, k) and
the canonical correlations corrs (k,), descending (of the ridge-regularised
problem; equal to the sample ones when reg = 0)."""


def _as_f64(a):
    if hasattr(a, 'detach'):      # torch tensor
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _cross_cov(A, B, ma, mb, chunk=8192):
    """Centred A'B / (n - 1), accumulated in float64 chunks (inputs may be float32)."""
    out = np.zeros((A.shape[1], B.shape[1]))
    for s in range(0, len(A), chunk):
        a = A[s:s + chunk].astype(np.float64) - ma
        b = B[s:s + chunk].astype(np.float64) - mb
        out += a.T @ b
    return out / (len(A) - 1)


def fit_cca(X, Y, k=40, reg=1e-6):
    """Two-view CCA as the symmetric generalised eigenproblem A v = rho B v.

    A = [[0, Cxy], [Cyx, 0]], B = blockdiag(Cxx + rx I, Cyy + ry I), with the
    ridge relative to each view's scale: rx = reg * trace(Cxx) / dx (keeps B
    positive definite when a view is rank-deficient). scipy.linalg.eigh
    returns real eigenvalues +-rho_i; the k largest are the canonical
    correlations and v = [wx; wy] (rescaled so that each view's projections
    have unit variance).
    """
    X, Y = _as_f64(X), _as_f64(Y)
    if len(X) != len(Y):
        raise ValueError(f'X and Y must pair up: {len(X)} vs {len(Y)} rows')
    n, dx = X.shape
    dy = Y.shape[1]
    if not 1 <= k <= min(dx, dy):
        raise ValueError(f'k={k} must be in [1, min(dx, dy) = {min(dx, dy)}]')
    mx = X.mean(0, dtype=np.float64)
    my = Y.mean(0, dtype=np.float64)
    Cxx, Cyy, Cxy = _cross_cov(X, X, mx, mx), _cross_cov(Y, Y, my, my), _cross_cov(X, Y, mx, my)
    Cxx[np.diag_indices(dx)] += reg * np.trace(Cxx) / dx
    Cyy[np.diag_indices(dy)] += reg * np.trace(Cyy) / dy
    d = dx + dy
    A = np.zeros((d, d))
    A[:dx, dx:] = Cxy
    A[dx:, :dx] = Cxy.T
    B = np.zeros((d, d))
    B[:dx, :dx] = Cxx
    B[dx:, dx:] = Cyy
    vals, vecs = scipy.linalg.eigh(A, B, subset_by_index=[d - k, d - 1])
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    # eigh gives v'Bv = 1, and for rho > 0 the two views share it equally
    # (wx'Cxx wx = wy'Cyy wy = 1/2): sqrt(2) makes each view unit-variance.
    wx, wy = vecs[:dx] * np.sqrt(2), vecs[dx:] * np.sqrt(2)
    # Deterministic signs (a joint sign flip of wx, wy changes nothing else).
    s = np.sign(wx[np.abs(wx).argmax(0), np.arange(k)])
    s[s == 0] = 1
    return CCA(mx, my, wx * s, wy * s, vals)


def cca_project(cca, X=None, Y=None):
    """-> (X_proj, Y_proj), each (n, k): centred with the TRAINING means, then projected.

    Either view may be None (its output is then None).
    """
    px = None if X is None else (_as_f64(X).astype(np.float64) - cca.mean_x) @ cca.wx
    py = None if Y is None else (_as_f64(Y).astype(np.float64) - cca.mean_y) @ cca.wy
    return px, py


def cca_score(cca, X, Y, eps=1e-12):
    """-> (mean cosine similarity, per-item cosine similarities (n,)).

    Rows of X and Y are paired (image features, sentence embeddings). The
    per-item values let callers average over other groupings.
    """
    px, py = cca_project(cca, X, Y)
    num = (px * py).sum(1)
    den = np.maximum(np.linalg.norm(px, axis=1) * np.linalg.norm(py, axis=1), eps)
    sims = num / den
    return float(sims.mean()), sims


def canonical_correlations(cca, X, Y):
    """Per-component Pearson correlation of the projected views on (X, Y)."""
    px, py = cca_project(cca, X, Y)
    px, py = px - px.mean(0), py - py.mean(0)
    return (px * py).sum(0) / np.sqrt((px ** 2).sum(0) * (py ** 2).sum(0))
