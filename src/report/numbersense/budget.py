"""Training budgets in steps: a run's optimiser steps (its metrics.csv), the
steps of the protocol (its epochs on the real data) and the run's share of them.

Epochs of the offline data are not epochs of the protocol's data: ten offline
epochs of the CMNIST VAE are 1,130 steps, 2.4 % of the protocol's 46,900 and
1.2 of its epochs.
"""
import math

from src.data.numbersense import N_COLOURS, NODA_N_DIGITS
from src.tracking import last_step

# torchvision's MNIST training set: 60,000 digits, 5,923 of them zeros (the extended protocol keeps
# every non-zero digit).
MNIST_TRAIN_NONZERO = 60000 - 5923
PAIR_CAP = 10000  # items per (number, colour) class that a pairing takes at most (pair_by_label)


def real_train_items(cond, data_protocol, pair_multiplier):
    """Training items (pairs for cmnist_oscn) of a condition on the real data. Every (number, colour)
    class holds fewer than PAIR_CAP items in both protocols, so the pairs are items x multiplier."""
    digits = NODA_N_DIGITS['train'] if data_protocol == 'noda2024' else MNIST_TRAIN_NONZERO
    return digits * N_COLOURS * (pair_multiplier if cond == 'cmnist_oscn' else 1)


def protocol_steps(cond, protocol):
    """(steps per epoch, total steps) of the protocol's runs of `cond`; protocol: its main.py flags
    (epochs, batch_size, pair_multiplier, numbersense_data)."""
    items = real_train_items(cond, protocol['numbersense_data'], protocol['pair_multiplier'])
    per_epoch = math.ceil(items / protocol['batch_size'])
    return per_epoch, per_epoch * protocol['epochs']


def run_budget(run, epochs, cond, protocol):
    """A trained run's budget: its steps and epochs, and its share of the protocol's steps."""
    steps = last_step(run)
    per_epoch, total = protocol_steps(cond, protocol)
    return {'steps': steps, 'epochs': epochs, 'protocol_steps': total, 'protocol_epochs': protocol['epochs'],
            'fraction_of_protocol_steps': steps / total, 'protocol_epochs_equivalent': steps / per_epoch}


def budget_text(b, offline):
    """'1,130 steps (10 epochs of the offline data; 2.4 % of the protocol's 46,900 steps, 1.2 of its epochs)'."""
    data = 'of the offline data' if offline else 'of its data'
    return (f"{b['steps']:,} steps ({b['epochs']} epochs {data}; {100 * b['fraction_of_protocol_steps']:.1f} % of the "
            f"protocol's {b['protocol_steps']:,} steps, {b['protocol_epochs_equivalent']:.2g} of its "
            f"{b['protocol_epochs']} epochs)")
