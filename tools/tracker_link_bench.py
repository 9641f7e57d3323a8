"""How the tracker's IoU thresholds cut a phantom project's lesions into pieces.

Reads the ``dataset/`` and ``project/`` folders that ``benchmarks/harvest_bench.py --out DIR``
leaves, and prints:

1. the 2D IoU of each true lesion's boxes on consecutive slices, by slice
   interval (``dataset/truth/lesions.json``): the share a tracker linking at
   IoU > 0.8 (the paper) or > 0.5 could link even with perfect boxes;
2. a round's 2D boxes in V_H_test (every proposal's boxes on the slices the
   LPG detected) stacked again at several ``scan.link_iou`` / ``scan.fuse_iou`` pairs,
   with the round's duplicate suppression: the proposals, the lesions (full
   marks) a proposal hits by P3D, and the *pieces*, proposals that hit no
   lesion by P3D but lie on one (IoU > 0.3 with its true box on the proposal's
   best slice), the false positives that look like lesions;
3. of the round's proposals ranked by s_gc (the Table I ranking), how many of
   the top ``--top`` that hit no lesion are such pieces.

Run: ``.venv/bin/python tools/tracker_link_bench.py DIR [--round 1] [--top 40]``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from napari_lesion_harvest.geometry import iou_2d
from napari_lesion_harvest.harvest.config import stored_config
from napari_lesion_harvest.io.annotations import read_lesions
from napari_lesion_harvest.store import HarvestProject
from napari_lesion_harvest.tracking.marks import proposals_hitting_marks
from napari_lesion_harvest.tracking.stacking import stack_proposals
from napari_lesion_harvest.tracking.suppression import suppress_duplicates

#: (link_iou, fuse_iou) pairs stacked again.
THRESHOLDS = ((0.8, 0.8), (0.7, 0.7), (0.6, 0.6), (0.5, 0.8), (0.5, 0.5), (0.4, 0.4))
#: A proposal lies on a lesion when its best box overlaps the lesion's box there by more.
PIECE_IOU = 0.3


def consecutive_truth_iou(dataset: Path) -> None:
    """Print, per slice interval, how often true boxes of consecutive slices overlap."""
    lesions = read_lesions(dataset / "truth" / "lesions.json")[0]
    settings = json.loads((dataset / "synth.json").read_text())["volume_settings"]
    by_interval: dict[float, list[np.ndarray]] = defaultdict(list)
    for volume_id, volume_lesions in lesions.items():
        interval = settings[volume_id]["spacing_zyx"][0]
        for lesion in volume_lesions:
            if len(lesion.slices) > 1:
                by_interval[interval].append(
                    iou_2d(lesion.boxes[:-1], lesion.boxes[1:], elementwise=True)
                )
    print("true boxes of consecutive slices:")
    print(f"{'interval':>9}{'pairs':>7}{'median':>8}{'> 0.8':>7}{'> 0.5':>7}")
    every = []
    for interval, parts in sorted(by_interval.items()):
        ious = np.concatenate(parts)
        every.append(ious)
        print(
            f"{interval:>7} mm{len(ious):>7}{np.median(ious):>8.2f}"
            f"{np.mean(ious > 0.8):>7.2f}{np.mean(ious > 0.5):>7.2f}"
        )
    ious = np.concatenate(every)
    print(f"{'all':>9}{len(ious):>7}{np.median(ious):>8.2f}{np.mean(ious > 0.8):>7.2f}"
          f"{np.mean(ious > 0.5):>7.2f}")  # fmt: skip


def is_piece(proposal, volume_lesions) -> bool:
    """Whether ``proposal``'s best box lies on a true lesion (IoU > :data:`PIECE_IOU`)."""
    z, box = proposal.best_slice, proposal.best_box
    return any(
        z in lesion.slices and iou_2d([box], [lesion.box_on_slice(z)])[0, 0] > PIECE_IOU
        for lesion in volume_lesions
    )


def restack(project, number: int, test_ids: list[str], lesions, full_marks, config) -> None:
    """Print the V_H_test proposals, lesions hit and pieces at each of :data:`THRESHOLDS`."""
    detected = {v: defaultdict(lambda: ([], [])) for v in test_ids}
    for stored in project.proposals(number):
        if stored.volume_id in detected:
            proposal = stored.proposal
            for z, box, score in zip(
                proposal.slices, proposal.boxes, proposal.scores, strict=True
            ):
                if score > 0:  # 0: a slice the fusion bridged, not a detection
                    detected[stored.volume_id][int(z)][0].append(box)
                    detected[stored.volume_id][int(z)][1].append(score)
    lesion_count = sum(len(full_marks[v]) for v in test_ids)
    print(f"\nround {number}'s V_H_test boxes stacked again ({lesion_count} lesions):")
    print(f"{'link':>5}{'fuse':>6}{'proposals':>11}{'lesions hit':>13}{'pieces':>8}")
    for link_iou, fuse_iou in THRESHOLDS:
        totals = np.zeros(3, dtype=np.int64)
        for volume_id in test_ids:
            slices = {
                z: (np.array(boxes), np.array(scores))
                for z, (boxes, scores) in detected[volume_id].items()
            }
            proposals = suppress_duplicates(
                stack_proposals(
                    slices, score_threshold=config.scan.score_threshold,
                    link_iou=link_iou, fuse_iou=fuse_iou,
                ),
                iou_threshold=config.scan.duplicate_iou,
            )  # fmt: skip
            marks = full_marks[volume_id]
            hit = [
                proposals_hitting_marks({volume_id: proposals}, {volume_id: [m]})[volume_id]
                for m in marks
            ]
            any_hit = np.any(hit, axis=0) if hit else np.zeros(len(proposals), dtype=bool)
            pieces = sum(
                is_piece(p, lesions[volume_id])
                for p, h in zip(proposals, any_hit, strict=True)
                if not h
            )
            totals += (len(proposals), sum(bool(h.any()) for h in hit), pieces)
        print(f"{link_iou:>5}{fuse_iou:>6}{totals[0]:>11}{totals[1]:>13}{totals[2]:>8}")


def top_ranked_pieces(project, number: int, test_ids: list[str], lesions, full_marks, top):
    """Print how many of the top-``top`` s_gc proposals that miss every lesion are pieces."""
    ranked = sorted(
        (
            s
            for s in project.proposals(number)
            if s.volume_id in test_ids and s.role != "P_RH" and s.s_gc is not None
        ),
        key=lambda s: -s.s_gc,
    )[:top]
    misses = [
        s
        for s in ranked
        if not proposals_hitting_marks(
            {s.volume_id: [s.proposal]}, {s.volume_id: full_marks[s.volume_id]}
        )[s.volume_id][0]
    ]
    pieces = sum(is_piece(s.proposal, lesions[s.volume_id]) for s in misses)
    hits = len(ranked) - len(misses)
    print(
        f"\nround {number}, top {len(ranked)} V_H_test proposals by s_gc: {hits} hit a lesion, "
        f"{len(misses)} miss every lesion, of which {pieces} lie on one"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="benchmarks/harvest_bench.py --out folder")
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args(argv)
    consecutive_truth_iou(args.out / "dataset")
    lesions = read_lesions(args.out / "dataset" / "truth" / "lesions.json")[0]
    with HarvestProject.open(args.out / "project") as project:
        test_ids = sorted(v.volume_id for v in project.volumes(split="V_H_test"))
        full_marks = {
            v: [m.mark for m in project.marks(v) if m.origin == "expert"] for v in test_ids
        }
        config = stored_config(args.round, project.rounds.get(args.round).config)
        restack(project, args.round, test_ids, lesions, full_marks, config)
        top_ranked_pieces(project, args.round, test_ids, lesions, full_marks, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
