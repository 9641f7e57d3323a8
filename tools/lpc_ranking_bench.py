"""How well each LPC ranks a finished round's V_H_test proposals, without rerunning the round.

Table I figures (recall at 80-95% precision of ``R + P_H`` on V_H_test) depend only
on how the lesion score ``s_gc = s_g * s_c`` ranks the V_H_test proposals. This
benchmark takes one finished round of a project (e.g. ``benchmarks/harvest_bench.py --out DIR``
leaves ``DIR/project``) and, with the round's own configuration changed by the
options given:

1. gathers the round's verified proposals (P_RM, P_neg_M, P_RH) as its ``train_lpc``
   stage does;
2. for each candidate LPC (``--candidates``; ``s_g`` is the LPG's objectness alone),
   trains the out-of-fold models of the round's folds and one final model on
   everything, and computes the out-of-fold AP of s_gc on V_M by which a round with
   ``lpc.candidates`` chooses;
3. scores the V_H_test proposals with the final model (``final_model``, the paper)
   and with the mean of the fold models (``fold_mean``), and prints, per candidate and
   scoring, the evaluation the round's ``evaluate`` stage stores (AP, recall at 80,
   90% precision) and the **score scale**: the harvest threshold that gives 95%
   precision on V_M's out-of-fold s_gc, and the share of negatives (and positives)
   above it among V_M's proposals and among V_H_test's (a proposal is a positive when
   it hits a lesion of the full annotation; P_RH aside). On one scale, the two shares
   of negatives agree. ``proposal AP`` ranks V_H_test's proposals themselves (a
   finer measure than recall at 90% precision, which moves by whole lesions of 55).
   ``end AUC`` tells how much s_c says about place: the ROC AUC
   of s_c for telling V_H_test's negatives within 8 mm of a sub-volume end (where the
   LPG's 9-slice stack repeats the edge slice) from the others (0.5: nothing).

Run::

    .venv/bin/python tools/lpc_ranking_bench.py DIR/project --round 1 \\
        [--candidates multiview,features,s_g] [--seed N] [--set FIELD=JSON] \\
        [--feature-l2 0.03] \\
        [--epochs 12] [--patch-size 64] [--pad-px 32] [--width lite] \\
        [--holdout 0.2] [--patience 5] [--threads 1] [--json FILE]

``--set lpc.outside='"mirror"'`` reads the CNN's patches with the mirrored padding.
About 8-12 minutes per seed on one thread for round 1 of the 60-volume phantom at
lite settings (3 folds and a final CNN model).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from napari_lesion_harvest.evaluation.harvest import evaluate_harvest, full_annotation
from napari_lesion_harvest.harvest.config import stored_config, with_changes
from napari_lesion_harvest.harvest.config_overrides import add_set_option, with_set_fields
from napari_lesion_harvest.harvest.stages import lpc_plan
from napari_lesion_harvest.harvest.threshold import threshold_at_precision
from napari_lesion_harvest.io.sources import open_volume
from napari_lesion_harvest.lpc.choices import CLASSIFIER_NAMES
from napari_lesion_harvest.lpc.feature_model import DEFAULT_L2
from napari_lesion_harvest.lpc.features import FEATURE_NAMES
from napari_lesion_harvest.lpc.fitting import (
    FoldMean,
    chosen_candidate,
    out_of_fold,
    probabilities,
    train_candidate,
    v_m_ranking,
)
from napari_lesion_harvest.lpc.metrics import average_precision, roc_auc
from napari_lesion_harvest.lpc.models import build_classifier
from napari_lesion_harvest.lpc.patches import proposal_field_of_view
from napari_lesion_harvest.lpc.score import lesion_scores
from napari_lesion_harvest.lpc.train import proposal_sets
from napari_lesion_harvest.store import HarvestProject
from napari_lesion_harvest.tracking.marks import proposals_hitting_marks


def table_row(evaluation: dict) -> str:
    """AP and recall at each precision target of an evaluation's per-round row (the
    round's proposals alone: what the classifier's ranking decides)."""
    p3d = evaluation["per_round"]["p3d"]
    recalls = "  ".join(
        f"R@{p['precision_target'] * 100:.0f} {p['recall']:.3f}"
        for p in p3d["recall_at_precision"]
    )
    return f"AP {p3d['ap']:.3f}  {recalls}"


#: Quantiles (%) of the negatives' s_c compared between V_M and V_H_test.
NEGATIVE_QUANTILES = (50, 90, 99)


def scale_figures(v_m_s_c, v_m_s_g, v_m_labels, test_s_c, test_s_g, test_labels, precision):
    """The harvest threshold on V_M's s_gc, the shares of each side above it, and
    quantiles of the negatives' s_c on each side."""
    v_m_s_gc, test_s_gc = lesion_scores(v_m_s_g, v_m_s_c), lesion_scores(test_s_g, test_s_c)
    threshold, _ = threshold_at_precision(v_m_s_gc, v_m_labels, target_precision=precision)

    def above(scores, labels, positive):
        chosen = np.asarray(scores)[np.asarray(labels, dtype=bool) == positive]
        return float(np.mean(chosen >= threshold)) if chosen.size else float("nan")

    harvested = np.asarray(test_s_gc) >= threshold
    return {
        "threshold": None if np.isinf(threshold) else float(threshold),
        "v_m_negatives_above": above(v_m_s_gc, v_m_labels, False),
        "test_negatives_above": above(test_s_gc, test_labels, False),
        "v_m_positives_above": above(v_m_s_gc, v_m_labels, True),
        "test_positives_above": above(test_s_gc, test_labels, True),
        "test_harvested": int(harvested.sum()),
        "test_harvested_lesions": int((harvested & np.asarray(test_labels, dtype=bool)).sum()),
        "v_m_negative_s_c_quantiles": np.percentile(
            v_m_s_c[~v_m_labels.astype(bool)], NEGATIVE_QUANTILES
        ).tolist(),
        "test_negative_s_c_quantiles": np.percentile(
            test_s_c[~test_labels.astype(bool)], NEGATIVE_QUANTILES
        ).tolist(),
    }


def near_volume_end(proposal, volume, *, reach_mm: float = 8.0) -> bool:
    """Whether the proposal comes within ``reach_mm`` of the first or last slice."""
    first, last = int(proposal.slices[0]), int(proposal.slices[-1])
    return min(first, volume.shape[0] - 1 - last) * volume.spacing[0] < reach_mm


def outside_share(proposal, volume, spec) -> float:
    """Share of a coronal or sagittal patch's rows that lie beyond the volume's end slices."""
    centre, half_mm = proposal_field_of_view(proposal, volume.spacing, pad_px=spec.pad_px)
    offsets_mm = ((np.arange(spec.size) + 0.5) / spec.size * 2.0 - 1.0) * half_mm
    rows = centre[0] + offsets_mm / volume.spacing[0]
    return float(np.mean((rows < 0) | (rows > volume.shape[0] - 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("project")
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--candidates", default="multiview,features,s_g")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--patch-size", type=int)
    parser.add_argument("--pad-px", type=float)
    parser.add_argument("--width", choices=("paper", "lite"))
    parser.add_argument("--holdout", type=float, default=0.2, help="V_M part held out (0.2)")
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--seed", type=int, help="default: the round's, config seed + round")
    parser.add_argument(
        "--feature-l2", type=float, default=DEFAULT_L2, help="the feature model's L2 penalty"
    )
    add_set_option(parser)
    parser.add_argument(
        "--without-p-rh",
        action="store_true",
        help="train on V_M alone (P_RM, P_neg_M): no V_H positives",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    candidates = tuple(args.candidates.split(","))
    if unknown := [c for c in candidates if c not in CLASSIFIER_NAMES]:
        parser.error(f"unknown candidates {unknown}; choose from {CLASSIFIER_NAMES}")

    overrides = {
        name: value
        for name, value in (
            ("lpc.epochs", args.epochs),
            ("lpc.patch_size", args.patch_size),
            ("lpc.pad_px", args.pad_px),
            ("lpc.width", args.width),
        )
        if value is not None
    }
    with HarvestProject.open(args.project) as project:
        record = project.rounds.get(args.round)
        records = {r.volume_id: r for r in project.volumes()}
        test_ids = [r.volume_id for r in project.volumes(split="V_H_test")]
        stored = list(project.proposals(args.round))
        marks = {v: project.marks(v) for v in test_ids}
    config = with_set_fields(
        with_changes(stored_config(args.round, record.config), overrides), args.set, parser
    )
    seed = config.seed + args.round if args.seed is None else args.seed
    plan = lpc_plan(config, seed)
    options = replace(
        plan.options, holdout_fraction=args.holdout, patience=args.patience, pretrained=False
    )
    pools = {"P_RM": {}, "P_neg_M": {}, "P_RH": {}}  # as the train_lpc stage gathers them
    for s in stored:
        if s.role in pools and not (args.without_p_rh and s.role == "P_RH"):
            pools[s.role].setdefault(s.volume_id, []).append(s.proposal)
    volumes = {v: open_volume(records[v]) for pool in pools.values() for v in pool}
    sets = proposal_sets(volumes, p_rm=pools["P_RM"], p_neg_m=pools["P_neg_M"], p_rh=pools["P_RH"])
    v_m_sets = [s for s in sets if s.fully_annotated]
    folds = min(plan.folds, len(v_m_sets))

    full = {v: full_annotation(marks[v]) for v in test_ids}
    original = {v: [m.mark for m in marks[v] if m.origin == "original"] for v in test_ids}
    candidates_of = {}  # V_H_test proposals other than P_RH, by volume
    for s in stored:
        if s.volume_id in test_ids and s.role != "P_RH":
            candidates_of.setdefault(s.volume_id, []).append(s)
    test_volumes = {v: open_volume(records[v]) for v in candidates_of}
    hits = proposals_hitting_marks(
        {v: [s.proposal for s in chosen] for v, chosen in candidates_of.items()},
        {v: [m.mark for m in marks[v]] for v in candidates_of},
    )
    test_labels = np.concatenate([hits[v] for v in candidates_of])
    test_s_g = np.concatenate([[s.s_g for s in chosen] for chosen in candidates_of.values()])
    near_end = np.concatenate(
        [
            [near_volume_end(s.proposal, test_volumes[v]) for s in chosen]
            for v, chosen in candidates_of.items()
        ]
    )
    v_m_labels = np.concatenate([s.labels for s in v_m_sets])
    v_m_s_g = np.concatenate([[p.s_g for p in s.proposals] for s in v_m_sets])

    spec = build_classifier(
        width=options.width,
        patch_size=options.patch_size,
        pad_px=options.pad_px,
        pretrained=False,
    ).spec
    shares = [outside_share(p, s.volume, spec) for s in sets for p in s.proposals]
    if record.metrics.get("evaluation"):
        print(f"round {args.round} as stored:   {table_row(record.metrics['evaluation'])}")
    else:  # a round stopped after its verify stage still has all this needs
        print(f"round {args.round} is {record.status}, not evaluated")
    print(
        f"coronal / sagittal rows beyond the volume's ends: median {np.median(shares):.2f} "
        f"of a patch ({len(shares)} verified proposals, context {spec.pad_px:g} px)"
    )
    print(
        f"seed {seed}; {len(v_m_sets)} V_M volumes in {folds} folds; V_H_test: "
        f"{len(test_labels)} proposals to rank, {int(test_labels.sum())} hit a lesion"
    )
    figures = {
        "seed": seed,
        "options": {k: str(v) for k, v in vars(options).items()},
        "v_m": {"labels": v_m_labels.tolist(), "s_g": v_m_s_g.tolist()},
        "test": {
            "labels": test_labels.tolist(),
            "s_g": test_s_g.tolist(),
            "near_end": near_end.tolist(),
        },
        "runs": {},
    }
    selection = {}
    for name in candidates:
        started = time.perf_counter()
        oof = out_of_fold(name, sets, options, folds=folds, feature_l2=args.feature_l2)
        selection[name] = v_m_ranking(sets, oof.scores)
        final = train_candidate(name, sets, options, feature_l2=args.feature_l2)
        seconds = time.perf_counter() - started
        v_m_s_c = np.concatenate([oof.scores[s.volume.volume_id] for s in v_m_sets])
        scorers = {"final_model": final.model, "fold_mean": FoldMean(tuple(oof.models))}
        for scoring, scorer in scorers.items():
            s_c = {
                v: probabilities(scorer, test_volumes[v], [s.proposal for s in chosen])
                for v, chosen in candidates_of.items()
            }
            rescored = {
                v: [
                    replace(s, s_c=float(c), s_gc=float(gc))
                    for s, c, gc in zip(
                        chosen, s_c[v], lesion_scores([s.s_g for s in chosen], s_c[v]), strict=True
                    )
                ]
                for v, chosen in candidates_of.items()
            }
            evaluation = evaluate_harvest(
                full, original=original, proposals=rescored, threshold=None
            )
            test_s_c = np.concatenate(list(s_c.values()))
            test_s_gc = lesion_scores(test_s_g, test_s_c)
            scale = scale_figures(
                v_m_s_c,
                v_m_s_g,
                v_m_labels,
                test_s_c,
                test_s_g,
                test_labels,
                config.harvest.precision,
            )
            scale["end_auc"] = roc_auc(test_s_c[~test_labels], near_end[~test_labels])
            ranking = {  # proposal level: finer than recall at 90% precision
                "ap": average_precision(test_s_gc, test_labels),
                "auc": roc_auc(test_s_gc, test_labels),
            }
            key = f"{name},{scoring}"
            figures["runs"][key] = {
                "oof_v_m": selection[name],
                "p3d": evaluation["per_round"]["p3d"],
                "test_proposals": ranking,
                "v_m_s_c": v_m_s_c.tolist(),
                "test_s_c": test_s_c.tolist(),
                "scale": scale,
                "seconds": round(seconds, 1),
                "final_info": final.info,
                "final_coef": (
                    dict(zip(FEATURE_NAMES, map(float, final.model.coef), strict=True))
                    if name == "features"
                    else None
                ),
                "fold_infos": oof.infos,
            }
            oof_ap = selection[name]["ap"]
            print(
                f"{key:24s} OOF AP(V_M) {oof_ap:.3f}  V_H_test {table_row(evaluation)}  "
                f"proposal AP {ranking['ap']:.3f} AUC {ranking['auc']:.3f}"
            )
            print(
                f"{'':24s} threshold {scale['threshold']}: negatives above V_M "
                f"{scale['v_m_negatives_above']:.4f} / V_H_test "
                f"{scale['test_negatives_above']:.4f}; positives above "
                f"{scale['v_m_positives_above']:.3f} / {scale['test_positives_above']:.3f}; "
                f"harvested {scale['test_harvested']} ({scale['test_harvested_lesions']} "
                f"lesions); end AUC {scale['end_auc']:.3f}"
            )
            print(
                f"{'':24s} negatives' s_c at {NEGATIVE_QUANTILES}%: V_M "
                f"{np.round(scale['v_m_negative_s_c_quantiles'], 3).tolist()} / V_H_test "
                f"{np.round(scale['test_negative_s_c_quantiles'], 3).tolist()}"
            )
    figures["chosen"] = chosen_candidate(candidates, selection)
    print(f"chosen by out-of-fold AP on V_M: {figures['chosen']}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=1, default=float)


if __name__ == "__main__":
    main()
