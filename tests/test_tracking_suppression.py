"""Duplicate 3D proposals of one lesion are suppressed; neighbours are not."""

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D, iou_2d
from napari_lesion_harvest.tracking.suppression import suppress_duplicates


def _proposal(slices, box, score):
    return Proposal3D(slices, [box] * len(slices), [score] * len(slices))


def test_weaker_copy_on_a_shared_slice_is_dropped():
    strong = _proposal([3, 4, 5], [10, 10, 30, 30], 0.9)
    copy = _proposal([4], [11, 11, 31, 31], 0.5)
    neighbour = _proposal([4], [40, 10, 60, 30], 0.4)  # another lesion, same slice
    other_slice = _proposal([8], [10, 10, 30, 30], 0.3)  # same place, no shared slice
    kept = suppress_duplicates([copy, neighbour, strong, other_slice])
    assert kept == [strong, neighbour, other_slice]


def test_threshold_above_one_keeps_everything_and_empty_input():
    a = _proposal([1], [0, 0, 10, 10], 0.5)
    b = _proposal([1], [0, 0, 10, 10], 0.4)
    assert suppress_duplicates([a, b], iou_threshold=1.01) == [a, b]
    assert suppress_duplicates([]) == []


def _kept_by_pairs(proposals, iou_threshold):
    """The definition, pair by pair: a proposal is kept unless a stronger kept one overlaps it
    by ``iou_threshold`` on a slice both have."""
    kept = []
    for candidate in sorted(proposals, key=lambda p: -p.s_g):
        if not any(
            iou_2d(candidate.boxes[candidate.slices == z], other.boxes[other.slices == z])[0, 0]
            >= iou_threshold
            for other in kept
            for z in np.intersect1d(candidate.slices, other.slices)
        ):
            kept.append(candidate)
    return kept


def test_crowded_volumes_keep_exactly_what_the_pairwise_definition_keeps():
    rng = np.random.default_rng(0)
    for threshold in (0.3, 0.5, 0.7):
        centres = rng.uniform(10, 118, size=(30, 2))
        proposals = []
        for _ in range(150):  # about five tracklets through each lesion, jittered
            x, y = centres[rng.integers(len(centres))] + rng.normal(0, 2, 2)
            depth, first, half = (
                int(rng.integers(1, 8)),
                int(rng.integers(0, 30)),
                rng.uniform(2, 9),
            )
            boxes = [
                [x - half, y - half, x + half, y + half] + rng.normal(0, 1, 4)
                for _ in range(depth)
            ]
            proposals.append(
                Proposal3D(np.arange(first, first + depth), boxes, rng.uniform(0, 1, depth))
            )
        kept = suppress_duplicates(proposals, iou_threshold=threshold)
        assert [id(p) for p in kept] == [id(p) for p in _kept_by_pairs(proposals, threshold)]
        assert 30 < len(kept) < 150  # both kinds of decision were made
