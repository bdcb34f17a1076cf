"""An offline stand-in for CUB: small bird pictures with 10 captions each.

`generate_birds(n, seed)` draws n bird figures with PIL (body, head, beak, wing,
tail, eye, legs, perched on a branch in front of a plain or gradient pastel
background) and writes 10 captions per image in the style of the CUB captions
("this bird has a red crown and a white belly.", "a small bird with blue wings
and a long black beak."). Captions describe only what is drawn, so
image <-> caption coherence is meaningful and checkable: `parse_caption` reads
the attributes back from a caption.

Described attributes (keys of each attribute dict):
  size      'small' | 'large'   (drawing scale)
  crown     colour of the head
  belly     colour of belly/breast (the body below the wing)
  wings     colour of wings, back and tail
  beak      colour of the beak (BEAK_COLOURS)
  beak_len  'short' | 'long'
  tail_len  'short' | 'long'
  wingbars  None or a colour (two stripes across the wing)
  eyebrow   None or a colour (stripe above the eye)
  eyering   None or 'white'   (ring around the eye)
Not described, only varied: facing direction, position, background, branch.

Captions: caption i belongs to image i // 10. Each caption mentions 2-4 of the
image's attributes (rarely 5, when needed for coverage), never a wrong one and
never an absent optional part, and the 10 captions of an image together
mention all of them. Everything is
deterministic given the seed, and image i depends only on (seed, i), so a
larger n extends a smaller one.
"""
import math

import numpy as np
from PIL import Image, ImageChops, ImageDraw

# Colour names whose RGB values are far apart (also after downsampling to 64 px).
PALETTE = {
    'red': (205, 35, 35),
    'orange': (245, 135, 25),
    'yellow': (245, 215, 40),
    'green': (45, 150, 55),
    'blue': (40, 85, 205),
    'brown': (120, 72, 32),
    'black': (25, 25, 25),
    'white': (242, 242, 242),
    'grey': (135, 135, 135),
}
COLOURS = tuple(PALETTE)
BEAK_COLOURS = ('black', 'grey', 'orange', 'yellow', 'red', 'brown')
WINGBAR_COLOURS = ('white', 'yellow', 'black')
EYEBROW_COLOURS = ('white', 'yellow', 'black')
LENGTHS = ('short', 'long')
SIZES = ('small', 'large')
ATTRIBUTES = ('size', 'crown', 'belly', 'wings', 'beak', 'beak_len', 'tail_len',
              'wingbars', 'eyebrow', 'eyering')
OPTIONAL = ('wingbars', 'eyebrow', 'eyering')
P_OPTIONAL = {'wingbars': 0.35, 'eyebrow': 0.3, 'eyering': 0.3}

# Pastel backgrounds: none is close to a palette colour, so birds stand out.
BACKGROUNDS = [(175, 205, 235), (195, 222, 180), (230, 215, 185),
               (212, 206, 228), (182, 222, 216), (225, 225, 205)]
BRANCH = (105, 85, 62)
LEGS = (70, 60, 55)

SS = 4   # supersampling factor: draw large, downsample with a box filter


# ---------------------------------------------------------------- attributes

def sample_attributes(rng):
    """Draw one bird's described attributes."""
    a = {
        'size': SIZES[rng.integers(2)],
        'crown': COLOURS[rng.integers(len(COLOURS))],
        'belly': COLOURS[rng.integers(len(COLOURS))],
        'wings': COLOURS[rng.integers(len(COLOURS))],
        'beak': BEAK_COLOURS[rng.integers(len(BEAK_COLOURS))],
        'beak_len': LENGTHS[rng.integers(2)],
        'tail_len': LENGTHS[rng.integers(2)],
    }
    # Optional parts get a colour that contrasts with what they sit on.
    bars = [c for c in WINGBAR_COLOURS if c != a['wings']]
    brows = [c for c in EYEBROW_COLOURS if c != a['crown']]
    a['wingbars'] = bars[rng.integers(len(bars))] if rng.random() < P_OPTIONAL['wingbars'] else None
    a['eyebrow'] = brows[rng.integers(len(brows))] if rng.random() < P_OPTIONAL['eyebrow'] else None
    a['eyering'] = 'white' if (rng.random() < P_OPTIONAL['eyering'] and a['crown'] != 'white') else None
    return a


def present_attributes(attrs):
    """Attribute keys that captions may mention (absent optional parts excluded)."""
    return [k for k in ATTRIBUTES if attrs.get(k) is not None]


# ---------------------------------------------------------------- drawing

def _ellipse(cx, cy, a, b, angle_deg, n=48):
    """Polygon of a rotated ellipse (unit coordinates, y down)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    x, y = a * np.cos(t), b * np.sin(t)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def _jitter(rgb, rng, amount=12):
    """Small per-image shade variation that keeps the colour name obvious."""
    d = rng.integers(-amount, amount + 1, size=3).tolist()
    return tuple(min(255, max(0, v + e)) for v, e in zip(rgb, d, strict=True))


def _outline(rgb):
    """Darker edge colour so that light parts stay visible on light backgrounds."""
    return tuple(int(v * 0.55) for v in rgb)


def _bird_shapes(a):
    """Bird parts as unit-coordinate polygons, facing right, before placement."""
    big_tail = a['tail_len'] == 'long'
    tl = 0.25 if big_tail else 0.11
    bl = 0.16 if a['beak_len'] == 'long' else 0.07   # visible length beyond the head
    head_c, head_r = (0.67, 0.385), 0.105
    eye = (0.695, 0.365)
    shapes = {
        'tail': np.array([(0.31, 0.545), (0.31, 0.625),
                          (0.31 - tl * 0.92, 0.625 + tl * 0.42),
                          (0.31 - tl, 0.585 + tl * 0.38)]),
        'body': _ellipse(0.47, 0.56, 0.225, 0.145, -22),
        'wing': _ellipse(0.43, 0.53, 0.20, 0.085, -12),
        'head': _ellipse(*head_c, head_r, head_r, 0),
        'beak': np.array([(0.745, 0.345), (0.745, 0.435),
                          (0.775 + bl, 0.40 + 0.05 * bl)]),
        'eyering': _ellipse(*eye, 0.036, 0.036, 0),
        'eye': _ellipse(*eye, 0.021, 0.021, 0),
        'eyebrow': np.array([(0.625, 0.34), (0.66, 0.318), (0.735, 0.318),
                             (0.735, 0.336), (0.66, 0.336), (0.633, 0.352)]),
        'bars': [np.array([(x0, 0.43), (x0 + 0.035, 0.43), (x0 + 0.015, 0.64),
                           (x0 - 0.02, 0.64)]) for x0 in (0.40, 0.47)],
        'legs': [np.array([(x, 0.69), (x - 0.01, 0.80)]) for x in (0.46, 0.52)],
    }
    return shapes


def draw_bird(attrs, rng, size=64):
    """Render one bird (uint8 array (3, size, size)); placement drawn from rng."""
    W = size * SS
    # Background: plain or vertical gradient between two pastels.
    top = np.array(_jitter(BACKGROUNDS[rng.integers(len(BACKGROUNDS))], rng, 10), float)
    bot = np.array(_jitter(BACKGROUNDS[rng.integers(len(BACKGROUNDS))], rng, 10), float) \
        if rng.random() < 0.6 else top
    ramp = np.linspace(0, 1, W)[:, None, None]
    column = (top * (1 - ramp) + bot * ramp).astype(np.uint8)         # (W, 1, 3)
    img = Image.fromarray(column).resize((W, W), Image.NEAREST)       # cheap stretch
    d = ImageDraw.Draw(img)

    # Placement: scale by size, random flip, shift so the bird stays in frame.
    sh = _bird_shapes(attrs)
    scale = (0.74 if attrs['size'] == 'small' else 1.0) * rng.uniform(0.95, 1.05)
    flip = rng.random() < 0.5
    pts = np.concatenate([sh['tail'], sh['body'], sh['head'], sh['beak'],
                          sh['legs'][0], sh['legs'][1]])
    lo, hi = pts.min(0), pts.max(0)
    span = (hi - lo) * scale
    margin = 0.03
    offset = np.array([rng.uniform(margin, max(margin, 1 - margin - span[0])),
                       rng.uniform(margin, max(margin, 0.93 - span[1]))])

    def tf(p):
        q = (np.asarray(p) - lo) * scale + offset
        if flip:
            q = q.copy()
            q[:, 0] = 1 - q[:, 0]
        return (q * W).ravel().tolist()   # flat [x0, y0, x1, ...] as PIL accepts

    # Branch through the feet, with a small random slope.
    feet_y = ((0.80 - lo[1]) * scale + offset[1]) * W
    slope = rng.uniform(-0.12, 0.12) * W
    d.line([(0, feet_y + slope), (W, feet_y - slope)], fill=BRANCH, width=int(0.035 * W))

    col = {k: _jitter(PALETTE[attrs[k]], rng) for k in ('crown', 'belly', 'wings', 'beak')}
    lw = SS  # 1 output pixel
    for leg in sh['legs']:
        d.line(tf(leg), fill=LEGS, width=int(1.3 * SS))
    tail_col = tuple(int(v * 0.85) for v in col['wings'])
    d.polygon(tf(sh['tail']), fill=tail_col, outline=_outline(tail_col), width=lw)
    d.polygon(tf(sh['body']), fill=col['belly'], outline=_outline(col['belly']), width=lw)

    # Wing (+ optional bars clipped to the wing via a mask).
    d.polygon(tf(sh['wing']), fill=col['wings'], outline=_outline(col['wings']), width=lw)
    if attrs['wingbars']:
        wing_mask = Image.new('L', img.size, 0)
        ImageDraw.Draw(wing_mask).polygon(tf(sh['wing']), fill=255)
        bar_mask = Image.new('L', img.size, 0)
        bd = ImageDraw.Draw(bar_mask)
        for bar in sh['bars']:
            bd.polygon(tf(bar), fill=255)
        img.paste(PALETTE[attrs['wingbars']], (0, 0), ImageChops.multiply(wing_mask, bar_mask))
        d = ImageDraw.Draw(img)

    # Thin edge on the beak: it is small, a full-pixel edge would hide its colour.
    d.polygon(tf(sh['beak']), fill=col['beak'], outline=_outline(col['beak']), width=SS // 2)
    d.polygon(tf(sh['head']), fill=col['crown'], outline=_outline(col['crown']), width=lw)
    if attrs['eyebrow']:
        d.polygon(tf(sh['eyebrow']), fill=PALETTE[attrs['eyebrow']])
    if attrs['eyering']:
        d.polygon(tf(sh['eyering']), fill=PALETTE['white'])
    # The eye is black; on a black head it gets a light rim, else it vanishes.
    rim = (200, 200, 200) if attrs['crown'] == 'black' and not attrs['eyering'] else None
    d.polygon(tf(sh['eye']), fill=(10, 10, 10), outline=rim)

    img = img.resize((size, size), Image.BOX)
    arr = np.asarray(img, dtype=np.int16)
    arr = arr + rng.integers(-3, 4, size=arr.shape)   # faint texture
    return np.clip(arr, 0, 255).astype(np.uint8).transpose(2, 0, 1)


# ---------------------------------------------------------------- captions

_PART_WORDS = {   # attribute -> nouns used for it
    'crown': ('crown', 'head'),
    'belly': ('belly', 'breast'),
    'wings': ('wings',),
    'beak': ('beak', 'bill'),
    'tail_len': ('tail',),
    'wingbars': ('wingbars',),
    'eyebrow': ('eyebrow', 'superciliary'),
    'eyering': ('eyering',),
}


def _pick(options, rng):
    """Uniform choice from a tuple (rng.choice is slow on small Python sequences)."""
    return options[rng.integers(len(options))]


def _units(keys, a, rng):
    """Group mentioned attributes into phrase units: (noun, colour, length, plural)."""
    units = []
    if 'beak' in keys or 'beak_len' in keys:
        units.append((_pick(_PART_WORDS['beak'], rng),
                      a['beak'] if 'beak' in keys else None,
                      a['beak_len'] if 'beak_len' in keys else None, False))
    for k in ('crown', 'belly', 'wings', 'wingbars', 'eyebrow', 'eyering'):
        if k in keys:
            units.append((_pick(_PART_WORDS[k], rng), a[k], None, k in ('wings', 'wingbars')))
    if 'tail_len' in keys:
        units.append(('tail', None, a['tail_len'], False))
    order = rng.permutation(len(units))
    return [units[i] for i in order]


def _np(u, rng):
    """Noun phrase: 'a long black beak', 'blue wings', 'a short tail'."""
    noun, colour, length, plural = u
    words = [w for w in (length, colour, noun) if w]
    art = '' if plural else 'a '
    return art + ' '.join(words)


def _pred(u, rng):
    """Predicate clause: 'the beak is long and black', 'its wings are blue'."""
    noun, colour, length, plural = u
    det = _pick(('the', 'its'), rng)
    verb = 'are' if plural else 'is'
    desc = ' and '.join(w for w in (length, colour) if w)
    return f'{det} {noun} {verb} {desc}'


def _join(items, rng):
    """CUB-style list: 'x', 'x and y', 'x, y and z' or 'x, y, and z'."""
    if len(items) == 1:
        return items[0]
    sep = ', and ' if (len(items) > 2 and rng.random() < 0.4) else ' and '
    return ', '.join(items[:-1]) + sep + items[-1]


def _caption(keys, a, rng):
    """One caption mentioning exactly the attributes in `keys`."""
    units = _units(keys, a, rng)
    size = a['size'] if 'size' in keys else None
    n = len(units)
    # Options: (template, number of units rendered as predicates)
    if size:
        opts = [('a {s} bird with {L}.', 0), ('this {s} bird has {L}.', 0),
                ('this is a {s} bird with {L}.', 0), ('{s} bird with {L}.', 0),
                ('this bird is {s} with {L}.', 0)]
        if n >= 2:
            opts += [('this {s} bird has {L}, and {P}.', 1), ('a {s} bird with {L}, {P}.', 1)]
    else:
        opts = [('this bird has {L}.', 0), ('a bird with {L}.', 0),
                ('the bird has {L}.', 0), ('this particular bird has {L}.', 0)]
        if n >= 2:
            opts += [('the bird has {L}, and {P}.', 1), ('{P}, and this bird has {L}.', 1),
                     ('this bird has {L} and {P}.', 1)]
        if n == 2:
            opts += [('{P} and {P2}.', 2)]
    tmpl, npred = opts[rng.integers(len(opts))]
    preds = [_pred(u, rng) for u in units[n - npred:]]
    nps = [_np(u, rng) for u in units[:n - npred]]
    out = tmpl.replace('{s}', size or '').replace('{L}', _join(nps, rng) if nps else '')
    if npred >= 1:
        out = out.replace('{P}', preds[0])
    if npred == 2:
        out = out.replace('{P2}', preds[1])
    return out


def caption_bird(attrs, rng, n_captions=10):
    """`n_captions` captions; together they mention every present attribute."""
    keys = present_attributes(attrs)
    sets = [set() for _ in range(n_captions)]
    for k in keys:                             # coverage: each attribute somewhere
        sets[rng.integers(n_captions)].add(k)
    for s in sets:                             # then fill up to 2-4 mentions
        want = rng.integers(2, 5)
        extra = [k for k in rng.permutation(keys) if k not in s]
        while len(s) < want and extra:
            s.add(extra.pop())
        if s <= {'size'}:                       # a caption needs a body part
            s.add(next(k for k in extra if k != 'size') if extra else 'crown')
    return [_caption(s, attrs, rng) for s in sets]


def parse_caption(caption):
    """Read back the attributes a caption mentions: dict key -> value.

    Understands the grammar of `caption_bird` ('a long black beak',
    'the wings are blue', 'a small bird'); used to score coherence of captions.
    """
    toks = caption.replace(',', ' ').replace('.', ' ').split()
    noun2key = {w: k for k, ws in _PART_WORDS.items() for w in ws}
    out = {}
    for j, t in enumerate(toks):
        if t in SIZES:
            out['size'] = t
        key = noun2key.get(t)
        if key is None:
            continue
        mods = []
        i = j - 1                              # noun phrase: modifiers before the noun
        while i >= 0 and (toks[i] in PALETTE or toks[i] in LENGTHS):
            mods.append(toks[i])
            i -= 1
        if j + 1 < len(toks) and toks[j + 1] in ('is', 'are'):   # predicate after
            i = j + 2
            while i < len(toks) and (toks[i] in PALETTE or toks[i] in LENGTHS or toks[i] == 'and'):
                if toks[i] != 'and':
                    mods.append(toks[i])
                i += 1
        for m in mods:
            if m in LENGTHS:
                out['beak_len' if key == 'beak' else 'tail_len'] = m
            else:
                out[key] = m
    return out


# ---------------------------------------------------------------- dataset

def generate_birds(n_images, seed, size=64):
    """-> (images uint8 (n, 3, size, size), captions (10 n strings), attributes (n dicts)).

    Caption i belongs to image i // 10. Image i (its picture, attributes and
    captions) depends only on (seed, i).
    """
    images = np.empty((n_images, 3, size, size), np.uint8)
    captions, attributes = [], []
    for i in range(n_images):
        rng = np.random.default_rng([seed, i])
        a = sample_attributes(rng)
        images[i] = draw_bird(a, rng, size)
        captions += caption_bird(a, rng)
        attributes.append(a)
    return images, captions, attributes


def save_grid(images, path, ncol=10, upscale=2):
    """Save a grid of (n, 3, H, W) uint8 images as a PNG (for eyeballing)."""
    n, _, h, w = images.shape
    nrow = (n + ncol - 1) // ncol
    grid = np.full((nrow * (h + 2), ncol * (w + 2), 3), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, ncol)
        grid[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = images[k].transpose(1, 2, 0)
    im = Image.fromarray(grid)
    if upscale > 1:
        im = im.resize((im.width * upscale, im.height * upscale), Image.NEAREST)
    im.save(path)
