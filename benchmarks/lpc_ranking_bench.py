"""How well an LPC ranks a finished round's V_H_test proposals, without rerunning the round.

Issue 10's Table I figures (recall at 80-95% precision of ``R + P_H`` on
V_H_test) depend only on how the lesion score ``s_gc = s_g * s_c`` ranks the
V_H_test proposals. This benchmark takes one finished round of a project
(e.g. ``harvest_bench.py --out DIR`` leaves ``DIR/project``), trains an LPC
on that round's verified proposals (P_RM, P_neg_M, P_RH) with the round's own
configuration changed by the options given, scores the round's V_H_test
proposals and prints the same evaluation the round's ``evaluate`` stage
stores, plus the ranking by ``s_c`` alone. The round's own figures are printed
first, for comparison.

Run::

    .venv/bin/python benchmarks/lpc_ranking_bench.py DIR/project --round 1 \
        [--epochs 12] [--patch-size 64] [--pad-px 32] [--width lite] \
        [--variant multiview] [--holdout 0.2] [--patience 5] [--drop-touching] \
        [--set FIELD=JSON] [--seed N] [--threads 2] [--json FILE]

About 3-7 minutes (two runs side by side, one torch thread each) for round 1 of the
60-volume phantom at lite settings.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch
from harvest_bench import add_set_option, with_set_fields

from napari_lesion_harvest.evaluation.harvest import evaluate_harvest, full_annotation
from napari_lesion_harvest.harvest.config import RoundConfig
from napari_lesion_harvest.harvest.stages import lpc_training_options
from napari_lesion_harvest.io.sources import open_volume
from napari_lesion_harvest.lpc.score import classify_proposals
from napari_lesion_harvest.lpc.train import proposal_sets, train_classifier
from napari_lesion_harvest.store import HarvestProject
from napari_lesion_harvest.tracking.marks import proposals_touching_marked_lesions


def table_row(evaluation: dict) -> str:
    """AP and recall at each precision target of an evaluation's per-round row."""
    p3d = evaluation["per_round"]["p3d"]
    recalls = "  ".join(
        f"R@{p['precision_target'] * 100:.0f} {p['recall']:.3f}"
        for p in p3d["recall_at_precision"]
    )
    return f"AP {p3d['ap']:.3f}  {recalls}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("project")
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--patch-size", type=int)
    parser.add_argument("--pad-px", type=float)
    parser.add_argument("--width", choices=("paper", "lite"))
    parser.add_argument("--variant", choices=("multiview", "axial", "3d"))
    parser.add_argument("--holdout", type=float, default=0.2, help="V_M part held out (0.2)")
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--seed", type=int, help="default: the round's, config seed + round")
    parser.add_argument(
        "--drop-touching",
        action="store_true",
        help="leave out of P_neg_M the proposals that touch a marked lesion off its mark",
    )
    add_set_option(parser)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    overrides = {
        name: value
        for name, value in (
            ("lpc_epochs", args.epochs),
            ("lpc_patch_size", args.patch_size),
            ("lpc_pad_px", args.pad_px),
            ("lpc_width", args.width),
            ("lpc_variant", args.variant),
        )
        if value is not None
    }
    with HarvestProject.open(args.project) as project:
        record = project.rounds.get(args.round)
        records = {r.volume_id: r for r in project.volumes()}
        test_ids = [r.volume_id for r in project.volumes(split="V_H_test")]
        stored = list(project.proposals(args.round))
        marks = {v: project.marks(v) for v in test_ids}
        v_m_marks = {r.volume_id: project.marks(r.volume_id) for r in project.volumes(split="V_M")}
    config = with_set_fields(replace(RoundConfig(**record.config), **overrides), args.set, parser)
    seed = config.seed + args.round if args.seed is None else args.seed
    options = replace(
        lpc_training_options(config, seed),
        holdout_fraction=args.holdout,
        patience=args.patience,
        pretrained=False,
    )
    pools = {"P_RM": {}, "P_neg_M": {}, "P_RH": {}}
    for s in stored:
        if s.role in pools and s.volume_id not in test_ids:
            pools[s.role].setdefault(s.volume_id, []).append(s.proposal)
    volumes = {v: open_volume(records[v]) for pool in pools.values() for v in pool}
    dropped = 0
    if args.drop_touching:
        for volume_id, negatives in pools["P_neg_M"].items():
            touching = proposals_touching_marked_lesions(
                negatives, [m.mark for m in v_m_marks[volume_id]], volumes[volume_id].spacing
            )
            kept = [p for p, t in zip(negatives, touching, strict=True) if not t]
            pools["P_neg_M"][volume_id] = kept
            dropped += int(touching.sum())
    sets = proposal_sets(volumes, p_rm=pools["P_RM"], p_neg_m=pools["P_neg_M"], p_rh=pools["P_RH"])

    started = time.perf_counter()
    result = train_classifier(sets, options, device="cpu")
    train_s = time.perf_counter() - started
    candidates = {}
    for s in stored:
        if s.volume_id in test_ids and s.role != "P_RH":
            candidates.setdefault(s.volume_id, []).append(s)
    rescored = {}
    for volume_id, chosen in candidates.items():
        s_c = classify_proposals(
            result.model, open_volume(records[volume_id]), [s.proposal for s in chosen]
        )
        rescored[volume_id] = [
            replace(s, s_c=float(c), s_gc=float(c) * s.s_g)
            for s, c in zip(chosen, s_c, strict=True)
        ]
    s_c_only = {v: [replace(s, s_gc=s.s_c) for s in chosen] for v, chosen in rescored.items()}

    full = {v: full_annotation(marks[v]) for v in test_ids}
    original = {v: [m.mark for m in marks[v] if m.origin == "original"] for v in test_ids}
    figures = {
        "options": {k: str(v) for k, v in vars(options).items()},
        "train_s": round(train_s, 1),
        "best_epoch": result.best_epoch,
        "counts": result.counts,
        "dropped_touching": dropped,
        "history": result.history,
    }
    print(f"round {args.round} as stored:   {table_row(record.metrics['evaluation'])}")
    for name, proposals in (("s_gc", rescored), ("s_c alone", s_c_only)):
        evaluation = evaluate_harvest(full, original=original, proposals=proposals, threshold=None)
        print(f"retrained, by {name:9s} {table_row(evaluation)}")
        figures[name] = evaluation["per_round"]["p3d"]
    print(
        f"trained in {train_s:.0f} s, best epoch {result.best_epoch} of {options.epochs}, "
        f"{result.counts}, {dropped} touching negatives dropped"
    )
    for record in result.history:
        print("  ", {k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()})
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=1, default=float)


if __name__ == "__main__":
    main()
