"""Tests for the synthetic bird image-caption data (src/data/synth_cub.py)."""
import re

import numpy as np
import pytest

from src.data import captions as C
from src.data import synth_cub as S

N = 120


@pytest.fixture(scope='module')
def birds():
    return S.generate_birds(N, seed=7)


# An independent reader of the caption grammar (regexes, not the module's
# token walk): noun phrases '[short|long] [colour] noun' and predicates
# 'noun is|are [short|long] [and] [colour]'.
_COL = '|'.join(S.PALETTE)
_NOUNS = {'crown': 'crown', 'head': 'crown', 'belly': 'belly', 'breast': 'belly',
          'wings': 'wings', 'beak': 'beak', 'bill': 'beak', 'tail': 'tail',
          'wingbars': 'wingbars', 'eyebrow': 'eyebrow', 'superciliary': 'eyebrow',
          'eyering': 'eyering'}
_NP = re.compile(rf'\b(?:(short|long) )?(?:({_COL}) )?({"|".join(_NOUNS)})\b')
_PRED = re.compile(rf'\b({"|".join(_NOUNS)}) (?:is|are) (?:(short|long)(?: and )?)?({_COL})?')


def read_back(caption):
    found = []
    for length, colour, noun in _NP.findall(caption):
        found.append((_NOUNS[noun], length, colour))
    for noun, length, colour in _PRED.findall(caption):
        found.append((_NOUNS[noun], length, colour))
    out = {}
    for part, length, colour in found:
        if length:
            out['beak_len' if part == 'beak' else 'tail_len'] = length
        if colour:
            assert part != 'tail', caption      # tails have no colour word
            out[part] = colour
    for size in re.findall(r'\b(small|large)\b', caption):
        out['size'] = size
    return out


def test_shapes_and_types(birds):
    images, caps, attrs = birds
    assert images.dtype == np.uint8 and images.shape == (N, 3, 64, 64)
    assert len(caps) == 10 * N and len(attrs) == N
    assert all(isinstance(c, str) for c in caps)
    small, _, _ = S.generate_birds(3, seed=7, size=32)
    assert small.shape == (3, 3, 32, 32)


def test_deterministic_and_seeded(birds):
    images, caps, attrs = birds
    im2, caps2, attrs2 = S.generate_birds(N, seed=7)
    assert np.array_equal(images, im2) and caps == caps2 and attrs == attrs2
    # image i depends only on (seed, i): a shorter run is a prefix
    im3, caps3, attrs3 = S.generate_birds(5, seed=7)
    assert np.array_equal(im3, images[:5]) and caps3 == caps[:50] and attrs3 == attrs[:5]
    im4, caps4, _ = S.generate_birds(5, seed=8)
    assert not np.array_equal(im4, images[:5]) and caps4 != caps[:50]


def test_images_vary_and_are_not_blank(birds):
    images = birds[0].astype(float)
    assert images.std(axis=(1, 2, 3)).min() > 10          # every image has structure
    assert np.abs(images[1:] - images[:-1]).mean() > 10    # consecutive images differ


def test_drawn_colours_match_attributes(birds):
    """Head, belly and wing colours are visibly present in their image."""
    images, _, attrs = birds
    for img, a in zip(images, attrs, strict=True):
        px = img.reshape(3, -1).T.astype(int)
        for part in ('crown', 'belly', 'wings'):
            rgb = np.array(S.PALETTE[a[part]])
            close = np.abs(px - rgb).max(1) <= 20
            assert close.sum() >= 10, (part, a)


def test_captions_style(birds):
    caps = birds[1]
    assert all(c == c.lower() and c.endswith('.') and '  ' not in c for c in caps)
    assert len(set(caps)) > 0.8 * len(caps)               # varied wording
    starts = {' '.join(c.split()[:2]) for c in caps}
    assert len(starts) >= 6                                # several templates used


def test_captions_mention_exactly_the_image_attributes(birds):
    _, caps, attrs = birds
    for j, a in enumerate(attrs):
        union = {}
        for c in caps[10 * j:10 * j + 10]:
            got = read_back(c)
            assert len(got) >= 2, c
            for k, v in got.items():              # nothing wrong, nothing absent
                assert a[k] == v, (c, k, v, a)
            union.update(got)
            assert S.parse_caption(c) == got, c   # module parser agrees
        # together the 10 captions describe the whole bird
        assert set(union) == set(S.present_attributes(a)), (union, a)


def test_attribute_distribution(birds):
    attrs = birds[2]
    for k in ('crown', 'belly', 'wings'):
        assert len({a[k] for a in attrs}) == len(S.COLOURS)      # all colours occur
    assert {a['size'] for a in attrs} == {'small', 'large'}
    for k in S.OPTIONAL:
        frac = np.mean([a[k] is not None for a in attrs])
        assert 0.1 < frac < 0.6, (k, frac)


def test_vocabulary_small_and_complete(birds):
    caps = birds[1]
    toks = [C.tokenize(c) for c in caps]
    w2i = C.build_vocab(toks)
    assert len(w2i) < 60
    words = set(S.PALETTE) | {'short', 'long', 'small', 'large'} | set(_NOUNS)
    assert words <= set(w2i), words - set(w2i)
    assert max(len(t) for t in toks) <= 31                  # nothing truncated
    ids = C.encode(toks, w2i)
    assert (ids == C.EXC).sum() == 0


def test_each_attribute_changes_its_own_pixels():
    """Redraw a bird with one attribute changed (same placement): the new
    colour replaces the old one, and a long beak/tail covers more pixels."""
    base = S.sample_attributes(np.random.default_rng(0))
    base.update(crown='blue', belly='yellow', wings='green', beak='red',
                beak_len='short', tail_len='short', size='large')

    def draw(**change):
        return S.draw_bird({**base, **change}, np.random.default_rng(1)).reshape(3, -1).T.astype(int)

    def count(im, name):
        return (np.abs(im - np.array(S.PALETTE[name])).max(1) <= 30).sum()

    ref = draw()
    for part, new in (('crown', 'orange'), ('belly', 'white'), ('wings', 'brown')):
        img = draw(**{part: new})
        old = base[part]
        assert count(img, new) > count(ref, new) + 20, part    # new colour appears
        assert count(img, old) < count(ref, old) - 20, part    # old one goes
    assert count(draw(beak_len='long'), 'red') > count(ref, 'red') + 5
    diff_tail = np.abs(draw(tail_len='long') - ref).max(1) > 30
    assert diff_tail.sum() > 20
