"""A round's harvest on V_H_test under each ``harvest.threshold_lesions`` reading of V_M.

For each finished round of phantom projects (V_H_test flagged complete with its
full marks): the threshold at the round's precision on V_M with every lesion
proposal (``all``, the paper) and without those that hit an original mark
(``unmarked``; :func:`~napari_lesion_harvest.harvest.threshold.threshold_sample`).
For each threshold, V_H_test's harvest: proposals at or above it, how many hit no
lesion, and how many V_M let one expect. The rule the round did not use is only a
counterfactual of the round's own selection: later rounds learnt from the harvest
the round made.

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
from napari_lesion_harvest.harvest.threshold import (
    THRESHOLD_LESIONS,
    threshold_at_precision,
    threshold_sample,
)
from napari_lesion_harvest.store import HarvestProject
from napari_lesion_harvest.vocabulary import Origin, Role, RoundStatus


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
            original = {
                v: [s.mark for s in project.marks(v) if s.origin == Origin.original]
                for v in {s.volume_id for s in v_m}
            }
            test = defaultdict(list)
            for stored in project.proposals(record.number):
                if stored.volume_id in truth:
                    test[stored.volume_id].append(stored)
            for lesions in THRESHOLD_LESIONS:
                threshold, _ = threshold_at_precision(
                    *threshold_sample(v_m, original, lesions=lesions, match_iou=match_iou),
                    target_precision=target,
                )
                threshold = None if threshold == float("inf") else threshold
                harvest = _harvest_at(test, truth, v_m, threshold, match_iou)
                rows.append(
                    {"round": record.number, "rule": lesions, "threshold": threshold, **harvest}
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
