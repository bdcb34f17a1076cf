"""Tests for the CUB caption pipeline (src/data/captions.py)."""
import os
import random
from pathlib import Path

import pytest
import torch

from src.data import captions as C

ROOT = Path(__file__).resolve().parents[1]


def nltk_word_tokenize(text):
    """nltk.word_tokenize with the data-free sentence splitter (nltk's own functions)."""
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer
    return [t for s in PunktSentenceTokenizer().tokenize(text) for t in NLTKWordTokenizer().tokenize(s)]

REAL_TEST_TXT = ROOT.parent / 'shared' / 'data' / 'cub' / 'text_testclasses.txt'


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding='utf-8')
    return str(p)


def test_lines_never_merge_or_split(tmp_path):
    # The released code ran sent_tokenize over the whole file: the first line
    # would have become two captions and the second merged with the third.
    path = _write(tmp_path, 'c.txt', 'a bird. it has\nno period here\nThe Next one!\n')
    lines = C.read_captions(path)
    assert lines == ['a bird. it has', 'no period here', 'The Next one!']
    toks = [C.tokenize(s) for s in lines]
    assert toks == [['a', 'bird', '.', 'it', 'has'],
                    ['no', 'period', 'here'],
                    ['The', 'Next', 'one', '!']]
    assert C.encode(toks, C.build_vocab(toks)).shape == (3, 32)
    # the vocabulary, FastText corpus and SIF counts read the file whole, as released: sentences may
    # cross lines (here the second sentence runs over three lines)
    assert C.raw_sentence_tokens(path) == [['a', 'bird', '.'],
                                           ['it', 'has', 'no', 'period', 'here', 'The', 'Next', 'one', '!']]


def test_tokenize_punctuation_and_case():
    # case kept, as released
    assert C.tokenize('This bird has a RED crown, white belly; and wings.\n') == \
        ['This', 'bird', 'has', 'a', 'RED', 'crown', ',', 'white', 'belly', ';', 'and', 'wings', '.']
    # nltk splits "isn't" and quotes like word_tokenize does
    assert C.tokenize('it isn\'t "big"') == ['it', 'is', "n't", '``', 'big', "''"]
    # no space after the period: nltk keeps it inside the token, so do we
    assert C.tokenize('short beak.and long wings.') == ['short', 'beak.and', 'long', 'wings', '.']


def test_fast_path_matches_nltk():
    """Simple lines skip nltk; on random strings both routes must agree."""
    rng = random.Random(0)
    pieces = ['a', 'b', 'Q', ' ', ' ', ',', '-', '.', 'cannot', 'Gonna', 'wanNa ', 'bird ', 'The ']
    n_fast = 0
    for _ in range(5000):
        line = ''.join(rng.choice(pieces) for _ in range(rng.randint(0, 12))).strip()
        n_fast += bool(C._SIMPLE.fullmatch(line)) and not C._CONTRACTION.search(line)
        assert C.tokenize(line) == list(nltk_word_tokenize(line)), line
    assert n_fast > 1000          # the fast path was exercised
    assert C.tokenize('it Cannot fly, the tail,,is long.') == \
        ['it', 'Can', 'not', 'fly', ',', 'the', 'tail', ',', ',is', 'long', '.']   # nltk's quirks


def test_read_captions_blank_lines(tmp_path):
    path = _write(tmp_path, 'c.txt', 'one\r\n\r\n  three  \n\n\n')
    # interior blank line kept (alignment with images), trailing ones dropped
    assert C.read_captions(path) == ['one', '', 'three']
    ids = C.encode([C.tokenize(s) for s in C.read_captions(path)], {'one': 3, 'three': 4})
    assert ids[1].tolist() == [C.EOS] + [C.PAD] * 31


def test_truncation_eos_and_padding():
    w2i = {'<exc>': 0, '<pad>': 1, '<eos>': 2, 'w': 3}
    long = ['w'] * 40
    exact = ['w'] * 31
    short = ['w'] * 5
    ids = C.encode([long, exact, short, []], w2i)
    assert ids.dtype == torch.long and ids.shape == (4, 32)
    assert ids[0].tolist() == [3] * 31 + [2]
    assert ids[1].tolist() == [3] * 31 + [2]
    assert ids[2].tolist() == [3] * 5 + [2] + [1] * 26
    assert ids[3].tolist() == [2] + [1] * 31
    # the first 31 tokens are kept, not the last ones
    ids = C.encode([['w'] * 30 + ['x'] + ['y'] * 5], {**w2i, 'x': 4, 'y': 5})
    assert ids[0, 30].item() == 4 and ids[0, 31].item() == 2 and 5 not in ids[0].tolist()


def test_vocab_rule_specials_and_order():
    toks = [['b', 'a', 'a'], ['a', 'c', 'c', 'b'], ['c', 'b', 'c', 'b'], ['<eos>', 'd', 'd', 'd']]
    # counts: b 4, a 3, c 4, d 3, '<eos>' 1
    w2i = C.build_vocab(toks, min_occ=3)
    assert w2i == {'<exc>': 0, '<pad>': 1, '<eos>': 2, 'b': 3, 'c': 4}
    assert list(w2i.values()) == list(range(len(w2i)))
    # min_occ is a parameter: with 2, 'a' (3) and 'd' (3) get in, in first-seen order
    assert list(C.build_vocab(toks, min_occ=2))[3:] == ['b', 'a', 'c', 'd']


def test_unknown_words_are_exc():
    w2i = C.build_vocab([['red'] * 4, ['bird'] * 5])
    ids = C.encode([['red', 'zebra', 'bird', 'a']], w2i)
    assert ids[0, :5].tolist() == [w2i['red'], C.EXC, w2i['bird'], C.EXC, C.EOS]
    assert C.EXC == 0 and C.PAD == 1 and C.EOS == 2


def test_decode():
    toks = [['this', 'bird', 'is', 'red', '.'] * 2]
    w2i = C.build_vocab(toks * 2, min_occ=1)
    i2w = C.invert_vocab(w2i)
    ids = C.encode(toks, w2i)
    assert C.decode(ids[0], i2w) == 'this bird is red . this bird is red .'
    assert C.decode(ids[0], i2w, stop_at_eos=False).endswith('red . <eos>')
    # pads are dropped anywhere; tokens after an early eos only with stop_at_eos=False
    seq = [w2i['bird'], C.PAD, C.EOS, w2i['red'], C.PAD]
    assert C.decode(seq, i2w) == 'bird'
    assert C.decode(seq, i2w, stop_at_eos=False) == 'bird <eos> red'
    assert C.decode_batch(ids, dict(enumerate(i2w))) == ['this bird is red . this bird is red .']


def test_load_or_build_caches_and_rebuilds(tmp_path, monkeypatch):
    train = _write(tmp_path, 'train.txt', 'a red bird.\n' * 5 + 'a blue bird.\n' * 4)
    test = _write(tmp_path, 'test.txt', 'a green bird.\na red bird.\n')
    cache = str(tmp_path / 'cache')
    w2i, tr, te = C.load_or_build(train, test, cache)
    assert list(w2i) == ['<exc>', '<pad>', '<eos>', 'a', 'red', 'bird', '.', 'blue']
    assert tr.shape == (9, 32) and te.shape == (2, 32)
    assert te[0, :5].tolist() == [w2i['a'], C.EXC, w2i['bird'], w2i['.'], C.EOS]
    assert sorted(os.listdir(cache)) == ['captions.pt', 'vocab.json']   # no temp files left

    # second call reads the cache: building would fail
    def boom(*a, **k):
        raise AssertionError('rebuilt although nothing changed')
    monkeypatch.setattr(C, 'build', boom)
    w2i2, tr2, te2 = C.load_or_build(train, test, cache)
    assert w2i2 == w2i and torch.equal(tr2, tr) and torch.equal(te2, te)
    monkeypatch.undo()

    # a changed source file invalidates the cache
    _write(tmp_path, 'train.txt', 'a red bird.\n' * 5 + 'a green bird.\n' * 4)
    w2i3, tr3, te3 = C.load_or_build(train, test, cache)
    assert 'green' in w2i3 and 'blue' not in w2i3
    assert te3[0, 1].item() == w2i3['green']
    # and the rewritten cache is valid for the new content
    monkeypatch.setattr(C, 'build', boom)
    assert C.load_or_build(train, test, cache)[0] == w2i3


@pytest.mark.skipif(not REAL_TEST_TXT.exists(), reason='real CUB captions not available')
def test_real_cub_test_captions():
    lines = C.read_captions(str(REAL_TEST_TXT))
    assert len(lines) == 29330 and all(lines)          # one caption per line
    toks = [C.tokenize(s) for s in lines]
    w2i = C.build_vocab(toks)
    ids = C.encode(toks, w2i)
    print(f'CUB test-class captions: {len(lines)} lines, vocab {len(w2i)} '
          f'(min_occ 3), {ids.shape[0] // 10} images')
    assert ids.shape == (29330, 32) and ids.shape[0] == 10 * 2933
    # Built from the 29,330 test-class captions alone the vocabulary has 996
    # words; the training captions (3x more) give a larger one.
    assert 900 < len(w2i) < 1200
    assert list(w2i)[:3] == ['<exc>', '<pad>', '<eos>']
    assert (ids == C.EOS).sum(1).eq(1).all()           # exactly one eos per row
    assert ids[:, 0].ne(C.PAD).all() and ids[:, 0].ne(C.EOS).all()
    assert (ids == C.EXC).float().mean() < 0.01        # rare words are rare
    # the fast tokeniser path agrees with nltk on (a tenth of) the real lines
    for line in lines[::10]:
        assert C.tokenize(line) == list(nltk_word_tokenize(line)), line
    i2w = C.invert_vocab(w2i)
    assert C.decode(ids[0], i2w) == ('the medium sized bird has a dark grey color , '
                                     'a black downward curved beak , and long wings .')


@pytest.mark.skipif(not REAL_TEST_TXT.exists(), reason='real CUB captions not available')
def test_real_cub_sentences_are_the_lines():
    """The data-free sentence splitter on the real test captions read whole (as the released code reads
    its files): one sentence per line, none across lines, so the vocabulary of the file's sentences
    (released) is that of its lines, in the same order. (nltk's English Punkt model, checked once by hand
    with its parameters, gives the same 29,330 sentences.)"""
    from nltk.tokenize.punkt import PunktSentenceTokenizer
    text = REAL_TEST_TXT.read_text(encoding='utf-8')
    sentences = PunktSentenceTokenizer().tokenize(text)
    lines = C.read_captions(str(REAL_TEST_TXT))
    assert sentences == lines
    whole = C.raw_sentence_tokens(str(REAL_TEST_TXT))
    assert whole == [C.tokenize(s) for s in lines]
    counts = C.word_counts(whole)
    assert counts['Brandt'] == 1 and 'brandt' not in counts   # case kept, as released
    assert list(C.build_vocab(whole)) == list(C.build_vocab([C.tokenize(s) for s in lines]))
