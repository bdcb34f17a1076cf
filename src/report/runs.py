"""Shared plumbing of the analysis scripts: load a trained run, log to
<run>/<analysis>.log, exit cleanly on bad input."""
import argparse
import logging
import os
import sys
import time

import torch

from src.cli import build_parser
from src.errors import UserError
from src.files import load_json, load_torch, save_json
from src.models import MODELS


def load_run(save_dir, device='cpu', data_dir=''):
    """(flags Namespace, model with the run's weights in eval mode) of a run directory.

    data_dir (if given) replaces the run's --data-dir before the model is built:
    the CUB caption models read their vocabulary size from the data.
    """
    if not save_dir or not os.path.isdir(save_dir):
        raise UserError(f"--save-dir {save_dir!r}: no such run directory (give a directory written by main.py)")
    for f in ('args.json', 'model.pt'):
        if not os.path.isfile(os.path.join(save_dir, f)):
            raise UserError(f"--save-dir {save_dir} is incomplete: {f} is missing "
                            f"(did the run finish its first epoch?)")
    saved = load_json(os.path.join(save_dir, 'args.json'), 'run flags file')
    flags = saved.get('flags') if isinstance(saved, dict) else None
    if not isinstance(flags, dict) or flags.get('model') not in MODELS:
        raise UserError(f"{os.path.join(save_dir, 'args.json')} does not describe a run of a known model")
    merged = vars(build_parser().parse_args([]))  # defaults for flags newer than the run
    merged.update(flags)
    if data_dir:
        merged['data_dir'] = data_dir
    args = argparse.Namespace(**merged)
    model = MODELS[args.model](args).to(device)
    path = os.path.join(save_dir, 'model.pt')
    try:
        model.load_state_dict(load_torch(path, 'model weights file', map_location=device))
    except RuntimeError as e:
        raise UserError(f"{path} does not fit model {args.model!r} with the run's flags: {str(e).splitlines()[0]}") from None
    model.eval()
    return args, model


def add_run_flags(p, data_help="where the data are (default: the run's --data-dir)"):
    """The flags every analysis of a run shares: --data-dir, --seed, --no-cuda."""
    p.add_argument('--data-dir', default='', help=data_help)
    p.add_argument('--seed', type=int, default=None, help="random seed (default: the run's)")
    p.add_argument('--no-cuda', action='store_true', help='do not use a GPU even when one is available')


def device_from(no_cuda):
    return torch.device('cuda' if torch.cuda.is_available() and not no_cuda else 'cpu')


def analysis_logger(save_dir, name):
    """A logger printing to stdout and writing <save_dir>/<name>.log (fresh each time)."""
    log = logging.getLogger(f'mmvae.report.{name}')
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO)
    for h in (logging.StreamHandler(sys.stdout), logging.FileHandler(os.path.join(save_dir, f'{name}.log'), mode='w')):
        h.setFormatter(logging.Formatter('%(message)s'))
        log.addHandler(h)
    return log


def save_results(out, save_dir, name, t0, log):
    """Write out (plus the seconds since t0) to <save_dir>/<name>.json, log where; returns out."""
    out['seconds'] = round(time.time() - t0, 2)
    path = os.path.join(save_dir, f'{name}.json')
    save_json(out, path)
    log.info(f'wrote {path} ({out["seconds"]:.1f} s)')
    return out


def run_script(main):
    """Call main(); a UserError becomes `error: ...` on stderr and exit status 2."""
    try:
        main()
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
