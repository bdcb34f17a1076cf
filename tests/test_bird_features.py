"""The offline stand-in for ImageNet features (src/data/bird_features.py): attribute
targets, that the network learns the described attributes, and determinism."""
import pytest
import torch

from src.data import bird_features as bf
from src.data.synth_cub import ATTRIBUTES, COLOURS, generate_birds


def test_targets_index_the_attribute_values():
    attrs = [{'size': 'large', 'crown': 'red', 'belly': 'white', 'wings': 'blue', 'beak': 'orange',
              'beak_len': 'long', 'tail_len': 'short', 'wingbars': None, 'eyebrow': 'yellow', 'eyering': 'white'}]
    y = bf.targets(attrs)[0].tolist()
    got = dict(zip(ATTRIBUTES, y, strict=True))
    assert got == {'size': 1, 'crown': COLOURS.index('red'), 'belly': COLOURS.index('white'),
                   'wings': COLOURS.index('blue'), 'beak': bf.BEAK_COLOURS.index('orange'),
                   'beak_len': 1, 'tail_len': 0, 'wingbars': 0,
                   'eyebrow': 1 + bf.EYEBROW_COLOURS.index('yellow'), 'eyering': 1}
    _, _, generated = generate_birds(30, seed=5)
    assert bf.targets(generated).shape == (30, len(ATTRIBUTES))  # every generated value is a known choice


@pytest.mark.slow
def test_network_learns_the_colours_and_features_are_fixed_size():
    images, _, attrs = generate_birds(160, seed=7)
    images = torch.from_numpy(images)
    net, acc = bf.train_attribute_net(images, attrs, epochs=20)
    # chance is 1/9 for each colour; the network must read them off the pictures
    assert min(acc['crown'], acc['belly'], acc['wings']) > 0.5, acc
    f = net.features(images[:5])
    assert f.shape == (5, bf.FEATURE_DIM) and (f >= 0).all()
    # a 64-d code: the features span at most 64 dimensions
    assert torch.linalg.matrix_rank(net.features(images).detach().double(), rtol=1e-5) <= bf.CODE_DIM
    assert net.features(images).mean().item() == pytest.approx(bf.FEATURE_MEAN, rel=1e-4)
    # larger inputs are resized to 64 x 64 first
    big = torch.nn.functional.interpolate(images[:2].float() / 255, size=(128, 128), mode='nearest')
    assert net.features(big).shape == (2, bf.FEATURE_DIM)


def test_training_is_deterministic():
    images, _, attrs = generate_birds(12, seed=3)
    images = torch.from_numpy(images)
    a, _ = bf.train_attribute_net(images, attrs, epochs=2)
    b, _ = bf.train_attribute_net(images, attrs, epochs=2)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
