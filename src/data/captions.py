"""CUB caption pipeline: tokenise, build the vocabulary, encode.

Captions come one per line, 10 per image, in image order: caption i belongs to
image i // 10. Each line is tokenised on its own by `word_tokenize` (nltk's:
sentences, then nltk's Treebank-style word tokenizer on each; case kept, as
released), truncated to ``max_len - 1`` tokens, given an '<eos>' and padded with
'<pad>' to ``max_len`` (32).

Vocabulary, as the released CUBSentences builds it: '<exc>' = 0 (unknown word),
'<pad>' = 1, '<eos>' = 2, then every word seen MORE than ``min_occ`` (3) times
in the training text, in order of first occurrence, counted over the sentences
of the whole training file (`raw_sentence_tokens`: nltk's sent_tokenize over
the file, then word_tokenize on each sentence). So the ids are the released
ones, and so are the rows of the authors' word-vector file (cub.emb).

Sentences: nltk's English Punkt model (``nltk.sent_tokenize``) when its data
(punkt_tab) are installed; otherwise a data-free splitter, nltk's Punkt
without trained parameters (it knows no abbreviations). On the real CUB test
captions both give the same 29,330 sentences, one per line, none across lines
(tests/test_captions.py checks the data-free one there). `sentence_splitter()`
says which is used; the caches are keyed by it.

One difference from the released code: the released CUBSentences also made its
captions (not only the vocabulary) from the whole file's sentences, so a line
holding two sentences became two captions and a line without a final period
merged with the next one, shifting the caption -> image alignment. Here every
line is one caption, always. On the CUB files this changes nothing (every line
is one sentence).
"""
import functools
import hashlib
import json
import os
import re

import torch

from ..files import save_json, save_torch

EXC, PAD, EOS = 0, 1, 2
RESERVED_TOKENS = ('<exc>', '<pad>', '<eos>')
MAX_LEN = 32
MIN_OCC = 3
# Bump when tokenisation/encoding changes so that stale caches are rebuilt.
PIPELINE_VERSION = 3

DATA_FREE = 'data-free: nltk Punkt without trained parameters'
ENGLISH = 'nltk sent_tokenize (English Punkt model)'


@functools.lru_cache(maxsize=None)
def sentence_splitter():
    """(text -> list of sentences, its name): nltk.sent_tokenize when nltk's English Punkt data are
    installed, else the data-free Punkt without parameters (the same sentences on CUB captions).
    nltk is imported here, on first use, not with the module: it takes seconds to import, and every
    module of src/data/ is imported at start-up."""
    from nltk.tokenize import sent_tokenize
    from nltk.tokenize.punkt import PunktSentenceTokenizer
    try:
        sent_tokenize('A bird. It has wings.')
        return sent_tokenize, ENGLISH
    except LookupError:  # punkt_tab not installed (nltk.download cannot run offline)
        return PunktSentenceTokenizer().tokenize, DATA_FREE


# Lines made only of letters, spaces, single hyphens and single commas, with at
# most one period at the very end, and none of nltk's letter-only contractions
# ("cannot" -> "can not", ...): for these nltk's output is simply the words
# with ',' and the final '.' split off (checked against nltk on the real
# captions and on random strings in tests/test_captions.py). Nearly all CUB
# captions look like this.
_SIMPLE = re.compile(r'(?:[A-Za-z ]|-(?!-)|,(?!,))*\.?')
_CONTRACTION = re.compile(r'cannot|gimme|gonna|gotta|lemme|wanna', re.IGNORECASE)


def tokenize(line):
    """One caption line (or sentence) -> its tokens, case kept: nltk's word_tokenize."""
    return list(_tokenize_cached(line.strip()))


@functools.lru_cache(maxsize=1 << 18)
def _tokenize_cached(line):
    # nltk's tokenizer costs ~0.2 ms a line, so simple lines take a fast path
    # with the same result and repeated captions are tokenised once.
    if _SIMPLE.fullmatch(line) and not _CONTRACTION.search(line):
        if line.endswith('.'):
            line = line[:-1] + ' .'
        return tuple(line.replace(',', ' , ').split())
    return word_tokenize(line)


def word_tokenize(text):
    """nltk.word_tokenize: the sentences of `text` (sentence_splitter), then the Treebank-style word
    tokenizer on each."""
    split = sentence_splitter()[0]
    return tuple(t for s in split(text) for t in _word_tokenizer().tokenize(s))


@functools.lru_cache(maxsize=None)
def _word_tokenizer():
    from nltk.tokenize import NLTKWordTokenizer  # the tokenizer behind nltk.word_tokenize
    return NLTKWordTokenizer()


def raw_sentence_tokens(path):
    """The tokens of each sentence of a caption file read whole, as the released code reads the
    training text for its vocabulary, FastText corpus and SIF counts: sent_tokenize over the file's
    text, then word_tokenize on each sentence (sentences may cross lines; case kept)."""
    with open(path, 'r', encoding='utf-8') as f:
        text = f.read()
    return [tokenize(s) for s in sentence_splitter()[0](text)]


def read_captions(path):
    """Return the caption lines of a text file, stripped of surrounding space.

    One line is one caption, so line index == caption index and caption i
    belongs to image i // 10. Blank lines *inside* the file are kept (as ''
    which encodes to '<eos>' + padding) so that this alignment never shifts;
    blank lines at the very end of the file (a trailing newline or more) are
    dropped. The real CUB files have no blank lines.
    """
    with open(path, 'r', encoding='utf-8') as f:
        lines = [ln.strip() for ln in f.read().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def word_counts(token_lists):
    """word -> number of occurrences, in first-seen order (the released OrderedCounter)."""
    counts = {}
    for toks in token_lists:       # dicts keep insertion order = first-seen order
        for t in toks:
            counts[t] = counts.get(t, 0) + 1
    return counts


def build_vocab(token_lists, min_occ=MIN_OCC):
    """w2i: specials 0..2, then words seen more than `min_occ` times, first-seen order."""
    w2i = {t: i for i, t in enumerate(RESERVED_TOKENS)}
    for w, c in word_counts(token_lists).items():
        if c > min_occ and w not in w2i:
            w2i[w] = len(w2i)
    return w2i


def invert_vocab(w2i):
    """w2i dict -> i2w list (index = id)."""
    i2w = [None] * len(w2i)
    for w, i in w2i.items():
        i2w[i] = w
    assert all(w is not None for w in i2w), 'vocabulary ids must be 0..V-1'
    return i2w


def encode(token_lists, w2i, max_len=MAX_LEN):
    """Token lists -> LongTensor (N, max_len): first max_len-1 tokens, '<eos>', '<pad>'s.

    Words missing from w2i map to '<exc>' (0).
    """
    out = torch.full((len(token_lists), max_len), PAD, dtype=torch.long)
    for n, toks in enumerate(token_lists):
        ids = [w2i.get(t, EXC) for t in toks[:max_len - 1]] + [EOS]
        out[n, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def decode(ids, i2w, stop_at_eos=True):
    """One id sequence -> caption text (tokens joined by spaces), '<pad>' dropped.

    stop_at_eos=True: stop at the first '<eos>' (not written); False: keep every
    non-pad token, '<eos>' included. `i2w` is a list or a dict id -> word.
    """
    if torch.is_tensor(ids):
        ids = ids.tolist()
    words = []
    for i in ids:
        i = int(i)
        if i == EOS and stop_at_eos:
            break
        if i == PAD:
            continue
        words.append(i2w[i])
    return ' '.join(words)


def decode_batch(ids, i2w, stop_at_eos=True):
    """(N, L) ids -> list of N caption strings (see `decode`)."""
    return [decode(row, i2w, stop_at_eos) for row in ids]


# ---------------------------------------------------------------- caching

def _file_digest(path):
    """Content hash: robust to copies/touches that change mtime but not data."""
    h = hashlib.sha1()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def cache_key(train_txt, test_txt, min_occ=MIN_OCC, max_len=MAX_LEN):
    """Hash of both files' contents and of the pipeline settings (the sentence splitter included)."""
    parts = [_file_digest(train_txt), _file_digest(test_txt),
             str(min_occ), str(max_len), str(PIPELINE_VERSION), sentence_splitter()[1]]
    return hashlib.sha1('|'.join(parts).encode()).hexdigest()


def build(train_txt, test_txt, min_occ=MIN_OCC, max_len=MAX_LEN):
    """Uncached pipeline: -> (w2i, train_ids (N_train, max_len), test_ids)."""
    train_toks = [tokenize(s) for s in read_captions(train_txt)]
    test_toks = [tokenize(s) for s in read_captions(test_txt)]
    w2i = build_vocab(raw_sentence_tokens(train_txt), min_occ)  # the released vocabulary
    return w2i, encode(train_toks, w2i, max_len), encode(test_toks, w2i, max_len)


def load_or_build(train_txt, test_txt, cache_dir, min_occ=MIN_OCC, max_len=MAX_LEN):
    """Cached `build`: -> (w2i, train_ids, test_ids).

    Writes <cache_dir>/vocab.json ({"key", "w2i"}) and <cache_dir>/captions.pt
    ({"key", "train", "test"}). Both carry a key hashed from the two files'
    contents and the settings; if either file is missing or its key differs
    (a source file changed), everything is rebuilt and rewritten atomically.
    Use one cache_dir per dataset (e.g. real CUB vs synthetic birds).
    """
    os.makedirs(cache_dir, exist_ok=True)
    vocab_path = os.path.join(cache_dir, 'vocab.json')
    data_path = os.path.join(cache_dir, 'captions.pt')
    key = cache_key(train_txt, test_txt, min_occ, max_len)
    try:
        with open(vocab_path, 'r', encoding='utf-8') as f:
            vocab = json.load(f)
        data = torch.load(data_path)
        if vocab.get('key') == key and data.get('key') == key:
            return vocab['w2i'], data['train'], data['test']
    except (OSError, ValueError, KeyError, RuntimeError, AttributeError):
        pass   # missing or unreadable cache: rebuild
    w2i, train_ids, test_ids = build(train_txt, test_txt, min_occ, max_len)
    save_torch({'key': key, 'train': train_ids, 'test': test_ids}, data_path)
    save_json({'key': key, 'w2i': w2i}, vocab_path)
    return w2i, train_ids, test_ids
