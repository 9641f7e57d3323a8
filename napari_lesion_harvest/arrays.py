"""Array joins shared by the engine's layers (no project imports, so anything may import it)."""

from __future__ import annotations

import numpy as np

#: Largest key range for which :func:`equal_key_pairs` uses a dense lookup table.
DENSE_KEY_LIMIT = 1 << 25


def equal_key_pairs(left, right) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs ``(i, j)`` with ``left[i] == right[j]`` (an equi-join on integer keys).

    Parameters
    ----------
    left : array_like of int, shape (N,)
        Non-negative integer keys, in any order.
    right : array_like of int, shape (M,)
        Non-negative integer keys, in any order.

    Returns
    -------
    left_index, right_index : ndarray of int64, shape (P,)
        One entry per matching pair, ordered by ``left_index``, then by
        ``right_index`` (among equal keys of ``right``).
    """
    left, right = np.asarray(left), np.asarray(right)
    if len(left) == 0 or len(right) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    order = np.argsort(right, kind="stable")
    sorted_right = right[order]
    key_range = int(max(left.max(), sorted_right[-1])) + 1
    if key_range <= DENSE_KEY_LIMIT:
        # Dense tables: where each key's run starts in sorted_right, and its length.
        run_length = np.bincount(right, minlength=key_range)
        run_start = np.cumsum(run_length) - run_length
        candidates = np.flatnonzero(run_length[left])
        lo = run_start[left[candidates]]
        counts = run_length[left[candidates]]
    else:
        lo = np.searchsorted(sorted_right, left, side="left")
        candidates = np.flatnonzero(sorted_right[np.minimum(lo, len(right) - 1)] == left)
        lo = lo[candidates]
        counts = np.searchsorted(sorted_right, left[candidates], side="right") - lo
    left_index = np.repeat(candidates, counts)
    run_start = np.repeat(np.cumsum(counts) - counts, counts)
    right_index = order[np.repeat(lo, counts) + np.arange(counts.sum()) - run_start]
    return left_index, right_index
