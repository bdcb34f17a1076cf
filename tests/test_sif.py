"""Sentence embeddings of the CUB coherence metric (src/report/sif.py), each step against a computation
by hand: fixed special-token vectors, SIF weights from raw counts, truncation at the first '<eos>',
the centred first component and its removal; FastText on raw sentences."""
import numpy as np
import pytest
import torch

from src.data.captions import build_vocab, invert_vocab, word_counts
from src.report import sif

RAW = [['a', 'red', 'bird', '.'], ['the', 'bird', 'is', 'red', '.'], ['a', 'tiny', 'bird', '.']]


def test_special_token_vectors_are_fixed():
    class KV:  # a stand-in for gensim's KeyedVectors
        vector_size = 4

        def __getitem__(self, w):
            return np.arange(4.0) + len(w)
    model = type('M', (), {'wv': KV()})()
    i2w = ['<exc>', '<pad>', '<eos>', 'bird', 'red']
    v = sif.word_vectors(model, i2w)
    assert v.shape == (5, 4) and v.dtype == np.float64
    np.testing.assert_array_equal(v[:3], [[-1] * 4, [0] * 4, [1] * 4])
    np.testing.assert_array_equal(v[3], np.arange(4.0) + 4)
    np.testing.assert_array_equal(v[4], np.arange(4.0) + 3)


def test_sif_weights_from_raw_counts():
    counts = word_counts(RAW)   # a 2, red 2, bird 3, . 3, the 1, is 1, tiny 1: 13 words
    w2i = build_vocab(RAW, min_occ=1)   # words seen more than once
    assert list(w2i)[3:] == ['a', 'red', 'bird', '.']
    w = sif.sif_weights(counts, w2i, a=0.1)
    by_hand = {'a': 2, 'red': 2, 'bird': 3, '.': 3}
    for word, c in by_hand.items():
        assert w[w2i[word]] == pytest.approx(0.1 / (0.1 + c / 13))
    assert w[0] == pytest.approx(0.1 / (0.1 + 3 / 13))   # '<exc>': the, is, tiny (3 of 13)
    assert w[1] == 0 and w[2] == 0                       # '<pad>', '<eos>' never in the raw text
    assert sif.sif_weights(counts, w2i)[w2i['bird']] == pytest.approx(1e-3 / (1e-3 + 3 / 13))  # a = 1e-3


def test_embedding_truncates_after_the_first_eos():
    V, dim = 6, 3
    vectors = np.arange(V * dim, dtype=np.float64).reshape(V, dim)
    weights = np.array([0.5, 0.0, 0.0, 2.0, 3.0, 4.0])
    ids = torch.tensor([[3, 4, 2, 5, 1, 1],    # '<eos>' at 2: tokens 3, 4, <eos> -> n = 3 (5 after it ignored)
                        [5, 5, 0, 3, 4, 5],    # no '<eos>': all 6
                        [2, 1, 1, 1, 1, 1],    # '<eos>' first: n = 1, weight 0 -> zero vector
                        [3, 1, 1, 2, 1, 1]])   # '<pad>' before '<eos>' (arg-max decoding): counted, weight 0
    e = sif.embed(ids, vectors, weights)
    np.testing.assert_allclose(e[0], (2 * vectors[3] + 3 * vectors[4] + 0 * vectors[2]) / 3)
    np.testing.assert_allclose(e[1], (4 * vectors[5] * 3 + 0.5 * vectors[0] + 2 * vectors[3] + 3 * vectors[4]) / 6)
    np.testing.assert_allclose(e[2], 0)
    np.testing.assert_allclose(e[3], 2 * vectors[3] / 4)   # the pads dilute, but add nothing


def test_first_component_is_centred_and_removed_as_u_e():
    # a large common offset along e1, the spread along e2: uncentred, the first component would be e1
    emb = np.array([[10.0, 1.0, 0.0], [10.0, -1.0, 0.1], [10.0, 2.0, -0.1], [10.0, -2.0, 0.0]])
    u = sif.first_component(emb)
    Xc = emb - emb.mean(0)
    v = np.linalg.eigh(Xc.T @ Xc)[1][:, -1]        # top eigenvector of the scatter matrix
    np.testing.assert_allclose(u, np.outer(v, v), atol=1e-12)
    assert abs(u[1, 1]) > 0.99 and abs(u[0, 0]) < 1e-12
    out = sif.remove_component(emb, u)
    np.testing.assert_allclose(out, emb - (u @ emb.T).T, atol=1e-12)   # e - u e, no centring
    np.testing.assert_allclose(out[:, 0], 10.0)   # the offset stays
    # u is applied as given (a loaded, non-symmetric matrix too)
    m = np.arange(9.0).reshape(3, 3)
    np.testing.assert_allclose(sif.remove_component(emb[:1], m)[0], emb[0] - m @ emb[0])


def test_embedder_chains_the_steps():
    vectors = np.random.default_rng(0).normal(size=(6, 4))
    weights = np.array([0.5, 0.0, 0.0, 2.0, 3.0, 4.0])
    u = np.outer([1.0, 0, 0, 0], [1.0, 0, 0, 0])
    ids = torch.tensor([[3, 4, 2, 1], [5, 3, 3, 2]])
    out = sif.Embedder(vectors, weights, u)(ids)
    np.testing.assert_allclose(out, sif.remove_component(sif.embed(ids, vectors, weights), u))
    np.testing.assert_allclose(out[:, 0], 0, atol=1e-12)


def test_fasttext_settings_are_the_released_ones(monkeypatch):
    """What gensim is asked for (the released helper.py: 300-d, window 3, min count 3, 10 epochs, gensim's
    2,000,000 buckets), with one worker thread (deterministic for a seed)."""
    gensim_models = pytest.importorskip('gensim.models')  # the cub extra
    calls = {}

    class Recorder:
        def __init__(self, **kw):
            calls['init'] = kw

        def build_vocab(self, corpus_iterable):
            calls['vocab'] = corpus_iterable

        def train(self, corpus_iterable, total_examples, epochs):
            calls['train'] = (corpus_iterable, total_examples, epochs)
    monkeypatch.setattr(gensim_models, 'FastText', Recorder)
    sentences = (['a', 'bird'], ['red', '.'])
    sif.train_fasttext(sentences)
    assert calls['init'] == dict(vector_size=300, window=3, min_count=3, bucket=2000000, seed=1, workers=1)
    assert calls['vocab'] == [['a', 'bird'], ['red', '.']] and calls['train'] == (calls['vocab'], 2, 10)


def test_fasttext_on_raw_sentences():
    sentences = [s.split() for s in ['this bird has a red crown and white belly .',
                                     'a small bird with blue wings and a long black beak .',
                                     'The bird has a short tail and yellow breast .'] * 8]
    m1 = sif.train_fasttext(sentences, vector_size=16, epochs=3, bucket=1000)
    m2 = sif.train_fasttext(sentences, vector_size=16, epochs=3, bucket=1000)
    assert m1.wv.vector_size == 16 and m1.window == 3 and m1.min_count == 3
    np.testing.assert_array_equal(m1.wv['crown'], m2.wv['crown'])   # one worker: deterministic
    assert 'The' in m1.wv.key_to_index and '<eos>' not in m1.wv.key_to_index   # words only, case kept
    w2i = build_vocab(sentences)
    v = sif.word_vectors(m1, invert_vocab(w2i))
    np.testing.assert_array_equal(v[w2i['crown']], m1.wv['crown'])
    np.testing.assert_array_equal(v[2], 1.0)
