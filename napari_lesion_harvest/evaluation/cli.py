"""``lesion-harvest evaluate``: FROC, AP and recall at precision of detections against truth."""

from __future__ import annotations

import argparse
import json

from napari_lesion_harvest.evaluation.report import METRICS


def register(subparsers) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score detections against full annotations (P3D / 3D / 2D RECIST)",
        description=(
            "Evaluate 3D detections against fully annotated truth: FROC sensitivity at "
            "0.125..16 false positives per volume, AP, and recall at 80/85/90/95%% precision. "
            "Truth: the paper's RECIST-box or 3D-box pickles, or our marks / lesions CSV or "
            "JSON. Detections: MinedLesions-layout pickles or our lesions CSV / JSON (marks "
            "and boxes are read as score-1 detections)."
        ),
    )
    parser.add_argument("--truth", required=True, help="fully annotated truth file")
    parser.add_argument("--detections", required=True, help="detections file")
    parser.add_argument(
        "--metric",
        choices=sorted(METRICS),
        default="p3d",
        help="p3d: pseudo-3D (default); 3d: 3D IoU with 3D boxes; 2d: marked slices only",
    )
    parser.add_argument(
        "--iou-threshold", type=float, default=None, help="default 0.5 (p3d, 2d) or 0.33 (3d)"
    )
    parser.add_argument(
        "--continuous-iou",
        action="store_true",
        help="widths x2 - x1 instead of the released evaluation's x2 - x1 + 1",
    )
    parser.add_argument(
        "--ignore-extra-volumes",
        action="store_true",
        help="drop detections on volumes that are not in the truth (default: error)",
    )
    parser.add_argument(
        "--baseline",
        metavar="FILE",
        help="original marks (read as detections) for the 'R 0.364@100P' baseline row and dot",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--plot", metavar="OUT.png", help="save FROC and PR curves to this file")
    parser.set_defaults(func=run)


def _tabulate(path: str, truth, *, ignore_extra: bool):
    from napari_lesion_harvest.evaluation.inputs import read_detections
    from napari_lesion_harvest.evaluation.tables import ProposalTable

    detections = read_detections(path)
    known = set(truth.volume_ids)
    extra = [v for v in detections if v not in known]
    if extra and ignore_extra:
        detections = {v: p for v, p in detections.items() if v in known}
    return ProposalTable.from_proposals(detections, truth.volume_ids), len(extra)


def run(args: argparse.Namespace) -> int:
    """Run ``lesion-harvest evaluate``; returns the exit status."""
    from napari_lesion_harvest.cli import CommandError
    from napari_lesion_harvest.evaluation.curve import detection_curve
    from napari_lesion_harvest.evaluation.inputs import read_truth
    from napari_lesion_harvest.evaluation.pr import final_point, format_baseline
    from napari_lesion_harvest.evaluation.report import evaluate
    from napari_lesion_harvest.io.errors import LesionIOError

    plus_one = not args.continuous_iou
    try:
        truth = read_truth(args.truth)
        table, n_extra = _tabulate(args.detections, truth, ignore_extra=args.ignore_extra_volumes)
        result = evaluate(
            truth, table, metric=args.metric, iou_threshold=args.iou_threshold, plus_one=plus_one
        )
        baseline = None
        if args.baseline:
            marks, _ = _tabulate(args.baseline, truth, ignore_extra=args.ignore_extra_volumes)
            match = METRICS[args.metric][0]
            matches = match(truth, marks, iou_threshold=result.iou_threshold, plus_one=plus_one)
            baseline = ("R", detection_curve(matches))
    except (LesionIOError, ValueError, TypeError) as error:
        raise CommandError(str(error)) from error

    if args.json:
        document = result.to_dict()
        document["dropped_detection_volumes"] = n_extra
        if baseline is not None:
            recall, precision = final_point(baseline[1])
            document["baseline"] = {
                "recall": recall,
                "precision": precision if precision == precision else None,  # nan -> null
            }
        print(json.dumps(document, indent=1))
    else:
        print(result.format_text())
        if baseline is not None:
            print("Baseline (original marks): " + format_baseline(*baseline))
        if n_extra:
            print(f"({n_extra} detection volume(s) outside the truth were ignored)")
    if args.plot:
        from napari_lesion_harvest.evaluation.plots import save_evaluation_plot

        try:
            save_evaluation_plot(args.plot, {args.metric.upper(): result}, baseline=baseline)
        except OSError as error:
            raise CommandError(f"cannot write plot {args.plot}: {error}") from error
    return 0
