"""Random number generators: seeding, forking (draws that must not move the
training noise: figures, data caches, classifiers), and the states a checkpoint
keeps so that a resumed run draws what an uninterrupted one would."""
import random

import numpy as np
import torch


def seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)


def fork_rng(device=None):
    """Randomness drawn inside the block leaves torch's RNG (and `device`'s, on a GPU) as it was."""
    device = torch.device(device) if device is not None else torch.device('cpu')
    return torch.random.fork_rng(devices=[device] if device.type == 'cuda' else [])


def rng_states(device):
    np_state = np.random.get_state()  # (name, uint32 keys, pos, has_gauss, gauss): stored as plain types
    return {
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state(device) if device.type == 'cuda' else None,
        'numpy': [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain, np_state[2:])],
        'python': random.getstate(),
    }


def _plain(v):
    return v.item() if hasattr(v, 'item') else v


def set_rng_states(states, device):
    torch.set_rng_state(states['torch'])
    if device.type == 'cuda' and states.get('cuda') is not None:
        torch.cuda.set_rng_state(states['cuda'], device)
    name, keys, *rest = states['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    v, internal, gauss = states['python']
    random.setstate((v, tuple(internal), gauss))
