"""cubIS and cubISft end to end on a tiny --offline bird set: one short epoch with
main.py (run directory, image-plus-caption figures, caption text files), then
analyse_cub.py on the runs (the four CCA coherence scores, the cached
embedder/CCA reused by a flag, the untrained baseline). The image features
here are the offline stand-in (src/data/bird_features.py), which the outputs
must say."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import main as main_module
from src.data import cub
from src.report import analyse_cub
from src.report import cca as CCA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ['--offline', '--epochs', '1', '--batch-size', '40', '--K', '2', '--obj', 'dreg', '--looser',
         '--latent-dim', '8', '--no-analytics', '--learn-prior']
TINY = ['--fasttext-dim', '16', '--fasttext-bucket', '2000', '--cca-dim', '6', '--joint-samples', '6',
        '--max-items', '6']


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory, monkeypatch_module):
    d = tmp_path_factory.mktemp('cubdata')
    # offline data never touch the ImageNet weights, whatever the machine has
    monkeypatch_module.setattr(torch.hub, 'get_dir', lambda: str(d / 'hub'))
    cub.make_offline_set(str(d), 8, 3)
    return str(d)


@pytest.fixture(scope='module')
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def train(model, data_dir, out):
    assert main_module.main(['--model', model, '--data-dir', data_dir, '--out-dir', out, *TRAIN]) == 0
    runs = glob.glob(os.path.join(out, model, '*'))
    assert len(runs) == 1
    return runs[0]


@pytest.fixture(scope='module')
def runs(data_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('runs'))
    return {m: train(m, data_dir, out) for m in ('cubIS', 'cubISft')}


def lines_of(path):
    with open(path) as f:
        return f.read().splitlines()


@pytest.mark.parametrize('model', ['cubIS', 'cubISft'])
def test_training_run_and_figures(runs, model):
    run = runs[model]
    saved = json.load(open(os.path.join(run, 'args.json')))
    assert saved['offline_data'] is True and 'generated bird set' in saved['data_source']
    if model == 'cubISft':  # stand-in features: said in the data source
        assert "offline stand-in features" in saved['data_source'] and "NOT the paper's" in saved['data_source']
    assert 'OFFLINE DATA' in open(os.path.join(run, 'run.log')).read()
    losses = json.load(open(os.path.join(run, 'losses.json')))
    assert len(losses['train']) == 1 and np.isfinite(losses['train'] + losses['test']).all()
    figs = os.listdir(os.path.join(run, 'figures'))
    assert {'recon_001.png', 'recon_001.txt', 'gen_001.png', 'gen_001.txt'} <= set(figs)
    recon = lines_of(os.path.join(run, 'figures', 'recon_001.txt'))
    names = ('cubI', 'cubS') if model == 'cubIS' else ('cubIft', 'cubSft')
    # the two panels with a caption decoder, 8 [DATA]/[RECON] pairs each
    assert [l for l in recon if l.startswith('==')] == [f'== {names[0]} -> {names[1]} ==',
                                                         f'== {names[1]} -> {names[1]} ==']
    data = [l for l in recon if l.startswith('[DATA]')]
    rec = [l for l in recon if l.startswith('[RECON]')]
    assert len(data) == len(rec) == 16
    assert all('<pad>' not in l and '<eos>' not in l for l in recon)
    # [DATA] lines are test captions (decoded, up to '<eos>'), the same 8 in both panels
    i2w = cub.vocab(argparse_ns(saved))
    test_ids = cub.caption_data(argparse_ns(saved))[2]
    from src.data.captions import decode
    captions = {decode(ids, i2w) for ids in test_ids}
    shown = [l.split('==> ', 1)[1] for l in data]
    assert set(shown) <= captions and shown[:8] == shown[8:]
    assert [l.split(' ', 1)[0] for l in recon if l.startswith('[')] == ['[DATA]', '[RECON]'] * 16
    gen = lines_of(os.path.join(run, 'figures', 'gen_001.txt'))
    assert len(gen) == 64 and all(l.startswith('[GEN]   ==> ') for l in gen)
    from PIL import Image
    w, h = Image.open(os.path.join(run, 'figures', 'recon_001.png')).size
    assert w > 1000 and h > 300


def argparse_ns(saved):
    import argparse
    return argparse.Namespace(**saved['flags'])


def analyse(run, *extra):
    return analyse_cub.main(['--save-dir', run, *TINY, *extra])


def test_analyse_cubIS(runs):
    out = analyse(runs['cubIS'])
    s = out['scores']
    assert set(s) == {'ground_truth', 'image_to_caption', 'caption_to_image', 'joint'}
    assert all(-1 <= v['score'] <= 1 and -1 <= v['shuffled'] <= 1 for v in s.values())
    assert s['ground_truth']['n'] == 30 and s['image_to_caption']['n'] == 6 and s['joint']['n'] == 6
    assert out['stand_in_image_features'] and 'stand-in' in out['image_features']
    assert out['offline_data'] and not out['reused_embeddings'] and not out['untrained_model']
    saved = json.load(open(os.path.join(runs['cubIS'], 'analyse_cub.json')))
    assert saved['scores'] == s
    log = open(os.path.join(runs['cubIS'], 'analyse_cub.log')).read()
    assert 'offline stand-in image features' in log and 'ground truth' in log and 'joint generation (6 prior samples)' in log


def test_analyse_cubISft_reuse_and_untrained(runs, data_dir):
    run = runs['cubISft']
    first = analyse(run)
    cache = first['cache']
    assert os.path.isfile(cache) and cache.startswith(os.path.join(data_dir, 'cub_offline', 'cache'))
    mtime = os.path.getmtime(cache)
    # the reused embedder and CCA give the same ground truth, and nothing is refitted
    again = analyse(run, '--reuse-embeddings')
    assert again['reused_embeddings'] and os.path.getmtime(cache) == mtime
    assert again['scores']['ground_truth'] == pytest.approx(first['scores']['ground_truth'], abs=1e-9)
    assert 'reusing the FastText/SIF embedder' in open(os.path.join(run, 'analyse_cub.log')).read()
    # other settings are another cache entry: not reused
    other = analyse(run, '--reuse-embeddings', '--sif-a', '0.01')
    assert not other['reused_embeddings'] and other['cache'] != cache
    # the untrained baseline: its own files; the ground truth does not depend on the model
    base = analyse(run, '--untrained')
    assert base['untrained_model'] and os.path.isfile(os.path.join(run, 'analyse_cub_untrained.json'))
    assert base['scores']['ground_truth'] == pytest.approx(first['scores']['ground_truth'], abs=1e-9)
    assert base['scores']['joint']['score'] != first['scores']['joint']['score']


def test_analyse_script_forms_and_errors(runs, tmp_path):
    """Runs as `python src/report/analyse_cub.py` and as a module; bad input is one clear error."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    bad = subprocess.run([sys.executable, 'src/report/analyse_cub.py', '--save-dir', str(tmp_path / 'nope')],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith('error: --save-dir') and 'Traceback' not in bad.stderr
    bad = subprocess.run([sys.executable, '-m', 'src.report.analyse_cub', '--save-dir', runs['cubIS'],
                          '--cca-dim', '50', '--fasttext-dim', '16'], cwd=ROOT, capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and '--cca-dim 50 exceeds' in bad.stderr


def test_cca_in_the_span_of_few_images_equals_full_cca():
    """fit_cca_repeated (fewer images than feature dimensions) = fit_cca on the repeated rows."""
    rng = np.random.default_rng(0)
    F = rng.normal(size=(30, 120))
    image_of = np.repeat(np.arange(30), 10)
    Y = F[image_of][:, :12] @ rng.normal(size=(12, 12)) * 0.3 + rng.normal(size=(300, 12))
    full = CCA.fit_cca(F[image_of], Y, k=6)
    small = analyse_cub.fit_cca_repeated(F, image_of, Y, 6)
    assert np.allclose(small.corrs, full.corrs, rtol=1e-5)
    Ft, Yt = rng.normal(size=(40, 120)), rng.normal(size=(40, 12))
    for a, b in zip(CCA.cca_project(small, Ft, Yt), CCA.cca_project(full, Ft, Yt)):
        assert np.allclose(a, b, atol=1e-4 * np.abs(b).max())
    assert CCA.cca_score(small, Ft, Yt)[0] == pytest.approx(CCA.cca_score(full, Ft, Yt)[0], abs=1e-6)
