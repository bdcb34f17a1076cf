"""--offline: the generated bird set in <data-dir>/cub_offline (src/data/synth_cub.py).

Bird figures whose colours and parts vary, 10 captions each that describe
exactly them, written as the two caption files of the real layout plus uint8
image tensors and the attributes. Built on first use (OFFLINE_SIZE images), or
at another size by
`python -c "from src.data.cub import make_offline_set; make_offline_set('data', 2000, 500)"`.
"""
import hashlib
import json
import logging
import os

import torch

from ..files import load_json, save_json, save_text, save_torch
from .cub_layout import CAPTIONS_PER_IMAGE, TEXT_FILES

log = logging.getLogger(__name__)

IMAGE_SIZE = 64
OFFLINE_SIZE = {'train': 1000, 'test': 250}   # default size of the generated set (images)
OFFLINE_SEED = {'train': 0, 'test': 1}        # fixed: the data do not change with --seed
OFFLINE_VERSION = 1                           # bump when the generated set changes


def _meta_path(data_dir):
    return os.path.join(data_dir, 'cub_offline', 'meta.json')


def make_offline_set(data_dir, n_train=None, n_test=None):
    """Generate <data-dir>/cub_offline (caption files, uint8 images, attributes); returns its meta."""
    from .synth_cub import generate_birds
    n = {'train': n_train or OFFLINE_SIZE['train'], 'test': n_test or OFFLINE_SIZE['test']}
    d = os.path.join(data_dir, 'cub_offline')
    os.makedirs(d, exist_ok=True)
    for split in ('train', 'test'):
        log.info(f'generating the offline bird set ({split}: {n[split]:,} images, '
                 f'{CAPTIONS_PER_IMAGE * n[split]:,} captions) -> {d}')
        images, caps, attrs = generate_birds(n[split], OFFLINE_SEED[split], size=IMAGE_SIZE)
        save_torch({'images': torch.from_numpy(images)}, os.path.join(d, f'images_{split}.pt'))
        save_json(attrs, os.path.join(d, f'attributes_{split}.json'))
        txt = os.path.join(d, TEXT_FILES[split])
        save_text('\n'.join(caps) + '\n', txt)
    meta = {'n_images': n, 'seed': OFFLINE_SEED, 'version': OFFLINE_VERSION, 'image_size': IMAGE_SIZE}
    meta['key'] = hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()
    save_json(meta, _meta_path(data_dir))  # written last: its presence means the set is complete
    return meta


def offline_meta(data_dir):
    """The generated set's meta (generating the set at the default size if there is none)."""
    path = _meta_path(data_dir)
    if os.path.isfile(path):
        meta = load_json(path, 'offline bird set description', dict)
        if meta.get('version') == OFFLINE_VERSION:
            return meta
        log.info(f'{path} is from an older generator: regenerating the offline bird set')
    return make_offline_set(data_dir)


def offline_source(data_dir):
    """The data source string of the generated set (says it is not CUB)."""
    n = offline_meta(data_dir)['n_images']
    return (f"offline: generated bird set (src/data/synth_cub.py; {n['train']:,} train / {n['test']:,} test images, "
            f"10 captions each), not CUB")
