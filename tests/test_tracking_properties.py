"""Property tests of stacking: a partition of the kept boxes, and nothing left to fuse."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_lesion_harvest.geometry import iou_2d
from napari_lesion_harvest.tracking import DETECTION_INDEX_KEY, stack_proposals

THRESHOLD = 0.3


@st.composite
def lpg_output(draw) -> dict:
    """A few lesion-like templates seen, jittered, on some slices, plus stray boxes."""
    n_slices = draw(st.integers(1, 9))
    coordinate = st.floats(0, 80, allow_nan=False)
    templates = draw(
        st.lists(st.tuples(coordinate, coordinate, st.floats(4, 40), st.floats(4, 40)), max_size=4)
    )
    volume = {}
    for z in range(n_slices):
        boxes, scores = [], []
        for x, y, w, h in templates:
            if draw(st.booleans()):
                jitter = draw(st.lists(st.floats(-2, 2), min_size=4, max_size=4))
                boxes.append([x + jitter[0], y + jitter[1], x + w + jitter[2], y + h + jitter[3]])
                scores.append(draw(st.floats(0, 1)))
        for _ in range(draw(st.integers(0, 2))):
            x, y = draw(coordinate), draw(coordinate)
            boxes.append([x, y, x + draw(st.floats(2, 30)), y + draw(st.floats(2, 30))])
            scores.append(draw(st.floats(0, 1)))
        volume[z] = (np.array(boxes).reshape(-1, 4), np.array(scores))
    return volume


@settings(max_examples=150, deadline=None)
@given(volume=lpg_output(), extend_slices=st.integers(0, 2))
def test_every_kept_box_is_in_exactly_one_proposal(volume, extend_slices):
    proposals = stack_proposals(volume, score_threshold=THRESHOLD, extend_slices=extend_slices)
    seen = []
    for p in proposals:
        assert np.array_equal(p.slices, np.arange(p.slices[0], p.slices[-1] + 1))
        index = np.array(p.meta[DETECTION_INDEX_KEY])
        assert (p.scores[index < 0] == 0).all()
        for z, i, box, score in zip(p.slices, index, p.boxes, p.scores, strict=True):
            if i >= 0:
                boxes, scores = volume[int(z)]
                np.testing.assert_array_equal(box, boxes[i])
                assert score == scores[i] >= THRESHOLD
                seen.append((int(z), int(i)))
    kept = [
        (z, i) for z, (_, scores) in volume.items() for i in np.flatnonzero(scores >= THRESHOLD)
    ]
    assert sorted(seen) == sorted(kept)


@settings(max_examples=150, deadline=None)
@given(volume=lpg_output(), extend_slices=st.integers(1, 2), fuse_iou=st.sampled_from([0.5, 0.8]))
def test_no_two_proposals_are_left_that_fusion_should_have_merged(volume, extend_slices, fuse_iou):
    proposals = stack_proposals(
        volume, score_threshold=THRESHOLD, fuse_iou=fuse_iou, extend_slices=extend_slices
    )
    for p in proposals:
        for q in proposals:
            gap = int(q.slices[0]) - int(p.slices[-1])
            if 1 <= gap <= 2 * extend_slices:
                # Extended, p and q would share a slice; their boxes there must not overlap enough.
                assert iou_2d(p.boxes[-1:], q.boxes[:1])[0, 0] < fuse_iou
