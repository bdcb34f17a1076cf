"""Where the CUB data are, and the check of the real layout.

Real data under --data-dir:
  cub/train/<class>/<image>.jpg     training images (the train+val classes), one folder per class
  cub/test/<class>/<image>.jpg      test images (the test classes)
  cub/text_trainvalclasses.txt      10 captions per training image, one per line, in image order
  cub/text_testclasses.txt          the same for the test images
Image order: class folders sorted, files sorted within each (as torchvision's
ImageFolder, which the released code used); caption i belongs to image i // 10.
--offline data live in <data-dir>/cub_offline (src/data/cub_offline.py).
"""
import hashlib
import os

from ..errors import UserError

CAPTIONS_PER_IMAGE = 10
TEXT_FILES = {'train': 'text_trainvalclasses.txt', 'test': 'text_testclasses.txt'}
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')


def root(args):
    """<data-dir>/cub (real) or <data-dir>/cub_offline (generated)."""
    return os.path.join(args.data_dir, 'cub_offline' if args.offline else 'cub')


def cache_dir(args):
    """<root>/cache, created; a clear error where it cannot be written (e.g. read-only shared data)."""
    d = os.path.join(root(args), 'cache')
    try:
        os.makedirs(d, exist_ok=True)
        if not os.access(d, os.W_OK):
            raise PermissionError(f'{d} is not writable')
    except OSError as e:
        raise UserError(f"cannot write the CUB caches to {d} ({e}).\n  fix: give write access there, or copy "
                        f"the data to a writable --data-dir") from None
    return d


def cache_file(args, name):
    return os.path.join(cache_dir(args), name)


def text_file(args, split):
    return os.path.join(root(args), TEXT_FILES[split])


def image_files(cub_root, split):
    """Sorted (class index, path) of the images of a split: class folders sorted, files sorted."""
    d = os.path.join(cub_root, split)
    classes = sorted(c for c in os.listdir(d) if os.path.isdir(os.path.join(d, c)) and not c.startswith('.'))
    out = []
    for k, c in enumerate(classes):
        files = sorted(f for f in os.listdir(os.path.join(d, c))
                       if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.'))
        out += [(k, os.path.join(d, c, f)) for f in files]
    return out


_LAYOUTS = {}
HOW = ("lay the data out as <data-dir>/cub/{train,test}/<class>/<image>.jpg with "
       "cub/text_trainvalclasses.txt and cub/text_testclasses.txt (10 captions per image, one per line, "
       "in image order); see docs/cub.md. Or run with --offline to use the generated bird set")


def check_layout(cub_root):
    """Raise a UserError naming the problem unless the real CUB layout is complete.

    Returns {split: [(class, path), ...]} (checked once per process and directory).
    """
    key = os.path.abspath(cub_root)
    if key not in _LAYOUTS:
        _check_present(cub_root)
        _LAYOUTS[key] = {split: _check_counts(cub_root, split) for split in ('train', 'test')}
    return _LAYOUTS[key]


def _check_present(cub_root):
    """Every folder and caption file there (before any counting)."""
    if not os.path.isdir(cub_root):
        raise UserError(f"CUB data not found: {os.path.abspath(cub_root)} does not exist.\n  fix: {HOW}")
    for split in ('train', 'test'):
        d = os.path.join(cub_root, split)
        txt = os.path.join(cub_root, TEXT_FILES[split])
        if not os.path.isdir(d):
            raise UserError(f"CUB layout: the image folder {d} is missing.\n  fix: {HOW}")
        if not os.path.isfile(txt):
            raise UserError(f"CUB layout: the caption file {txt} is missing.\n  fix: {HOW}")


def _check_counts(cub_root, split):
    """The images of a split, when its caption file holds 10 lines per image."""
    from .captions import read_captions
    d = os.path.join(cub_root, split)
    txt = os.path.join(cub_root, TEXT_FILES[split])
    files = image_files(cub_root, split)
    n_img, n_cap = len(files), len(read_captions(txt))
    if n_img == 0:
        raise UserError(f"CUB layout: no images ({', '.join(IMAGE_EXTENSIONS)}) in class folders under {d}.\n"
                        f"  fix: {HOW}")
    if n_cap != CAPTIONS_PER_IMAGE * n_img:
        raise UserError(f"CUB layout: {txt} has {n_cap:,} captions but {d} has {n_img:,} images "
                        f"(expected {CAPTIONS_PER_IMAGE} x {n_img:,} = {CAPTIONS_PER_IMAGE * n_img:,} captions, "
                        f"one per line, in image order).\n  fix: pair each caption file with its image folder")
    return files


def files_key(files):
    """Hash of the image list (relative paths and sizes): caches follow the files."""
    h = hashlib.sha1()
    for k, p in files:
        h.update(f'{k}|{os.path.basename(os.path.dirname(p))}/{os.path.basename(p)}|{os.path.getsize(p)}\n'.encode())
    return h.hexdigest()
