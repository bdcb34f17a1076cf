"""Pure functions of the number-sense analyses: arrays in, numbers out (numpy /
scipy / scikit-learn, no torch). The study's general statistics are in
src/report/stats.py.

Numbers are 1..9 throughout; class-mean arrays are indexed by number - 1.
Accuracies are fractions in [0, 1] everywhere in the number-sense code.
"""
import itertools

import numpy as np

NUMBERS = tuple(range(1, 10))
CHANCE = 1 / len(NUMBERS)
# The authors' hand-picked equations (a, b, c) = a + b - c (their src/analyse.py target_calcs),
# each decoded 64 times; five have a == c and so are not among the 408.
HAND_PICKED = ((1, 1, 1), (1, 9, 8), (1, 8, 4), (2, 7, 1), (2, 7, 2), (3, 3, 3), (3, 5, 2), (3, 6, 3), (5, 3, 5),
               (9, 7, 8))
# Magnitude variants: a transform of the class means or of their distances (their analyse_magnitude).
TRANSFORMS = ('log', 'exp', 'pow', 'logmin')
MAGNITUDE_VARIANTS = ('none',) + tuple(f'{t}_{on}' for t in TRANSFORMS for on in ('mean', 'dist'))


# ---------------------------------------------------------------- latent space

def class_means(z, numbers):
    """(9, D) mean latent of each number 1..9; raises if a number has no item."""
    z, numbers = np.asarray(z, dtype=np.float64), np.asarray(numbers)
    missing = [n for n in NUMBERS if not (numbers == n).any()]
    if missing:
        raise ValueError(f"no items of number(s) {missing}: cannot form class means")
    return np.stack([z[numbers == n].mean(0) for n in NUMBERS])


def silhouette(z, labels, sample_size=None, seed=0):
    """Mean silhouette score (Euclidean) of the points z clustered by `labels`.

    With `sample_size` below the number of points a fixed random subset is
    scored (the score is quadratic in the number of points); None: all points,
    as the authors (mean of silhouette_samples). None if fewer than 2 clusters.
    """
    from sklearn.metrics import silhouette_score
    z, labels = np.asarray(z), np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return None
    sample = sample_size if sample_size is not None and sample_size < len(z) else None
    return float(silhouette_score(z, labels, sample_size=sample, random_state=seed))


def transform(x, form, minval=None):
    """The authors' trans_non_linear: log, exp, pow (square) or logmin = log(x - min + 1e-16)."""
    with np.errstate(all='ignore'):  # log of a negative mean is NaN and exp may overflow, as in theirs
        if form == 'log':
            return np.log(x)
        if form == 'exp':
            return np.exp(x)
        if form == 'pow':
            return np.power(x, 2)
        if form == 'logmin':
            return np.log(x - minval + 1e-16)
    raise ValueError(f"transform must be one of {TRANSFORMS}, got {form!r}")


def distance_pairs(means, mean_transform=None, dist_transform=None):
    """(|i - j|, ||m_i - m_j||) over the 36 pairs i < j, optionally transformed as the authors do:
    the class means elementwise (logmin: minus the smallest entry of all means), or the 9 x 9
    distance matrix (logmin: minus its smallest entry, the zero diagonal)."""
    means = np.asarray(means, dtype=np.float64)
    if mean_transform:
        means = transform(means, mean_transform, means.min())
    with np.errstate(all='ignore'):  # inf / NaN means give non-finite distances: magnitude() says None
        dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    if dist_transform:
        dist = transform(dist, dist_transform, dist.min())
    pairs = list(itertools.combinations(range(len(means)), 2))
    return (np.array([abs(i - j) for i, j in pairs], dtype=np.float64),
            np.array([dist[i, j] for i, j in pairs]))


def magnitude(means, mean_transform=None, dist_transform=None):
    """Pearson r between |i - j| and the latent distance of class means i, j (36 pairs).

    r near 1: latent distances between numbers grow with their numerical
    distance (a 'mental number line'). The authors store |r|. Returns
    dict(r, abs_r, n_pairs); r None where undefined (NaN from a log of a
    negative mean, or constant distances).
    """
    diff, dist = distance_pairs(means, mean_transform, dist_transform)
    if not np.all(np.isfinite(dist)) or np.ptp(dist) == 0:
        return {'r': None, 'abs_r': None, 'n_pairs': len(diff)}
    r = float(np.corrcoef(diff, dist)[0, 1])
    return {'r': r, 'abs_r': abs(r), 'n_pairs': len(diff)}


def magnitude_variants(means):
    """magnitude() for the plain distances and the 8 transformed variants (MAGNITUDE_VARIANTS)."""
    out = {'none': magnitude(means)}
    for t in TRANSFORMS:
        out[f'{t}_mean'] = magnitude(means, mean_transform=t)
        out[f'{t}_dist'] = magnitude(means, dist_transform=t)
    return out


# ---------------------------------------------------------------- arithmetic

def equations():
    """All (a, b, c) in 1..9 with a != c and 1 <= a + b - c <= 9 (408 of them)."""
    return [(a, b, c) for a in NUMBERS for b in NUMBERS for c in NUMBERS
            if a != c and 1 <= a + b - c <= 9]


def arithmetic_latents(means, eqs):
    """(len(eqs), D): m_a + m_b - m_c for each equation."""
    means = np.asarray(means)
    idx = np.asarray(eqs) - 1
    return means[idx[:, 0]] + means[idx[:, 1]] - means[idx[:, 2]]


def arithmetic_accuracy(predicted, eqs):
    """Fraction of equations whose predicted number equals a + b - c, and the
    accuracy per result value r = a + b - c (dict r -> accuracy)."""
    predicted = np.asarray(predicted)
    target = np.array([a + b - c for a, b, c in eqs])
    correct = predicted == target
    by_result = {int(r): float(correct[target == r].mean()) for r in np.unique(target)}
    return float(correct.mean()), by_result


def nearest_class(means, z):
    """(number 1..9 of the class mean nearest to each row of z, its distance); the authors'
    check_distance for m_a + m_b - m_c."""
    means, z = np.asarray(means, dtype=np.float64), np.atleast_2d(np.asarray(z, dtype=np.float64))
    d = np.linalg.norm(z[:, None] - means[None], axis=-1)
    return d.argmin(1) + 1, d.min(1)


def confusion(true, predicted):
    """9 x 9 counts: rows the true number 1..9, columns the predicted one."""
    from sklearn.metrics import confusion_matrix
    return confusion_matrix(true, predicted, labels=list(NUMBERS)).tolist()
