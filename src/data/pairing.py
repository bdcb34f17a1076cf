"""Pairing two labelled datasets into multimodal examples, as the released
bin/make-mnist-svhn-idx.py pairs MNIST and SVHN (docs/reproduction.md, "Data").

Per class c: take the first n = min(#A_c, #B_c, max_per_class) examples of the
class in each set, then `multiplier` times append a random permutation of the
n A-indices and, independently, of the n B-indices. The two index vectors are
aligned element-wise: pair i is (A[idx_a[i]], B[idx_b[i]]), and both have label c.
"""
import numpy as np


def pair_by_label(labels_a, labels_b, multiplier, seed, max_per_class=10000):
    """Return (idx_a, idx_b), two int64 arrays of equal length.

    labels_a, labels_b: 1-d integer arrays (for compound labels such as
    (number, colour), pass one integer code per item). The order of classes is
    sorted; the draw is deterministic given `seed`.
    """
    labels_a, labels_b = np.asarray(labels_a), np.asarray(labels_b)
    if multiplier < 1:
        raise ValueError(f"pair multiplier must be >= 1, got {multiplier}")
    rng = np.random.default_rng(seed)
    out_a, out_b = [], []
    for c in np.unique(labels_a):
        ia = np.flatnonzero(labels_a == c)
        ib = np.flatnonzero(labels_b == c)
        n = min(len(ia), len(ib), max_per_class)
        if n == 0:
            continue
        ia, ib = ia[:n], ib[:n]
        for _ in range(multiplier):
            out_a.append(ia[rng.permutation(n)])
            out_b.append(ib[rng.permutation(n)])
    if not out_a:
        raise ValueError("the two datasets share no label: nothing to pair")
    return np.concatenate(out_a).astype(np.int64), np.concatenate(out_b).astype(np.int64)
