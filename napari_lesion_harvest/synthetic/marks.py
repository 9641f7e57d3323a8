"""DeepLesion-like incomplete marks: which lesions of a volume a reporting radiologist measured.

In DeepLesion every sub-volume has at least one mark, and on the fully
re-annotated volumes the original marks cover about 45% of the lesions,
favouring the large and conspicuous ones (the ones a report mentions).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Default fraction of lesions that carry an original mark.
DEFAULT_MARK_FRACTION = 0.45


def _expected_marked(n: int, q: float) -> float:
    """E[max(1, Binomial(n, q))]."""
    return n * q + (1.0 - q) ** n  # the max(1, .) adds 1 exactly when the binomial is 0


def expected_mark_fraction(lesion_counts, probability: float) -> float:
    """Mean fraction of marked lesions that :func:`choose_marked` gives over these counts.

    Parameters
    ----------
    lesion_counts : array_like of int
        Lesions per volume (the distribution of counts; zeros are ignored).
    probability : float
        Per-lesion mark probability ``q`` given to :func:`choose_marked`.
    """
    counts = np.asarray(lesion_counts, dtype=np.int64)
    counts = counts[counts > 0]
    if counts.size == 0:
        return 0.0
    return float(sum(_expected_marked(int(n), probability) for n in counts) / counts.sum())


@lru_cache(maxsize=256)
def _solve_probability(fraction: float, counts: tuple[int, ...]) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if expected_mark_fraction(counts, mid) < fraction:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def mark_probability(fraction: float, lesion_counts) -> float:
    """The per-lesion probability ``q`` that marks ``fraction`` of the lesions on average.

    Volumes always keep one mark, so ``q`` is below ``fraction``: the
    volumes with several lesions make up for the forced marks. When even
    ``q = 0`` marks more than ``fraction`` (mostly one-lesion volumes), 0 is returned.

    Parameters
    ----------
    fraction : float
        Requested mean fraction of marked lesions, in (0, 1].
    lesion_counts : array_like of int
        The expected lesions-per-volume counts (e.g. every value of the
        configured range, for a uniform distribution).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"mark fraction must be in (0, 1], got {fraction}")
    counts = tuple(sorted(int(n) for n in np.asarray(lesion_counts).ravel() if n > 0))
    return _solve_probability(round(float(fraction), 9), counts)


def choose_marked(conspicuity, rng: np.random.Generator, *, probability: float) -> np.ndarray:
    """Pick the lesions of one volume that carry an original mark.

    The number marked is ``max(1, Binomial(n, probability))`` (every volume
    keeps a mark, as in DeepLesion; see :func:`mark_probability` for the
    ``probability`` that gives a requested mean fraction). Which lesions are
    marked is drawn without replacement with probability proportional to
    ``conspicuity ** 2``, so large, obvious lesions are marked first.

    Parameters
    ----------
    conspicuity : array_like, shape (n,)
        Positive weight per lesion (size times contrast).
    rng : numpy.random.Generator
    probability : float
        Per-lesion mark probability in [0, 1].

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"mark probability must be in [0, 1], got {probability}")
    weights = np.asarray(conspicuity, dtype=np.float64) ** 2
    n = weights.size
    marked = np.zeros(n, dtype=bool)
    if n == 0:
        return marked
    count = max(1, int(rng.binomial(n, probability)))
    chosen = rng.choice(n, size=count, replace=False, p=weights / weights.sum())
    marked[chosen] = True
    return marked
