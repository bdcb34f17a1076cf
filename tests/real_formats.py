"""Files in the published formats, written by the tests (the real ones need a network this machine lacks):

- MNIST's idx files, gzipped under the names torchvision downloads (yann.lecun.com/exdb/mnist: a big-endian
  header, magic 2051 for images and 2049 for labels, then the sizes; one unsigned byte per pixel or label);
- SVHN's train_32x32.mat / test_32x32.mat (ufldl.stanford.edu/housenumbers, format 2: a MATLAB 5 file with
  X of shape 32 x 32 x 3 x N, uint8, and y of shape N x 1, the digit 0 labelled 10);
- the two CUB archives in miniature, with the public archives' internal layout (src/data/prepare/cub.py
  describes it): CUB_200_2011.tgz (images/<class>/<image>.jpg as real JPEGs, images.txt, classes.txt and
  the annotation files) and cvpr2016_cub.tar.gz (text_c10/<class>/<image>.txt, the class lists, Torch files);
- a ResNet-101 state dict with torchvision's keys and shapes (random values).

Each writer is independent of the code under test: it follows the published format, not our readers.
"""
import gzip
import hashlib
import os
import struct
import tarfile

import numpy as np
import torch
from PIL import Image

MNIST_NAMES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
               'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}


def md5(path):
    with open(path, 'rb') as f:
        return hashlib.md5(f.read()).hexdigest()


def idx_bytes(array):
    """An idx file: magic (0x0803 for 3-d unsigned bytes, 0x0801 for 1-d), the sizes, the bytes."""
    array = np.asarray(array, dtype=np.uint8)
    magic = {3: 2051, 1: 2049}[array.ndim]
    return struct.pack(f'>{1 + array.ndim}I', magic, *array.shape) + array.tobytes()


def write_mnist_gz(raw, data):
    """data: {'train': (images (N, 28, 28), labels (N,)), 'test': ...} -> the four .gz files in raw/;
    returns {file name: md5}, as torchvision's MNIST.resources lists them."""
    os.makedirs(raw, exist_ok=True)
    sums = {}
    for split, (images, labels) in data.items():
        for name, array in zip(MNIST_NAMES[split], (images, labels), strict=True):
            path = os.path.join(raw, name + '.gz')
            with gzip.open(path, 'wb') as f:
                f.write(idx_bytes(array))
            sums[name + '.gz'] = md5(path)
    return sums


def write_svhn_mat(path, images, labels):
    """images uint8 (N, 3, 32, 32), labels 0..9 -> SVHN's .mat (X: 32 x 32 x 3 x N, y: N x 1, 0 as 10)."""
    import scipy.io
    y = np.where(np.asarray(labels) == 0, 10, np.asarray(labels)).astype(np.uint8).reshape(-1, 1)
    scipy.io.savemat(path, {'X': np.ascontiguousarray(np.asarray(images, np.uint8).transpose(2, 3, 1, 0)), 'y': y})
    return md5(path)


# ------------------------------------------------------------------ CUB

CLASSES = ['001.Black_footed_Albatross', '002.Laysan_Albatross', '003.Sooty_Albatross',
           '004.Groove_billed_Ani', '005.Crested_Auklet']
TRAINVAL = ['001.Black_footed_Albatross', '003.Sooty_Albatross', '005.Crested_Auklet']
TEST = ['002.Laysan_Albatross', '004.Groove_billed_Ani']
IMAGES_PER_CLASS = 4
WORDS = ['red', 'brown', 'white', 'black', 'small', 'large', 'long', 'short', 'pointed', 'curved']


def image_names(cls):
    """Names as in CUB: <Species>_<4 digits>_<id>.jpg, not created in sorted order."""
    species = cls.split('.', 1)[1]
    return [f'{species}_{n:04d}_{7000 + 13 * n + i}.jpg' for i, n in enumerate((3, 1, 4, 2)[:IMAGES_PER_CLASS])]


def caption_lines(cls, name, extra=False):
    """10 captions that name their image (the first words say which), 11 when extra."""
    k = CLASSES.index(cls)
    stem = name.rsplit('.', 1)[0]
    lines = [f'{stem} bird {j} has {WORDS[(k + j) % 10]} wings and a {WORDS[(k + 2 * j) % 10]} beak .'
             for j in range(11 if extra else 10)]
    return lines


def _jpeg(path, k, i, grey=False):
    """A real JPEG: a size and colour of its own (CUB's images are JPEGs of many sizes, a few greyscale)."""
    rng = np.random.default_rng(100 * k + i)
    h, w = 60 + 7 * i, 80 + 5 * k
    pixels = (rng.random((h, w, 3)) * 60 + np.array([40 * k % 255, 30 * i, 200 - 30 * k])).clip(0, 255)
    im = Image.fromarray(pixels.astype(np.uint8))
    (im.convert('L') if grey else im).save(path, format='JPEG', quality=90)


def write_cub_images_tgz(tmp, path):
    """A miniature CUB_200_2011.tgz: the dataset's folder and file layout, a few classes and images."""
    root = os.path.join(tmp, 'CUB_200_2011')
    rows, n = [], 0
    for k, cls in enumerate(CLASSES):
        os.makedirs(os.path.join(root, 'images', cls), exist_ok=True)
        for i, name in enumerate(image_names(cls)):
            n += 1
            _jpeg(os.path.join(root, 'images', cls, name), k, i, grey=(k, i) == (1, 2))
            rows.append((n, cls, name, k + 1))
    _write(root, 'images.txt', [f'{n} {cls}/{name}' for n, cls, name, _ in rows])
    _write(root, 'classes.txt', [f'{k + 1} {cls}' for k, cls in enumerate(CLASSES)])
    _write(root, 'image_class_labels.txt', [f'{n} {c}' for n, _, _, c in rows])
    _write(root, 'train_test_split.txt', [f'{n} {n % 2}' for n, *_ in rows])
    _write(root, 'bounding_boxes.txt', [f'{n} 10.0 12.0 40.0 30.0' for n, *_ in rows])
    _write(root, 'README', ['The Caltech-UCSD Birds-200-2011 Dataset (miniature written by a test)'])
    _write(os.path.join(root, 'parts'), 'parts.txt', ['1 back', '2 beak'])
    _write(os.path.join(root, 'parts'), 'part_locs.txt', [f'{n} 1 5.0 5.0 1' for n, *_ in rows])
    _write(os.path.join(root, 'attributes'), 'image_attribute_labels.txt', [f'{n} 1 0 3 2.5' for n, *_ in rows])
    _write(tmp, 'attributes.txt', ['1 has_bill_shape::curved_(up_or_down)'])
    with tarfile.open(path, 'w:gz') as tar:
        tar.add(os.path.join(tmp, 'attributes.txt'), arcname='attributes.txt')
        tar.add(root, arcname='CUB_200_2011')
    return md5(path)


def write_cub_captions_tgz(tmp, path, drop=None, short=None):
    """A miniature cvpr2016_cub.tar.gz (Reed et al. 2016). drop: an image without its caption file;
    short: an image with 9 captions. One image has 11 captions and a trailing blank line."""
    root = os.path.join(tmp, 'cvpr2016_cub')
    for cls in CLASSES:
        os.makedirs(os.path.join(root, 'text_c10', cls), exist_ok=True)
        for i, name in enumerate(image_names(cls)):
            if name == drop:
                continue
            lines = caption_lines(cls, name, extra=(cls, i) == (CLASSES[0], 1))
            lines = lines[:9] if name == short else lines
            with open(os.path.join(root, 'text_c10', cls, name.rsplit('.', 1)[0] + '.txt'), 'w') as f:
                f.write('\n'.join(lines) + ('\n\n' if (cls, i) == (CLASSES[0], 1) else '\n'))
        for folder in ('text_c10', 'images', 'word_c10'):  # the Torch files of the archive, not read
            os.makedirs(os.path.join(root, folder), exist_ok=True)
            with open(os.path.join(root, folder, cls + '.t7'), 'wb') as f:
                f.write(b'\x04\x00\x00\x00torch7 placeholder')
    _write(root, 'allclasses.txt', CLASSES)
    _write(root, 'trainvalclasses.txt', TRAINVAL)
    _write(root, 'trainclasses.txt', TRAINVAL[:2])
    _write(root, 'valclasses.txt', TRAINVAL[2:])
    _write(root, 'testclasses.txt', TEST)
    with tarfile.open(path, 'w:gz') as tar:
        tar.add(root, arcname='cvpr2016_cub')
    return path


def _write(folder, name, lines):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def write_resnet101_state(path):
    """torchvision's ResNet-101 keys and shapes, random values (the published weights need a network)."""
    import torchvision
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet101(weights=None).state_dict(), path)
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()
