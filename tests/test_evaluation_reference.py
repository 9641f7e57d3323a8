"""The vectorised evaluation against a straightforward loop on the paper's real annotations.

The loop below follows the released lesion-harvesting evaluation step by step
(one detection at a time in decreasing confidence, one lesion at a time,
``scipy.interpolate.interp1d`` for the FROC, VOC ``voc_ap`` for AP). Detections
are made from the real marks / 3D boxes by seeded jitter, so hits, misses,
near-threshold IoUs, duplicates, volumes without detections and false
positives all occur.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import interpolate

from napari_lesion_harvest.evaluation.froc import FROC_FP_RATES
from napari_lesion_harvest.evaluation.report import evaluate
from napari_lesion_harvest.evaluation.tables import BoxTruth3D, ProposalTable, RecistTruth
from napari_lesion_harvest.io.paper_pickles import read_3d_box_pickle, read_recist_box_pickle
from tests.detections import jittered_tracklets

# --------------------------------------------------------------------------- the loop


def loop_iou_2d(a, b):
    iw = max(min(a[2], b[2]) - max(a[0], b[0]) + 1.0, 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]) + 1.0, 0.0)
    inter = iw * ih
    union = (
        (a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0)
        + (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0)
        - inter
    )
    return inter / max(union, 1e-6)


def loop_iou_3d(a, b):  # xyzxyz
    inter, vol_a, vol_b = 1.0, 1.0, 1.0
    for d in range(3):
        inter *= max(min(a[d + 3], b[d + 3]) - max(a[d], b[d]) + 1.0, 0.0)
        vol_a *= a[d + 3] - a[d] + 1.0
        vol_b *= b[d + 3] - b[d] + 1.0
    return inter / (vol_a + vol_b - inter)


def p3d_overlap(mark, proposal):
    z, box = mark
    for slice_z, slice_box in zip(proposal.slices, proposal.boxes, strict=True):
        if slice_z == z:
            return loop_iou_2d(slice_box, box)
    return 0.0


def box_3d_overlap(lesion_box, proposal):
    return loop_iou_3d(proposal.box_3d, lesion_box)


def loop_evaluate(lesions, detections, overlap, threshold):
    """lesions: {volume: [lesion]}, detections: {volume: [Proposal3D]} -> (froc, ap, counts)."""
    flat = [(v, p) for v, plist in detections.items() for p in plist]
    scores = np.array([p.scores.max() for _, p in flat])
    order = np.argsort(scores, kind="stable")[::-1]
    found = {v: [False] * len(ls) for v, ls in lesions.items()}
    n_hits = n_fp_froc = n_fp_ap = 0
    tps, fps_froc, fps_ap = [], [], []
    for i in order:
        volume, proposal = flat[i]
        overlaps = [overlap(lesion, proposal) for lesion in lesions[volume]]
        if not overlaps or max(overlaps) < threshold:
            n_fp_froc += 1
            n_fp_ap += 1
        else:
            for j, value in enumerate(overlaps):
                if value >= threshold:
                    if found[volume][j]:
                        n_fp_ap += 1
                    else:
                        found[volume][j] = True
                        n_hits += 1
        tps.append(n_hits)
        fps_froc.append(n_fp_froc)
        fps_ap.append(n_fp_ap)
    n_lesions = sum(len(ls) for ls in lesions.values())
    tps, fps_ap = np.array(tps, float), np.array(fps_ap, float)
    recall = tps / n_lesions
    precision = tps / np.maximum(tps + fps_ap, np.finfo(np.float64).eps)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for k in range(mpre.size - 1, 0, -1):
        mpre[k - 1] = max(mpre[k - 1], mpre[k])
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    ap = np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        reading = interpolate.interp1d(
            np.array(fps_froc, float) / len(lesions), recall, fill_value="extrapolate"
        )(np.array(FROC_FP_RATES))
    return reading, ap, (tps, np.array(fps_froc), fps_ap)


def assert_same_as_loop(result, loop_froc, loop_ap, loop_counts):
    curve = result.curve
    tps, fps_froc, fps_ap = loop_counts
    np.testing.assert_array_equal(curve.true_positives, tps)
    np.testing.assert_array_equal(curve.false_positives, fps_froc)
    np.testing.assert_array_equal(curve.voc_false_positives, fps_ap)
    finite = np.isfinite(loop_froc)
    assert finite.any()
    np.testing.assert_array_equal(result.sensitivities[finite], loop_froc[finite])
    # Where scipy divides by a zero-width last segment we hold the final sensitivity.
    np.testing.assert_array_equal(result.sensitivities[~finite], curve.recall[-1])
    assert result.ap == loop_ap


@pytest.mark.parametrize("file_name", ["Revised-Train100.pkl", "Revised-Train744.pkl"])
def test_p3d_on_real_marks_equals_the_loop(annotation_dir, file_name):
    marks = read_recist_box_pickle(annotation_dir / file_name)
    rng = np.random.default_rng(len(marks))
    detections = {}
    for number, (volume, boxes) in enumerate(marks.items()):
        if number % 10 == 0:
            continue  # volumes without detections still count
        detections[volume] = jittered_tracklets(
            rng, list(zip(boxes.slices, boxes.boxes, strict=True))
        )
    truth = RecistTruth.from_mapping(marks)
    table = ProposalTable.from_proposals(detections, truth.volume_ids)
    result = evaluate(truth, table, metric="p3d")

    lesions = {v: list(zip(b.slices, b.boxes, strict=True)) for v, b in marks.items()}
    loop = loop_evaluate(lesions, detections, p3d_overlap, 0.5)
    assert_same_as_loop(result, *loop)
    assert 0.2 < result.curve.recall[-1] < 0.95  # a real mix of hits and misses


def test_true_3d_and_p3d_on_real_3d_boxes_equal_the_loop(annotation_dir):
    boxes = read_3d_box_pickle(annotation_dir / "3D-Box.pkl")
    rng = np.random.default_rng(272)
    detections = {}
    for volume, lesion_boxes in boxes.items():
        centres = []
        for x1, y1, z1, x2, y2, z2 in lesion_boxes:
            centres.append((int((z1 + z2) // 2), np.array([x1, y1, x2, y2])))
        detections[volume] = jittered_tracklets(rng, centres)
    table = ProposalTable.from_proposals(detections, tuple(boxes))

    result_3d = evaluate(BoxTruth3D.from_mapping(boxes), table, metric="3d")
    lesions = {v: list(b) for v, b in boxes.items()}
    assert_same_as_loop(result_3d, *loop_evaluate(lesions, detections, box_3d_overlap, 0.33))

    # P3D against one RECIST-like box per lesion on its middle slice.
    middle = {
        v: [(int((b[2] + b[5]) // 2), b[[0, 1, 3, 4]]) for b in bs] for v, bs in boxes.items()
    }
    truth = RecistTruth.from_mapping(
        {v: ([z for z, _ in ms], [b for _, b in ms]) for v, ms in middle.items()}
    )
    result_p3d = evaluate(truth, table, metric="p3d")
    assert_same_as_loop(result_p3d, *loop_evaluate(middle, detections, p3d_overlap, 0.5))
