"""Sentence embeddings of the CUB coherence metric, as the released src/report/helper.py computes them.

1. Word vectors: FastText (gensim; 300-d, window 3, min count 3, 10 epochs) trained on
   the raw training text, sentence by sentence as words (src/data/captions.py
   `raw_sentence_tokens`). Row i of the word-vector matrix is the vector of word i of
   the vocabulary; the three special tokens get fixed vectors, not learnt ones:
   '<exc>' (id 0) = -1, '<pad>' (id 1) = 0, '<eos>' (id 2) = +1 in every dimension.
2. Smooth-inverse-frequency weights a / (a + p(w)), a = 1e-3, with p(w) counted over
   the raw training words; '<exc>' gets a / (a + p(all raw words not in the
   vocabulary)); '<pad>' and '<eos>' never occur in the raw text: weight 0.
3. A caption (32 ids) is cut after its first '<eos>' (kept; all 32 tokens when there is
   none); its embedding is the weighted sum of its token vectors divided by that number
   of tokens.
4. First principal component: v, the first right singular vector of the CENTRED
   embeddings of the training captions; u = v v^T, and every embedding e becomes
   e - u e (no centring when applied).
Everything works on id tensors; vectors, weights and u are float64 numpy arrays.
"""
import numpy as np
import scipy.sparse
import torch

from src.data.captions import EOS

RESERVED_VECTORS = (-1.0, 0.0, 1.0)  # '<exc>', '<pad>', '<eos>': a constant in every dimension


def train_fasttext(sentences, vector_size=300, window=3, min_count=3, epochs=10, bucket=2000000, seed=1):
    """gensim FastText on token lists, otherwise at gensim's defaults (as released). One worker thread,
    so that training is deterministic for a seed (the released code used gensim's default of 3)."""
    from gensim.models import FastText
    sentences = [list(s) for s in sentences]
    model = FastText(vector_size=vector_size, window=window, min_count=min_count, bucket=bucket, seed=seed,
                     workers=1)
    model.build_vocab(corpus_iterable=sentences)
    model.train(corpus_iterable=sentences, total_examples=len(sentences), epochs=epochs)
    return model


def word_vectors(model, i2w):
    """(V, dim) float64: the fixed vectors of the special tokens, then FastText's vector of each word."""
    dim = model.wv.vector_size
    rows = [np.full(dim, c) for c in RESERVED_VECTORS] + [model.wv[w] for w in i2w[len(RESERVED_VECTORS):]]
    return np.stack(rows).astype(np.float64)


def sif_weights(counts, w2i, a=1e-3):
    """(V,) float64 weights from raw word counts (word -> occurrences in the training text)."""
    weights = np.zeros(len(w2i))
    total = sum(counts.values())
    outside = 0
    for w, c in counts.items():
        if w in w2i:
            weights[w2i[w]] = a / (a + c / total)
        else:
            outside += c
    weights[0] = a / (a + outside / total)  # '<exc>' stands for every word outside the vocabulary
    return weights


def embed(ids, vectors, weights):
    """(N, 32) ids -> (N, dim) float64: sum of weight x vector over the tokens up to and including the
    first '<eos>' (all of them without one), divided by the number of those tokens."""
    ids = torch.as_tensor(ids).long().cpu()
    is_eos = ids == EOS
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), ids.shape[1] - 1)
    keep = torch.arange(ids.shape[1]) <= first[:, None]
    n = keep.sum(1, keepdim=True).double()
    coef = (torch.as_tensor(weights, dtype=torch.float64)[ids] * keep / n).numpy()
    rows = np.repeat(np.arange(len(ids)), ids.shape[1])
    # (N, V) sparse coefficients times the (V, dim) vectors: repeated words are summed
    S = scipy.sparse.csr_matrix((coef.ravel(), (rows, ids.numpy().ravel())), shape=(len(ids), len(vectors)))
    return np.asarray(S @ vectors)


def first_component(emb):
    """u = v v^T, v the first right singular vector of the centred embeddings (300 x 300)."""
    emb = np.asarray(emb, dtype=np.float64)
    _, _, vt = np.linalg.svd(emb - emb.mean(0), full_matrices=False)
    return np.outer(vt[0], vt[0])


def remove_component(emb, u):
    """e - u e for every row e (u as given: not re-centred, not re-normalised)."""
    return np.asarray(emb, dtype=np.float64) - np.asarray(emb, dtype=np.float64) @ np.asarray(u, np.float64).T


class Embedder:
    """Word vectors + SIF weights + u: ids (N, 32) -> sentence embeddings (N, dim)."""

    def __init__(self, vectors, weights, u):
        self.vectors, self.weights, self.u = vectors, weights, u

    def __call__(self, ids):
        return remove_component(embed(ids, self.vectors, self.weights), self.u)
