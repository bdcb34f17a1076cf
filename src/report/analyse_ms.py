"""MNIST-SVHN analysis of a trained run (paper section 4.1, Table 2).

    python src/report/analyse_ms.py --save-dir RUN

By default this computes what the released src/report/analyse_ms.py computes:
- latent accuracy: for each unimodal encoder, a linear classifier D -> 10
  (Adam, lr 1e-3, batches of 256) trained for 30 epochs over the run's paired
  training set on z ~ q(z|x) (one fresh sample per pair and epoch), tested on
  one sample per pair of the paired test set. Unimodal mnist / svhn runs: 10x
  the epochs over their own training set, as the released script;
- digit classifiers: one small CNN per modality, 30 epochs over the paired
  training set (its images of that modality), tested on the paired test set;
  cached under <data-dir>/classifiers/ keyed by data, pairing and budget;
- cross coherence, both directions, on every pair of the paired test set:
  encode one modality (one sample), decode the other (decoder mean), classify,
  compare with the pair's digit;
- joint coherence: 10,000 samples of the (learnt) prior decoded into both
  modalities (decoder means); the percent where the two classifiers agree.
Beyond the released script, each coherence's chance level (the agreement that
its classifiers' predicted-class frequencies give alone, e.g. 100 % for two
classifiers that always predict the same class) and a one-sided binomial test
against it: `chance` in the JSON, and `at_chance` lists the coherences not
above it (summarise.py marks them rather than averaging them).
Quicker checks (fewer epochs or items) and the unpaired variant are flags;
the JSON records the budget used and whether it is the released protocol.
Writes <RUN>/analyse_ms.json and <RUN>/analyse_ms.log.
"""
import time
from functools import partial

import torch

from src.cli import Parser
from src.data import load_data
from src.data.tensors import spread_subset
from src.errors import UserError
from src.report import classifiers as C
from src.report.metrics import above_chance, chance_agreement, cross_coherence, joint_coherence, latent_accuracy
from src.report.runs import add_run_flags, analysis_logger, device_from, load_run, run_script, save_results

RELEASED = {'latent_epochs': 30, 'classifier_epochs': 30, 'joint_samples': 10000, 'batch_size': 256,
            'train_items': 0, 'max_items': 0, 'unpaired': False}
LATENT_LR = 1e-3  # released analyse_ms.py, classify_latents: Adam(lr=0.001)
UNIMODAL_EPOCH_FACTOR = 10  # released: "mnist-svhn has more examples (roughly x10)"


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('--save-dir', required=True,
                   help='run directory written by main.py: a model of digit images (mnist_svhn with any '
                        '--joint-posterior, mnist, svhn, or your own)')
    p.add_argument('--latent-epochs', type=int, default=RELEASED['latent_epochs'],
                   help='epochs of the linear latent classifiers over the paired training set (released: 30; '
                        f'unimodal runs: {UNIMODAL_EPOCH_FACTOR}x this over their own training set, as released)')
    p.add_argument('--classifier-epochs', type=int, default=RELEASED['classifier_epochs'],
                   help='epochs of the classifiers that label generated images (the digit CNNs), over the paired '
                        'training set, trained once and cached (released: 30)')
    p.add_argument('--train-items', type=int, default=RELEASED['train_items'],
                   help='quick check: train the latent and digit classifiers on N evenly spaced items of the '
                        'training set (0: all, as released)')
    p.add_argument('--unpaired', action='store_true',
                   help='variant: train and test the latent and digit classifiers on the unpaired images of each '
                        'modality (every image once per epoch: all SVHN training images, pair-multiplier times '
                        'fewer updates) instead of the paired sets the released script uses')
    p.add_argument('--joint-samples', type=int, default=RELEASED['joint_samples'],
                   help='prior samples for the joint coherence (released: 10000)')
    p.add_argument('--batch-size', type=int, default=RELEASED['batch_size'],
                   help='batch size of training and evaluation (released: 256)')
    p.add_argument('--max-items', type=int, default=RELEASED['max_items'],
                   help='quick check: cross coherence on N evenly spaced paired test items (0: all, as released)')
    add_run_flags(p, "where the data and the cached classifiers are (default: the run's --data-dir)")
    a = p.parse_args(argv)
    for flag in ('latent_epochs', 'classifier_epochs', 'joint_samples', 'batch_size'):
        if getattr(a, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be a positive integer, got {getattr(a, flag)}")
    for flag in ('max_items', 'train_items'):
        if getattr(a, flag) < 0:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 0 (0: all), got {getattr(a, flag)}")
    return a


def released_protocol(cmd):
    """'released' when every budget flag has the released value, else the flags that differ."""
    diff = [f"--{k.replace('_', '-')} {getattr(cmd, k)}" for k, v in RELEASED.items() if getattr(cmd, k) != v]
    return 'released' if not diff else 'shortened or variant: ' + ', '.join(diff)


def modality_sets(args, model, device, unpaired):
    """{name: (train Items, test Items)}: the run's paired sets (as released), or each modality's unpaired
    images (--unpaired; also every unimodal run). Returns (sets, data source)."""
    vaes, sets = list(model.vaes), {}
    if len(vaes) > 1 and not unpaired:
        split = {s: load_data(model.dataset, args, s).to(device) for s in ('train', 'test')}
        check_digit_labels(split['train'], args)
        for m, v in enumerate(vaes):
            sets[v.name] = tuple(C.modality_items(split[s], m, f'the paired {s} set (pair multiplier '
                                                  f'{args.pair_multiplier}), its {v.name} images')
                                 for s in ('train', 'test'))
        return sets, split['train'].source
    sources = []
    for v in vaes:
        split = {s: load_data(v.dataset, args, s).to(device) for s in ('train', 'test')}
        check_digit_labels(split['train'], args)
        sets[v.name] = tuple(C.modality_items(split[s], 0, f'the unpaired {v.name} {s} images')
                             for s in ('train', 'test'))
        sources.append(split['train'].source)
    return sets, '; '.join(sources)


def check_digit_model(model, args, save_dir):
    """analyse_ms scores digits: every modality an image its digit classifiers take (square, side >= 16)."""
    bad = [v.name for v in model.vaes
           if v.modality != 'image' or len(v.data_size) != 3 or not 16 <= v.data_size[1] == v.data_size[2]]
    if bad:
        raise UserError(f'analyse_ms scores models of digit images; {save_dir} is a {args.model!r} run whose '
                        f'modalities {", ".join(bad)} are not square images (CUB runs: analyse_cub.py)')


def check_digit_labels(data, args):
    if 'digit' not in data.labels:
        raise UserError(f'analyse_ms scores digits; the data of this {args.model!r} run carry no digit labels '
                        f'(they have {", ".join(data.labels) or "none"}; number-sense runs: '
                        f'src/report/numbersense/analyse.py)')


def latent_accuracies(model, sets, cmd, seed, log):
    """Latent accuracy per modality, on samples of its posterior under the model's joint rule (its
    encoder's for a mixture of experts), and what each was trained and tested on."""
    acc, setup = {}, {}
    vaes = list(model.vaes)
    epochs = cmd.latent_epochs * (UNIMODAL_EPOCH_FACTOR if len(vaes) == 1 else 1)
    for m, v in enumerate(vaes):
        train, test = sets[v.name]
        train = train.subset(cmd.train_items)
        acc[v.name], _ = latent_accuracy(partial(model.unimodal_posterior, m), train.images, train.labels,
                                         test.images, test.labels, epochs, cmd.batch_size, seed=seed, lr=LATENT_LR,
                                         train_rows=train.rows, test_rows=test.rows)
        setup[v.name] = {'epochs': epochs, 'batch_size': cmd.batch_size, 'lr': LATENT_LR,
                         'steps': C.steps(len(train), epochs, cmd.batch_size),
                         'train_set': train.description, 'n_train_items': len(train),
                         'test_set': test.description, 'n_test_items': len(test),
                         'samples': 'one z ~ q(z|x) per training item and epoch; one per test item'}
        log.info(f'{v.name} encoder: linear classifier on z ~ q(z|{v.name}), {epochs} epochs '
                 f'({setup[v.name]["steps"]:,} steps) over {train.description} ({len(train):,} items): '
                 f'{acc[v.name]:.2f}% on {test.description} ({len(test):,} items)')
    return acc, setup


def digit_classifiers(vaes, sets, source, args, cmd, log):
    nets, info = [], {}
    for v in vaes:
        train, test = sets[v.name]
        net, info[v.name] = C.load_or_train(v.name, source, train.subset(cmd.train_items), test, args.data_dir,
                                            args.offline, cmd.classifier_epochs, cmd.batch_size, log=log)
        nets.append(net)
        i = info[v.name]
        log.info(f"{v.name} classifier ({'trained now' if i['trained_now'] else 'cached'}: {i['path']}; "
                 f"{i['epochs']} epochs, {i['steps']:,} steps, {i['train_seconds']} s): "
                 f"{i['test_accuracy']:.2f}% on {test.description} ({len(test):,} items)")
    return nets, info


def coherences(model, nets, args, cmd, device, log):
    """Cross coherence (both ways) on the paired test set, and joint coherence; the JSON entries."""
    out = {}
    paired = load_data(model.dataset, args, 'test').to(device)
    items = spread_subset(len(paired), cmd.max_items, device)
    batches = ((paired.gather(idx), paired.labels['digit'][idx]) for idx in items.split(cmd.batch_size))
    cross, joint = {}, {}  # the class frequencies behind each coherence
    mat = cross_coherence(model, batches, nets, tally=cross)
    names = model.modalities
    out['cross_coherence'] = {f'{names[e]}->{names[d]}': mat[e][d]
                              for e in range(len(names)) for d in range(len(names)) if e != d}
    out['reconstruction_coherence'] = {names[m]: mat[m][m] for m in range(len(names))}
    out['cross_coherence_test_set'] = (f'paired test set (pair multiplier {args.pair_multiplier}): '
                                       f'{len(items):,} of {len(paired):,} pairs')
    log.info(f"on the {out['cross_coherence_test_set']}, one posterior sample per pair, decoder means:")
    for k, v in out['cross_coherence'].items():
        src, dst = k.split('->')
        log.info(f'cross coherence {src} -> {dst} (encode {src}, decode {dst}, {dst} classifier): {v:.2f}%')
    for k, v in out['reconstruction_coherence'].items():
        log.info(f'(reconstruction coherence {k} -> {k}: {v:.2f}%)')

    log.info('-' * 20 + ' joint coherence ' + '-' * 20)
    out['joint_coherence'] = joint_coherence(model, nets, cmd.joint_samples, batch_size=1000, tally=joint)
    out['joint_coherence_samples'] = cmd.joint_samples
    log.info(f'joint coherence ({cmd.joint_samples:,} samples of the prior, decoder means, the two classifiers '
             f'agree): {out["joint_coherence"]:.2f}%')
    out['chance'], out['at_chance'] = coherence_chance(out, cross, joint, names, len(items), cmd.joint_samples)
    for key in out['at_chance']:
        level = out['chance'][key]['level']
        log.info(f'{key} is at chance: its classifiers\' predicted classes alone give {level:.2f}% '
                 f'(one-sided binomial p = {out["chance"][key]["p_value"]:.3g}): not a measure of coherence')
    return out


def coherence_chance(out, cross, joint, names, n_pairs, n_samples, alpha=0.05):
    """{coherence: chance level, p-value, predicted-class frequencies} and the coherences not above their
    chance level at `alpha`. Cross and reconstruction coherence: the predictions against the digits (about
    10 % for balanced digits, whatever the predictions); joint coherence: the classifiers against each other."""
    scored = {}  # key: (percent, items, the frequencies that give its chance level, the predictions' own)
    for (e, d), pred in ((k, v) for k, v in cross.items() if k != 'labels'):
        section, name = ('cross_coherence', f'{names[e]}->{names[d]}') if e != d else \
            ('reconstruction_coherence', names[e])
        scored[f'{section}/{name}'] = (out[section][name], n_pairs, [pred, cross['labels']], pred.tolist())
    scored['joint_coherence'] = (out['joint_coherence'], n_samples, list(joint.values()),
                                 {names[m]: f.tolist() for m, f in joint.items()})
    chance = {'test': f'one-sided binomial test at {alpha}: is the coherence above its chance level?'}
    for key, (percent, n, freqs, predicted) in scored.items():
        level = chance_agreement(*freqs)
        chance[key] = {'level': level, 'p_value': above_chance(percent, n, level), 'predicted_classes': predicted}
    return chance, [k for k in scored if chance[k]['p_value'] >= alpha]


def main(argv=None):
    cmd = parse_args(argv)
    device = device_from(cmd.no_cuda, cmd.ieee_denormals, cmd.return_host_memory)
    args, model = load_run(cmd.save_dir, device, cmd.data_dir, cmd.offline)
    check_digit_model(model, args, cmd.save_dir)
    t0 = time.time()
    sets, source = modality_sets(args, model, device, cmd.unpaired)  # bad input stops before the log is written
    log = analysis_logger(cmd.save_dir, 'analyse_ms')
    seed = args.seed if cmd.seed is None else cmd.seed
    torch.manual_seed(seed)
    vaes = list(model.vaes)
    multimodal = len(vaes) > 1
    protocol = released_protocol(cmd)
    log.info(f'run {cmd.save_dir}: model {args.model} on {device}; protocol: {protocol}')
    log.info(f"data: {source}{' (OFFLINE stand-in, not the paper data)' if args.offline else ''}")
    out = {'model': args.model, 'joint_posterior': args.joint_posterior if multimodal else None,
           'offline_data': bool(args.offline), 'data_source': source, 'seed': seed,
           'protocol': protocol,
           'budget': {k: getattr(cmd, k) for k in RELEASED} | {'pair_multiplier': args.pair_multiplier}}

    log.info('-' * 20 + ' latent classification accuracy ' + '-' * 20)
    out['latent_accuracy'], out['latent_accuracy_setup'] = latent_accuracies(model, sets, cmd, seed, log)
    if multimodal:
        log.info('-' * 20 + ' digit classifiers ' + '-' * 20)
        nets, out['classifiers'] = digit_classifiers(vaes, sets, source, args, cmd, log)
        log.info('-' * 20 + ' cross coherence ' + '-' * 20)
        out.update(coherences(model, nets, args, cmd, device, log))
    else:
        log.info('unimodal run: cross and joint coherence do not apply')
    return save_results(out, cmd.save_dir, 'analyse_ms', t0, log)


if __name__ == '__main__':
    run_script(main)
