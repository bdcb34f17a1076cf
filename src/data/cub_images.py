"""CUB images at 64x64 (what the image models see): resized once, kept as uint8, cached."""
import logging
import os

import numpy as np
import torch
from tqdm import tqdm

from ..files import load_torch, save_torch
from .cub_layout import cache_file, check_layout, files_key, root
from .cub_offline import IMAGE_SIZE, offline_meta

log = logging.getLogger(__name__)


def pil_array(im):
    """A PIL image as a writable uint8 array (H, W, 3)."""
    return np.asarray(im, dtype=np.uint8).copy()


def images64(args, split):
    """uint8 (N, 3, 64, 64) images of a split, resized once and cached; and their class
    labels (LongTensor (N,), the index of the class folder; None for the offline set)."""
    if args.offline:  # no species: class None
        offline_meta(args.data_dir)
        return load_torch(os.path.join(root(args), f'images_{split}.pt'), 'offline bird images file')['images'], None
    files = check_layout(root(args))[split]
    key = files_key(files)
    path = cache_file(args, f'images64_{split}.pt')
    if os.path.exists(path):
        d = load_torch(path, 'cached CUB images file')
        if d.get('key') == key:
            return d['images'], d['classes']
        log.info(f'{path} was built from other image files: rebuilding it')
    from PIL import Image
    images = torch.empty(len(files), 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    for i, (_, p) in enumerate(tqdm(files, desc=f'CUB {split}: resizing images to 64x64', disable=None)):
        with Image.open(p) as im:
            im = im.convert('RGB').resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
            images[i] = torch.from_numpy(pil_array(im)).permute(2, 0, 1)
    classes = torch.tensor([k for k, _ in files], dtype=torch.long)
    save_torch({'key': key, 'images': images, 'classes': classes}, path)
    return images, classes


def images_key(args, split):
    """Identifies the images of a split (their files, or the generated set): cache keys."""
    if args.offline:
        return offline_meta(args.data_dir)['key'] + f'/{split}'
    return files_key(check_layout(root(args))[split])
