"""Offline stand-in for SVHN: generated street-number-style digit crops.

Real SVHN cannot be downloaded without network access, so `--offline` training
uses these images instead. Each 32x32 RGB image shows one centred digit (the
label) in a random font, size, aspect, slant and colour, on a flat, gradient
or textured background, often with parts of neighbouring digits cut off at the
left/right borders (as in SVHN's cropped house numbers), followed by lighting,
blur and sensor noise. Everything is drawn from `np.random.default_rng(seed)`,
so the same `(n, seed)` always gives identical bytes.

Digits are rendered as a grey-level coverage mask at 2x resolution (one affine
warp does rotation, scale, aspect, shear and position jitter), halved with a
box filter for anti-aliasing, and then coloured in numpy.
"""
import functools
import os

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE = 32            # output side in pixels
_SS = 2              # supersampling factor for the glyph mask
_FONT_NAMES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    # STIX adds a Times-like serif family with different digit shapes.
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
)
_DIGITS = "0123456789"


@functools.lru_cache(maxsize=None)
def _font_paths():
    """Paths of the bundled fonts that exist in this matplotlib install."""
    root = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    paths = tuple(p for p in (os.path.join(root, f) for f in _FONT_NAMES)
                  if os.path.isfile(p))
    if not paths:
        raise RuntimeError(f"no usable digit fonts found in {root}")
    return paths


@functools.lru_cache(maxsize=None)
def _font(path, size):
    """Load a TrueType font once per (path, pixel size)."""
    return ImageFont.truetype(path, size)


@functools.lru_cache(maxsize=None)
def _glyph(path, size, digit, stroke):
    """Rendered digit, cached because text rendering dominates the cost per image.

    At most 16 fonts x 20 sizes x 10 digits x 3 strokes entries (~20 MB).

    Returns (uint8 coverage array, (x0, y0) offset of its top-left corner from
    the baseline-left pen position, advance width, ink bbox centre (cx, cy)
    relative to the pen position).
    """
    font = _font(path, size)
    ch = _DIGITS[digit]
    x0, y0, x1, y1 = font.getbbox(ch, anchor="ls", stroke_width=stroke)
    img = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(img).text((-x0, -y0), ch, fill=255, font=font, anchor="ls",
                             stroke_width=stroke, stroke_fill=255)
    return np.asarray(img), (x0, y0), font.getlength(ch), ((x0 + x1) / 2, (y0 + y1) / 2)


def _luma(rgb):
    """Perceived brightness (ITU-R 601 weights) of an RGB triple in 0..255."""
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _random_colour(rng, lo, hi):
    """A colour with luma roughly in [lo, hi]; often desaturated, as paint on walls is."""
    target = rng.uniform(lo, hi)
    c = rng.uniform(0, 255, 3)
    c = c + (target - _luma(c))                      # shift to the target luma
    grey = _luma(c)
    c = grey + (c - grey) * rng.uniform(0.15, 1.0)   # partial desaturation
    return np.clip(c, 0, 255)


def _colours(rng):
    """Foreground/background colours with at least ~70 levels of luma contrast."""
    dark_lo, dark_hi, light_lo, light_hi = 0, 110, 150, 255
    if rng.random() < 0.5:                           # dark digit on light ground
        fg = _random_colour(rng, dark_lo, dark_hi)
        bg = _random_colour(rng, light_lo, light_hi)
    else:                                            # light digit on dark ground
        fg = _random_colour(rng, light_lo, light_hi)
        bg = _random_colour(rng, dark_lo, dark_hi)
    # Clipping in _random_colour can eat contrast; push the pair apart if so.
    gap = _luma(fg) - _luma(bg)
    if abs(gap) < 70:
        push = np.sign(gap if gap != 0 else 1.0) * (70 - abs(gap)) / 2
        fg, bg = np.clip(fg + push, 0, 255), np.clip(bg - push, 0, 255)
    return fg, bg


_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / (SIZE - 1) - 0.5


def _background(rng, bg):
    """(32, 32, 3) float background: flat, linear gradient or blotchy texture."""
    img = np.broadcast_to(bg.astype(np.float32), (SIZE, SIZE, 3)).copy()
    kind = rng.random()
    if kind < 0.35:                                  # gradient towards a nearby colour
        theta = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(theta) * _XX + np.sin(theta) * _YY
        delta = rng.normal(0, 35, 3).astype(np.float32)
        img += ramp[..., None] * delta
    elif kind < 0.6:                                 # low-frequency texture (stains, brick)
        g = int(rng.integers(3, 7))
        coarse = rng.normal(0, rng.uniform(8, 25), (g, g)).astype(np.float32)
        tex = np.asarray(Image.fromarray(coarse, mode="F").resize(
            (SIZE, SIZE), Image.BICUBIC))
        img += tex[..., None] * rng.uniform(0.6, 1.0, 3).astype(np.float32)
        img += rng.normal(0, rng.uniform(0, 6), (SIZE, SIZE, 1)).astype(np.float32)
    if rng.random() < 0.2:                           # plate edge / wall seam: a band of another colour
        other = _random_colour(rng, 0, 255).astype(np.float32)
        width = rng.uniform(0.02, 0.18)
        if rng.random() < 0.7:                       # vertical band at the left or right side
            band = (_XX < -0.5 + width) if rng.random() < 0.5 else (_XX > 0.5 - width)
        else:                                        # horizontal band at top or bottom
            band = (_YY < -0.5 + width) if rng.random() < 0.5 else (_YY > 0.5 - width)
        img[band] = other
    return img


def _glyph_mask(rng, label):
    """Coverage mask in [0, 1], shape (32, 32), of the centred digit plus cut-off neighbours."""
    path = _font_paths()[rng.integers(len(_font_paths()))]
    # Digit ink height of DejaVu/STIX is ~0.7 em; this gives ~13-27 px digits at 32 px.
    size = int(rng.integers(19, 39)) * _SS

    # House number: the label digit, optionally with neighbours on either side.
    left = [int(rng.integers(10)) for _ in range(rng.choice(3, p=[0.3, 0.5, 0.2]))]
    right = [int(rng.integers(10)) for _ in range(rng.choice(3, p=[0.3, 0.5, 0.2]))]
    digits = left + [label] + right
    tracking = rng.uniform(-0.04, 0.25) * size       # extra gap between characters
    stroke = int(rng.choice(3, p=[0.7, 0.2, 0.1])) * _SS // 2   # sometimes bolder strokes
    glyphs = [_glyph(path, size, d, stroke) for d in digits]

    pad = size // 2 + 4 * _SS
    width = int(sum(g[2] for g in glyphs) + tracking * len(digits)) + 2 * pad
    canvas = np.zeros((2 * size, width), dtype=np.uint8)
    x, base = float(pad), int(1.35 * size)
    for i, (arr, (x0, y0), adv, centre) in enumerate(glyphs):
        # Neighbours may overlap (negative tracking): keep the max coverage.
        r, c = base + y0, int(round(x)) + x0
        h, w = arr.shape
        r0, c0 = max(r, 0), max(c, 0)
        r1, c1 = min(r + h, canvas.shape[0]), min(c + w, canvas.shape[1])
        np.maximum(canvas[r0:r1, c0:c1], arr[r0 - r:r1 - r, c0 - c:c1 - c],
                   out=canvas[r0:r1, c0:c1])
        if i == len(left):                           # centre of the label digit's ink box
            cx, cy = int(round(x)) + centre[0], base + centre[1]
        x += adv + tracking
    canvas = Image.fromarray(canvas)

    # One affine warp: output pixel -> canvas pixel (PIL's convention), i.e. the
    # inverse of rotate * shear * aspect-scale, centred on the label digit.
    ang = np.deg2rad(np.clip(rng.normal(0, 6), -15, 15))
    sx = np.exp(rng.uniform(-0.2, 0.15))             # narrower/wider digits
    shear = rng.normal(0, 0.08)
    fwd = (np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
           @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([sx, 1.0]))
    inv = np.linalg.inv(fwd)
    out = SIZE * _SS
    jitter = rng.uniform(-1.5, 1.5, 2) * _SS         # the crop is not perfectly centred
    o = np.array([out / 2, out / 2]) + jitter
    c = np.array([cx, cy]) - inv @ o
    mask = canvas.transform((out, out), Image.AFFINE,
                            (inv[0, 0], inv[0, 1], c[0], inv[1, 0], inv[1, 1], c[1]),
                            resample=Image.BILINEAR)
    mask = mask.reduce(_SS)                          # box-filter down: anti-aliasing
    return np.asarray(mask, dtype=np.float32) / 255.0


def _render(rng, label):
    """One (32, 32, 3) uint8 image of `label`."""
    mask = _glyph_mask(rng, label)
    fg, bg = _colours(rng)
    img = _background(rng, bg)
    m = mask[..., None]
    if rng.random() < 0.15:                          # drop shadow / emboss in a third colour
        dy, dx = rng.integers(1, 3), rng.choice([-1, 1]) * rng.integers(0, 2)
        sh = np.roll(mask, (dy, dx), axis=(0, 1))[..., None]
        shade = bg * rng.uniform(0.2, 0.6) if _luma(bg) > 100 else np.minimum(bg + 90, 255)
        img = img * (1 - sh) + shade.astype(np.float32) * sh
    # Foreground paint is not perfectly uniform either: slight gradient over the digit.
    fg_img = fg.astype(np.float32) + (_XX * rng.normal(0, 20) + _YY * rng.normal(0, 20))[..., None]
    img = img * (1 - m) + fg_img * m
    # Uneven lighting over the whole crop (sun/shade), then camera blur and noise.
    theta = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0, 0.5) * (np.cos(theta) * _XX + np.sin(theta) * _YY)
    img = img * light[..., None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    radius = float(rng.uniform(0.3, 1.3)) if rng.random() < 0.7 else 0.0
    if radius > 0:
        img = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)))
    noise = rng.normal(0, rng.uniform(1, 9), img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def generate_svhn_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate `n` SVHN-like digit crops.

    Returns (images, labels): images uint8 of shape (n, 3, 32, 32) (channels
    first, like torchvision's SVHN), labels int64 of shape (n,) in 0..9, where
    digit d has label d (torchvision's SVHN also maps the raw '10' to 0).
    Classes are balanced (label i % 10, then shuffled). Deterministic given
    (n, seed) for fixed Pillow/FreeType/numpy versions (glyph rasterisation
    may differ across them); different n need not share a prefix.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n, dtype=np.int64) % 10)
    images = np.empty((n, 3, SIZE, SIZE), dtype=np.uint8)
    for i in range(n):
        images[i] = _render(rng, int(labels[i])).transpose(2, 0, 1)
    return images, labels
