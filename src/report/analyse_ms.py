"""MNIST-SVHN analysis of a trained run (SPEC section 6; paper Table 2).

    python src/report/analyse_ms.py --save-dir RUN

- latent accuracy: a linear classifier D -> 10 trained on reparameterised
  samples of each unimodal encoder (unpaired training images, a fresh sample
  per item and epoch), tested on one sample per unpaired test image;
- digit classifiers: one small CNN per modality, trained once on the unpaired
  training images and cached under <data-dir>/classifiers/ (real and offline
  data never share one); their own test accuracy is printed;
- cross coherence, both directions, on the run's paired test set: encode one
  modality (one sample), decode the other (decoder mean), classify, compare
  with the pair's digit;
- joint coherence: joint-prior samples decoded into both modalities; the
  percent where the two classifiers agree.
Unimodal mnist / svhn runs get the latent accuracy only.
Writes <RUN>/analyse_ms.json and <RUN>/analyse_ms.log.
"""
import argparse
import time

import torch

from src.data import load_data
from src.errors import UserError
from src.report import classifiers as C
from src.report.metrics import cross_coherence, joint_coherence, latent_accuracy, spread_subset
from src.report.runs import add_run_flags, analysis_logger, device_from, load_run, run_script, save_results

MODELS = ('mnist_svhn', 'mnist', 'svhn')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--save-dir', required=True, help='run directory written by main.py (mnist_svhn, mnist or svhn)')
    p.add_argument('--latent-epochs', type=int, default=30,
                   help='epochs of the linear latent classifiers over the unpaired training images (30 as in the '
                        'released analyse_ms.py, whose epochs ran over the paired loader, so each image was seen '
                        'pair-multiplier times more)')
    p.add_argument('--classifier-epochs', type=int, default=30,
                   help='epochs of the digit CNNs over the unpaired training images, trained once per value and '
                        'data source, then cached (30 as in the released analyse_ms.py; see --latent-epochs)')
    p.add_argument('--joint-samples', type=int, default=10000, help='prior samples for the joint coherence')
    p.add_argument('--batch-size', type=int, default=256, help='batch size of training and evaluation (released: 256)')
    p.add_argument('--max-items', type=int, default=0,
                   help='cross coherence on N evenly spaced paired test items (they span all classes; 0: all)')
    add_run_flags(p, "where the data and the cached classifiers are (default: the run's --data-dir)")
    a = p.parse_args(argv)
    for flag in ('latent_epochs', 'classifier_epochs', 'joint_samples', 'batch_size'):
        if getattr(a, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be a positive integer, got {getattr(a, flag)}")
    if a.max_items < 0:
        raise UserError(f'--max-items must be >= 0 (0: all), got {a.max_items}')
    return a


def all_items(data):
    return data.gather(torch.arange(len(data), device=data.sources[0].device)), data.labels['digit']


def main(argv=None):
    cmd = parse_args(argv)
    device = device_from(cmd.no_cuda)
    args, model = load_run(cmd.save_dir, device)
    if args.model not in MODELS:
        raise UserError(f'analyse_ms works on {", ".join(MODELS)} runs; {cmd.save_dir} is a {args.model!r} run '
                        f'(for CUB runs use the CCA analysis)')
    if cmd.data_dir:
        args.data_dir = cmd.data_dir
    log = analysis_logger(cmd.save_dir, 'analyse_ms')
    seed = args.seed if cmd.seed is None else cmd.seed
    torch.manual_seed(seed)
    t0 = time.time()
    vaes = list(model.vaes) if hasattr(model, 'vaes') else [model]
    names = [v.name for v in vaes]
    log.info(f'run {cmd.save_dir}: model {args.model} on {device}')
    out = {'model': args.model, 'offline_data': bool(args.offline), 'seed': seed, 'data_source': {}}

    # unpaired data of each modality: latent classifiers and digit CNNs
    data = {}
    for v in vaes:
        data[v.name] = {s: load_data(v.dataset, args, s).to(device) for s in ('train', 'test')}
        out['data_source'][v.name] = data[v.name]['train'].source
        log.info(f"{v.name} data: {data[v.name]['train'].source}"
                 f"{' (OFFLINE stand-in, not the paper data)' if args.offline else ''}; "
                 f"{len(data[v.name]['train']):,} train / {len(data[v.name]['test']):,} test images (unpaired)")

    log.info('-' * 20 + ' latent classification accuracy ' + '-' * 20)
    out['latent_accuracy'] = {}
    for v in vaes:
        (xtr, ytr), (xte, yte) = all_items(data[v.name]['train']), all_items(data[v.name]['test'])
        acc, _ = latent_accuracy(v, xtr, ytr, xte, yte, cmd.latent_epochs, cmd.batch_size, seed=seed)
        out['latent_accuracy'][v.name] = acc
        log.info(f'{v.name} encoder: linear classifier on z ~ q(z|{v.name}) ({cmd.latent_epochs} epochs on the '
                 f'unpaired train set): {acc:.2f}% on the {len(yte):,} unpaired test images')
    out['latent_accuracy_setup'] = {'epochs': cmd.latent_epochs, 'batch_size': cmd.batch_size,
                                    'train_set': 'unpaired train images', 'test_set': 'unpaired test images'}

    if len(vaes) > 1:
        log.info('-' * 20 + ' digit classifiers ' + '-' * 20)
        nets, out['classifiers'] = [], {}
        for v in vaes:
            net, info = C.load_or_train(v.name, data[v.name]['train'], data[v.name]['test'], args.data_dir,
                                        args.offline, cmd.classifier_epochs, cmd.batch_size, log=log)
            nets.append(net)
            out['classifiers'][v.name] = info
            log.info(f"{v.name} classifier ({'trained now' if info['trained_now'] else 'cached'}: {info['path']}): "
                     f"{info['test_accuracy']:.2f}% on the {info['n_test']:,} unpaired test images")

        log.info('-' * 20 + ' cross coherence ' + '-' * 20)
        paired = load_data(model.dataset, args, 'test').to(device)
        items = spread_subset(len(paired), cmd.max_items, device)
        n = len(items)
        batches = ((paired.gather(idx), paired.labels['digit'][idx]) for idx in items.split(cmd.batch_size))
        mat = cross_coherence(model, batches, nets)
        test_set = f'paired test set (pair multiplier {args.pair_multiplier}): {n:,} of {len(paired):,} pairs'
        out['cross_coherence'] = {f'{names[e]}->{names[d]}': mat[e][d]
                                  for e in range(len(names)) for d in range(len(names)) if e != d}
        out['reconstruction_coherence'] = {names[m]: mat[m][m] for m in range(len(names))}
        out['cross_coherence_test_set'] = test_set
        log.info(f'on the {test_set}')
        for k, v in out['cross_coherence'].items():
            src, dst = k.split('->')
            log.info(f'cross coherence {src} -> {dst} (encode {src}, decode {dst}, {dst} classifier): {v:.2f}%')
        for k, v in out['reconstruction_coherence'].items():
            log.info(f'(reconstruction coherence {k} -> {k}: {v:.2f}%)')

        log.info('-' * 20 + ' joint coherence ' + '-' * 20)
        out['joint_coherence'] = joint_coherence(model, nets, cmd.joint_samples, batch_size=1000)
        out['joint_coherence_samples'] = cmd.joint_samples
        log.info(f'joint coherence ({cmd.joint_samples:,} prior samples, classifiers agree): '
                 f'{out["joint_coherence"]:.2f}%')
    else:
        log.info('unimodal run: cross and joint coherence do not apply')

    return save_results(out, cmd.save_dir, 'analyse_ms', t0, log)


if __name__ == '__main__':
    run_script(main)
