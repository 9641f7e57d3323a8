"""Proposals from stacked boxes matched to real RECIST marks with the evaluation's P3D rule."""

from __future__ import annotations

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D, RecistMark, iou_2d
from napari_lesion_harvest.io.paper_pickles import read_recist_box_pickle
from napari_lesion_harvest.tracking import stack_proposals_batch
from napari_lesion_harvest.tracking.marks import (
    proposals_hitting_marks,
    proposals_touching_marked_lesions,
)


def test_stacked_proposals_around_real_marks_hit_and_shifted_ones_miss(annotation_dir):
    marks = read_recist_box_pickle(annotation_dir / "Revised-Train100.pkl")
    volume_ids = sorted(marks)[:40]
    lpg_output, expected = {}, {}
    for volume_id in volume_ids:
        per_slice: dict[int, tuple[list, list]] = {}
        kinds = []
        for z, box in zip(marks[volume_id].slices.tolist(), marks[volume_id].boxes, strict=True):
            width = box[2] - box[0]
            lesion_boxes = {
                "on the mark": (range(z - 2, z + 3), box, 0.9),
                # Far to the side (no 2D overlap with anything of the volume's marks).
                "beside it": (range(z - 2, z + 3), box + [5000, 0, 5000, 0], 0.8),
                # Right box, but the proposal does not reach the mark's slice.
                "above it": (range(z + 1, z + 4), box + [0, 3000, 0, 3000], 0.7),
                "stretched": (range(z - 1, z + 2), box + [0, 0, 1.5 * width, 0], 0.6),
            }
            for kind, (zs, b, score) in lesion_boxes.items():
                kinds.append((kind, zs[0]))
                for zz in zs:
                    per_slice.setdefault(zz, ([], []))
                    per_slice[zz][0].append(b)
                    per_slice[zz][1].append(score)
        lpg_output[volume_id] = per_slice
        expected[volume_id] = kinds
    proposals = stack_proposals_batch(lpg_output)
    hits = proposals_hitting_marks(proposals, {v: marks[v] for v in volume_ids})
    n_hits = 0
    for volume_id in volume_ids:
        assert len(hits[volume_id]) == len(proposals[volume_id])
        for proposal, hit in zip(proposals[volume_id], hits[volume_id], strict=True):
            # Scores identify the kind of proposal; "stretched" has IoU 1 / 2.5 < 0.5.
            assert hit == (proposal.s_g == 0.9)
            n_hits += bool(hit)
    # One hit per mark, except where two marks of a volume are close enough to stack together.
    n_marks = sum(len(marks[v]) for v in volume_ids)
    assert 0.9 * n_marks <= n_hits <= n_marks


def test_volumes_without_marks_have_no_hits_and_order_is_kept():
    near = Proposal3D([3, 4, 5], [[10, 10, 40, 40]] * 3, [0.5, 0.6, 0.7])
    far = Proposal3D([3, 4], [[100, 100, 120, 120]] * 2, [0.9, 0.9])
    mark = RecistMark(4, [[15, 25], [35, 25]], [[25, 15], [25, 35]])  # box 10..40
    hits = proposals_hitting_marks({"a": [far, near], "b": [near]}, {"a": [mark]})
    assert hits["a"].tolist() == [False, True]
    assert hits["b"].tolist() == [False]


def test_proposals_on_a_marked_lesion_off_its_mark_touch_it_and_others_do_not():
    # A 20 px (10 mm at 0.5 mm) lesion marked on slice 10 of 2 mm slices: it is taken
    # to span 10 / 2 + 2 = 7 mm (3.5 slices) either side of slice 10.
    mark = RecistMark.from_measurement_coordinates([40, 50, 60, 50, 50, 42, 50, 58], z=10)
    box = mark.box()

    def proposal(slices, shift_x=0.0):
        slices = list(slices)
        boxes = np.tile(box + [shift_x, 0, shift_x, 0], (len(slices), 1))
        return Proposal3D(slices, boxes, np.full(len(slices), 0.5))

    proposals = [
        proposal(range(12, 16)),  # a piece above the mark's slice, inside the span
        proposal(range(15, 19)),  # same place, beyond the span: another structure
        proposal(range(9, 12), shift_x=12),  # on the mark's slice, offset
        proposal(range(9, 12), shift_x=20),  # offset further
        proposal(range(9, 12)),  # hits the mark (and touches it)
    ]
    offset_iou = [iou_2d(p.boxes[:1], box[None])[0, 0] for p in proposals[2:4]]
    assert 0.3 < offset_iou[0] < 0.5 and offset_iou[1] < 0.3
    touching = proposals_touching_marked_lesions(proposals, [mark], (2.0, 0.5, 0.5))
    assert touching.tolist() == [True, False, True, False, True]
    hits = proposals_hitting_marks({"v": proposals}, {"v": [mark]})["v"]
    assert hits.tolist() == [False, False, False, False, True]
    assert not proposals_touching_marked_lesions(proposals, [], (2.0, 0.5, 0.5)).any()
