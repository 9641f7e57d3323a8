"""Stacking 2D boxes into 3D proposals: constructed cases, errors, batches, real 3D boxes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesion_harvest.geometry import Proposal3D, iou_2d
from napari_lesion_harvest.io.paper_pickles import read_3d_box_pickle
from napari_lesion_harvest.tracking import (
    DETECTION_INDEX_KEY,
    ProposalInputError,
    proposal_to_training_box,
    stack_proposals,
    stack_proposals_batch,
)
from napari_lesion_harvest.tracking.pairing import assign_pairs

BOX = np.array([100.0, 120.0, 140.0, 150.0])


def lesion(boxes_by_z: dict[int, np.ndarray], scores_by_z: dict[int, float]) -> dict:
    """``{z: (boxes (1, 4), scores (1,))}`` for one lesion."""
    return {z: (np.array([box]), np.array([scores_by_z[z]])) for z, box in boxes_by_z.items()}


def merge(*volumes: dict) -> dict:
    """Put the boxes of several single-lesion dicts on the same slices."""
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for volume in volumes:
        for z, (boxes, scores) in volume.items():
            old_boxes, old_scores = out.get(z, (np.zeros((0, 4)), np.zeros(0)))
            out[z] = (np.concatenate([old_boxes, boxes]), np.concatenate([old_scores, scores]))
    return out


def test_one_lesion_on_seven_slices_with_jitter_is_one_proposal():
    rng = np.random.default_rng(7)
    boxes = {z: BOX + rng.uniform(-1.0, 1.0, size=4) for z in range(10, 17)}
    scores = {z: float(s) for z, s in zip(range(10, 17), rng.uniform(0.2, 0.9, 7), strict=True)}
    proposals = stack_proposals(lesion(boxes, scores))
    assert len(proposals) == 1
    (p,) = proposals
    assert p.slices.tolist() == list(range(10, 17))
    np.testing.assert_array_equal(p.boxes, np.array([boxes[z] for z in range(10, 17)]))
    np.testing.assert_array_equal(p.scores, [scores[z] for z in range(10, 17)])
    assert p.s_g == max(scores.values())
    assert p.meta[DETECTION_INDEX_KEY] == [0] * 7
    all_boxes = np.array(list(boxes.values()))
    expected_3d = [*all_boxes[:, :2].min(0), 10, *all_boxes[:, 2:].max(0), 16]
    np.testing.assert_array_equal(p.box_3d, expected_3d)


def test_one_slice_gap_is_bridged_but_two_are_not():
    scores = dict.fromkeys(range(7), 0.6)
    scores[5] = 0.95
    one_gap = lesion({z: BOX + z * 0.3 for z in range(7) if z != 3}, scores)
    (p,) = stack_proposals(one_gap)
    assert p.slices.tolist() == list(range(7))
    # The missed slice gets the mean of its neighbours, score 0 and no detection.
    np.testing.assert_allclose(p.boxes[3], BOX + 0.9)
    assert p.scores[3] == 0.0
    assert p.meta[DETECTION_INDEX_KEY] == [0, 0, 0, -1, 0, 0, 0]
    assert p.s_g == 0.95 and p.best_slice == 5

    assert len(stack_proposals(one_gap, extend_slices=0)) == 2
    two_gap = lesion({z: BOX for z in (0, 1, 2, 5, 6)}, dict.fromkeys(range(7), 0.5))
    assert [q.slices.tolist() for q in stack_proposals(two_gap)] == [[0, 1, 2], [5, 6]]
    # Extending by two slices bridges up to three missed slices.
    (wide,) = stack_proposals(two_gap, extend_slices=2)
    assert wide.slices.tolist() == list(range(7))


def test_gap_with_a_different_box_is_not_fused():
    shifted = BOX + [30.0, 0.0, 30.0, 0.0]  # IoU with BOX well below 0.8
    volume = lesion({0: BOX, 1: BOX, 3: shifted, 4: shifted}, dict.fromkeys(range(5), 0.5))
    assert [p.slices.tolist() for p in stack_proposals(volume)] == [[0, 1], [3, 4]]


def test_two_lesions_3mm_apart_on_the_same_slices_are_two_proposals():
    # 0.8 mm pixels: 3 mm is under 4 px between the two boxes' facing edges.
    left = np.array([100.0, 100.0, 125.0, 125.0])
    right = left + [28.75, 0.0, 28.75, 0.0]
    rng = np.random.default_rng(3)
    first = lesion(
        {z: left + rng.uniform(-0.5, 0.5, 4) for z in range(5)}, dict.fromkeys(range(5), 0.7)
    )
    second = lesion(
        {z: right + rng.uniform(-0.5, 0.5, 4) for z in range(5)}, dict.fromkeys(range(5), 0.4)
    )
    proposals = stack_proposals(merge(first, second))
    assert len(proposals) == 2
    strong, weak = proposals  # sorted by s_g
    assert strong.s_g == 0.7 and weak.s_g == 0.4
    np.testing.assert_array_equal(strong.boxes, [first[z][0][0] for z in range(5)])
    np.testing.assert_array_equal(weak.boxes, [second[z][0][0] for z in range(5)])
    assert strong.meta[DETECTION_INDEX_KEY] == [0] * 5
    assert weak.meta[DETECTION_INDEX_KEY] == [1] * 5


@pytest.mark.parametrize("extend_slices", [0, 1])
def test_growing_then_shrinking_lesion_is_one_proposal_that_follows_it(extend_slices):
    widths = [40, 42, 44, 46, 44, 42, 40]
    boxes = {
        z: np.array([200 - w / 2, 190 - w / 3, 200 + w / 2, 190 + w / 3])
        for z, w in enumerate(widths)
    }
    (p,) = stack_proposals(
        lesion(boxes, dict.fromkeys(range(7), 0.5)), extend_slices=extend_slices
    )
    np.testing.assert_array_equal(p.boxes, [boxes[z] for z in range(7)])
    np.testing.assert_array_equal(p.box_3d, [177, 190 - 46 / 3, 0, 223, 190 + 46 / 3, 6])


def test_kalman_prediction_links_an_accelerating_drift_that_raw_iou_would_break():
    offsets = [0, 1, 3, 6, 10, 15, 21]
    boxes = {z: BOX + [o, 0, o, 0] for z, o in enumerate(offsets)}
    raw = [iou_2d([boxes[z]], [boxes[z + 1]])[0, 0] for z in range(6)]
    assert sum(r <= 0.8 for r in raw) == 2  # raw IoU alone would break the track twice
    (p,) = stack_proposals(lesion(boxes, dict.fromkeys(range(7), 0.5)), extend_slices=0)
    assert p.slices.tolist() == list(range(7))


def test_score_threshold_removes_weak_boxes():
    scores = {0: 0.5, 1: 0.5, 2: 0.05, 3: 0.5, 4: 0.5}
    volume = lesion(dict.fromkeys(range(5), BOX), scores)
    volume[9] = (np.array([BOX]), np.array([0.09]))  # a weak isolated box
    (p,) = stack_proposals(volume)
    assert p.meta[DETECTION_INDEX_KEY] == [0, 0, -1, 0, 0]
    assert p.scores[2] == 0.0

    low = stack_proposals(volume, score_threshold=0.01)
    assert [q.slices.tolist() for q in low] == [[0, 1, 2, 3, 4], [9]]
    assert low[0].scores[2] == 0.05
    assert stack_proposals(volume, score_threshold=0.6) == []
    # A score equal to the threshold is kept (score >= t_G).
    assert len(stack_proposals({0: ([BOX], [0.1])}, score_threshold=0.1)) == 1


def test_empty_input_gives_no_proposals():
    assert stack_proposals({}) == []
    assert stack_proposals([]) == []
    assert stack_proposals([None, (np.zeros((0, 4)), np.zeros(0)), ([], [])]) == []
    assert stack_proposals_batch([]) == []
    assert stack_proposals_batch({"a": {}, "b": []}) == {"a": [], "b": []}


def test_sequence_input_means_z_is_the_position():
    box_pair = (np.array([BOX]), np.array([0.5]))
    as_list = stack_proposals([None, box_pair, box_pair])
    as_dict = stack_proposals({1: box_pair, 2: box_pair})
    assert [p.slices.tolist() for p in as_list] == [[1, 2]] == [p.slices.tolist() for p in as_dict]


def test_batch_keeps_volumes_apart_and_equals_single_calls():
    rng = np.random.default_rng(11)
    volumes = {}
    for name in ("v0", "v1", "v2"):
        per_slice = {}
        for z in range(12):
            n = int(rng.integers(0, 4))
            xy = rng.uniform(0, 60, size=(n, 2))
            wh = rng.uniform(15, 25, size=(n, 2))
            per_slice[z] = (np.c_[xy, xy + wh], rng.uniform(0, 1, n))
        volumes[name] = per_slice
    # The same boxes in another volume must not be linked across volumes.
    volumes["copy"] = volumes["v0"]
    batch = stack_proposals_batch(volumes)
    assert list(batch) == list(volumes)
    for name, per_slice in volumes.items():
        single = stack_proposals(per_slice)
        assert len(single) == len(batch[name])
        for a, b in zip(single, batch[name], strict=True):
            np.testing.assert_array_equal(a.slices, b.slices)
            np.testing.assert_array_equal(a.boxes, b.boxes)
            np.testing.assert_array_equal(a.scores, b.scores)
    as_list = stack_proposals_batch(list(volumes.values()))
    assert [len(v) for v in as_list] == [len(v) for v in batch.values()]


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        ({0: ([[0, 0, 1]], [0.5])}, r"slice 0: boxes must have shape \(N, 4\)"),
        ({3: ([[0, 0, 1, 1]], [0.5, 0.6])}, r"slice 3: scores must have shape \(1,\)"),
        ({2: ([[0, 0, np.nan, 1]], [0.5])}, r"slice 2: box 0 .* non-finite"),
        ({5: ([[0, 0, 4, 4], [0, 0, 0, 4]], [0.5, 0.5])}, r"slice 5: box 1 .* x2 > x1"),
        ({1.0: ([[0, 0, 1, 1]], [0.5])}, r"slice keys must be integers"),
        ({0: "boxes"}, r"slice 0: expected a pair"),
        ("boxes", r"mapping or a sequence"),
    ],
)
def test_malformed_input_raises_a_typed_error_naming_the_slice(volume, message):
    with pytest.raises(ProposalInputError, match=message):
        stack_proposals(volume)


def test_batch_errors_name_the_volume_and_weak_degenerate_boxes_are_ignored():
    good = {0: ([[0, 0, 4, 4]], [0.5])}
    with pytest.raises(ProposalInputError, match=r"volume 'b': slice 7: box 0"):
        stack_proposals_batch({"a": good, "b": {7: ([[0, 0, np.inf, 4]], [0.5])}})
    # A degenerate box below the threshold is dropped, not an error.
    assert len(stack_proposals({0: ([[0, 0, 4, 4], [0, 0, 0, 0]], [0.5, 0.01])})) == 1
    with pytest.raises(ValueError, match="IoU thresholds"):
        stack_proposals(good, link_iou=1.5)
    with pytest.raises(ValueError, match="extend_slices"):
        stack_proposals(good, extend_slices=-1)


def test_proposal_to_training_box_is_the_highest_scoring_slice():
    p = Proposal3D([4, 5, 6], [[0, 0, 10, 10], [1, 1, 12, 12], [2, 2, 11, 11]], [0.3, 0.9, 0.5])
    z, box = proposal_to_training_box(p)
    assert z == 5
    np.testing.assert_array_equal(box, [1, 1, 12, 12])
    box[0] = -1.0
    assert p.boxes[1, 0] == 1.0  # a copy


def test_assign_pairs_is_a_maximum_weight_matching():
    # Greedy would take the 0.95 pair and lose 0.9 + 0.85.
    picked = assign_pairs(np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([0.9, 0.85, 0.95]))
    assert picked.tolist() == [1, 2]

    rng = np.random.default_rng(5)
    for _ in range(30):
        dense = rng.uniform(0, 1, size=(4, 5)) * (rng.uniform(size=(4, 5)) < 0.5)
        rows, cols = np.nonzero(dense)
        picked = assign_pairs(rows, cols, dense[rows, cols])
        assert len(set(rows[picked])) == len(picked) == len(set(cols[picked]))
        from scipy.optimize import linear_sum_assignment

        r, c = linear_sum_assignment(dense, maximize=True)
        assert dense[rows[picked], cols[picked]].sum() == pytest.approx(dense[r, c].sum())


def test_real_3d_boxes_replayed_slice_by_slice_are_recovered(annotation_dir):
    """Every 3D box of the paper's 3D-Box.pkl, drawn on each slice it spans, stacks back."""
    boxes_3d = read_3d_box_pickle(annotation_dir / "3D-Box.pkl")
    rng = np.random.default_rng(0)
    volumes, truth = {}, {}
    for volume_id, boxes in boxes_3d.items():
        entries = []
        for x1, y1, z1, x2, y2, z2 in boxes:
            zs = np.arange(int(np.ceil(z1)), int(np.floor(z2)) + 1)
            entries.extend((z, [x1, y1, x2, y2], rng.uniform(0.2, 1.0)) for z in zs)
            truth.setdefault(volume_id, []).append((zs[0], zs[-1], (x1, y1, x2, y2)))
        per_slice: dict[int, tuple[list, list]] = {}
        for z, box, score in entries:
            per_slice.setdefault(int(z), ([], []))
            per_slice[int(z)][0].append(box)
            per_slice[int(z)][1].append(score)
        volumes[volume_id] = per_slice
    result = stack_proposals_batch(volumes)
    n_lesions = sum(len(t) for t in truth.values())
    assert n_lesions == 874
    recovered = 0
    for volume_id, lesions in truth.items():
        found = {
            (int(p.slices[0]), int(p.slices[-1]), tuple(p.box_3d[[0, 1, 3, 4]]))
            for p in result[volume_id]
        }
        recovered += sum((z1, z2, box) in found for z1, z2, box in lesions)
    # Lesions of one volume can overlap in 3D (then they may swap or merge); all others must
    # come back exactly, with their z extent.
    assert recovered >= 0.97 * n_lesions
