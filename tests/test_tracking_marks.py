"""Proposals from stacked boxes matched to real RECIST marks with the evaluation's P3D rule."""

from __future__ import annotations

from napari_lesion_harvest.geometry import Proposal3D, RecistMark
from napari_lesion_harvest.io.paper_pickles import read_recist_box_pickle
from napari_lesion_harvest.tracking import stack_proposals_batch
from napari_lesion_harvest.tracking.marks import (
    proposals_hitting_marks,
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
