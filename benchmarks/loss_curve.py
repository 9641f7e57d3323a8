"""A training run's loss curve read as a budget: its trailing mean and the first step at
which that mean reaches a target loss (``benchmarks/lpg_budget_bench.py``)."""

from __future__ import annotations

import numpy as np


def trailing_mean(losses, window: int) -> np.ndarray:
    """The mean of each ``window`` consecutive losses.

    Parameters
    ----------
    losses : array_like, shape (N,)
        The loss of each step, in step order.
    window : int
        Steps averaged (at least 1).

    Returns
    -------
    ndarray, shape (max(N - window + 1, 0),)
        Item ``i`` is the mean of steps ``i + 1 .. i + window`` (1-based), the curve
        after step ``i + window``.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 step, not {window}")
    losses = np.asarray(losses, dtype=np.float64)
    if len(losses) < window:
        return np.empty(0)
    sums = np.cumsum(np.concatenate([[0.0], losses]))
    return (sums[window:] - sums[:-window]) / window


def steps_to_target(losses, target: float, *, window: int) -> int | None:
    """The first step after which the mean loss of the last ``window`` steps is at most
    ``target``, or None when the run never gets there.

    Parameters
    ----------
    losses : array_like, shape (N,)
        The loss of each step, in step order.
    target : float
    window : int
        Steps averaged (:func:`trailing_mean`).

    Returns
    -------
    int or None
        Steps run (1-based), at least ``window``.
    """
    reached = np.flatnonzero(trailing_mean(losses, window) <= target)
    return int(reached[0]) + window if reached.size else None
