"""Candidate pairs for the tracker and the gap fusion: the key join, and the pruning that
must never drop a pair that could link (results identical to comparing every pair)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_lesion_harvest import arrays
from napari_lesion_harvest.arrays import equal_key_pairs
from napari_lesion_harvest.geometry import iou_2d
from napari_lesion_harvest.tracking import DETECTION_INDEX_KEY, stack_proposals_batch, stacking
from napari_lesion_harvest.tracking.pairing import overlap_candidates


@pytest.mark.parametrize("dense", [True, False])
def test_equal_key_pairs_lists_every_matching_pair_in_order(dense, monkeypatch):
    if not dense:
        monkeypatch.setattr(arrays, "DENSE_KEY_LIMIT", 0)  # the searchsorted path
    left = np.array([3, 0, 2, 0, 3, 3, 7])
    right = np.array([3, 0, 1, 3])
    li, ri = equal_key_pairs(left, right)
    expected = [(i, j) for i in range(7) for j in range(4) if left[i] == right[j]]
    assert list(zip(li.tolist(), ri.tolist(), strict=True)) == expected
    assert [len(a) for a in equal_key_pairs(left, np.zeros(0, np.int64))] == [0, 0]


def brute_force_pairs(group_a, boxes_a, group_b, boxes_b, min_iou) -> set:
    """Every (i, j) of equal group whose IoU reaches ``min_iou``, all pairs computed."""
    iou = iou_2d(boxes_a, boxes_b)
    same = group_a[:, None] == group_b[None, :]
    return set(zip(*np.nonzero(same & (iou >= min_iou)), strict=True))


@st.composite
def box_sets(draw):
    """Two sets of boxes in a few groups, with near-copies of each other's boxes."""
    coordinate = st.floats(-50, 150, allow_nan=False)
    size = st.floats(0.01, 80)

    def boxes(n):
        rows = [(draw(coordinate), draw(coordinate), draw(size), draw(size)) for _ in range(n)]
        return np.array([[x, y, x + w, y + h] for x, y, w, h in rows]).reshape(-1, 4)

    boxes_a = boxes(draw(st.integers(0, 12)))
    boxes_b = boxes(draw(st.integers(0, 12)))
    # Shifted and rescaled copies of boxes of the first set: IoU close to any threshold.
    for box in boxes_a[: draw(st.integers(0, len(boxes_a)))]:
        w, h = box[2] - box[0], box[3] - box[1]
        shift = draw(st.floats(-1, 1)) * np.array([w, h, w, h])
        scale = draw(st.floats(0.5, 1.5))
        copy = np.r_[box[:2] + shift[:2], box[:2] + shift[:2] + scale * np.array([w, h])]
        boxes_b = np.vstack([boxes_b, copy])
    group_a = np.array(
        draw(st.lists(st.integers(0, 2), min_size=len(boxes_a), max_size=len(boxes_a)))
    )
    group_b = np.array(
        draw(st.lists(st.integers(0, 2), min_size=len(boxes_b), max_size=len(boxes_b)))
    )
    return group_a.astype(np.int64), boxes_a, group_b.astype(np.int64), boxes_b


@settings(max_examples=300, deadline=None)
@given(sets=box_sets(), min_iou=st.sampled_from([0.0, 0.05, 0.3, 0.5, 0.8, 0.95, 1.0]))
def test_no_pair_that_reaches_the_threshold_is_pruned(sets, min_iou):
    group_a, boxes_a, group_b, boxes_b = sets
    index_a, index_b = overlap_candidates(group_a, boxes_a, group_b, boxes_b, min_iou=min_iou)
    pairs = list(zip(index_a.tolist(), index_b.tolist(), strict=True))
    assert len(set(pairs)) == len(pairs)  # each pair once
    assert pairs == sorted(pairs, key=lambda p: (p[1], p[0]))
    assert (group_a[index_a] == group_b[index_b]).all()
    assert brute_force_pairs(group_a, boxes_a, group_b, boxes_b, min_iou) <= set(pairs)


def test_exact_threshold_shifts_are_kept_and_far_boxes_pruned():
    # Equal boxes shifted along x: IoU = (w - d) / (w + d), exactly t at d = w (1 - t) / (1 + t).
    rng = np.random.default_rng(4)
    for t in (0.5, 0.8, 0.9):
        a = rng.uniform(0, 400, size=(200, 2))
        wh = rng.uniform(3, 60, size=(200, 2))
        boxes_a = np.c_[a, a + wh]
        d = wh[:, 0] * (1 - t) / (1 + t)
        boxes_b = boxes_a + np.c_[d, np.zeros(200), d, np.zeros(200)]
        groups = np.zeros(200, dtype=np.int64)
        index_a, index_b = overlap_candidates(groups, boxes_a, groups, boxes_b, min_iou=t)
        iou = iou_2d(boxes_a, boxes_b, elementwise=True)
        at_threshold = set(np.flatnonzero(iou >= t).tolist())
        assert len(at_threshold) > 50  # rounding puts many exactly at or just above t
        assert {(i, i) for i in at_threshold} <= set(
            zip(index_a.tolist(), index_b.tolist(), strict=True)
        )
        assert len(index_a) < 0.2 * 200 * 200  # far-apart pairs are not listed

    # Invalid boxes (no width, non-finite) cannot overlap and get no candidate pair.
    bad = np.array([[5.0, 5, 5, 9], [np.nan, 0, 4, 4], [0, 0, np.inf, 4]])
    good = np.array([[0.0, 0, 10, 10]])
    zeros = np.zeros(3, dtype=np.int64)
    assert len(overlap_candidates(zeros, bad, zeros[:1], good, min_iou=0.5)[0]) == 0
    # min_iou 0: every pair of the same group (IoU >= 0 holds for all of them).
    index_a, index_b = overlap_candidates(zeros, bad, zeros[:1], good, min_iou=0.0)
    assert index_a.tolist() == [0, 1, 2] and index_b.tolist() == [0, 0, 0]


def dense_volumes(seed: int, n_volumes: int = 6) -> list[dict]:
    """Crowded slices: 20-60 boxes per slice in a 120 x 120 region, many overlapping."""
    rng = np.random.default_rng(seed)
    volumes = []
    for _ in range(n_volumes):
        templates = rng.uniform(0, 100, size=(25, 2))
        sizes = rng.uniform(4, 40, size=(25, 2))
        per_slice = {}
        for z in range(15):
            seen = templates[rng.uniform(size=25) < 0.7]
            sz = sizes[: len(seen)]
            jitter = rng.normal(0, 1.0, size=(len(seen), 4))
            lesion_boxes = np.c_[seen, seen + sz] + jitter
            lesion_boxes[:, 2:] = np.maximum(lesion_boxes[:, 2:], lesion_boxes[:, :2] + 0.5)
            n_stray = int(rng.integers(5, 40))
            xy = rng.uniform(0, 110, size=(n_stray, 2))
            stray = np.c_[xy, xy + rng.uniform(2, 30, size=(n_stray, 2))]
            boxes = np.vstack([lesion_boxes, stray])
            per_slice[z] = (boxes, rng.uniform(0, 1, len(boxes)))
        volumes.append(per_slice)
    return volumes


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"link_iou": 0.5, "fuse_iou": 0.3, "extend_slices": 2},
        {"link_iou": 0.2, "fuse_iou": 0.95, "score_threshold": 0.0},
    ],
)
def test_pruned_stacking_equals_comparing_every_pair(options, monkeypatch):
    volumes = dense_volumes(seed=len(options))
    pruned = stack_proposals_batch(volumes, **options)

    def every_pair(group_a, boxes_a, group_b, boxes_b, *, min_iou):
        return overlap_candidates(group_a, boxes_a, group_b, boxes_b, min_iou=0.0)

    monkeypatch.setattr(stacking, "overlap_candidates", every_pair)
    unpruned = stack_proposals_batch(volumes, **options)
    n_multi_slice = 0
    for mine, reference in zip(pruned, unpruned, strict=True):
        assert len(mine) == len(reference)
        for p, q in zip(mine, reference, strict=True):
            np.testing.assert_array_equal(p.slices, q.slices)
            np.testing.assert_array_equal(p.boxes, q.boxes)
            np.testing.assert_array_equal(p.scores, q.scores)
            assert p.meta[DETECTION_INDEX_KEY] == q.meta[DETECTION_INDEX_KEY]
            n_multi_slice += len(p.slices) > 1
    assert n_multi_slice > 20  # the crowded slices do link and fuse
