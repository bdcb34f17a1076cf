"""cubIS and cubISft end to end on a tiny --offline bird set: one short epoch with
main.py (run directory, image-plus-caption figures, caption text files), then
analyse_cub.py on the runs (the four CCA coherence scores, the cached metric
reused by a flag, the untrained baseline, a folder in the released CCA_emb.zip
formats, a malicious pickle refused). The image features here are the offline
stand-in (src/data/bird_features.py), which the outputs must say."""
import argparse
import glob
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import main as main_module
from src.data import captions as C
from src.data import cub
from src.errors import UserError
from src.report import analyse_cub

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ['--offline', '--epochs', '1', '--batch-size', '40', '--K', '2', '--obj', 'dreg', '--looser',
         '--latent-dim', '8', '--no-analytics', '--learn-prior']
# span: the released eigenproblem without its 2,000-odd directions that carry no variance on 8 training
# birds (the full 2,064-d eig takes minutes; tests/test_cca.py checks both solvers)
TINY = ['--fasttext-dim', '16', '--fasttext-bucket', '2000', '--cca-dim', '6', '--joint-samples', '6',
        '--batch-size', '10', '--cca', 'span']


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


@pytest.mark.slow
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
    assert [ln for ln in recon if ln.startswith('==')] == [f'== {names[0]} -> {names[1]} ==',
                                                         f'== {names[1]} -> {names[1]} ==']
    data = [ln for ln in recon if ln.startswith('[DATA]')]
    rec = [ln for ln in recon if ln.startswith('[RECON]')]
    assert len(data) == len(rec) == 16
    assert all('<pad>' not in ln and '<eos>' not in ln for ln in recon)
    # [DATA] lines are test captions (decoded, up to '<eos>'), the same 8 in both panels
    i2w = cub.vocab(argparse_ns(saved))
    test_ids = cub.caption_data(argparse_ns(saved))[2]
    from src.data.captions import decode
    captions = {decode(ids, i2w) for ids in test_ids}
    shown = [ln.split('==> ', 1)[1] for ln in data]
    assert set(shown) <= captions and shown[:8] == shown[8:]
    assert [ln.split(' ', 1)[0] for ln in recon if ln.startswith('[')] == ['[DATA]', '[RECON]'] * 16
    gen = lines_of(os.path.join(run, 'figures', 'gen_001.txt'))
    assert len(gen) == 64 and all(ln.startswith('[GEN]   ==> ') for ln in gen)
    from PIL import Image
    w, h = Image.open(os.path.join(run, 'figures', 'recon_001.png')).size
    assert w > 1000 and h > 300


def argparse_ns(saved):
    import argparse
    return argparse.Namespace(**saved['flags'])


def analyse(run, *extra):
    return analyse_cub.main(['--save-dir', run, *TINY, *extra])


@pytest.mark.slow
def test_analyse_cubIS(runs):
    out = analyse(runs['cubIS'])
    s = out['scores']
    assert set(s) == {'ground_truth', 'image_to_caption', 'caption_to_image', 'joint'}
    # one epoch of 80 items teaches the model nothing: what it generates scores at the chance level of the same
    # items (their pairs shuffled)
    for k in ('image_to_caption', 'caption_to_image', 'joint'):
        assert abs(s[k]['score'] - s[k]['shuffled']) < 0.02, (k, s[k])
    assert s['ground_truth']['n'] == s['image_to_caption']['n'] == 30 and s['joint']['n'] == 6  # 3 batches of 10
    assert out['stand_in_image_features'] and 'stand-in' in out['image_features']
    assert out['offline_data'] and not out['reused_embeddings'] and not out['untrained_model']
    assert out['artefacts'] == {k: 'computed' for k in ('word_vectors', 'sif_weights', 'first_component', 'cca')}
    assert out['settings']['cca'] == 'span' and out['settings']['sif_a'] == 1e-3
    assert out['settings']['sentence_splitter'] and out['cca_degenerate_directions'] == 0
    assert 1 <= out['cca_dim_used'] <= 6 and len(out['cca_eigenvalues']) == out['cca_dim_used']
    saved = json.load(open(os.path.join(runs['cubIS'], 'analyse_cub.json')))
    assert saved['scores'] == s
    log = open(os.path.join(runs['cubIS'], 'analyse_cub.log')).read()
    assert 'offline stand-in image features' in log and 'ground truth' in log
    assert 'joint generation (6 prior samples)' in log


@pytest.mark.slow
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
    assert 'reusing the word vectors, SIF weights' in open(os.path.join(run, 'analyse_cub.log')).read()
    # other settings are another cache entry: not reused
    other = analyse(run, '--reuse-embeddings', '--sif-a', '0.01')
    assert not other['reused_embeddings'] and other['cache'] != cache
    # the untrained baseline: its own files; the ground truth does not depend on the model
    base = analyse(run, '--untrained')
    assert base['untrained_model'] and os.path.isfile(os.path.join(run, 'analyse_cub_untrained.json'))
    assert base['scores']['ground_truth'] == pytest.approx(first['scores']['ground_truth'], abs=1e-9)
    assert base['scores']['joint']['score'] != first['scores']['joint']['score']


@pytest.mark.slow
@pytest.mark.parametrize('joint', ['poe', 'mopoe'])
def test_other_joint_posteriors(runs, data_dir, tmp_path, joint):
    """MVAE and MoPoE runs of cubISft train and get the four scores (the metric reused from the MMVAE
    run's analysis: the same ground truth, which does not depend on the model)."""
    first = analyse(runs['cubISft'])
    out = str(tmp_path / joint)
    assert main_module.main(['--model', 'cubISft', '--joint-posterior', joint, '--data-dir', data_dir, '--out-dir',
                             out, *TRAIN]) == 0
    (run,) = glob.glob(os.path.join(out, f'cubISft_{joint}', '*'))
    got = analyse(run, '--reuse-embeddings')
    assert got['joint_posterior'] == joint and got['reused_embeddings']
    assert got['scores']['ground_truth'] == pytest.approx(first['scores']['ground_truth'], abs=1e-9)
    assert {k: v['n'] for k, v in got['scores'].items()} == {k: v['n'] for k, v in first['scores'].items()}


@pytest.mark.slow
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


def released_vocab(path, min_occ=3):
    """The released CUBSentences vocabulary, rebuilt with nltk's own functions: the file's sentences
    (nltk's Punkt; no trained parameters here), word_tokenize on each, words seen more than 3 times in
    first-seen order after '<exc>', '<pad>', '<eos>'."""
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer
    split, words = PunktSentenceTokenizer().tokenize, NLTKWordTokenizer().tokenize
    counts = {}
    for sentence in split(open(path, encoding='utf-8').read()):
        for w in (t for s in split(sentence) for t in words(s)):
            counts[w] = counts.get(w, 0) + 1
    return ['<exc>', '<pad>', '<eos>'] + [w for w, c in counts.items() if c > min_occ]


def test_vocabulary_is_the_released_one(data_dir):
    """cub.emb rows follow the released vocabulary: ours must be the same words in the same order."""
    a = argparse_ns({'flags': {'data_dir': data_dir, 'offline': True}})
    assert cub.vocab(a) == released_vocab(os.path.join(data_dir, 'cub_offline', 'text_trainvalclasses.txt'))


class Malicious:
    def __reduce__(self):
        return (os.system, ('touch pwned_by_pickle',))


def write_released_folder(folder, run, state, counts=None):
    """The computed metric written in the formats of CCA_emb.zip: plain pickles of numpy arrays (cub.emb,
    cub.weights or the word counter cub.all) and of a torch tensor (cub.pc); torch.save in the old format
    for the CCA files, which go to the run folder as the released README says."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'cub.emb'), 'wb') as f:
        pickle.dump(state['word_vectors'].numpy().astype(np.float32), f)
    with open(os.path.join(folder, 'cub.all' if counts else 'cub.weights'), 'wb') as f:
        pickle.dump(counts or state['sif_weights'].numpy(), f)
    with open(os.path.join(folder, 'cub.pc'), 'wb') as f:
        pickle.dump(state['first_component'].float(), f)
    for name, key in (('images_mean', 'mean_x'), ('emb_mean', 'mean_y'), ('im_proj', 'wx'), ('emb_proj', 'wy')):
        torch.save(state[f'cca_{key}'].float(), os.path.join(run, f'{name}.pt'), _use_new_zipfile_serialization=False)


def ordered_counter(counts):
    """A word counter pickled as the released datasets.py pickles cub.all (its OrderedCounter class)."""
    import collections
    import types
    mod = types.ModuleType('datasets')

    class OrderedCounter(collections.Counter, collections.OrderedDict):
        def __reduce__(self):
            return self.__class__, (collections.OrderedDict(self),)
    OrderedCounter.__module__, OrderedCounter.__qualname__ = 'datasets', 'OrderedCounter'
    mod.OrderedCounter = OrderedCounter
    sys.modules['datasets'] = mod
    try:
        return pickle.dumps(OrderedCounter(counts))
    finally:
        del sys.modules['datasets']


@pytest.mark.slow
def test_cca_emb_folder_in_the_released_formats(runs, data_dir, tmp_path):
    run = str(tmp_path / 'run')
    shutil.copytree(runs['cubISft'], run)
    first = analyse(run)
    state = torch.load(first['cache'])
    folder = str(tmp_path / 'CCA_emb')
    write_released_folder(folder, run, state)
    loaded = analyse(run, '--cca-emb', folder)
    assert loaded['artefacts']['word_vectors'] == f"loaded from {os.path.join(folder, 'cub.emb')}"
    assert loaded['artefacts']['sif_weights'].endswith('cub.weights') and 'im_proj.pt' in loaded['artefacts']['cca']
    assert loaded['cache'] is None and loaded['cca_emb'] == folder
    # the same metric (float32 files): the same ground truth
    assert loaded['scores']['ground_truth']['score'] == pytest.approx(first['scores']['ground_truth']['score'],
                                                                     abs=1e-4)
    # cub.all as the released word counter: the weights are computed from it (here: our own counts)
    counts = C.word_counts(C.raw_sentence_tokens(os.path.join(data_dir, 'cub_offline', 'text_trainvalclasses.txt')))
    os.remove(os.path.join(folder, 'cub.weights'))
    with open(os.path.join(folder, 'cub.all'), 'wb') as f:
        f.write(ordered_counter(counts))
    again = analyse(run, '--cca-emb', folder)
    assert again['artefacts']['sif_weights'] == 'computed from the word counts in cub.all'
    assert again['scores']['ground_truth']['score'] == pytest.approx(loaded['scores']['ground_truth']['score'],
                                                                    abs=1e-4)
    # a pickle that would run code is refused, and nothing runs
    good = open(os.path.join(folder, 'cub.emb'), 'rb').read()
    for name in ('cub.emb', 'cub.all'):
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump(Malicious(), f)
        with pytest.raises(UserError, match=f'{name} .*was not read'):
            analyse(run, '--cca-emb', folder)
        with open(os.path.join(folder, 'cub.emb'), 'wb') as f:
            f.write(good)
    assert not os.path.exists('pwned_by_pickle') and not os.path.exists(os.path.join(ROOT, 'pwned_by_pickle'))


@pytest.mark.slow
def test_cca_emb_folder_errors(runs, tmp_path):
    run = str(tmp_path / 'run')
    shutil.copytree(runs['cubISft'], run)
    folder = str(tmp_path / 'CCA_emb')
    with pytest.raises(UserError, match='no such folder'):
        analyse(run, '--cca-emb', folder)
    os.makedirs(folder)
    with open(os.path.join(folder, 'cub.emb'), 'wb') as f:
        pickle.dump(np.zeros((5, 16), np.float32), f)   # not this vocabulary
    with pytest.raises(UserError, match=r'cub.emb has shape \(5, 16\)'):
        analyse(run, '--cca-emb', folder)
    os.remove(os.path.join(folder, 'cub.emb'))
    torch.save(torch.zeros(2048), os.path.join(run, 'images_mean.pt'))
    with pytest.raises(UserError, match='the CCA files come together'):
        analyse(run, '--cca-emb', folder)


@pytest.mark.slow
def test_released_run_folder(runs, data_dir, tmp_path):
    """A folder as the released code writes it (args.rar: a pickled Namespace of its own flags, without
    --data-dir or --offline; model.rar: the state dict) gives the same scores as the run it was made from."""
    run = runs['cubISft']
    with open(os.path.join(run, 'args.json')) as f:
        flags = json.load(f)['flags']
    released = tmp_path / 'released'
    released.mkdir()
    keep = ('model', 'obj', 'K', 'looser', 'llik_scaling', 'batch_size', 'epochs', 'latent_dim', 'num_hidden_layers',
            'learn_prior', 'seed')
    torch.save(argparse.Namespace(**{k: flags[k] for k in keep}, cuda=False), released / 'args.rar',
               _use_new_zipfile_serialization=False)
    torch.save(torch.load(os.path.join(run, 'model.pt')), released / 'model.rar')
    ours = analyse(run)
    theirs = analyse(str(released), '--data-dir', data_dir, '--offline')
    assert theirs['scores'] == ours['scores']
    assert os.path.isfile(released / 'analyse_cub.json') and not os.path.exists(released / 'args.json')
