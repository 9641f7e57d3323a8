"""Where a phantom project's rounds lose the unmarked V_H_test lesions.

For each finished round of a project whose V_H_test volumes carry their full
(expert) marks: how many of the lesions without an original mark some proposal
hits (the engine's P3D rule: on the mark's slice, box IoU >= 0.5), the best such proposal's scores
against the round's harvest threshold, how many of the round's hard negatives
P_neg_H in V_H_test are lesions, and the LPG training labels the next round
would use.

Run: ``.venv/bin/python tools/harvest_inspect.py PROJECT [--next-labels]``
(e.g. the ``project/`` folder of ``benchmarks/harvest_bench.py --out DIR``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.harvest.training_sets import lpg_training_slices
from napari_lesion_harvest.store import HarvestProject
from napari_lesion_harvest.tracking.marks import proposals_hitting_marks


def inspect_round(project, record, test_ids) -> None:
    proposals = [s for s in project.proposals(record.number) if s.volume_id in test_ids]
    threshold = record.metrics.get("threshold")
    unmarked_best, hard_lesions, hard_total = [], 0, 0
    for volume_id in test_ids:
        stored_marks = project.marks(volume_id)
        original = [m.mark for m in stored_marks if m.origin == "original"]
        lesions = [m.mark for m in stored_marks if m.origin == "expert"]
        mine = [s for s in proposals if s.volume_id == volume_id]
        unmarked = ~lesions_with_original_marks(volume_id, lesions, original)
        for lesion in (m for m, u in zip(lesions, unmarked, strict=True) if u):
            hit = hitting(mine, volume_id, [lesion])
            found = [s for s, h in zip(mine, hit, strict=True) if h]
            unmarked_best.append(max(found, key=lambda s: s.s_gc or 0.0) if found else None)
        hard = [s for s in mine if s.role == "P_neg_H"]
        hard_total += len(hard)
        hard_lesions += int(hitting(hard, volume_id, lesions).sum())
    found = [s for s in unmarked_best if s is not None]
    print(f"round {record.number}: threshold {threshold}")
    print(f"  unmarked V_H_test lesions proposed: {len(found)} of {len(unmarked_best)}")
    if found:
        for name in ("s_g", "s_c", "s_gc"):
            values = np.array([getattr(s, name) or 0.0 for s in found])
            print(
                f"  their best proposals' {name}: median {np.median(values):.2f}, "
                f"max {values.max():.2f}"
            )
    print(f"  P_neg_H in V_H_test: {hard_total}, of which lesions: {hard_lesions}")
    inspect_ranking(project, proposals, test_ids)


#: A proposal whose best slice lies closer than this to a sub-volume's end (mm).
NEAR_END_MM = 8.0
#: Lengths of the ranking's top inspected.
TOP_COUNTS = (50, 200)


def inspect_ranking(project, proposals, test_ids) -> None:
    """The top of the V_H_test ranking (P_RH aside) by s_g and by s_gc: proposals hitting
    a lesion (full marks, P3D) and false positives peaking near a sub-volume's end."""
    records = {v.volume_id: v for v in project.volumes(split="V_H_test")}
    ranked, hits = [], {}
    for volume_id in test_ids:
        mine = [s for s in proposals if s.volume_id == volume_id and s.role != "P_RH"]
        lesions = [m.mark for m in project.marks(volume_id) if m.origin == "expert"]
        hits.update(zip((s.id for s in mine), hitting(mine, volume_id, lesions), strict=True))
        ranked.extend(mine)

    def near_end(stored) -> bool:
        record = records[stored.volume_id]
        z, depth = stored.proposal.best_slice, record.shape[0]
        return min(z, depth - 1 - z) * (record.spacing or (1.0,))[0] < NEAR_END_MM

    for name in ("s_g", "s_gc"):
        order = sorted(
            (s for s in ranked if getattr(s, name) is not None), key=lambda s: -getattr(s, name)
        )
        for top in TOP_COUNTS:
            shown = order[:top]
            false = [s for s in shown if not hits[s.id]]
            print(
                f"  top {len(shown)} by {name}: {len(shown) - len(false)} hit a lesion; of the "
                f"{len(false)} others, {sum(map(near_end, false))} peak < {NEAR_END_MM:.0f} mm "
                "from a sub-volume end"
            )


def hitting(stored, volume_id: str, marks) -> np.ndarray:
    """``(len(stored),)`` bool: which stored proposals hit one of ``marks`` (the
    engine's P3D rule, as the verify stage applies it)."""
    return hitting_proposals([s.proposal for s in stored], volume_id, marks)


def hitting_proposals(proposals, volume_id: str, marks) -> np.ndarray:
    """``(len(proposals),)`` bool: which 3D proposals of one volume hit one of
    ``marks`` (P3D rule)."""
    if not proposals:
        return np.zeros(0, dtype=bool)
    return proposals_hitting_marks({volume_id: list(proposals)}, {volume_id: marks})[volume_id]


def lesions_with_original_marks(volume_id: str, lesions, original) -> np.ndarray:
    """``(len(lesions),)`` bool: which full marks an original mark hits, each full
    mark taken as a one-slice proposal (the engine's P3D rule)."""
    as_proposals = [Proposal3D([m.z], [m.box()], [1.0]) for m in lesions]
    return hitting_proposals(as_proposals, volume_id, original)


def inspect_next_labels(project) -> None:
    """The LPG training labels a next round would use (a cancelled snapshot)."""
    number = project.rounds.create({}).number
    with project.rounds.lock(number) as lock:
        snapshot = project.rounds.start(number, lock=lock)
        project.rounds.cancel(number, author="harvest_inspect")
    slices = lpg_training_slices(snapshot, use_pool=True)
    print(
        f"next round's LPG slices: {len(slices)}, positive boxes "
        f"{sum(len(s.positive_boxes) for s in slices)}, hard-negative boxes "
        f"{sum(len(s.hard_negative_boxes) for s in slices)}, slices without a positive "
        f"{sum(not len(s.positive_boxes) for s in slices)}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument(
        "--next-labels",
        action="store_true",
        help="also count the next round's LPG labels (adds a cancelled round to the store)",
    )
    args = parser.parse_args(argv)
    with HarvestProject.open(args.project) as project:
        test_ids = {v.volume_id for v in project.volumes(split="V_H_test")}
        for record in project.rounds.list():
            if record.status == "done":
                inspect_round(project, record, test_ids)
        if args.next_labels:
            inspect_next_labels(project)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
