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


@lru_cache(maxsize=256)
def _per_lesion_probability(n: int, fraction: float) -> float:
    """The q with E[max(1, Binomial(n, q))] = fraction * n (clipped to [0, 1])."""
    target = fraction * n
    if _expected_marked(n, 0.0) >= target:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _expected_marked(n, mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def choose_marked(
    conspicuity,
    rng: np.random.Generator,
    *,
    fraction: float = DEFAULT_MARK_FRACTION,
) -> np.ndarray:
    """Pick the lesions of one volume that carry an original mark.

    The number marked is ``max(1, Binomial(n, q))`` with ``q`` chosen so that
    its mean is ``fraction * n`` (volumes with one lesion always have it
    marked, as in DeepLesion, and the others make up for it). Which lesions
    are marked is drawn without replacement with probability proportional to
    ``conspicuity ** 2``, so large, obvious lesions are marked first.

    Parameters
    ----------
    conspicuity : array_like, shape (n,)
        Positive weight per lesion (size times contrast).
    rng : numpy.random.Generator
    fraction : float
        Requested mean fraction of marked lesions, in (0, 1].

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"mark fraction must be in (0, 1], got {fraction}")
    weights = np.asarray(conspicuity, dtype=np.float64) ** 2
    n = weights.size
    marked = np.zeros(n, dtype=bool)
    if n == 0:
        return marked
    q = _per_lesion_probability(n, round(float(fraction), 9))
    count = max(1, int(rng.binomial(n, q)))
    chosen = rng.choice(n, size=count, replace=False, p=weights / weights.sum())
    marked[chosen] = True
    return marked


def expected_mark_fraction(lesion_counts, fraction: float = DEFAULT_MARK_FRACTION) -> float:
    """The mean fraction of marked lesions :func:`choose_marked` gives over these counts.

    Counts of 1 force a mark, so the result exceeds ``fraction`` where most
    volumes have one lesion; with DeepLesion-like counts (about 4) it equals it.
    """
    counts = np.asarray(lesion_counts, dtype=np.int64)
    counts = counts[counts > 0]
    expected = sum(
        _expected_marked(int(n), _per_lesion_probability(int(n), fraction)) for n in counts
    )
    return float(expected / counts.sum()) if counts.size else 0.0
