"""Shared plumbing of the analysis scripts: load a trained run, log to
<run>/<analysis>.log, exit cleanly on bad input."""
import argparse
import logging
import os
import sys
import time

from src.cli import build_parser, check_dir, with_vocab_size
from src.distributed import default_device
from src.errors import UserError, report
from src.files import load_torch, save_json
from src.models import MODELS
from src.numerics import keep_host_memory, set_flush_denormal
from src.rundir import LogFile, read_run
from src.tracking import log_analysis


def load_run(save_dir, device='cpu', data_dir='', offline=None):
    """(flags Namespace, model with the run's weights in eval mode) of a run directory written by
    main.py, or by the released code (args.rar + model.rar).

    data_dir / offline (if given) replace the run's --data-dir / --offline: where the analyses find the
    data. Runs of the released code predate both flags; for our runs --offline must match the run's.
    """
    saved = read_run(save_dir, '--save-dir')
    check_dir(data_dir, '--data-dir', writable=False)
    flags = with_vocab_size(saved)
    if flags['model'] not in MODELS:
        raise UserError(f"{save_dir} holds a run of unknown model {flags['model']!r}")
    if offline is not None and not saved.released and 'offline' in flags and bool(flags['offline']) != offline:
        raise UserError(f"--offline: {save_dir} was trained on {'offline stand-in' if flags['offline'] else 'real'} "
                        f"data; analyse it on the same data (drop --offline or train another run)")
    merged = vars(build_parser().parse_args([]))  # defaults for flags newer than the run
    merged.update({k: v for k, v in flags.items() if k in merged})
    if data_dir:
        merged['data_dir'] = data_dir
    if offline is not None:
        merged['offline'] = offline
    args = argparse.Namespace(**merged)
    model = MODELS[args.model](args).to(device)
    try:
        model.load_state_dict(load_torch(saved.weights, 'model weights file', map_location=device))
    except RuntimeError as e:
        raise UserError(f"{saved.weights} does not fit model {args.model!r} with the run's flags: "
                        f"{str(e).splitlines()[0]}") from None
    model.eval()
    return args, model


def add_run_flags(p, data_help="where the data are (default: the run's --data-dir)"):
    """The flags every analysis of a run shares: --data-dir, --seed, --no-cuda."""
    p.add_argument('--data-dir', default='', help=data_help)
    p.add_argument('--offline', action='store_true', default=None,
                   help="the data that need no network (for run folders of the released code, which predate the "
                        "flag; this project's runs record it)")
    p.add_argument('--seed', type=int, default=None,
                   help="seed of the analysis' shuffles and samples (default: the run's --seed)")
    p.add_argument('--no-cuda', action='store_true', help='do not use a GPU even when one is available')
    p.add_argument('--ieee-denormals', action='store_true',
                   help='keep IEEE subnormal numbers on the CPU (default: flushed to zero, as in training; '
                        'docs/performance.md)')
    p.add_argument('--return-host-memory', action='store_true',
                   help="on the CPU, return freed memory to the OS as glibc's malloc does (default: kept for "
                        "reuse, as in training: faster; docs/performance.md)")


def device_from(no_cuda, ieee_denormals=False, return_host_memory=False):
    """The device an analysis runs on. For the rest of the process (src/numerics.py): the CPU's subnormals
    flushed to zero unless ieee_denormals, in this thread and torch's OpenMP threads; on the CPU, freed
    memory kept for reuse unless return_host_memory."""
    set_flush_denormal(not ieee_denormals)
    device = default_device(no_cuda)
    keep_host_memory(device.type == 'cpu' and not return_host_memory)
    return device


def analysis_logger(save_dir, name):
    """A logger printing to stdout and writing <save_dir>/<name>.log (fresh each time)."""
    log = logging.getLogger(f'mmvae.report.{name}')
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO)
    for h in (logging.StreamHandler(sys.stdout), LogFile(os.path.join(save_dir, f'{name}.log'), mode='w')):
        h.setFormatter(logging.Formatter('%(message)s'))
        log.addHandler(h)
    return log


def save_results(out, save_dir, name, t0, log):
    """Write out (plus the seconds since t0) to <save_dir>/<name>.json, and its numbers to the run's
    TensorBoard events when it has them (trained with --tensorboard); log where; returns out."""
    out['seconds'] = round(time.time() - t0, 2)
    path = os.path.join(save_dir, f'{name}.json')
    save_json(out, path)
    tags = log_analysis(save_dir, name, out)
    log.info(f'wrote {path} ({out["seconds"]:.1f} s)' + (f' and {len(tags)} TensorBoard scalars' if tags else ''))
    return out


def run_script(main):
    """Call main(); a UserError, or an OSError that is a fault of the machine (a full disk), becomes
    `error: ...` on stderr and exit status 2."""
    try:
        main()
    except Exception as e:
        sys.exit(report(e))
