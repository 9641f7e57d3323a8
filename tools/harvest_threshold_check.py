"""A round's harvest on V_H_test under two ways of reading V_M for the threshold.

For each finished round of phantom projects (V_H_test flagged complete with its
full marks): the threshold at 95% precision on V_M as the engine sets it (every
V_M proposal), and on V_M's proposals without those that hit an original mark
(what a V_H volume's unverified proposals are like: its originally marked lesions
are P_RH, never harvested). For each threshold, V_H_test's harvest: proposals at
or above it, how many hit no lesion, and how many V_M let one expect. The second
rule is only a counterfactual of the round's own selection: later rounds were
trained on the engine's harvest.

Run: ``.venv/bin/python tools/harvest_threshold_check.py PROJECT [PROJECT ...]``
(e.g. the ``seed-K/project`` folders of ``benchmarks/quality_bench.py --out DIR``).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from napari_lesion_harvest.harvest.config_migration import dotted_fields
from napari_lesion_harvest.harvest.quality import harvest_false_positives, test_set
from napari_lesion_harvest.harvest.threshold import threshold_at_precision
from napari_lesion_harvest.store import HarvestProject
from napari_lesion_harvest.tracking.marks import proposals_hitting_marks
from napari_lesion_harvest.vocabulary import Origin, Role, RoundStatus

RULES = ("V_M", "V_M unmarked")


def hits_original_marks(project, v_m, match_iou: float) -> list[bool]:
    """For each V_M proposal, whether it hits an original mark of its volume."""
    by_volume = defaultdict(list)
    for index, stored in enumerate(v_m):
        by_volume[stored.volume_id].append(index)
    original = {
        v: [s.mark for s in project.marks(v) if s.origin == Origin.original] for v in by_volume
    }
    hits = proposals_hitting_marks(
        {v: [v_m[i].proposal for i in indices] for v, indices in by_volume.items()},
        original,
        iou_threshold=match_iou,
    )
    flags = [False] * len(v_m)
    for v, indices in by_volume.items():
        for i, hit in zip(indices, hits[v], strict=True):
            flags[i] = bool(hit)
    return flags


def round_rows(project_dir: Path) -> list[dict]:
    """Per done round and rule: threshold and V_H_test harvest (see the module notes)."""
    truth, _ = test_set(project_dir)
    rows = []
    with HarvestProject.open(project_dir) as project:
        for record in project.rounds.list():
            if record.status != RoundStatus.done:
                continue
            match_iou = dotted_fields(record.config).get("harvest.match_iou", 0.5)
            target = dotted_fields(record.config).get("harvest.precision", 0.95)
            v_m = list(project.proposals(record.number, roles=(Role.P_RM, Role.P_neg_M)))
            marked = hits_original_marks(project, v_m, match_iou)
            test = defaultdict(list)
            for stored in project.proposals(record.number):
                if stored.volume_id in truth:
                    test[stored.volume_id].append(stored)
            for rule, kept in zip(RULES, ([], marked), strict=True):
                chosen = [
                    s for i, s in enumerate(v_m) if not (kept and kept[i] and s.role == Role.P_RM)
                ]
                threshold, _ = threshold_at_precision(
                    [s.s_gc for s in chosen],
                    [s.role == Role.P_RM for s in chosen],
                    target_precision=target,
                )
                threshold = None if threshold == float("inf") else threshold
                harvest = _harvest_at(test, truth, v_m, threshold, match_iou)
                rows.append(
                    {"round": record.number, "rule": rule, "threshold": threshold, **harvest}
                )
    return rows


def _harvest_at(test, truth, v_m, threshold, match_iou) -> dict:
    """V_H_test's harvest at ``threshold``: its scored proposals relabelled by it."""
    scored = (Role.P_pos_H, Role.P_neg_H, Role.candidate)

    def role(stored) -> str:
        if stored.role not in scored:
            return stored.role
        above = threshold is not None and stored.s_gc is not None and stored.s_gc >= threshold
        return Role.P_pos_H if above else Role.candidate

    relabelled = {v: [replace(s, role=role(s)) for s in stored] for v, stored in test.items()}
    return harvest_false_positives(
        relabelled, truth, v_m, threshold=threshold, match_iou=match_iou
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("projects", nargs="+", type=Path)
    args = parser.parse_args(argv)
    totals = defaultdict(lambda: defaultdict(float))
    print(
        f"{'project':<40}{'round':>6}  {'rule':<14}{'threshold':>10}{'harvested':>10}"
        f"{'false':>7}{'expected':>10}"
    )
    for project_dir in args.projects:
        for row in round_rows(project_dir):
            threshold = "none" if row["threshold"] is None else f"{row['threshold']:.3f}"
            print(
                f"{str(project_dir)[-40:]:<40}{row['round']:>6}  {row['rule']:<14}{threshold:>10}"
                f"{row['harvested']:>10}{row['observed']:>7}{row['expected']:>10.1f}"
            )
            for key in ("harvested", "observed", "expected"):
                totals[(row["round"], row["rule"])][key] += row[key]
    print("totals over the projects (V_H_test):")
    for (number, rule), total in sorted(totals.items()):
        print(
            f"  round {number}, {rule:<14}: {total['harvested']:.0f} harvested, "
            f"{total['harvested'] - total['observed']:.0f} lesions, {total['observed']:.0f} "
            f"false positives (expected {total['expected']:.1f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
