"""MNIST and SVHN, fetched with torchvision's own downloaders and checked against torchvision's md5 sums
(`torchvision.datasets.MNIST.mirrors` / `.resources`, `torchvision.datasets.SVHN.split_list`), into the
folders that src/data/digits.py reads: <data-dir>/MNIST/raw/ and <data-dir>/SVHN/.

MNIST's idx files (LeCun et al., yann.lecun.com/exdb/mnist): a big-endian header (magic 2051 for images,
2049 for labels, then the sizes) and one unsigned byte per pixel or label. torchvision decompresses them
in place, so an interrupted unpack would leave a short file that its loader takes for complete; here the
unpack goes through a temporary file, and the header is checked against the file's size.
"""
import gzip
import math
import os
import shutil
import struct
import urllib.error

from ...errors import UserError
from ...files import atomic_write
from .download import no_network

IDX_MAGIC = {'images': 2051, 'labels': 2049}


def idx_problem(path):
    """None when `path` is a whole idx file (its header's sizes fit its length); else what is wrong."""
    if not os.path.isfile(path):
        return 'missing'
    kind = 'images' if 'images' in os.path.basename(path) else 'labels'
    ndim = 3 if kind == 'images' else 1
    with open(path, 'rb') as f:
        head = f.read(4 + 4 * ndim)
    if len(head) < 4 + 4 * ndim:
        return 'shorter than its header'
    magic, *dims = struct.unpack(f'>{1 + ndim}I', head)
    if magic != IDX_MAGIC[kind]:
        return f'magic number {magic}, not {IDX_MAGIC[kind]} (not an idx {kind} file)'
    expected = 4 + 4 * ndim + math.prod(dims)
    actual = os.path.getsize(path)
    if actual != expected:
        return f'{actual:,} bytes where its header ({" x ".join(map(str, dims))}) needs {expected:,}: cut short'
    return None


def mnist_raw(data_dir):
    return os.path.join(data_dir, 'MNIST', 'raw')


def _manual_mnist(raw):
    from torchvision.datasets import MNIST
    names = ', '.join(name for name, _ in MNIST.resources)
    return (f"download {names} from {MNIST.mirrors[0]} (or {MNIST.mirrors[1]}) on a machine with network "
            f"access and put them in {os.path.abspath(raw)} (gzipped or unpacked); then run this command again")


def _fetch_mnist(raw, name, md5):
    """The .gz file through torchvision's download_url (md5 checked), from its first mirror that answers."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_url
    errors = []
    for mirror in MNIST.mirrors:
        try:
            download_url(mirror + name, raw, name, md5)
            return
        except (urllib.error.URLError, OSError, RuntimeError) as e:
            errors.append((mirror + name, e))
    url, error = errors[0]
    raise no_network(f'MNIST {name}', url, error, _manual_mnist(raw)) from None


def _unpack(gz, path):
    """gunzip into a temporary file renamed to `path` once whole."""
    def write(f):
        with gzip.open(gz, 'rb') as src:
            shutil.copyfileobj(src, f)
    atomic_write(path, write)


def prepare_mnist(data_dir):
    """The four idx files in <data-dir>/MNIST/raw/; returns a line to print."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import check_integrity
    raw = mnist_raw(data_dir)
    os.makedirs(raw, exist_ok=True)
    for name, md5 in MNIST.resources:
        path = os.path.join(raw, name[:-len('.gz')])
        if idx_problem(path) is None:
            continue
        gz = os.path.join(raw, name)
        if not check_integrity(gz, md5):
            _fetch_mnist(raw, name, md5)
        _unpack(gz, path)
        problem = idx_problem(path)
        if problem:
            os.remove(path)
            raise UserError(f"{path} unpacked from {gz} is not a whole idx file ({problem}).\n"
                            f"  fix: delete {gz} and run this command again")
    sizes = [len(MNIST(data_dir, train=train).targets) for train in (True, False)]
    return f"mnist: {sizes[0]:,} train / {sizes[1]:,} test digits in {raw} (md5 of the downloads checked)"


MNIST_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte',
               't10k-labels-idx1-ubyte')


def cut_short(data_dir):
    """The first MNIST idx file that is there but not whole (an unpack interrupted outside this command), as
    'path: problem'; None when each file is whole or absent."""
    for name in MNIST_FILES:
        path = os.path.join(mnist_raw(data_dir), name)
        problem = idx_problem(path)
        if problem not in (None, 'missing'):
            return f'{path}: {problem}'
    return None


def svhn_root(data_dir):
    return os.path.join(data_dir, 'SVHN')


def prepare_svhn(data_dir):
    """train_32x32.mat and test_32x32.mat in <data-dir>/SVHN/ (torchvision checks their md5 on every load)."""
    from torchvision.datasets import SVHN
    from torchvision.datasets.utils import download_url
    root = svhn_root(data_dir)
    sizes = []
    for split in ('train', 'test'):
        url, filename, md5 = SVHN.split_list[split]
        manual = (f"download {url} on a machine with network access and put it in {os.path.abspath(root)}; "
                  f"then run this command again")
        try:
            download_url(url, root, filename, md5)
        except (urllib.error.URLError, OSError) as e:
            raise no_network(f'SVHN {filename}', url, e, manual) from None
        except RuntimeError:  # torchvision: "File not found or corrupted." (md5 mismatch)
            path = os.path.join(root, filename)
            if os.path.isfile(path):
                os.remove(path)
            raise UserError(f"the download of SVHN {filename} from {url} does not match torchvision's md5 {md5}; "
                            f"it was removed.\n  fix: run this command again; if it fails again, {manual}") from None
        sizes.append(len(SVHN(root, split=split)))
    return f"svhn: {sizes[0]:,} train / {sizes[1]:,} test images in {root} (md5 checked)"
