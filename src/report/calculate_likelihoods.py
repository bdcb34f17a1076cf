"""Test-set log-likelihoods of a trained run (paper section 4, Tables 1 and 3), per data point.

    python src/report/calculate_likelihoods.py --save-dir RUN [--iwae-samples 1000]

What the released src/report/calculate_likelihoods.py computes, with K = 1000
importance samples per posterior component, averaged over every item of the
test set (multimodal runs: the paired test set, with the run's pair multiplier):
- multimodal runs: the joint log p(x_1..M) (m_iwae over all C*K samples of the
  joint posterior's C components, each modality's log-likelihood weighted by its
  training likelihood scaling); each modality's log p(x_d) from the same samples
  (unscaled); the M x M cross terms log p(x_d) with q(z|x_e) as proposal
  (unscaled). Each estimate's proposal is a posterior of the run's own joint rule
  (the released MMVAE's mixture of experts: its M experts; MVAE: the product of
  experts; MoPoE: the mixture of subset products), named in the JSON;
- unimodal runs: the IWAE estimate (likelihood scaling 1).
--max-items (a spaced subset) and --chunk-items are quick-check and memory
options; by default every test item is used.
Writes <RUN>/likelihoods.json and <RUN>/likelihoods.log.
"""
import time

import torch
from tqdm import tqdm

from src.cli import Parser
from src.data import load_data
from src.data.tensors import spread_subset
from src.errors import UserError
from src.models.joint import joint_rule
from src.report.metrics import chunk_items, iwae_terms, likelihood_terms
from src.report.runs import add_run_flags, analysis_logger, device_from, load_run, run_script, save_results


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('--save-dir', required=True, help='run directory written by main.py')
    p.add_argument('--iwae-samples', type=int, default=1000, help='importance samples K per modality')
    p.add_argument('--max-items', type=int, default=0,
                   help='evaluate N evenly spaced test items (they span all classes; 0: all)')
    p.add_argument('--chunk-items', type=int, default=0,
                   help='test items per forward pass (0: as many as a ~100 MB per tensor budget allows at this K)')
    add_run_flags(p)
    a = p.parse_args(argv)
    if a.iwae_samples < 1:
        raise UserError(f"--iwae-samples must be a positive integer, got {a.iwae_samples}")
    for flag in ('max_items', 'chunk_items'):
        if getattr(a, flag) < 0:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 0 (0: automatic), got {getattr(a, flag)}")
    return a


def main(argv=None):
    cmd = parse_args(argv)
    device = device_from(cmd.no_cuda, cmd.ieee_denormals, cmd.return_host_memory)
    args, model = load_run(cmd.save_dir, device, cmd.data_dir, cmd.offline)
    log = analysis_logger(cmd.save_dir, 'likelihoods')
    torch.manual_seed(args.seed if cmd.seed is None else cmd.seed)
    multimodal = bool(getattr(model, 'multimodal', False))
    K = cmd.iwae_samples

    data = load_data(model.dataset, args, 'test').to(device)
    items = spread_subset(len(data), cmd.max_items, device)
    n = len(items)
    S = cmd.chunk_items or chunk_items(model, K)
    test_set = ('test set' if not multimodal else 'paired test set (each caption with its image)'
                if args.model.startswith('cub') else f'paired test set (pair multiplier {args.pair_multiplier})')
    log.info(f'run {cmd.save_dir}: model {args.model} on {device}')
    log.info(f"data: {data.source}{' (OFFLINE stand-in data, not the paper datasets)' if args.offline else ''}")
    log.info(f'{test_set}: {n:,} of {len(data):,} items; K = {K}; {S} items per forward pass')

    t0 = time.time()
    names = model.modalities if multimodal else [model.name]
    M = len(names)
    joint, marginal, cross = 0.0, [0.0] * M, [[0.0] * M for _ in range(M)]
    with tqdm(total=n, desc=f'log-likelihood K={K}', unit='item', disable=None) as bar:
        for idx in items.split(S):
            x = data.gather(idx)
            if multimodal:
                t = likelihood_terms(model, x, K)
                joint += t['joint'].double().sum().item()
                for d in range(M):
                    marginal[d] += t['marginal'][d].double().sum().item()
                    for e in range(M):
                        cross[e][d] += t['cross'][e][d].double().sum().item()
            else:
                joint += iwae_terms(model, x, K).double().sum().item()
            bar.update(len(idx))

    diff = [f for f, bad in (('--iwae-samples', K != 1000), ('--max-items', n != len(data))) if bad]
    out = {'model': args.model, 'K': K, 'n_items': n, 'n_test_items': len(data), 'test_set': test_set,
           'data_source': data.source, 'offline_data': bool(args.offline),
           'seed': args.seed if cmd.seed is None else cmd.seed,
           'protocol': 'released' if not diff else f'shortened: {", ".join(diff)} differ from the released script'}
    if multimodal:
        scaling = {nm: vae.llik_scaling for nm, vae in zip(names, model.vaes, strict=True)}
        out['joint'] = joint / n
        out['joint_llik_scaling'] = scaling
        out['joint_posterior'] = args.joint_posterior
        out['estimator'] = estimators(joint_rule(args.joint_posterior), names, K,
                                      getattr(args, 'prior_expert', 'prior'))
        out['marginal'] = {nm: marginal[d] / n for d, nm in enumerate(names)}
        out['cross'] = {names[e]: {names[d]: cross[e][d] / n for d in range(M)} for e in range(M)}
        est = out['estimator']
        log.info(f'joint log p({", ".join(names)}) ({est["joint"]} as proposal, {K} samples per component; '
                 f'likelihood scaling {", ".join(f"{k} {v:.4g}" for k, v in scaling.items())}): {out["joint"]:.4f}')
        for nm in names:
            log.info(f'log p({nm}) (the same samples, unscaled): {out["marginal"][nm]:.4f}')
        for e in names:
            for d in names:
                log.info(f'log p({d}) with {est["cross"][e]} as proposal ({K} samples per component, '
                         f'unscaled): {out["cross"][e][d]:.4f}')
    else:
        out['log_likelihood'] = joint / n
        log.info(f'log p({names[0]}) (IWAE): {out["log_likelihood"]:.4f}')
    return save_results(out, cmd.save_dir, 'likelihoods', t0, log)


def estimators(rule, names, K, prior_expert='prior'):
    """What each estimate's proposal is, in words, for the JSON and the log. A rule's words name its prior
    expert p(z); with --prior-expert unit that expert is N(0, I)."""
    def proposal(given):
        parts = rule.describe(given, full=len(given) == len(names))
        if prior_expert == 'unit':
            parts = [p.replace('p(z) ', 'N(0, I) ') for p in parts]
        return parts[0] if len(parts) == 1 else f"1/{len(parts)} ({' + '.join(parts)})"
    return {'joint_posterior': rule.name, 'samples_per_component': K, 'joint': proposal(names),
            'cross': {e: proposal([e]) for e in names}}


if __name__ == '__main__':
    run_script(main)
