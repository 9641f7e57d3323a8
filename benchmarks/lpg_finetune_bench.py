"""What a round's LPG proposes on V_H_test, re-trained with other settings, in minutes.

Sessions 3-7 saw the HNSL fine-tuning of rounds 2 and 3 lose unmarked lesions
that round 1's LPG proposed. This benchmark repeats only the ``train_lpg`` stage
of one finished round, with its own snapshot (marks, pool P_(i-1), splits) and
its configuration changed by ``--set``, then scans the V_H_test volumes as the
``scan`` stage does and compares the proposals with their full marks:

* lesions hit (P3D rule), all and those without an original mark; with the
  original marks this is the round's ceiling (the recall of R + every proposal);
* the Table I row of R + the proposals ranked by objectness s_g alone (the LPC
  is not re-trained, so this is the LPG's part of the ranking).

The project is copied to ``--work`` first (the stage writes its checkpoint into
the project's ``models/`` folder), so the original is not touched.
``--stored`` skips the training and scans with the round's own LPG checkpoint.

Run: ``.venv/bin/python benchmarks/lpg_finetune_bench.py PROJECT --round 2
[--set lpg_finetune_learning_rate=2e-4] [--stored]`` on the ``project/`` folder of
``harvest_bench.py --out DIR`` (a 200-step fine-tune of the 60-volume phantom at
256 px takes about 4 minutes on one core, the scan of its 15 V_H_test volumes about
1 minute).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from harvest_bench import add_set_option, with_set_fields

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.harvest.config import RoundConfig
from napari_lesion_harvest.harvest.stages import (
    RoundState,
    evaluate_harvest,
    full_annotation,
    train_lpg_stage,
    volume_proposals,
)
from napari_lesion_harvest.lpg.checkpoint import load_model
from napari_lesion_harvest.store import HarvestProject
from napari_lesion_harvest.tracking.marks import proposals_hitting_marks


def scan_test_volumes(state: RoundState, checkpoint: Path) -> dict[str, list]:
    """V_H_test's 3D proposals with the LPG of ``checkpoint``, by volume id."""
    model = load_model(checkpoint)
    test = [r.volume_id for r in state.snapshot.volumes.get("V_H_test", [])]
    return {
        volume_id: volume_proposals(model, state.open(volume_id), state.config, "cpu")[0]
        for volume_id in test
    }


def compare_with_truth(state: RoundState, proposals: dict[str, list]) -> dict:
    """Lesions hit and the s_g-ranked Table I row of R + ``proposals`` on V_H_test."""
    marks = state.snapshot.marks
    full = {v: full_annotation(marks.get(v, [])) for v in proposals}
    original = {v: [s.mark for s in marks.get(v, []) if s.origin == "original"] for v in full}
    counts = {"lesions": 0, "unmarked": 0, "hit": 0, "unmarked_hit": 0, "proposals": 0}
    ranked = {}
    for volume_id, found in proposals.items():
        counts["proposals"] += len(found)
        lesions = full[volume_id]
        marked = proposals_hitting_marks(
            {volume_id: [_as_proposal(m) for m in lesions]}, {volume_id: original[volume_id]}
        )[volume_id]
        hit = [
            bool(any(proposals_hitting_marks({volume_id: found}, {volume_id: [m]})[volume_id]))
            for m in lesions
        ]
        counts["lesions"] += len(lesions)
        counts["unmarked"] += int((~marked).sum())
        counts["hit"] += sum(hit)
        counts["unmarked_hit"] += sum(h for h, m in zip(hit, marked, strict=True) if not m)
        on_original = proposals_hitting_marks({volume_id: found}, original)[volume_id]
        ranked[volume_id] = [
            SimpleNamespace(proposal=p, s_gc=p.s_g, role="P_RH" if o else "P_H")
            for p, o in zip(found, on_original, strict=True)
        ]
    evaluation = evaluate_harvest(full, original=original, proposals=ranked, threshold=None)
    return counts | {"p3d": evaluation["p3d"], "ceiling": evaluation["pr_curve"]["recall"][-1]}


def _as_proposal(mark):
    return Proposal3D([mark.z], [mark.box()], [1.0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--round", type=int, required=True, help="a finished round")
    parser.add_argument("--stored", action="store_true", help="scan with the round's own LPG")
    parser.add_argument("--work", type=Path, help="where to copy the project (default: temp)")
    add_set_option(parser)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="lpg_finetune_bench_"))
    copy = work / "project"
    if not args.stored:
        shutil.copytree(args.project, copy)
    with HarvestProject.open(args.project if args.stored else copy) as project:
        snapshot = project.rounds.snapshot(args.round)
        config = with_set_fields(RoundConfig(**snapshot.config), args.set, parser)
        state = RoundState(
            project,
            args.round,
            snapshot,
            config,
            "cpu",
            progress=lambda *event: None,
            cancelled=lambda: False,
        )
        started = time.monotonic()
        if args.stored:
            checkpoint = state.checkpoint_path("lpg")
            trained = {"stored": str(checkpoint)}
        else:
            checkpoint = state.working_path("lpg")
            checkpoint.unlink()  # the round's own: the stage would resume it, done
            trained = train_lpg_stage(state).metrics["lpg"]
        trained_s = time.monotonic() - started
        proposals = scan_test_volumes(state, checkpoint)
        scanned_s = time.monotonic() - started - trained_s
        result = compare_with_truth(state, proposals)
    p3d = result["p3d"]
    changes = " ".join(args.set) or "none"
    print(f"round {args.round}, changes {changes}; LPG: {json.dumps(trained)}")
    print(f"training {trained_s:.0f} s, scan of V_H_test {scanned_s:.0f} s")
    print(
        f"V_H_test: {result['proposals']} proposals; lesions hit {result['hit']} of "
        f"{result['lesions']}, without an original mark {result['unmarked_hit']} of "
        f"{result['unmarked']}; ceiling {result['ceiling']:.3f}"
    )
    recalls = " ".join(
        f"R@{100 * point['precision_target']:g}P {point['recall']:.3f}"
        for point in p3d["recall_at_precision"]
    )
    print(f"R + proposals ranked by s_g: AP {p3d['ap']:.3f} {recalls}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
