"""The authors' CCA_emb.zip: the word vectors, SIF weights, first component and CCA projection behind
the paper's CUB coherence numbers, read instead of computed (analyse_cub.py --cca-emb DIR).

Files (the released README says where each one goes; here they may all lie in DIR, and the four
*.pt files may also lie in the run folder, where the README puts them):
  cub.emb                 pickled numpy array (V, 300): row i = vector of word i of the vocabulary
  cub.weights | cub.all   pickled numpy array (V,): SIF weights; cub.all may instead hold the word
                          counts that the released datasets.py pickles under that name (an
                          OrderedCounter): the weights are then computed from them, as the
                          released analyse_cub.py computes them from the text
  cub.pc                  pickled (300, 300) tensor u = v v^T
  images_mean.pt, emb_mean.pt, im_proj.pt, emb_proj.pt   torch tensors: the CCA means and projections
The pickles are read by restricted unpicklers (numpy arrays and torch tensors, or plain word
counts): a pickle that would run code is refused with a clear error.
"""
import collections
import os
import pickle

import numpy as np
import torch

from src.errors import UserError
from src.files import load_torch
from src.safe_pickle import load_array

PICKLES = {'word_vectors': ('cub.emb',), 'sif_weights': ('cub.weights', 'cub.all'), 'first_component': ('cub.pc',)}
PROJECTION = {'mean_x': 'images_mean.pt', 'mean_y': 'emb_mean.pt', 'wx': 'im_proj.pt', 'wy': 'emb_proj.pt'}


def _counts(d=()):
    return dict(d)


class _CountsUnpickler(pickle.Unpickler):
    """Word counts only: dicts built from (str, int) pairs, whatever counter class wrote them."""

    def find_class(self, module, name):
        if (module, name) == ('collections', 'OrderedDict'):
            return collections.OrderedDict
        if name in ('OrderedCounter', 'Counter'):
            return _counts
        raise pickle.UnpicklingError(f'{module}.{name} is not a word counter')


def _word_counts(path):
    """The word -> count dict pickled in `path`, or None if it is not one (nothing run either way)."""
    try:
        with open(path, 'rb') as f:
            obj = _CountsUnpickler(f).load()
    except Exception:
        return None
    ok = isinstance(obj, dict) and all(isinstance(w, str) and isinstance(c, int) for w, c in obj.items())
    return obj if ok else None


def _load_pickle(path, what):
    """A numpy array (float64) or, for cub.all, word counts (dict)."""
    try:
        return np.asarray(_f64(load_array(path, what)))
    except UserError:
        counts = _word_counts(path) if os.path.basename(path) == 'cub.all' else None
        if counts is None:
            raise
        return counts


def _f64(a):
    return a.double().numpy() if torch.is_tensor(a) else np.asarray(a, dtype=np.float64)


def load(folder, run_dir):
    """-> (found: name -> array | word counts, paths: name -> path) for the files present in `folder`
    (the *.pt files also in `run_dir`). The four CCA files come all together or not at all."""
    if not os.path.isdir(folder):
        raise UserError(f'--cca-emb {folder}: no such folder (give the folder with the content of CCA_emb.zip)')
    found, paths = {}, {}
    for name, files in PICKLES.items():
        for f in files:
            p = os.path.join(folder, f)
            if os.path.lexists(p):
                found[name], paths[name] = _load_pickle(p, f'{f} ({name.replace("_", " ")})'), p
                break
    proj = {k: next((p for p in (os.path.join(d, f) for d in (folder, run_dir)) if os.path.lexists(p)), None)
            for k, f in PROJECTION.items()}
    if any(proj.values()) and not all(proj.values()):
        missing = ', '.join(PROJECTION[k] for k, p in proj.items() if p is None)
        raise UserError(f'--cca-emb {folder}: the CCA files come together, and {missing} is missing '
                        f'(looked in {folder} and {run_dir})')
    if all(proj.values()):
        found['cca'] = {k: _f64(load_torch(p, f'CCA file {PROJECTION[k]}')) for k, p in proj.items()}
        paths['cca'] = sorted(set(proj.values()))
    if not found:
        raise UserError(f'--cca-emb {folder}: none of {", ".join(sum(PICKLES.values(), ()))}, '
                        f'{", ".join(PROJECTION.values())} is there')
    return found, paths


def check_shapes(found, V, dim=None):
    """Clear errors for files that do not fit this vocabulary (V words) or each other."""
    def bad(name, shape, want):
        raise UserError(f'--cca-emb: {name} has shape {tuple(shape)}, expected {want} '
                        f'(the vocabulary of these captions has {V:,} words)')
    vec = found.get('word_vectors')
    if vec is not None and (vec.ndim != 2 or len(vec) != V):
        bad('cub.emb', vec.shape, f'({V}, dim)')
    dim = vec.shape[1] if vec is not None else dim
    w = found.get('sif_weights')
    if isinstance(w, np.ndarray) and w.shape != (V,):
        bad('the SIF weights', w.shape, f'({V},)')
    u = found.get('first_component')
    if u is not None and u.shape != (dim, dim):
        bad('cub.pc', u.shape, f'({dim}, {dim})')
    cca = found.get('cca')
    if cca is not None and (cca['wy'].ndim != 2 or cca['wy'].shape[0] != dim or cca['mean_y'].shape != (dim,)
                            or cca['wx'].shape[0] != cca['mean_x'].shape[0]
                            or cca['wx'].shape[1] != cca['wy'].shape[1]):
        bad('the CCA files', cca['wy'].shape, f'emb_proj ({dim}, k), im_proj (features, k), means to match')
    return dim
