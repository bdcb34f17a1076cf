"""CUB caption pipeline (SPEC section 5): tokenise, build the vocabulary, encode.

Captions come one per line, 10 per image, in image order: caption i belongs to
image i // 10. Each line is tokenised on its own (lowercased, punctuation split
off as nltk's word tokenizer does), truncated to ``max_len - 1`` tokens, given an
'<eos>' and padded with '<pad>' to ``max_len`` (32).

Vocabulary (built from the training captions only): '<exc>' = 0 (unknown word),
'<pad>' = 1, '<eos>' = 2, then every word seen MORE than ``min_occ`` (3) times,
in order of first occurrence.

Tokenisation, and how it differs from the released code
--------------------------------------------------------
The released code ran ``nltk.sent_tokenize`` over the whole file and then
``word_tokenize`` on each "sentence", so a line holding two sentences became
two captions and a line without a final period could merge with the next one,
shifting the caption -> image alignment. Here every line is one caption,
always. Within a line we reproduce what ``word_tokenize`` does: split the
line into sentences with Punkt, then apply nltk's Treebank-style word
tokenizer to each sentence (so a sentence-final period becomes its own token,
while "beak.and" with no space stays one token, exactly as nltk does). The
English Punkt model (punkt_tab data) is not available offline, so we use an
untrained ``PunktSentenceTokenizer``: it knows no abbreviations ("e.g." or
"dr." would end a sentence), which almost never matters for bird captions.
"""
import functools
import hashlib
import json
import os
import re
import tempfile

import torch
from nltk.tokenize import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktSentenceTokenizer

EXC, PAD, EOS = 0, 1, 2
SPECIAL_TOKENS = ('<exc>', '<pad>', '<eos>')
MAX_LEN = 32
MIN_OCC = 3
# Bump when tokenisation/encoding changes so that stale caches are rebuilt.
PIPELINE_VERSION = 2

_sent_tok = PunktSentenceTokenizer()   # untrained: needs no downloaded data
_word_tok = NLTKWordTokenizer()        # the tokenizer behind nltk.word_tokenize


# Lines made only of letters, spaces, single hyphens and single commas, with at
# most one period at the very end, and none of nltk's letter-only contractions
# ("cannot" -> "can not", ...): for these nltk's output is simply the words
# with ',' and the final '.' split off (checked against nltk on the real
# captions and on random strings in tests/test_captions.py). Nearly all CUB
# captions look like this.
_SIMPLE = re.compile(r'(?:[a-z ]|-(?!-)|,(?!,))*\.?')
_CONTRACTION = re.compile(r'cannot|gimme|gonna|gotta|lemme|wanna')


def tokenize(line):
    """One caption line -> list of lowercase tokens (never spans lines)."""
    return list(_tokenize_cached(line.strip().lower()))


@functools.lru_cache(maxsize=1 << 18)
def _tokenize_cached(line):
    # nltk's tokenizer costs ~0.2 ms a line, so simple lines take a fast path
    # with the same result and repeated captions are tokenised once.
    if _SIMPLE.fullmatch(line) and not _CONTRACTION.search(line):
        if line.endswith('.'):
            line = line[:-1] + ' .'
        return tuple(line.replace(',', ' , ').split())
    return _tokenize_nltk(line)


def _tokenize_nltk(line):
    """The reference: Punkt sentences, then nltk's word tokenizer on each."""
    return tuple(t for s in _sent_tok.tokenize(line) for t in _word_tok.tokenize(s))


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


def build_vocab(token_lists, min_occ=MIN_OCC):
    """w2i: specials 0..2, then words seen more than `min_occ` times, first-seen order."""
    counts = {}
    for toks in token_lists:       # dicts keep insertion order = first-seen order
        for t in toks:
            counts[t] = counts.get(t, 0) + 1
    w2i = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w, c in counts.items():
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


def ids_to_tokens(ids, i2w):
    """(N, L) ids -> list of N token lists (all L tokens, specials included).

    This is the form the released evaluation fed to FastText / the SIF
    sentence embeddings (see src/report/cca.py).
    """
    if torch.is_tensor(ids):
        ids = ids.tolist()
    return [[i2w[int(i)] for i in row] for row in ids]


# ---------------------------------------------------------------- caching

def _file_digest(path):
    """Content hash: robust to copies/touches that change mtime but not data."""
    h = hashlib.sha1()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path, write_fn):
    """Write via a temp file in the same directory + os.replace (no torn files)."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix='.tmp_', suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, 'wb') as f:
            write_fn(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def cache_key(train_txt, test_txt, min_occ=MIN_OCC, max_len=MAX_LEN):
    """Hash of both files' contents and of the pipeline settings."""
    parts = [_file_digest(train_txt), _file_digest(test_txt),
             str(min_occ), str(max_len), str(PIPELINE_VERSION)]
    return hashlib.sha1('|'.join(parts).encode()).hexdigest()


def build(train_txt, test_txt, min_occ=MIN_OCC, max_len=MAX_LEN):
    """Uncached pipeline: -> (w2i, train_ids (N_train, max_len), test_ids)."""
    train_toks = [tokenize(s) for s in read_captions(train_txt)]
    test_toks = [tokenize(s) for s in read_captions(test_txt)]
    w2i = build_vocab(train_toks, min_occ)
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
    _atomic_write(data_path, lambda f: torch.save(
        {'key': key, 'train': train_ids, 'test': test_ids}, f))
    _atomic_write(vocab_path, lambda f: f.write(
        json.dumps({'key': key, 'w2i': w2i}).encode('utf-8')))
    return w2i, train_ids, test_ids
