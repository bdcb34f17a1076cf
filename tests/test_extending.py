"""Extending the project from outside src/ (a test module, a notebook): a new modality, dataset, multimodal
model and joint-posterior rule, as docs/extending.md writes them but registered from this file, train end to
end with --max-steps and go through calculate_likelihoods, --resume and --pre-trained; two modalities of one
class keep their own names and files. tests/test_extending_docs.py runs the page's own files from src/."""
import json
import os

import pytest
import torch
import torch.distributions as dist
import torch.nn as nn
import torch.nn.functional as F

import main as main_py
from src import checkpoint
from src.data import DATASETS, TensorData, load_data
from src.errors import UserError
from src.models import MODELS
from src.models.joint import JOINTS
from src.models.mnist import MNIST
from src.models.multimodal import MultimodalVAE
from src.models.posteriors import product_of_experts
from src.models.vae import VAE
from src.objectives import ObjectiveSet, m_dreg, m_iwae, mixture_elbo
from src.report import calculate_likelihoods

# ---------------------------------------------------------------- the pieces of docs/extending.md


class Enc(nn.Module):
    def __init__(self, latent_dim):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(-3), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2 * latent_dim))

    def forward(self, x):
        loc, raw = self.net(x).chunk(2, -1)
        return loc, F.softplus(raw) + 1e-6


class Dec(nn.Module):
    def __init__(self, latent_dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, 32), nn.ReLU(), nn.Linear(32, 64))

    def forward(self, z):
        mean = torch.sigmoid(self.net(z)).view(*z.shape[:-1], 1, 8, 8)
        return mean, torch.tensor(0.75, device=z.device)


class Blocks(VAE):
    """A modality: 8x8 grey images."""
    name, dataset, data_size = 'blocks', 'blocks', (1, 8, 8)

    def __init__(self, params):
        super().__init__(dist.Normal, dist.Laplace, dist.Normal, Enc(params.latent_dim), Dec(params.latent_dim),
                         params)


class BlocksPair(MultimodalVAE):
    """Two modalities of one class, each with its own name: the image and its mirror image."""
    name, dataset = 'blocks_pair', 'blocks_pair'

    def __init__(self, params):
        super().__init__(dist.Normal, params, Blocks(params), Blocks(params).named('mirrored'))


def blocks(split):
    """Generated data: a bright square in one of 4 places (the class) on noise; 48 / 16 items."""
    g = torch.Generator().manual_seed(0 if split == 'train' else 1)
    n = 48 if split == 'train' else 16
    label = torch.arange(n) % 4
    x = 0.1 * torch.rand(n, 1, 8, 8, generator=g)
    for i, c in enumerate(label.tolist()):
        x[i, 0, 4 * (c // 2):4 * (c // 2) + 4, 4 * (c % 2):4 * (c % 2) + 4] += 0.8
    return x, label


def load_blocks(args, split):
    x, label = blocks(split)
    return TensorData([x], {'class': label}, source='generated blocks (tests/test_extending.py)', names=['blocks'])


def load_blocks_pair(args, split):
    x, label = blocks(split)
    return TensorData([x, x.flip(-1)], {'class': label}, source='generated blocks and their mirror images',
                      names=['blocks', 'mirrored'])


class ProductWithoutPrior:
    """A joint rule: the product of the experts alone (no prior expert)."""
    name = 'poe_noprior'
    family = dist.Normal

    @staticmethod
    def components(experts, prior, full):
        return [product_of_experts(experts)]

    @staticmethod
    def describe(names, full):
        return [' '.join(f'q(z|{n})' for n in names) + ' (normalised)']

    @staticmethod
    def objectives():
        return ObjectiveSet(train={'elbo': mixture_elbo, 'iwae': m_iwae, 'dreg': m_dreg}, test=m_iwae)


# ---------------------------------------------------------------- registered for this module only

class MNISTAndRotated(MultimodalVAE):
    """The issue a user met: MNIST and a rotated MNIST, two modalities of one class."""
    name, dataset = 'mnist_rotated_pair', 'mnist_rotated_pair'

    def __init__(self, params):
        super().__init__(dist.Laplace, params, MNIST(params), MNIST(params).named('mnist_rotated'))


def load_rotated_pair(args, split):
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(40, 1, 28, 28, generator=g) > 0.8).float()
    return TensorData([x, x.rot90(1, (-2, -1))], {'digit': torch.arange(40) % 10}, source='generated noise')


@pytest.fixture(scope='module', autouse=True)
def registered():
    models = {c.name: c for c in (Blocks, BlocksPair, MNISTAndRotated)}
    data = {'blocks': load_blocks, 'blocks_pair': load_blocks_pair, 'mnist_rotated_pair': load_rotated_pair}
    MODELS.update(models)
    DATASETS.update(data)
    JOINTS[ProductWithoutPrior.name] = ProductWithoutPrior
    yield
    for k in models:
        MODELS.pop(k)
    for k in data:
        DATASETS.pop(k)
    JOINTS.pop(ProductWithoutPrior.name)


def train(tmp_path, *flags):
    out = tmp_path / 'runs'
    assert main_py.main([*flags, '--out-dir', str(out), '--no-analytics', '--data-dir', str(tmp_path / 'data')]) == 0
    (experiment,) = os.listdir(out)
    (run,) = os.listdir(out / experiment)
    return str(out / experiment / run)


def test_a_new_model_and_joint_rule_from_outside_src(tmp_path, capsys):
    """48 items in batches of 16: 3 steps an epoch; --max-steps 4 ends in epoch 2 after one step."""
    run = train(tmp_path, '--model', 'blocks_pair', '--joint-posterior', 'poe_noprior', '--obj', 'dreg', '--K', '3',
                '--batch-size', '16', '--epochs', '5', '--max-steps', '4', '--max-test-items', '5',
                '--latent-dim', '4', '--tensorboard')
    assert os.path.basename(os.path.dirname(run)) == 'blocks_pair_poe_noprior'
    losses = json.load(open(os.path.join(run, 'losses.json')))
    assert len(losses['train']) == 2 and all(v == v for v in losses['train'] + losses['test'])
    ckpt, _ = checkpoint.load(run)
    assert ckpt['finished'] and ckpt['epoch'] == 2 and ckpt['steps_done'] == 4
    log = open(os.path.join(run, 'run.log')).read()
    assert '48 training and 5 test items' in log
    for f in ('vae_blocks.pt', 'vae_mirrored.pt', 'figures/gen_blocks_002.png', 'figures/gen_mirrored_002.png',
              'figures/recon_002.png'):
        assert os.path.isfile(os.path.join(run, f)), f
    capsys.readouterr()
    assert main_py.main(['--resume', run]) == 0  # --max-steps reached: nothing left to do
    assert 'is already finished' in capsys.readouterr().out
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(os.path.join(run, 'tb'), size_guidance={'scalars': 0}).Reload()
    assert [e.step for e in acc.Scalars('loss/train_step')] == [1, 2, 3, 4]
    assert [e.step for e in acc.Scalars('loss/test')] == [3, 4]  # epoch 2 ends at the cap
    assert [int(line.split(',')[1]) for line in open(os.path.join(run, 'metrics.csv')).read().split()[1:]] == [3, 4]
    # a new run from its weights keeps its joint posterior (an architecture flag) and starts from them
    again = train(tmp_path / 'again', '--pre-trained', run, '--max-steps', '1')
    assert json.load(open(os.path.join(again, 'args.json')))['flags']['joint_posterior'] == 'poe_noprior'
    assert main_py.main(['--pre-trained', run, '--joint-posterior', 'moe']) == 2
    assert 'was trained with --joint-posterior poe_noprior' in capsys.readouterr().err
    out = calculate_likelihoods.main(['--save-dir', run, '--iwae-samples', '4'])
    assert out['estimator']['joint_posterior'] == 'poe_noprior'
    assert out['estimator']['joint'] == 'q(z|blocks) q(z|mirrored) (normalised)'
    assert out['estimator']['samples_per_component'] == 4
    assert set(out['cross']) == {'blocks', 'mirrored'}


def test_two_modalities_of_one_class_keep_their_own_files(tmp_path):
    with pytest.raises(ValueError, match='its own name'):
        MultimodalVAE(dist.Laplace, main_py.parse_args(['--model', 'mnist']), MNIST, MNIST)
    run = train(tmp_path, '--model', 'mnist_rotated_pair', '--obj', 'elbo', '--batch-size', '8', '--max-steps', '2')
    a, b = (torch.load(os.path.join(run, f'vae_{n}.pt')) for n in ('mnist', 'mnist_rotated'))
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    figs = os.listdir(os.path.join(run, 'figures'))
    assert {'gen_mnist_001.png', 'gen_mnist_rotated_001.png'} <= set(figs)


def test_an_unknown_dataset_is_a_clear_error():
    with pytest.raises(UserError, match="unknown dataset 'blocks_pairs' \\(did you mean 'blocks_pair'"):
        load_data('blocks_pairs', None, 'train')
