"""Contradictions in the LPG's training labels: known lesions taught as background.

For a finished round of a phantom project, builds the LPG's training slices from the
round's own snapshot as its ``train_lpg`` stage does (with ``--set`` changes to the
round's configuration) and their targets without augmentation, then looks up, in the
phantom's truth (``dataset/truth/lesions.json``, used here to measure only), every
cross-section of a true lesion on a training slice. Each is counted by what the
targets teach at its centre cell: a positive (the slice has a positive box on it,
IoU >= 0.5), inside a positive's Gaussian, ignored (weight 0), a hard negative, or
background. A lesion is *known* when a usable mark hits it (P3D) or, when
fine-tuning, a positive proposal's best box does; a known lesion taught as
background or as a hard negative is a contradiction.

Run: ``.venv/bin/python tools/lpg_supervision_bench.py PROJECT --round 1
--truth DATASET/truth/lesions.json [--set lpg.ignore_known_lesions=true]`` on the
``project/`` and ``dataset/`` folders of ``benchmarks/harvest_bench.py --out DIR`` (seconds: no
pixel is read).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
from harvest_inspect import hitting_proposals

from napari_lesion_harvest.geometry import iou_2d
from napari_lesion_harvest.harvest.config import RoundConfig, stored_config
from napari_lesion_harvest.harvest.config_overrides import add_set_option, with_set_fields
from napari_lesion_harvest.harvest.stages import lpg_architecture
from napari_lesion_harvest.harvest.training_sets import (
    lpg_training_slices,
    proposal_polarity,
    usable_marks,
    volume_records,
)
from napari_lesion_harvest.io.annotations import read_lesions
from napari_lesion_harvest.io.sources import open_volume
from napari_lesion_harvest.lpg.data import LPGSample, sample_targets
from napari_lesion_harvest.lpg.preprocess import make_transform
from napari_lesion_harvest.store import HarvestProject

#: A positive box overlapping a lesion's section by this much is that lesion.
SAME_LESION_IOU = 0.5
TAUGHT = ("positive", "near a positive", "ignored", "hard negative", "background")


def known_lesions(snapshot, truth, *, use_pool: bool) -> dict[str, np.ndarray]:
    """Per volume, which true lesions a usable mark (P3D) or, with ``use_pool``, a
    positive proposal's best box (IoU >= 0.5 on its best slice) hits."""
    marks = usable_marks(snapshot)
    known = {}
    for volume_id, lesions in truth.items():
        if volume_id in marks:
            known[volume_id] = hitting_proposals(lesions, volume_id, marks[volume_id])
    if use_pool:
        judged = {p.id: p for p in snapshot.previous_pool} | {p.id: p for p in snapshot.verdicts}
        for stored in judged.values():
            if proposal_polarity(stored) and stored.volume_id in known:
                best = stored.proposal
                for i, lesion in enumerate(truth[stored.volume_id]):
                    box = lesion.box_on_slice(best.best_slice)
                    if box is not None and iou_2d(best.best_box[None], box[None])[0, 0] >= 0.5:
                        known[stored.volume_id][i] = True
    return known


def count_sections(snapshot, config: RoundConfig, truth) -> tuple[Counter, dict]:
    """Counts of ``(split, known, taught)`` over the true lesions' sections on the
    training slices, and totals of the labels themselves."""
    use_pool = snapshot.previous_round is not None
    slices = lpg_training_slices(
        snapshot,
        use_pool=use_pool,
        ignore_known_lesions=config.lpg.ignore_known_lesions,
    )
    architecture = lpg_architecture(config)
    canvas = config.lpg.crop_px or architecture.max_side
    canvas -= canvas % architecture.size_divisor
    records = {r.volume_id: r for r in volume_records(snapshot)}
    known = known_lesions(snapshot, truth, use_pool=use_pool)
    counts: Counter = Counter()
    ignored_cells, cells = 0, 0
    for training in slices:
        record = records[training.volume_id]
        volume = open_volume(record)  # lazy: only its shape and spacing are used
        transform = make_transform(
            volume.shape[1:], volume.spacing[1:], architecture, canvas_shape=(canvas, canvas)
        )
        sample = LPGSample(
            volume,
            training.z,
            training.positive_boxes,
            training.hard_negative_boxes,
            ignore_boxes=training.ignore_boxes,
        )
        targets = sample_targets(sample, transform, architecture)
        heat, weight = targets.heatmap[0], targets.heatmap_weight[0]
        ignored_cells += int((weight == 0).sum())
        cells += weight.size
        for lesion, is_known in zip(
            truth.get(training.volume_id, []), known[training.volume_id], strict=True
        ):
            box = lesion.box_on_slice(training.z)
            if box is None:
                continue
            taught = section_label(
                box, training.positive_boxes, transform, heat, weight, architecture.stride
            )
            counts[record.split, bool(is_known), taught] += 1
    totals = {
        "slices": len(slices),
        "positive boxes": sum(len(s.positive_boxes) for s in slices),
        "hard-negative boxes": sum(len(s.hard_negative_boxes) for s in slices),
        "ignore boxes": sum(len(s.ignore_boxes) for s in slices),
        "heatmap cells ignored": f"{ignored_cells / max(cells, 1):.2%}",
    }
    return counts, totals


def section_label(box, positives, transform, heat, weight, stride: int) -> str:
    """What the targets teach at the centre cell of a lesion's ``xyxy`` section ``box``."""
    if len(positives) and iou_2d(box[None], positives).max() >= SAME_LESION_IOU:
        return "positive"
    x1, y1, x2, y2 = transform.boxes_to_network(box[None])[0]
    x = int(np.clip((x1 + x2) / 2 / stride, 0, heat.shape[1] - 1))
    y = int(np.clip((y1 + y2) / 2 / stride, 0, heat.shape[0] - 1))
    if weight[y, x] == 0:
        return "ignored"
    if heat[y, x] > 0:
        return "near a positive"
    return "hard negative" if heat[y, x] < 0 else "background"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--round", type=int, required=True, help="a started or finished round")
    parser.add_argument("--truth", type=Path, required=True, help="the phantom's lesions.json")
    add_set_option(parser)
    args = parser.parse_args(argv)
    truth = read_lesions(args.truth)[0]
    with HarvestProject.open(args.project) as project:
        snapshot = project.rounds.snapshot(args.round)
    config = with_set_fields(stored_config(args.round, snapshot.config), args.set, parser)
    counts, totals = count_sections(snapshot, config, truth)
    print(f"round {args.round}, changes {' '.join(args.set) or 'none'}")
    print("; ".join(f"{name} {value}" for name, value in totals.items()))
    print("true lesion sections on the training slices, by what their centre is taught:")
    print(f"{'split':<9}{'lesion':<9}" + "".join(f"{t:>17}" for t in TAUGHT))
    for split in ("V_M", "V_H", "V_H_test"):
        for is_known in (True, False):
            row = [counts[split, is_known, t] for t in TAUGHT]
            if sum(row):
                name = "known" if is_known else "unknown"
                print(f"{split:<9}{name:<9}" + "".join(f"{n:>17}" for n in row))
    contradictions = sum(
        n
        for (_, is_known, t), n in counts.items()
        if is_known and t in ("background", "hard negative")
    )
    print(f"known lesions taught as background or hard negative: {contradictions}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
