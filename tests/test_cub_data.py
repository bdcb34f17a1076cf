"""CUB data (src/data/cub.py and the cub_*.py files it uses): the real layout and its check, image order and
caption pairing, caches, the vocabulary size from the data, ResNet-101 weights
handling, the offline bird set, and the display of captions and features."""
import argparse
import os

import pytest
import torch
from PIL import Image

from src.data import cub, cub_features, cub_images, cub_layout, cub_offline, load_data
from src.data.captions import EOS, PAD
from src.data.cub_display import Display
from src.errors import UserError
from src.models import MODELS

WORDS = ['red', 'blue', 'green', 'small', 'bird', 'wings']
# real-layout fixture: class folders (deliberately not created in sorted order) and image files
TRAIN = {'002.Gull': ['b.jpg', 'a.jpg'], '001.Albatross': ['z.png', 'c.jpg', 'm.jpeg']}
TEST = {'010.Wren': ['x.jpg', 'w.jpg']}


def args_for(d, offline=False):
    return argparse.Namespace(data_dir=str(d), offline=offline, no_cuda=True)


def colour(i):
    """A solid colour that encodes the image's position in the sorted order."""
    return (10 * i + 5, 255 - 10 * i, 100)


def write_split(root, split, classes, n_captions=None):
    """Images of solid colours in sorted order (colour(i)), and captions naming the image: 'bird <i> ...'."""
    order = [(c, f) for c in sorted(classes) for f in sorted(classes[c])]
    for i, (c, f) in enumerate(order):
        os.makedirs(os.path.join(root, split, c), exist_ok=True)
        Image.new('RGB', (90 + 7 * i, 70), colour(i)).save(os.path.join(root, split, c, f))
    lines = [f'bird {i // 10} has {WORDS[i % 6]} wings , {WORDS[(i + 1) % 6]} .' for i in range(10 * len(order))]
    if n_captions is not None:
        lines = lines[:n_captions] if n_captions <= len(lines) else lines + lines[:n_captions - len(lines)]
    with open(os.path.join(root, cub_layout.TEXT_FILES[split]), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return order


@pytest.fixture()
def real_dir(tmp_path):
    root = tmp_path / 'cub'
    write_split(str(root), 'train', TRAIN)
    write_split(str(root), 'test', TEST)
    cub_layout._LAYOUTS.clear()
    return tmp_path


def test_layout_check_on_malformed_directories(tmp_path):
    root = str(tmp_path / 'cub')
    with pytest.raises(UserError, match='does not exist'):
        cub_layout.check_layout(root)
    write_split(root, 'train', TRAIN, n_captions=48)  # 5 images need 50 captions
    with pytest.raises(UserError, match='image folder .*test is missing'):
        cub_layout.check_layout(root)
    write_split(root, 'test', TEST)
    with pytest.raises(UserError) as e:
        cub_layout.check_layout(root)
    msg = str(e.value)
    assert 'text_trainvalclasses.txt' in msg and '48 captions' in msg and '5 images' in msg and '50' in msg
    write_split(root, 'train', TRAIN)
    os.remove(os.path.join(root, 'text_testclasses.txt'))
    with pytest.raises(UserError, match='caption file .*text_testclasses.txt is missing'):
        cub_layout.check_layout(root)
    write_split(root, 'test', TEST, n_captions=21)
    with pytest.raises(UserError, match=r'21 captions but .* 2 images'):
        cub_layout.check_layout(root)
    write_split(root, 'test', TEST)
    assert [len(v) for v in cub_layout.check_layout(root).values()] == [5, 2]
    # main.py reports a bad layout as one clear message (exit 2), not a traceback
    import main as main_module
    cub_layout._LAYOUTS.clear()
    write_split(root, 'test', TEST, n_captions=19)
    assert main_module.main(['--model', 'cubI', '--data-dir', str(tmp_path), '--epochs', '1',
                             '--out-dir', str(tmp_path / 'runs')]) == 2


def test_image_order_pairing_and_caches(real_dir, monkeypatch):
    a = args_for(real_dir)
    images, classes = cub_images.images64(a, 'train')
    assert images.dtype == torch.uint8 and images.shape == (5, 3, 64, 64)
    # class folders sorted, files sorted: 001.Albatross/{c,m,z}, then 002.Gull/{a,b}
    for i in range(5):
        assert tuple(images[i, :, 32, 32].tolist()) == pytest.approx(colour(i), abs=2)
    assert classes.tolist() == [0, 0, 0, 1, 1]
    # caption i belongs to image i // 10
    d = load_data('cubIS', a, 'train')
    assert len(d) == 50 and d.labels['image'].tolist() == [i // 10 for i in range(50)]
    assert d.labels['class'].tolist() == [0] * 30 + [1] * 20
    w2i, train_ids, test_ids = cub.caption_data(a)
    i2w = cub.vocab(a)
    x_img, x_cap = d.gather(torch.tensor([0, 19, 20, 49]))
    assert x_img.dtype == torch.float32 and x_img.max() <= 1
    assert torch.equal(x_img[1], images[1].float() / 255) and torch.equal(x_img[2], images[2].float() / 255)
    assert torch.equal(x_cap, train_ids[[0, 19, 20, 49]])
    assert d.display.captions(x_cap)[1] == 'bird 1 has blue wings , green .'  # caption 19, of image 1
    assert i2w[:3] == ['<exc>', '<pad>', '<eos>'] and 'wings' in w2i
    assert (train_ids[:, -1] == PAD).all() and (train_ids == EOS).sum() == 50
    # cached: no image file is opened again, and the vocabulary size is the data's
    monkeypatch.setattr(Image, 'open', lambda *a, **k: (_ for _ in ()).throw(AssertionError('re-read')))
    assert torch.equal(cub_images.images64(a, 'train')[0], images)
    assert cub.vocab_size(a) == len(w2i)
    model = MODELS['cubS'](argparse.Namespace(latent_dim=4, learn_prior=False, llik_scaling=0.,
                                              vocab_size=cub.vocab_size(a)))
    assert model.enc.embedding.num_embeddings == len(w2i) == model.vocab_size


def test_missing_resnet_weights_name_the_file(tmp_path, monkeypatch):
    """Without the weights file and without network: a clear error naming the file and where to put it."""
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))

    def no_network(*a, **k):
        raise OSError('network unreachable')
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_network)
    net = cub_features.FeatureExtractor(device=torch.device('cpu'))
    with pytest.raises(UserError) as e:
        net(torch.zeros(1, 3, 8, 8))
    msg = str(e.value)
    assert 'resnet101-63fe2227.pth' in msg and os.path.join(str(tmp_path / 'hub'), 'checkpoints') in msg
    assert 'network unreachable' in msg


def test_offline_features_stand_in(tmp_path, monkeypatch):
    """--offline: features from the attribute network (src/data/bird_features.py), trained once on the
    offline training birds, cached, retrained when the set changes; never the ImageNet weights; said so."""
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', lambda *a, **k: pytest.fail('download attempted'))
    a = args_for(tmp_path, offline=True)
    cub_offline.make_offline_set(str(tmp_path), 8, 3)
    net = cub_features.extractor(a)
    assert net.stand_in and 'stand-in' in net.description and "NOT the paper's" in net.description
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    feats, desc = cub_features.features(a, 'train')
    assert torch.equal(torch.rand(1), expected)  # training it leaves the caller's RNG as it was
    assert feats.shape == (8, 2048) and (feats >= 0).all() and feats.mean().item() == pytest.approx(0.5, rel=1e-4)
    assert desc == net.description and os.path.isfile(net.path)
    assert cub_features.features(a, 'test')[0].shape == (3, 2048)
    # a new extractor (a new process) loads the trained network: same features, no training
    monkeypatch.setattr(cub_features.bird_features, 'train_attribute_net', lambda *a, **k: pytest.fail('trained again'))
    fresh = cub_features.BirdFeatureExtractor(a, torch.device('cpu'))
    x = cub_images.images64(a, 'train')[0]
    assert torch.equal(fresh(x), feats)
    # another offline set: the network is trained again, on the new birds
    monkeypatch.undo()
    cub_offline.make_offline_set(str(tmp_path), 9, 3)
    assert cub_features.extractor(a)(cub_images.images64(a, 'train')[0]).shape == (9, 2048)
    assert torch.load(net.path)['key'] == cub_images.images_key(a, 'train')


def test_offline_set_and_display(tmp_path, monkeypatch):
    a = args_for(tmp_path, offline=True)
    meta = cub_offline.make_offline_set(str(tmp_path), 6, 3)
    assert meta['n_images'] == {'train': 6, 'test': 3}
    d = load_data('cubIS', a, 'test')
    assert len(d) == 30 and 'offline' in d.source and 'not CUB' in d.source
    assert 'class' not in d.labels and d.labels['image'].tolist() == [i // 10 for i in range(30)]
    images = cub_images.images64(a, 'test')[0]
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.uint8
    # the same caption pipeline on the generated captions
    with open(cub_layout.text_file(a, 'train')) as f:
        assert len(f.read().splitlines()) == 60
    i2w = cub.vocab(a)
    assert 'bird' in i2w and i2w[0] == '<exc>'
    # display: captions without '<pad>', features shown by their nearest real image
    feats = {'train': torch.randn(6, 2048), 'test': torch.randn(3, 2048)}
    imgs = {'train': cub_images.images64(a, 'train')[0], 'test': images}
    disp = Display(i2w, imgs, feats)
    text = disp.captions(d.gather(torch.arange(3))[1])
    assert all('<pad>' not in t and '<eos>' not in t for t in text)
    assert text[0].startswith(('this', 'a', 'the', 'its', 'small', 'large'))
    assert torch.equal(disp.nearest_images(feats['test'][[2, 0]], 'test'), images[[2, 0]].float() / 255)
    near = disp.nearest_images(feats['train'][[4]] + 0.01 * torch.randn(1, 2048), 'train')
    assert torch.equal(near[0], imgs['train'][4].float() / 255)
    logits = torch.full((1, 32, len(i2w)), -5.0)
    logits[0, :, 1] = 5  # all '<pad>'
    logits[0, 0, i2w.index('bird')] = 9
    assert disp.captions(logits) == ['bird']


def test_real_image_features_cached(real_dir, monkeypatch):
    """Features of the real layout: the image files resized to 224 (cubIft) and the 64x64 images (cubIS
    analysis), extracted once and cached per weights; a random state dict stands in for the ImageNet file."""
    import torchvision
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(real_dir / 'hub'))
    torch.manual_seed(0)
    state = torchvision.models.resnet101().state_dict()
    monkeypatch.setattr(cub_features.FeatureExtractor, '_imagenet_state', lambda self: state)
    a = args_for(real_dir)
    net = cub_features.FeatureExtractor(device=torch.device('cpu'))
    assert not net.stand_in and net.tag == 'resnet101_imagenet1k_v1_short224'
    orig, desc = cub_features.features(a, 'test', 'original', net)
    small, _ = cub_features.features(a, 'test', '64', net)
    assert orig.shape == small.shape == (2, 2048) and 'ImageNet' in desc and 'UNTRAINED' not in desc
    cache = os.path.join(str(real_dir), 'cub', 'cache')
    assert {f'{net.tag}_original_test.pt', f'{net.tag}_64_test.pt'} <= set(os.listdir(cache))
    monkeypatch.setattr(cub_features.FeatureExtractor, '__call__',
                        lambda *a: (_ for _ in ()).throw(AssertionError('re-run')))
    assert torch.equal(cub_features.features(a, 'test', 'original', net)[0], orig)  # cached


def test_resnet_input_as_released(real_dir):
    """The ResNet-101 input: each image file as RGB with its shorter side resized to 224 (aspect kept, no crop,
    PIL bilinear: torchvision's Resize(224)), ToTensor, no ImageNet normalisation; the 64x64 images (cubIS
    analysis) resized to 224 x 224 the same way. Checked against PIL and torch directly."""
    import numpy as np
    import torch.nn.functional as F
    seen = []

    class Record(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return x.mean((2, 3)).repeat(1, 683)[:, :2048]
    net = cub_features.FeatureExtractor(device=torch.device('cpu'))
    net._net = Record()
    a = args_for(real_dir)
    feats = cub_features.features(a, 'train', 'original', net)[0]
    files = cub_layout.check_layout(str(real_dir / 'cub'))['train']
    assert len(seen) == 5 and feats.shape == (5, 2048)  # five sizes: five batches of one
    for x, (_, p) in zip(seen, files, strict=True):
        with Image.open(p) as im:
            w, h = im.size
            ref = np.asarray(im.convert('RGB').resize((int(224 * w / h), 224), Image.BILINEAR), dtype=np.float32)
        assert x.shape == (1, 3, 224, int(224 * w / h))
        assert torch.allclose(x[0], torch.from_numpy(ref / 255).permute(2, 0, 1), atol=1e-6)
    seen.clear()
    cub_features.features(a, 'test', '64', net)
    small = cub_images.images64(a, 'test')[0].float() / 255
    ref = F.interpolate(small, size=(224, 224), mode='bilinear', align_corners=False)
    assert torch.allclose(torch.cat(seen), ref, atol=1e-5)
