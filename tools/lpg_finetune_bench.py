"""What a round's LPG proposes on V_H_test, re-trained with other settings, in minutes.

Sessions 3-7 saw the HNSL fine-tuning of rounds 2 and 3 lose unmarked lesions
that round 1's LPG proposed. This benchmark repeats only the ``train_lpg`` stage
of one finished round, with its own snapshot (marks, pool P_(i-1), splits) and
its configuration changed by ``--set``, then scans the V_H_test volumes as the
``scan`` stage does and compares the proposals with their full marks:

* lesions hit (P3D rule), all and those without an original mark; with the
  original marks this is the round's ceiling (the recall of R + every proposal);
* the Table I row of R + the proposals ranked by objectness s_g alone (the LPC
  is not re-trained, so this is the LPG's part of the ranking);
* the top 50 of that ranking: proposals hitting no lesion (false positives), and
  how many of them peak within 2 slices of a sub-volume's end;
* with ``--truth`` (the phantom's ``dataset/truth/lesions.json``), the unmarked
  lesions hit and missed per lesion kind, with their sizes and contrasts.

The project is copied to ``--work`` first (the stage writes its checkpoint into
the project's ``models/`` folder), so the original is not touched.
``--stored`` skips the training and scans with the round's own LPG checkpoint.

Run: ``.venv/bin/python tools/lpg_finetune_bench.py PROJECT --round 2
[--set lpg.ignore_known_lesions=true] [--stored]`` on the ``project/`` folder of
``benchmarks/harvest_bench.py --out DIR`` (a 200-step fine-tune of the 60-volume phantom at
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

import numpy as np
from harvest_inspect import hitting_proposals, lesions_with_original_marks

from napari_lesion_harvest.evaluation.harvest import evaluate_harvest, full_annotation
from napari_lesion_harvest.harvest.config import stored_config
from napari_lesion_harvest.harvest.config_overrides import add_set_option, with_set_fields
from napari_lesion_harvest.harvest.stages import RoundState, scan_options, train_lpg_stage
from napari_lesion_harvest.lpg.checkpoint import load_model
from napari_lesion_harvest.store import HarvestProject
from napari_lesion_harvest.tracking.scan import scan_volume


def scan_test_volumes(state: RoundState, checkpoint: Path, sha256: str | None) -> dict[str, list]:
    """V_H_test's 3D proposals with the LPG of ``checkpoint`` (its recorded ``sha256``
    checked when given), by volume id."""
    model = load_model(checkpoint, sha256=sha256)
    test = [r.volume_id for r in state.snapshot.volumes.get("V_H_test", [])]
    return {
        volume_id: scan_volume(
            model, state.open(volume_id), **scan_options(state.config), device="cpu"
        )[0]
        for volume_id in test
    }


def compare_with_truth(state: RoundState, proposals: dict[str, list]) -> dict:
    """Lesions hit and the s_g-ranked Table I row of R + ``proposals`` on V_H_test.

    ``lesions`` holds one record per full mark: volume id, mark, whether an
    original mark hits it, whether a proposal hits it, and the highest s_g of
    the proposals that do (0 when none does). ``top`` holds, for the
    :data:`TOP` proposals of highest s_g, how many hit no lesion and how many
    of those peak within :data:`NEAR_END_SLICES` slices of their volume's end.
    """
    marks = state.snapshot.marks
    full = {v: full_annotation(marks.get(v, [])) for v in proposals}
    original = {v: [s.mark for s in marks.get(v, []) if s.origin == "original"] for v in full}
    records, ranked, by_s_g = [], {}, []
    for volume_id, found in proposals.items():
        lesions = full[volume_id]
        depth = state.record(volume_id).shape[0]
        for proposal, hit in zip(found, hitting_proposals(found, volume_id, lesions), strict=True):
            to_end = min(proposal.best_slice, depth - 1 - proposal.best_slice)
            by_s_g.append((proposal.s_g, bool(hit), to_end <= NEAR_END_SLICES))
        marked = lesions_with_original_marks(volume_id, lesions, original[volume_id])
        for mark, on_original in zip(lesions, marked, strict=True):
            hits = hitting_proposals(found, volume_id, [mark])
            best = max((p.s_g for p, h in zip(found, hits, strict=True) if h), default=0.0)
            records.append(
                SimpleNamespace(
                    volume_id=volume_id,
                    mark=mark,
                    marked=bool(on_original),
                    hit=bool(hits.any()),
                    best_s_g=best,
                )
            )
        on_original = hitting_proposals(found, volume_id, original[volume_id])
        ranked[volume_id] = [
            SimpleNamespace(proposal=p, s_gc=p.s_g, role="P_RH" if o else "P_H")
            for p, o in zip(found, on_original, strict=True)
        ]
    evaluation = evaluate_harvest(full, original=original, proposals=ranked, threshold=None)
    unmarked = [r for r in records if not r.marked]
    top = sorted(by_s_g, key=lambda item: -item[0])[:TOP]
    false = [near for _, hit, near in top if not hit]
    return {
        "top": {"proposals": len(top), "false": len(false), "false_near_end": sum(false)},
        "lesions": records,
        "proposals": sum(map(len, proposals.values())),
        "hit": sum(r.hit for r in records),
        "unmarked": len(unmarked),
        "unmarked_hit": sum(r.hit for r in unmarked),
        "p3d": evaluation["per_round"]["p3d"],
        "ceiling": evaluation["per_round"]["ceiling"],
    }


#: Length of the s_g ranking's top inspected for false positives.
TOP = 50
#: A proposal whose best slice is this many slices or fewer from its volume's end.
NEAR_END_SLICES = 2


def print_lesions_by_kind(records, truth_path: Path) -> None:
    """Per lesion kind of the phantom's truth (``lesions.json``): the unmarked V_H_test
    lesions, how many a proposal hits, and their conspicuity (hit against missed)."""
    truth: dict[tuple, list] = {}
    for lesion in json.loads(truth_path.read_text())["lesions"]:
        meta = lesion["meta"]
        truth.setdefault((lesion["volume_id"], meta["recist_z"]), []).append(meta)
    by_kind: dict[str, list] = {}
    for record in (r for r in records if not r.marked):
        same_slice = truth[(record.volume_id, record.mark.z)]
        meta = min(
            same_slice,
            key=lambda m: np.abs(np.subtract(m["recist_long_axis"], record.mark.long_axis)).sum(),
        )
        by_kind.setdefault(meta["kind"], []).append((record, meta))
    print("unmarked V_H_test lesions by kind: hit / all; median diameter (mm), |contrast| (HU)")
    for kind, rows in sorted(by_kind.items(), key=lambda item: -len(item[1])):
        hit = [m for r, m in rows if r.hit]
        missed = [m for r, m in rows if not r.hit]
        print(
            f"  {kind:24s} {len(hit):2d} / {len(rows):2d}; hit {_medians(hit)}; "
            f"missed {_medians(missed)}"
        )


def _medians(metas) -> str:
    if not metas:
        return "-"
    diameter = np.median([m["diameter_mm"] for m in metas])
    contrast = np.median([abs(m["contrast_hu"]) for m in metas])
    return f"{diameter:.0f} mm, {contrast:.0f} HU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--round", type=int, required=True, help="a finished round")
    parser.add_argument("--stored", action="store_true", help="scan with the round's own LPG")
    parser.add_argument("--work", type=Path, help="where to copy the project (default: temp)")
    parser.add_argument(
        "--truth", type=Path, help="the phantom's truth/lesions.json: hits by lesion kind"
    )
    add_set_option(parser)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="lpg_finetune_bench_"))
    copy = work / "project"
    if not args.stored:  # models and data as files; the database through SQLite's backup
        shutil.copytree(args.project, copy, ignore=shutil.ignore_patterns("project.sqlite*"))
        with HarvestProject.open(args.project) as source:
            source.backup(copy / "project.sqlite")
    with HarvestProject.open(args.project if args.stored else copy) as project:
        snapshot = project.rounds.snapshot(args.round)
        config = with_set_fields(stored_config(args.round, snapshot.config), args.set, parser)
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
            checkpoint, sha256 = state.checkpoint("lpg")
            trained = {"stored": str(checkpoint)}
        else:
            checkpoint, sha256 = state.checkpoint_file("lpg"), None
            checkpoint.unlink(missing_ok=True)  # the round's own: the stage would resume it
            trained = train_lpg_stage(state).metrics["lpg"]
        trained_s = time.monotonic() - started
        proposals = scan_test_volumes(state, checkpoint, sha256)
        scanned_s = time.monotonic() - started - trained_s
        result = compare_with_truth(state, proposals)
    p3d = result["p3d"]
    changes = " ".join(args.set) or "none"
    print(f"round {args.round}, changes {changes}; LPG: {json.dumps(trained)}")
    print(f"training {trained_s:.0f} s, scan of V_H_test {scanned_s:.0f} s")
    print(
        f"V_H_test: {result['proposals']} proposals; lesions hit {result['hit']} of "
        f"{len(result['lesions'])}, without an original mark {result['unmarked_hit']} of "
        f"{result['unmarked']}; ceiling {result['ceiling']:.3f}"
    )
    recalls = " ".join(
        f"R@{100 * point['precision_target']:g}P {point['recall']:.3f}"
        for point in p3d["recall_at_precision"]
    )
    print(f"R + proposals ranked by s_g: AP {p3d['ap']:.3f} {recalls}")
    top = result["top"]
    print(
        f"top {top['proposals']} by s_g: {top['false']} hit no lesion, "
        f"{top['false_near_end']} of them peak within {NEAR_END_SLICES} slices of an end"
    )
    if args.truth:
        print_lesions_by_kind(result["lesions"], args.truth)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
