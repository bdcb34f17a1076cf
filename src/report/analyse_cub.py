"""CUB image-caption coherence of a trained cubIS / cubISft run (SPEC section 6; paper Table 4).

    python src/report/analyse_cub.py --save-dir RUN [--reuse-embeddings]

Correlation in a CCA space between image features and sentence embeddings:
- sentence embeddings: FastText (300-d, window 3, min count 3, 10 epochs) on
  the training captions (the full decoded 32-token sequences, as released),
  smooth-inverse-frequency weights a / (a + p(w)), a = 1e-3, averaged over the
  tokens up to the first '<eos>', minus the projection on the first principal
  component of the training embeddings (src/report/cca.py);
- image features: the 2048-d ResNet-101 features (with --offline data: the
  stand-in network of src/data/bird_features.py, said in the outputs).
  cubISft works on them directly; for cubIS the 64x64 images (real and
  generated) are turned into features by the same network (ResNet-101:
  resized to 224), so real and generated images reach the CCA the same way;
- CCA (k = 40) fitted on the training pairs (each image's features repeated
  for its 10 captions); score = mean cosine similarity of the two views
  after centring with the training means and projecting.
Four scores: ground truth (real test pairs), image -> caption (encode the
test image, one latent sample, decode a caption: arg-max tokens),
caption -> image (encode the caption, decode the image: decoder mean), and
joint generation (1,000 joint-prior samples decoded into both). Each comes
with a chance level (not in the paper): the same items with the pairs
shuffled, which shows how much of a score is a common offset of the items in
the CCA space rather than their pairing.

The fitted embedder and CCA depend on the data and the settings only, so they
are cached under <data-dir>/cub[_offline]/cache/analyse_cub/; --reuse-embeddings
loads them from there instead of training FastText and fitting the CCA again.
--untrained scores a freshly initialised model of the run's configuration
(a baseline). Writes <RUN>/analyse_cub[_untrained].json and .log.
"""
import argparse
import hashlib
import json
import os
import time

import numpy as np
import torch

from src.data import cub, load_data
from src.data.captions import ids_to_tokens
from src.errors import UserError
from src.files import load_torch, save_torch
from src.models import MODELS
from src.report import cca as CCA
from src.report.runs import add_run_flags, analysis_logger, device_from, load_run, run_script, save_results

RUN_MODELS = ('cubIS', 'cubISft')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--save-dir', required=True, help='run directory written by main.py (cubIS or cubISft)')
    p.add_argument('--reuse-embeddings', action='store_true',
                   help='load the FastText/SIF embedder and the CCA cached by an earlier analysis with the same '
                        'data and settings instead of computing them again (computed if there is none)')
    p.add_argument('--untrained', action='store_true',
                   help="score a freshly initialised model of the run's configuration instead of its weights")
    p.add_argument('--joint-samples', type=int, default=1000, help='joint-prior samples for the joint score')
    p.add_argument('--max-items', type=int, default=0,
                   help='cross directions on N test pairs evenly spread over the test set (0: all)')
    p.add_argument('--cca-dim', type=int, default=40, help='CCA components k')
    p.add_argument('--fasttext-dim', type=int, default=300, help='FastText vector size')
    p.add_argument('--fasttext-window', type=int, default=3)
    p.add_argument('--fasttext-min-count', type=int, default=3)
    p.add_argument('--fasttext-epochs', type=int, default=10)
    p.add_argument('--fasttext-bucket', type=int, default=2000000,
                   help="hashed character n-gram rows (gensim's default; memory = bucket x dim x 4 bytes, 2.4 GB "
                        "at 300-d)")
    p.add_argument('--sif-a', type=float, default=1e-3, help='SIF weight parameter a')
    p.add_argument('--batch-size', type=int, default=256, help='items per forward pass')
    add_run_flags(p)
    a = p.parse_args(argv)
    for flag in ('joint_samples', 'cca_dim', 'fasttext_dim', 'fasttext_window', 'fasttext_min_count',
                 'fasttext_epochs', 'fasttext_bucket', 'batch_size'):
        if getattr(a, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be a positive integer, got {getattr(a, flag)}")
    if a.max_items < 0:
        raise UserError(f'--max-items must be >= 0 (0: all), got {a.max_items}')
    if a.sif_a <= 0:
        raise UserError(f'--sif-a must be positive, got {a.sif_a}')
    if a.cca_dim > a.fasttext_dim:
        raise UserError(f'--cca-dim {a.cca_dim} exceeds the sentence embedding size --fasttext-dim {a.fasttext_dim}')
    return a


# ---------------------------------------------------------------- embedder and CCA (cached)

def settings(cmd, feature_tag, feature_source, caption_key):
    """Everything the embedder and the CCA depend on (the cache key)."""
    return {'fasttext': {'vector_size': cmd.fasttext_dim, 'window': cmd.fasttext_window,
                         'min_count': cmd.fasttext_min_count, 'epochs': cmd.fasttext_epochs,
                         'bucket': cmd.fasttext_bucket, 'seed': 1, 'corpus': 'training captions, 32 tokens'},
            'sif_a': cmd.sif_a, 'cca_dim': cmd.cca_dim, 'image_features': f'{feature_tag}/{feature_source}',
            'captions': caption_key, 'version': 1}


def fit_embedder_and_cca(train_ids, i2w, train_feats, image_of, s):
    """FastText + SIF + first PC on the training captions; CCA on the training pairs.

    Returns a dict of tensors/lists that rebuilds both (see `rebuild`).
    """
    tokens = ids_to_tokens(train_ids, i2w)
    ft = s['fasttext']
    emb = CCA.SentenceEmbedder.fit(tokens, a=s['sif_a'], vector_size=ft['vector_size'], window=ft['window'],
                                   min_count=ft['min_count'], epochs=ft['epochs'], bucket=ft['bucket'],
                                   seed=ft['seed'])
    vectors = np.stack([emb.model.wv[w] for w in i2w]).astype(np.float32)  # every token we embed is in i2w
    emb = CCA.SentenceEmbedder(dict(zip(i2w, vectors)), emb.weights, emb.pc)
    fit = fit_cca_repeated(train_feats.numpy(), image_of.numpy(), emb(tokens), s['cca_dim'])
    return {'settings': s, 'i2w': list(i2w), 'vectors': torch.from_numpy(vectors),
            'sif_words': list(emb.weights), 'sif_values': torch.tensor(list(emb.weights.values()), dtype=torch.float64),
            'pc': torch.from_numpy(emb.pc), **{f'cca_{k}': torch.from_numpy(np.asarray(v))
                                               for k, v in fit._asdict().items()}}


def fit_cca_repeated(F, image_of, Y, k, reg=1e-6):
    """fit_cca(F[image_of], Y, k): the CCA of image features F (n_images, dx), each
    paired with several captions (rows of Y), solved in the span of the centred
    features when there are fewer images than feature dimensions.

    Exact: the optimal wx lies in the row space of the centred X (so do the
    columns of X'Y, and a component outside only adds ridge), so with Q an orthonormal
    basis of that span, the CCA of X Q gives wx = Q wx_r. The relative ridge is
    rescaled so that the absolute ridge is the same as in the full problem.
    Turns a (2048 + dy)-sized eigenproblem into an (n_images + dy)-sized one.
    """
    dx = F.shape[1]
    counts = np.bincount(image_of, minlength=len(F))
    mean = (counts @ F.astype(np.float64)) / counts.sum()  # the mean of the repeated rows
    if len(F) >= dx:
        return CCA.fit_cca(F[image_of], Y, k=k, reg=reg)
    _, sv, vt = np.linalg.svd(F.astype(np.float64) - mean, full_matrices=False)
    Q = vt[sv > sv[0] * 1e-10].T  # (dx, r) orthonormal
    if Q.shape[1] < k:
        raise UserError(f'the CCA needs k = {k} components but the {len(F)} training images span only '
                        f'{Q.shape[1]} feature dimensions: use a smaller --cca-dim or more training images')
    fit = CCA.fit_cca(F[image_of] @ Q, Y, k=k, reg=reg * Q.shape[1] / dx)
    wx = Q @ fit.wx
    sign = np.sign(wx[np.abs(wx).argmax(0), np.arange(k)])  # fit_cca's sign convention, on the full wx
    return CCA.CCA(mean, fit.mean_y, wx * sign, fit.wy * sign, fit.corrs)


def rebuild(state):
    """(SentenceEmbedder, CCA) from `fit_embedder_and_cca`'s dict."""
    vectors = state['vectors'].numpy()
    embedder = CCA.SentenceEmbedder(dict(zip(state['i2w'], vectors)),
                                    dict(zip(state['sif_words'], state['sif_values'].tolist())), state['pc'].numpy())
    fit = CCA.CCA(**{k: state[f'cca_{k}'].numpy() for k in CCA.CCA._fields})
    return embedder, fit


# ---------------------------------------------------------------- the four scores

class Scorer:
    """Maps both modalities into the CCA space's inputs: image features and sentence embeddings."""

    def __init__(self, model_name, embedder, fit, i2w, net):
        self.model_name, self.embedder, self.fit, self.i2w, self.net = model_name, embedder, fit, i2w, net

    def captions(self, ids_or_logits):
        ids = ids_or_logits.argmax(-1) if ids_or_logits.is_floating_point() else ids_or_logits
        return self.embedder(ids_to_tokens(ids.cpu(), self.i2w))

    def images(self, x):
        """Generated images -> features: cubISft decodes features; cubIS images go through the feature network."""
        if self.model_name == 'cubISft':
            return x.float().cpu()
        return torch.cat([self.net(c) for c in x.split(16 if self.net.device.type == 'cpu' else 128)])

    def score(self, feats, emb):
        """The mean cosine similarity of the pairs, and of the same items with the pairs shuffled:
        a chance level (what a common offset of all the items in the CCA space alone gives)."""
        mean, sims = CCA.cca_score(self.fit, feats, emb)
        shuffled, _ = CCA.cca_score(self.fit, feats, emb[np.random.default_rng(0).permutation(len(emb))])
        return {'score': mean, 'std': float(sims.std()), 'n': int(len(sims)), 'shuffled': shuffled}


def show(score):
    return f"{score['score']:.4f} (pairs shuffled: {score['shuffled']:.4f})"


def spread(n, m):
    """m indices evenly spread over range(n) (all of them when m is 0 or >= n)."""
    if not m or m >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, m).round().long()


@torch.no_grad()
def cross_scores(model, data, idx, feats, scorer, batch_size):
    """image -> caption and caption -> image over the test pairs idx (one latent sample each).

    feats: the CCA features of the test images (the input side of image -> caption)."""
    img_vae, cap_vae = model.vaes
    dev = data.sources[0].device
    image_of = data.labels['image'].cpu()
    i2c_f, i2c_e, c2i_f, c2i_e = [], [], [], []
    for b in idx.split(batch_size):
        x_img, x_cap = data.gather(b.to(dev))
        z_img = img_vae.qz_x(*img_vae.enc(x_img)).rsample()
        z_cap = cap_vae.qz_x(*cap_vae.enc(x_cap)).rsample()
        i2c_f.append(feats[image_of[b]])
        i2c_e.append(scorer.captions(cap_vae.decode(z_img).mean))
        c2i_f.append(scorer.images(img_vae.decode(z_cap).mean))
        c2i_e.append(scorer.captions(x_cap))
    return (scorer.score(torch.cat(i2c_f), np.concatenate(i2c_e)),
            scorer.score(torch.cat(c2i_f), np.concatenate(c2i_e)))


@torch.no_grad()
def joint_score(model, n, scorer, batch_size):
    """n joint-prior samples decoded into both modalities (decoder means)."""
    pz = model.pz(*model.pz_params)
    img_vae, cap_vae = model.vaes
    feats, embs = [], []
    for b in torch.arange(n).split(batch_size):
        zs = pz.rsample(torch.Size([len(b)])).squeeze(1)  # prior batch shape (1, D) -> (b, D)
        feats.append(scorer.images(img_vae.decode(zs).mean))
        embs.append(scorer.captions(cap_vae.decode(zs).mean))
    return scorer.score(torch.cat(feats), np.concatenate(embs))


# ---------------------------------------------------------------- main

def main(argv=None):
    cmd = parse_args(argv)
    device = device_from(cmd.no_cuda)
    args, model = load_run(cmd.save_dir, device, cmd.data_dir)
    if args.model not in RUN_MODELS:
        raise UserError(f'analyse_cub scores image-caption coherence of {" or ".join(RUN_MODELS)} runs; '
                        f'{cmd.save_dir} is a {args.model!r} run')
    name = 'analyse_cub_untrained' if cmd.untrained else 'analyse_cub'
    log = analysis_logger(cmd.save_dir, name)
    seed = args.seed if cmd.seed is None else cmd.seed
    torch.manual_seed(seed)
    if cmd.untrained:  # the same configuration, freshly initialised: what the scores are without training
        model = MODELS[args.model](args).to(device).eval()
    t0 = time.time()
    log.info(f'run {cmd.save_dir}: model {args.model} on {device}'
             f'{" -- UNTRAINED (freshly initialised, seed %d): a baseline" % seed if cmd.untrained else ""}')

    test = load_data(model.dataset, args, 'test').to(device)
    w2i, train_ids, _ = cub.caption_data(args)
    i2w = cub.vocab(args)
    net = cub.extractor(args, device)
    source = 'original' if args.model == 'cubISft' else '64'
    train_feats, net_desc = cub.features(args, 'train', source, net)
    test_feats, _ = cub.features(args, 'test', source, net)
    log.info(f'data: {test.source}')  # offline data say so in their source
    log.info(f'image features for the CCA: {net_desc}'
             f'{"; of the 64x64 images, as the model sees them" if source == "64" and not args.offline else ""}')
    if net.stand_in:
        log.info("NOTE: offline stand-in image features (src/data/bird_features.py), not the paper's ImageNet "
                 "ResNet-101 features: the scores are not comparable with the paper's")

    s = settings(cmd, net.tag, source, f'{cub.captions_key(args)}/{cub.images_key(args, "train")}')
    key = hashlib.sha1(json.dumps(s, sort_keys=True).encode()).hexdigest()[:16]
    cache = os.path.join(cub.cache_dir(args), 'analyse_cub', f'embedder_cca_{key}.pt')
    reused = False
    if cmd.reuse_embeddings and os.path.isfile(cache):
        state = load_torch(cache, 'cached embedder and CCA file')
        if state.get('settings') != s:
            raise UserError(f'{cache} holds other settings than these: delete it, or run without --reuse-embeddings')
        reused = True
        log.info(f'reusing the FastText/SIF embedder and the CCA from {cache}')
    else:
        if cmd.reuse_embeddings:
            log.info(f'--reuse-embeddings: nothing cached for these data and settings ({cache}): computing them')
        t1 = time.time()
        state = fit_embedder_and_cca(train_ids, i2w, train_feats, torch.arange(len(train_ids)) // 10, s)
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        save_torch(state, cache)
        log.info(f'FastText ({cmd.fasttext_dim}-d, window {cmd.fasttext_window}, min count {cmd.fasttext_min_count}, '
                 f'{cmd.fasttext_epochs} epochs) + SIF (a = {cmd.sif_a:g}) + first-PC removal on the '
                 f'{len(train_ids):,} training captions, CCA (k = {cmd.cca_dim}) on the training pairs: '
                 f'{time.time() - t1:.1f} s -> {cache}')
    embedder, fit = rebuild(state)
    log.info('training canonical correlations (first 5): ' + ', '.join(f'{c:.3f}' for c in fit.corrs[:5]))
    scorer = Scorer(args.model, embedder, fit, i2w, net)

    out = {'model': args.model, 'run': cmd.save_dir, 'untrained_model': bool(cmd.untrained), 'seed': seed,
           'data_source': test.source, 'offline_data': bool(args.offline),
           'image_features': net_desc, 'stand_in_image_features': bool(net.stand_in),
           'image_features_of': 'the 64x64 images' if source == '64' else 'the original images',
           'settings': s, 'reused_embeddings': reused, 'cache': cache, 'scores': {}}
    scores = out['scores']
    image_of = test.labels['image'].cpu()
    test_caps = test.sources[1][test.index[1]].cpu() if test.index is not None else test.sources[1].cpu()
    scores['ground_truth'] = scorer.score(test_feats[image_of], scorer.captions(test_caps))
    log.info(f"ground truth (the {scores['ground_truth']['n']:,} real test pairs): {show(scores['ground_truth'])}")

    idx = spread(len(test), cmd.max_items)
    scores['image_to_caption'], scores['caption_to_image'] = cross_scores(model, test, idx, test_feats, scorer,
                                                                            cmd.batch_size)
    where = f'{len(idx):,} of the {len(test):,} test pairs'
    log.info(f"image -> caption (encode the image, decode a caption; {where}): {show(scores['image_to_caption'])}")
    log.info(f"caption -> image (encode the caption, decode the image; {where}): {show(scores['caption_to_image'])}")
    scores['joint'] = joint_score(model, cmd.joint_samples, scorer, cmd.batch_size)
    log.info(f"joint generation ({cmd.joint_samples:,} prior samples): {show(scores['joint'])}")

    return save_results(out, cmd.save_dir, name, t0, log)


if __name__ == '__main__':
    run_script(main)
