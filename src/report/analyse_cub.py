"""CUB image-caption coherence of a trained cubIS / cubISft run (paper Table 4), as the released
src/report/analyse_cub.py computes it (docs/cub.md).

    python src/report/analyse_cub.py --save-dir RUN [--reuse-embeddings] [--cca-emb DIR]

Correlation in a CCA space between image features and sentence embeddings:
- sentence embeddings (src/report/sif.py): FastText (300-d, window 3, min count 3,
  10 epochs) on the raw training text, sentence by sentence; '<exc>', '<pad>', '<eos>'
  fixed at -1, 0, +1; SIF weights a / (a + p(w)), a = 1e-3 ('<pad>', '<eos>': 0);
  weighted sum up to the first '<eos>' over the number of tokens; minus the first
  principal component of the centred training embeddings;
- image features: the 2048-d ResNet-101 features (with --offline data: the stand-in
  network of src/data/bird_features.py, said in the outputs). cubISft works on them
  directly; for cubIS the 64x64 images (real and generated) go through the same network;
- CCA (src/report/cca.py; k = 40) fitted on the training pairs (each image's features
  for its 10 captions); score = mean cosine similarity of the two centred, projected views.
Four scores: ground truth (real test pairs), image -> caption (encode the test image, one
latent sample, decode a caption: arg-max tokens), caption -> image (encode the caption,
decode the image: decoder mean), each over the test pairs in shuffled batches of 256,
the last partial batch dropped, the mean of the batch means; and joint generation (1,000
joint-prior samples decoded into both). Each comes with a chance level (not in the
paper): the same items with the pairs shuffled.

--cca-emb DIR reads the authors' CCA_emb.zip content instead of computing
(src/report/cca_emb.py). Without it, what is computed is cached under
<data-dir>/cub[_offline]/cache/analyse_cub/ (--reuse-embeddings loads it). Variants:
--cca span / unit-variance. --untrained scores a freshly initialised model of the
run's configuration (a baseline). Writes <RUN>/analyse_cub[_untrained].json and .log.
"""
import hashlib
import json
import os
import time

import numpy as np
import torch

from src.cli import Parser
from src.data import captions as C
from src.data import cub, load_data
from src.data.cub_features import extractor, features
from src.data.cub_images import images_key
from src.data.cub_layout import CAPTIONS_PER_IMAGE, cache_dir, root, text_file
from src.errors import UserError
from src.files import load_torch, save_torch
from src.models import MODELS
from src.report import cca as CCA
from src.report import cca_emb, sif
from src.report.runs import add_run_flags, analysis_logger, device_from, load_run, run_script, save_results

CCA_METHODS = ('released', 'span', 'unit-variance')
VERSION = 2  # of the cached embedder and CCA


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('--save-dir', required=True,
                   help='run directory of a CUB image-caption model (cubIS, cubISft, with any --joint-posterior)')
    p.add_argument('--cca-emb', default='', metavar='DIR',
                   help="folder with the authors' CCA_emb.zip content (cub.emb, cub.weights or cub.all, cub.pc, "
                        "images_mean.pt, emb_mean.pt, im_proj.pt, emb_proj.pt; the *.pt also found in the run "
                        "folder): each file there is used instead of computing it")
    p.add_argument('--reuse-embeddings', action='store_true',
                   help='load the word vectors, SIF weights, component and CCA cached by an earlier analysis with '
                        'the same data and settings instead of computing them again (computed if there is none)')
    p.add_argument('--untrained', action='store_true',
                   help="score a freshly initialised model of the run's configuration instead of its weights")
    p.add_argument('--cca', choices=CCA_METHODS, default='released',
                   help="released: scipy.linalg.eig, unit-norm stacked eigenvectors; span: the same in the span of "
                        "each view's training data (leaves out the eigenvalue-1 directions without training "
                        "variance; k at most the smaller span); unit-variance: eigh, unit-variance directions, "
                        "relative ridge")
    p.add_argument('--cca-dim', type=int, default=40, help='CCA components k')
    p.add_argument('--joint-samples', type=int, default=1000, help='joint-prior samples for the joint score')
    p.add_argument('--batch-size', type=int, default=256, help='test pairs per batch (the last partial one dropped)')
    p.add_argument('--max-batches', type=int, default=0, help='score only the first N batches (0: all; quick checks)')
    p.add_argument('--fasttext-dim', type=int, default=300, help='FastText vector size')
    p.add_argument('--fasttext-window', type=int, default=3)
    p.add_argument('--fasttext-min-count', type=int, default=3)
    p.add_argument('--fasttext-epochs', type=int, default=10)
    p.add_argument('--fasttext-bucket', type=int, default=2000000,
                   help="hashed character n-gram rows (gensim's default; memory = bucket x dim x 4 bytes, 2.4 GB "
                        "at 300-d)")
    p.add_argument('--sif-a', type=float, default=1e-3, help='SIF weight parameter a')
    add_run_flags(p)
    a = p.parse_args(argv)
    for flag in ('joint_samples', 'cca_dim', 'fasttext_dim', 'fasttext_window', 'fasttext_min_count',
                 'fasttext_epochs', 'fasttext_bucket', 'batch_size'):
        if getattr(a, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be a positive integer, got {getattr(a, flag)}")
    if a.max_batches < 0:
        raise UserError(f'--max-batches must be >= 0 (0: all), got {a.max_batches}')
    if a.sif_a <= 0:
        raise UserError(f'--sif-a must be positive, got {a.sif_a}')
    if a.cca_dim > a.fasttext_dim:
        raise UserError(f'--cca-dim {a.cca_dim} exceeds the sentence embedding size --fasttext-dim {a.fasttext_dim}')
    return a


# ---------------------------------------------------------------- the metric's pieces

def settings(cmd, args, net, source):
    """Everything the word vectors, weights, component and CCA depend on (the cache key)."""
    return {'fasttext': {'vector_size': cmd.fasttext_dim, 'window': cmd.fasttext_window,
                         'min_count': cmd.fasttext_min_count, 'epochs': cmd.fasttext_epochs,
                         'bucket': cmd.fasttext_bucket, 'seed': 1, 'workers': 1,
                         'corpus': 'raw training text, sentence by sentence'},
            'sentence_splitter': C.sentence_splitter()[1], 'sif_a': cmd.sif_a,
            'cca': cmd.cca, 'cca_dim': cmd.cca_dim, 'cca_eps': 1e-12 if cmd.cca != 'unit-variance' else None,
            'cca_ridge': 1e-6 if cmd.cca == 'unit-variance' else None,
            'image_features': f'{net.tag}/{source}',
            'data': f'{cub.captions_key(args)}/{images_key(args, "train")}', 'version': VERSION}


def compute_word_vectors(cmd, i2w, sentences, log):
    t = time.time()
    model = sif.train_fasttext(sentences, cmd.fasttext_dim, cmd.fasttext_window, cmd.fasttext_min_count,
                               cmd.fasttext_epochs, cmd.fasttext_bucket)
    log.info(f'FastText ({cmd.fasttext_dim}-d, window {cmd.fasttext_window}, min count {cmd.fasttext_min_count}, '
             f'{cmd.fasttext_epochs} epochs) on the {len(sentences):,} sentences of the training text: '
             f'{time.time() - t:.1f} s')
    return sif.word_vectors(model, i2w)


def fit_cca(cmd, feats, image_of, emb):
    if cmd.cca == 'unit-variance':
        return CCA.fit_unit_variance(feats, emb, cmd.cca_dim, image_of)
    return CCA.fit_released(feats, emb, cmd.cca_dim, image_of, in_span=cmd.cca == 'span')


def compute_pieces(cmd, args, found, train_ids, train_feats, log):
    """The word vectors, SIF weights, component and CCA: those in `found` (loaded), the rest computed.
    Returns (pieces, provenance)."""
    w2i = cub.caption_data(args)[0]
    i2w = C.invert_vocab(w2i)
    sentences = None if 'word_vectors' in found and isinstance(found.get('sif_weights'), np.ndarray) \
        else C.raw_sentence_tokens(text_file(args, 'train'))
    how = {}
    p = dict(found)
    if 'word_vectors' not in p:
        p['word_vectors'], how['word_vectors'] = compute_word_vectors(cmd, i2w, sentences, log), 'computed'
    if isinstance(p.get('sif_weights'), dict):  # word counts (cub.all)
        p['sif_weights'], how['sif_weights'] = sif.sif_weights(p['sif_weights'], w2i, cmd.sif_a), \
            'computed from the word counts in cub.all'
    elif 'sif_weights' not in p:
        p['sif_weights'], how['sif_weights'] = sif.sif_weights(C.word_counts(sentences), w2i, cmd.sif_a), 'computed'
    if 'first_component' not in p:
        raw = sif.embed(train_ids, p['word_vectors'], p['sif_weights'])
        p['first_component'], how['first_component'] = sif.first_component(raw), 'computed'
    embedder = sif.Embedder(p['word_vectors'], p['sif_weights'], p['first_component'])
    if 'cca' in p:
        c = p['cca']
        p['cca'] = CCA.CCA(c['mean_x'], c['mean_y'], c['wx'], c['wy'], np.full(c['wx'].shape[1], np.nan))
    else:
        t = time.time()
        image_of = torch.arange(len(train_ids)) // CAPTIONS_PER_IMAGE
        p['cca'], how['cca'] = fit_cca(cmd, train_feats, image_of, embedder(train_ids)), 'computed'
        log.info(f'CCA ({cmd.cca}, k = {p["cca"].wx.shape[1]}) on the {len(train_ids):,} training pairs: '
                 f'{time.time() - t:.1f} s')
    return p, how


def metric(cmd, args, train_ids, train_feats, s, log):
    """(Embedder, CCA, provenance of each piece, cache path or None)."""
    if cmd.cca_emb:
        found, paths = cca_emb.load(cmd.cca_emb, cmd.save_dir)
        cca_emb.check_shapes(found, cub.vocab_size(args), cmd.fasttext_dim)
        if 'cca' in found and found['cca']['mean_x'].shape != (train_feats.shape[1],):
            raise UserError(f"--cca-emb: images_mean.pt is {found['cca']['mean_x'].shape[0]}-d, the image "
                            f'features {train_feats.shape[1]}-d')
        pieces, computed = compute_pieces(cmd, args, found, train_ids, train_feats, log)
        how = {k: f'loaded from {v}' if isinstance(v, str) else f'loaded from {", ".join(v)}'
               for k, v in paths.items()}
        how.update(computed)  # cub.all's word counts: loaded, then the weights computed from them
        return sif.Embedder(*[pieces[k] for k in cca_emb.PICKLES]), pieces['cca'], how, None
    key = hashlib.sha1(json.dumps(s, sort_keys=True).encode()).hexdigest()[:16]
    cache = os.path.join(cache_dir(args), 'analyse_cub', f'metric_{key}.pt')
    if cmd.reuse_embeddings and os.path.isfile(cache):
        state = load_torch(cache, 'cached CUB metric file')
        if state.get('settings') != s:
            raise UserError(f'{cache} holds other settings than these: delete it, or run without --reuse-embeddings')
        log.info(f'reusing the word vectors, SIF weights, component and CCA from {cache}')
        how = {k: f'reused from {cache}' for k in (*cca_emb.PICKLES, 'cca')}
    else:
        if cmd.reuse_embeddings:
            log.info(f'--reuse-embeddings: nothing cached for these data and settings ({cache}): computing them')
        pieces, how = compute_pieces(cmd, args, {}, train_ids, train_feats, log)
        state = {'settings': s, **{k: torch.from_numpy(pieces[k]) for k in cca_emb.PICKLES},
                 **{f'cca_{k}': torch.from_numpy(np.asarray(v)) for k, v in pieces['cca']._asdict().items()}}
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        save_torch(state, cache)
    embedder = sif.Embedder(*[state[k].numpy() for k in cca_emb.PICKLES])
    return embedder, CCA.CCA(*[state[f'cca_{k}'].numpy() for k in CCA.CCA._fields]), how, cache


# ---------------------------------------------------------------- the four scores

class Scorer:
    """Maps both modalities into the CCA space's inputs: image features and sentence embeddings."""

    def __init__(self, decodes_features, embedder, fit, net):
        self.decodes_features, self.embedder, self.fit, self.net = decodes_features, embedder, fit, net

    def captions(self, ids_or_logits):
        ids = ids_or_logits.argmax(-1) if ids_or_logits.is_floating_point() else ids_or_logits
        return self.embedder(ids.cpu())

    def images(self, x):
        """Generated images -> features: a feature model (cubISft) decodes features; images (cubIS) go through
        the feature network."""
        if self.decodes_features:
            return x.float().cpu()
        return torch.cat([self.net(c) for c in x.split(16 if self.net.device.type == 'cpu' else 128)])

    def score(self, feats, emb, batch_size=None):
        """The mean cosine similarity of the pairs (with batch_size: the mean of the batch means), and of the
        same items with the pairs shuffled: a chance level (what a common offset of the items alone gives)."""
        sims = CCA.cca_score(self.fit, feats, emb)[1]
        shuffled = CCA.cca_score(self.fit, feats, emb[np.random.default_rng(0).permutation(len(emb))])[1]

        def mean(s):
            return float(s.reshape(-1, batch_size).mean(1).mean() if batch_size else s.mean())
        return {'score': mean(sims), 'std': float(sims.std()), 'n': int(len(sims)), 'shuffled': mean(shuffled)}


def show(score):
    return f"{score['score']:.4f} (pairs shuffled: {score['shuffled']:.4f})"


def test_batches(n, batch_size, max_batches, seed):
    """Shuffled test pairs in batches of batch_size, the last partial batch dropped (as the released
    analysis, which shuffles its test loader); the first max_batches of them when non-zero."""
    if n < batch_size:
        raise UserError(f'the {n:,} test pairs do not fill one batch of --batch-size {batch_size}: use a smaller one')
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    batches = list(order[:n // batch_size * batch_size].split(batch_size))
    return batches[:max_batches] if max_batches else batches


@torch.no_grad()
def paired_scores(model, data, batches, feats, scorer):
    """Ground truth, image -> caption and caption -> image over the same batches of test pairs
    (one latent sample each). feats: the CCA features of the test images."""
    (i, img_vae), (c, cap_vae) = image_and_caption(model)
    dev = data.sources[0].device
    image_of = data.labels['image'].cpu()
    f_real, e_real, e_i2c, f_c2i = [], [], [], []
    for b in batches:
        x = data.gather(b.to(dev))
        x_img, x_cap = x[i], x[c]
        z_img = model.unimodal_posterior(i, x_img).rsample()  # the posterior of the model's joint rule
        z_cap = model.unimodal_posterior(c, x_cap).rsample()
        f_real.append(feats[image_of[b]])
        e_real.append(scorer.captions(x_cap))
        e_i2c.append(scorer.captions(cap_vae.decode(z_img).mean))
        f_c2i.append(scorer.images(img_vae.decode(z_cap).mean))
    f_real, e_real = torch.cat(f_real), np.concatenate(e_real)
    bs = len(batches[0])
    return {'ground_truth': scorer.score(f_real, e_real, bs),
            'image_to_caption': scorer.score(f_real, np.concatenate(e_i2c), bs),
            'caption_to_image': scorer.score(torch.cat(f_c2i), e_real, bs)}


@torch.no_grad()
def joint_score(model, n, scorer, batch_size):
    """n joint-prior samples (drawn at once) decoded into both modalities (decoder means, arg-max captions)."""
    zs = model.pz(*model.pz_params).rsample(torch.Size([n])).squeeze(1)  # prior batch shape (1, D) -> (n, D)
    (_, img_vae), (_, cap_vae) = image_and_caption(model)
    feats = [scorer.images(img_vae.decode(z).mean) for z in zs.split(batch_size)]
    embs = [scorer.captions(cap_vae.decode(z).mean) for z in zs.split(batch_size)]
    return scorer.score(torch.cat(feats), np.concatenate(embs))


# ---------------------------------------------------------------- main

def image_and_caption(model):
    """((index, VAE) of the image or feature modality, (index, VAE) of the caption modality)."""
    kinds = [v.modality for v in model.vaes]
    i, c = kinds.index('image' if 'image' in kinds else 'feature'), kinds.index('caption')
    return (i, model.vaes[i]), (c, model.vaes[c])


def load(cmd):
    """(flags, model, seed) of the run, checked; the untrained baseline when asked."""
    device = device_from(cmd.no_cuda, cmd.ieee_denormals, cmd.return_host_memory)
    args, model = load_run(cmd.save_dir, device, cmd.data_dir, cmd.offline)
    kinds = [v.modality for v in model.vaes]
    if sorted(kinds) not in (['caption', 'image'], ['caption', 'feature']) or not model.dataset.startswith('cub'):
        raise UserError(f'analyse_cub scores CUB image-caption coherence: a model of CUB images (or their features) '
                        f'and captions (cubIS, cubISft); {cmd.save_dir} is a {args.model!r} run')
    seed = args.seed if cmd.seed is None else cmd.seed
    torch.manual_seed(seed)
    if cmd.untrained:  # the same configuration, freshly initialised: what the scores are without training
        model = MODELS[args.model](args).to(device).eval()
    V = cub.vocab_size(args)
    if getattr(args, 'vocab_size', 0) and args.vocab_size != V:
        raise UserError(f'{cmd.save_dir} was trained with a vocabulary of {args.vocab_size:,} words, but the captions '
                        f'in {root(args)} give {V:,}: analyse it with the data it was trained on')
    return args, model, seed


def describe_features(args, net, source, log):
    log.info(f'image features for the CCA: {net.description}'
             f'{"; of the 64x64 images, as the model sees them" if source == "64" else ""}')
    if net.stand_in:
        log.info("NOTE: offline stand-in image features (src/data/bird_features.py), not the paper's ImageNet "
                 "ResNet-101 features: the scores are not comparable with the paper's")


def log_cca(fit, out, log):
    if np.isnan(fit.corrs).all():
        log.info(f'CCA projections loaded (k = {fit.wx.shape[1]}): their eigenvalues are not in the files')
        return
    n_bad = CCA.degenerate(fit.corrs)
    log.info('largest CCA eigenvalues (first 5): ' + ', '.join(f'{c:.3f}' for c in fit.corrs[:5]))
    out['cca_eigenvalues'] = [float(c) for c in fit.corrs]
    out['cca_degenerate_directions'] = n_bad
    if n_bad:
        log.info(f'WARNING: {n_bad} of the {len(fit.corrs)} CCA eigenvalues are 1 or more, or not finite: directions '
                 f'without training variance in one view (the text view always has one, the first component '
                 f'removed from every embedding, which projects every item to 0). More than that means that a '
                 f'view spans fewer dimensions than it has (--cca span leaves them out)')


def main(argv=None):
    cmd = parse_args(argv)
    t0 = time.time()
    name = 'analyse_cub_untrained' if cmd.untrained else 'analyse_cub'
    args, model, seed = load(cmd)  # bad input stops here, before anything is written
    log = analysis_logger(cmd.save_dir, name)
    device = next(model.parameters()).device
    log.info(f'run {cmd.save_dir}: model {args.model} on {device}'
             f'{" -- UNTRAINED (freshly initialised, seed %d): a baseline" % seed if cmd.untrained else ""}')
    test = load_data(model.dataset, args, 'test').to(device)
    log.info(f'data: {test.source}')  # offline data say so in their source
    _, train_ids, _ = cub.caption_data(args)
    net = extractor(args, device)
    feature_model = any(v.modality == 'feature' for v in model.vaes)
    source = 'original' if feature_model or args.offline else '64'  # offline images are 64x64
    train_feats, net_desc = features(args, 'train', source, net)
    test_feats = features(args, 'test', source, net)[0]
    describe_features(args, net, source, log)
    log.info(f'sentences of the training text: {C.sentence_splitter()[1]}')

    s = settings(cmd, args, net, source)
    embedder, fit, how, cache = metric(cmd, args, train_ids, train_feats, s, log)
    out = {'model': args.model, 'joint_posterior': args.joint_posterior, 'run': cmd.save_dir,
           'untrained_model': bool(cmd.untrained), 'seed': seed,
           'data_source': test.source, 'offline_data': bool(args.offline), 'image_features': net_desc,
           'stand_in_image_features': bool(net.stand_in),
           'image_features_of': 'the 64x64 images' if source == '64' else 'the original images',
           'settings': s, 'cca_emb': cmd.cca_emb or None, 'artefacts': how, 'cache': cache,
           'reused_embeddings': all(v.startswith('reused') for v in how.values()),
           'batch_size': cmd.batch_size, 'max_batches': cmd.max_batches, 'joint_samples': cmd.joint_samples}
    log.info('metric pieces: ' + '; '.join(f'{k.replace("_", " ")}: {v}' for k, v in how.items()))
    out['cca_dim_used'] = int(fit.wx.shape[1])
    log_cca(fit, out, log)
    scorer = Scorer(feature_model, embedder, fit, net)

    batches = test_batches(len(test), cmd.batch_size, cmd.max_batches, seed)
    scores = out['scores'] = paired_scores(model, test, batches, test_feats, scorer)
    where = f'{len(batches)} shuffled batches of {cmd.batch_size} of the {len(test):,} test pairs'
    log.info(f"ground truth (real test pairs; {where}): {show(scores['ground_truth'])}")
    log.info(f"image -> caption (encode the image, decode a caption): {show(scores['image_to_caption'])}")
    log.info(f"caption -> image (encode the caption, decode the image): {show(scores['caption_to_image'])}")
    scores['joint'] = joint_score(model, cmd.joint_samples, scorer, cmd.batch_size)
    log.info(f"joint generation ({cmd.joint_samples:,} prior samples): {show(scores['joint'])}")
    return save_results(out, cmd.save_dir, name, t0, log)


if __name__ == '__main__':
    run_script(main)
