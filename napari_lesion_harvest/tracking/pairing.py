"""Which boxes to compare, and which compared pairs to keep: candidate pairs and assignment.

:func:`overlap_candidates` lists, without computing any IoU, the pairs of
boxes of the same group (volume, or volume and slice) whose IoU could reach
a threshold; :func:`assign_pairs` picks a maximum-weight one-to-one subset of
the pairs that did. The tracker and the gap fusion of
:mod:`~napari_lesion_harvest.tracking.stacking` use both.
"""

from __future__ import annotations

import numpy as np

from napari_lesion_harvest.arrays import equal_key_pairs

#: Relative widening of the search windows, far above the rounding error of an IoU.
_WINDOW_SLACK = 1e-6


def _window_pairs(query_keys, query_radius, sorted_keys, order) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(q, s)`` with ``|sorted key of s - query_keys[q]| <= query_radius[q]``.

    ``sorted_keys = keys[order]`` ascending; ``s`` indexes the unsorted keys.
    """
    lo = np.searchsorted(sorted_keys, query_keys - query_radius, side="left")
    counts = np.searchsorted(sorted_keys, query_keys + query_radius, side="right") - lo
    query = np.repeat(np.arange(len(query_keys)), counts)
    offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return query, order[np.repeat(lo, counts) + offset]


def _same_group_pairs(group_a, group_b) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of equal group, ordered by the second index then the first."""
    index_a, index_b = equal_key_pairs(group_a, group_b)
    order = np.lexsort((index_a, index_b))
    return index_a[order], index_b[order]


def overlap_candidates(
    group_a, boxes_a, group_b, boxes_b, *, min_iou: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of boxes of the same group that could have IoU ``>= min_iou``.

    For ``min_iou > 0`` far-apart pairs are left out before any IoU is
    computed. The IoU of two boxes is at most their overlap along x divided
    by the larger width, and that overlap is at most
    ``(w_a + w_b) / 2 - |dx|`` (``dx``: distance of the box centres along x),
    so IoU ``>= t`` needs ``|dx| <= (1 - t) * max(w_a, w_b)``: one centre
    lies within ``(1 - t)`` times its own width of the other. Both one-sided
    windows are range searches in the centres sorted by (group, x). No pair
    that reaches ``min_iou`` (as :func:`~napari_lesion_harvest.geometry.iou_2d`
    computes it, continuous widths) is dropped; boxes with a non-finite
    coordinate or no positive width have IoU 0 and get no pair. For
    ``min_iou <= 0`` every pair of the same group is returned.

    Parameters
    ----------
    group_a : array_like of int, shape (N,)
        Non-negative group key of each box of the first set.
    boxes_a : array_like, shape (N, 4)
        ``xyxy`` boxes of the first set.
    group_b : array_like of int, shape (M,)
        Non-negative group key of each box of the second set.
    boxes_b : array_like, shape (M, 4)
        ``xyxy`` boxes of the second set.
    min_iou : float
        The IoU a pair must be able to reach.

    Returns
    -------
    index_a, index_b : ndarray of int64, shape (P,)
        Candidate pairs ``(boxes_a[index_a[k]], boxes_b[index_b[k]])``, each
        once, ordered by ``index_b`` then ``index_a``. A superset of the pairs
        of equal group with IoU ``>= min_iou``; check the IoU on them.
    """
    group_a, group_b = np.asarray(group_a, np.int64), np.asarray(group_b, np.int64)
    boxes_a, boxes_b = np.asarray(boxes_a, np.float64), np.asarray(boxes_b, np.float64)
    if min_iou <= 0:
        return _same_group_pairs(group_a, group_b)
    with np.errstate(invalid="ignore", over="ignore"):
        width_a, width_b = boxes_a[:, 2] - boxes_a[:, 0], boxes_b[:, 2] - boxes_b[:, 0]
        centre_a = (boxes_a[:, 0] + boxes_a[:, 2]) / 2
        centre_b = (boxes_b[:, 0] + boxes_b[:, 2]) / 2
        rows_a = np.flatnonzero(np.isfinite(centre_a) & np.isfinite(width_a) & (width_a > 0))
        rows_b = np.flatnonzero(np.isfinite(centre_b) & np.isfinite(width_b) & (width_b > 0))
    if not len(rows_a) or not len(rows_b):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    centre_a, centre_b = centre_a[rows_a], centre_b[rows_b]
    radius_a = (1.0 - min_iou + _WINDOW_SLACK) * width_a[rows_a]
    radius_b = (1.0 - min_iou + _WINDOW_SLACK) * width_b[rows_b]
    # One number per box, (group, centre x): groups lie further apart than any window.
    x_min = min(centre_a.min(), centre_b.min())
    x_max = max(centre_a.max(), centre_b.max())
    with np.errstate(over="ignore"):
        stride = (x_max - x_min) + 2.0 * max(radius_a.max(), radius_b.max()) + 1.0
        key_a = group_a[rows_a] * stride + (centre_a - x_min)
        key_b = group_b[rows_b] * stride + (centre_b - x_min)
        largest = np.max([np.abs(key_a).max(), np.abs(key_b).max(), abs(x_min), abs(x_max)])
    if not np.isfinite(largest):  # coordinates near the float limit: compare every pair
        return _same_group_pairs(group_a, group_b)
    rounding = 16.0 * np.spacing(largest)
    radius_a += rounding
    radius_b += rounding

    order_a, order_b = np.argsort(key_a), np.argsort(key_b)
    a_first, b_first = _window_pairs(key_a, radius_a, key_b[order_b], order_b)
    b_second, a_second = _window_pairs(key_b, radius_b, key_a[order_a], order_a)
    # Keep from the second search only the pairs the first did not find.
    seen = (key_b[b_second] >= key_a[a_second] - radius_a[a_second]) & (
        key_b[b_second] <= key_a[a_second] + radius_a[a_second]
    )
    index_a = rows_a[np.concatenate([a_first, a_second[~seen]])]
    index_b = rows_b[np.concatenate([b_first, b_second[~seen]])]
    order = np.lexsort((index_a, index_b))
    return index_a[order], index_b[order]


def assign_pairs(rows, cols, weights) -> np.ndarray:
    """Maximum-weight one-to-one assignment among candidate pairs.

    Rows and columns that occur in one candidate pair only are assigned
    directly; every connected group of conflicting candidates is solved with
    the Hungarian method (``scipy.optimize.linear_sum_assignment``).

    Parameters
    ----------
    rows, cols : ndarray of int, shape (P,)
        Candidate pairs (no pair twice).
    weights : ndarray, shape (P,)
        Positive weight of each pair (here: IoU).

    Returns
    -------
    ndarray of int64, shape (A,)
        Positions (into the candidate arrays) of the assigned pairs, ascending.
    """
    rows, cols = np.asarray(rows), np.asarray(cols)
    n = len(rows)
    if n <= 1 or (len(set(rows.tolist())) == n and len(set(cols.tolist())) == n):
        return np.arange(n)
    _, row_id = np.unique(rows, return_inverse=True)
    _, col_id = np.unique(cols, return_inverse=True)
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n_rows = int(row_id.max()) + 1
    n_nodes = n_rows + int(col_id.max()) + 1
    graph = coo_matrix((np.ones(n), (row_id, n_rows + col_id)), shape=(n_nodes, n_nodes))
    _, label = connected_components(graph, directed=False)
    group = label[row_id]
    group_size = np.bincount(group)
    chosen = [np.flatnonzero(group_size[group] == 1)]
    for g in np.flatnonzero(group_size > 1):
        pairs = np.flatnonzero(group == g)
        r_ids, r = np.unique(row_id[pairs], return_inverse=True)
        c_ids, c = np.unique(col_id[pairs], return_inverse=True)
        matrix = np.zeros((len(r_ids), len(c_ids)))
        matrix[r, c] = weights[pairs]
        pair_at = np.full(matrix.shape, -1, dtype=np.int64)
        pair_at[r, c] = pairs
        best_r, best_c = linear_sum_assignment(matrix, maximize=True)
        picked = pair_at[best_r, best_c]
        chosen.append(picked[picked >= 0])
    return np.sort(np.concatenate(chosen))
