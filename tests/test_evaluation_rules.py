"""Hand-computed cases for every evaluation rule: hits, misses, duplicates, empty volumes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesion_harvest.evaluation.curve import detection_curve
from napari_lesion_harvest.evaluation.froc import froc, sensitivity_at_fp
from napari_lesion_harvest.evaluation.matching import match_3d, match_p3d, match_recist_2d
from napari_lesion_harvest.evaluation.pr import (
    average_precision,
    final_point,
    format_baseline,
    format_table_i,
    recall_at_precision,
)
from napari_lesion_harvest.evaluation.report import evaluate
from napari_lesion_harvest.evaluation.tables import BoxTruth3D, ProposalTable, RecistTruth
from napari_lesion_harvest.geometry import Proposal3D, RecistMark, iou_2d, iou_3d

BOX_A = [10.0, 10.0, 29.0, 29.0]  # 20 x 20 pixels with the +1 convention
BOX_B = [50.0, 50.0, 69.0, 69.0]
FAR = [200.0, 200.0, 219.0, 219.0]


def tracklet(slices, box, scores):
    return Proposal3D(slices, [box] * len(slices), scores)


@pytest.fixture
def scene():
    """Three volumes: 'marked' (2 lesions), 'clean' (none), 'missed' (1, no detections)."""
    truth = RecistTruth.from_mapping(
        {
            "marked": ([3, 5], [BOX_A, BOX_B]),
            "clean": ([], []),
            "missed": ([7], [BOX_A]),
        }
    )
    detections = {
        "marked": [
            tracklet([2, 3, 4], BOX_A, [0.2, 0.9, 0.2]),  # hits A on z=3
            tracklet([3], FAR, [0.8]),  # on A's slice, far away: FP
            Proposal3D([4, 6], [BOX_B, BOX_B], [0.7, 0.1]),  # spans z=5 without a box there
            tracklet([3], BOX_A, [0.6]),  # second hit on A
            tracklet([5], BOX_B, [0.5]),  # hits B
        ],
        "clean": [tracklet([0], BOX_A, [0.4])],  # a volume without lesions: FP
    }
    return truth, ProposalTable.from_proposals(detections, truth.volume_ids)


def test_iou_elementwise_matches_the_pairwise_diagonal():
    a = np.array([BOX_A, BOX_B, [0, 0, 9, 9]])
    b = np.array([[10, 10, 19, 29], BOX_A, [5, 0, 14, 9]], dtype=float)
    for plus_one in (False, True):
        diagonal = np.diag(iou_2d(a, b, plus_one=plus_one))
        assert np.array_equal(iou_2d(a, b, plus_one=plus_one, elementwise=True), diagonal)
    # +1 convention by hand: 10x20 inside 20x20 -> 200 / 400; touching boxes -> 0.
    assert iou_2d(a[:1], b[:1], plus_one=True, elementwise=True)[0] == 0.5
    assert iou_2d(a[2:], b[2:], plus_one=True, elementwise=True)[0] == pytest.approx(50 / 150)
    with pytest.raises(ValueError, match="equal box counts"):
        iou_3d(np.zeros((2, 6)), np.zeros((3, 6)), elementwise=True)


def test_p3d_hits_misses_duplicates_and_empty_volumes(scene):
    truth, table = scene
    matches = match_p3d(truth, table)
    assert matches.n_lesions == 3 and matches.n_images == 3
    np.testing.assert_array_equal(matches.scores, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    pairs = sorted(zip(matches.hit_detection.tolist(), matches.hit_lesion.tolist(), strict=True))
    assert pairs == [(0, 0), (3, 0), (4, 1)]

    curve = detection_curve(matches)
    np.testing.assert_array_equal(curve.true_positives, [1, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(curve.false_positives, [0, 1, 2, 2, 2, 3])
    # The duplicate (4th) is a false positive for AP only.
    np.testing.assert_array_equal(curve.voc_false_positives, [0, 1, 2, 3, 3, 4])
    np.testing.assert_allclose(curve.precision, [1, 1 / 2, 1 / 3, 1 / 4, 2 / 5, 2 / 6])

    sens = froc(curve, [0.125, 0.25, 0.5, 1, 2, 16])
    # FP/volume of the points: 0, 1/3, 2/3, 2/3, 2/3, 1; sensitivity 1/3 until B at 2/3.
    np.testing.assert_allclose(sens, [1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3])
    # VOC envelope: precision 1 up to recall 1/3, then 0.4 up to 2/3, nothing after.
    assert average_precision(curve) == pytest.approx(1 / 3 + 0.4 / 3)


def test_p3d_threshold_and_pixel_convention_are_parameters():
    # 20x20 mark, box shifted by 5 px: +1 IoU = 300/500 = 0.6, continuous 285/475 = 0.6 too,
    # so use a box half the width: +1: 200/400 = 0.5 (hit), continuous: 190/400 = 0.475 (miss).
    truth = RecistTruth.from_mapping({"v": ([0], [BOX_A])})
    half = ProposalTable.from_proposals(
        {"v": [tracklet([0], [10, 10, 19, 29], [1.0])]}, truth.volume_ids
    )
    assert len(match_p3d(truth, half).hit_lesion) == 1
    assert len(match_p3d(truth, half, plus_one=False).hit_lesion) == 0
    assert len(match_p3d(truth, half, iou_threshold=0.6).hit_lesion) == 0


def test_a_detection_hitting_two_lesions_finds_both_and_repeats_count_twice_for_ap():
    # Two marks with the same box on one slice: one detection hits both.
    truth = RecistTruth.from_mapping({"v": ([2, 2], [BOX_A, BOX_A])})
    table = ProposalTable.from_proposals(
        {"v": [tracklet([2], BOX_A, [0.9]), tracklet([1, 2], BOX_A, [0.3, 0.8])]},
        truth.volume_ids,
    )
    curve = detection_curve(match_p3d(truth, table))
    np.testing.assert_array_equal(curve.true_positives, [2, 2])
    np.testing.assert_array_equal(curve.false_positives, [0, 0])
    np.testing.assert_array_equal(curve.voc_false_positives, [0, 2])
    np.testing.assert_allclose(curve.precision, [1.0, 0.5])


def test_recist_marks_as_truth_use_their_padded_box():
    mark = RecistMark.from_measurement_coordinates([20, 15, 20, 25, 15, 20, 25, 20], z=4)
    truth = RecistTruth.from_mapping({"v": [mark]})
    np.testing.assert_array_equal(truth.boxes, [[10, 10, 30, 30]])
    np.testing.assert_array_equal(truth.z, [4])


def test_true_3d_rule_by_hand():
    truth = BoxTruth3D.from_mapping({"v": [[0, 0, 0, 9, 9, 9]], "w": np.zeros((0, 6))})
    table = ProposalTable.from_proposals(
        {
            "v": [
                tracklet([0, 1, 2, 3, 4], [0, 0, 9, 9], [0.5] * 5),  # 500/1000 = 0.5
                tracklet([0, 1], [0, 0, 9, 9], [0.9, 0.1]),  # 200/1000 = 0.2
            ],
            "w": [tracklet([3], [0, 0, 9, 9], [0.7])],
        },
        truth.volume_ids,
    )
    matches = match_3d(truth, table)
    assert matches.hit_detection.tolist() == [0] and matches.n_images == 2
    assert len(match_3d(truth, table, iou_threshold=0.2).hit_detection) == 2
    curve = detection_curve(matches)
    np.testing.assert_array_equal(curve.false_positives, [1, 2, 2])  # scores 0.9, 0.7, 0.5
    np.testing.assert_array_equal(curve.true_positives, [0, 0, 1])
    np.testing.assert_array_equal(table.proposal_boxes_3d()[0], [0, 0, 0, 9, 9, 4])


def test_incomplete_2d_rule_sees_only_marked_slices_with_per_slice_scores(scene):
    truth, table = scene
    matches = match_recist_2d(truth, table)
    # Rows on marked slices (marked z=3, z=5; missed z=7): p0@3, p1@3, p3@3, p4@5.
    np.testing.assert_array_equal(matches.scores, [0.9, 0.8, 0.6, 0.5])
    assert matches.n_images == 3  # marked slices, not volumes
    curve = detection_curve(matches)
    np.testing.assert_array_equal(curve.true_positives, [1, 1, 1, 2])
    np.testing.assert_array_equal(curve.false_positives, [0, 1, 1, 1])


def test_ties_collapse_to_one_operating_point_per_score():
    truth = RecistTruth.from_mapping({"v": ([0], [BOX_A]), "w": ([], [])})
    detections = {
        "v": [tracklet([0], BOX_A, [0.5]), tracklet([0], FAR, [0.5])],
        "w": [tracklet([0], FAR, [0.2])],
    }
    table = ProposalTable.from_proposals(detections, truth.volume_ids)
    curve = detection_curve(match_p3d(truth, table))
    np.testing.assert_array_equal(curve.thresholds, [0.5, 0.2])
    np.testing.assert_array_equal(curve.true_positives, [1, 1])
    np.testing.assert_array_equal(curve.false_positives, [1, 2])
    # Per detection, equal scores come in reverse input order: the far box first.
    per_detection = detection_curve(match_p3d(truth, table), collapse_ties=False)
    np.testing.assert_array_equal(per_detection.true_positives, [0, 1, 1])


def test_no_detections_and_no_lesions():
    truth = RecistTruth.from_mapping({"v": ([0], [BOX_A])})
    empty = ProposalTable.from_proposals({}, truth.volume_ids)
    result = evaluate(truth, empty)
    np.testing.assert_array_equal(result.sensitivities, 0.0)
    assert result.ap == 0.0
    assert [p.recall for p in result.recall_at_precision] == [0.0] * 4

    lesionless = RecistTruth.from_mapping({"v": ([], [])})
    table = ProposalTable.from_proposals({"v": [tracklet([0], BOX_A, [0.3])]}, ("v",))
    result = evaluate(lesionless, table)
    assert np.all(np.isnan(result.sensitivities)) and np.isnan(result.ap)
    assert result.to_dict()["ap"] is None


def test_bad_inputs_raise_named_errors():
    truth = RecistTruth.from_mapping({"v": ([0], [BOX_A])})
    with pytest.raises(ValueError, match="not in the test set: ghost"):
        ProposalTable.from_proposals({"ghost": [tracklet([0], BOX_A, [1.0])]}, truth.volume_ids)
    with pytest.raises(ValueError, match="volume v: 2 slice indices for 1 boxes"):
        RecistTruth.from_mapping({"v": ([0, 1], [BOX_A])})
    with pytest.raises(ValueError, match="proposal 1 has no per-slice box"):
        ProposalTable.from_slices(["v"], [0, 0], [0], [0], [BOX_A], [1.0])
    other = ProposalTable.from_proposals({}, ("w",))
    with pytest.raises(ValueError, match="different volume list"):
        match_p3d(truth, other)
    with pytest.raises(TypeError, match="BoxTruth3D"):
        evaluate(truth, ProposalTable.from_proposals({}, truth.volume_ids), metric="3d")


def test_duplicate_slice_rows_keep_the_first_box_but_score_over_all_rows():
    table = ProposalTable.from_slices(
        ["v"], [0], [0, 0, 0], [3, 3, 4], [FAR, BOX_A, BOX_A], [0.1, 0.9, 0.2]
    )
    np.testing.assert_array_equal(table.slice_z, [3, 4])
    np.testing.assert_array_equal(table.slice_boxes[0], FAR)
    assert table.proposal_score.tolist() == [0.9]


def test_froc_reading_rule_at_exact_rates_and_beyond_the_end():
    # Two points share FP rate 0.5: the reading at 0.5 is the first (lower) one.
    fp = [0.0, 0.5, 0.5, 1.0]
    sens = [0.2, 0.4, 0.6, 0.6]
    np.testing.assert_allclose(
        sensitivity_at_fp(fp, sens, [0.25, 0.5, 0.75, 4.0]), [0.3, 0.4, 0.6, 0.6]
    )
    # Below the first point the curve starts at the origin (0 FP, sensitivity 0).
    np.testing.assert_allclose(sensitivity_at_fp([1.0, 2.0], [0.0, 0.0], [0.5]), [0.0])
    np.testing.assert_allclose(sensitivity_at_fp([1.0], [0.5], [0.5]), [0.25])
    with pytest.raises(ValueError, match="positive"):
        sensitivity_at_fp(fp, sens, [0.0])


def test_recall_at_precision_and_table_i(scene):
    truth, table = scene
    curve = detection_curve(match_p3d(truth, table))
    points = recall_at_precision(curve, [0.8, 0.4, 0.3])
    assert [p.recall for p in points] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert [p.threshold for p in points] == [0.9, 0.5, 0.5]
    assert points[1].precision == pytest.approx(0.4)

    # The original marks as detections: all hit, so recall 2/3 at 100% precision.
    marks = ProposalTable.from_proposals(
        {"marked": [tracklet([3], BOX_A, [1.0]), tracklet([5], BOX_B, [1.0])]}, truth.volume_ids
    )
    baseline = detection_curve(match_p3d(truth, marks))
    assert final_point(baseline) == pytest.approx((2 / 3, 1.0))
    assert format_baseline("R", baseline) == "R 0.667@100P"
    text = format_table_i({"R + P_H,1": curve}, baseline=("R", baseline))
    lines = text.splitlines()
    assert lines[0].split() == ["Label", "set", "R@80P", "R@85P", "R@90P", "R@95P"]
    assert lines[1] == "R 0.667@100P"
    assert lines[2].split()[-4:] == ["0.333", "0.333", "0.333", "0.333"]


def test_dense_and_sorted_key_joins_agree(scene, monkeypatch):
    from napari_lesion_harvest import arrays
    from napari_lesion_harvest.evaluation import matching

    truth, table = scene
    dense = matching.match_p3d(truth, table)
    monkeypatch.setattr(arrays, "DENSE_KEY_LIMIT", 0)
    searched = matching.match_p3d(truth, table)
    np.testing.assert_array_equal(dense.hit_detection, searched.hit_detection)
    np.testing.assert_array_equal(dense.hit_lesion, searched.hit_lesion)
    assert len(dense.hit_lesion) == 3
