"""``lesion-harvest init | import | annotate | split | round | status | export``."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

from napari_lesion_harvest.cli import CommandError


def _author(args) -> str:
    return args.author or getpass.getuser()


def _open(path, *, create: bool = False):
    from napari_lesion_harvest.store import HarvestProject, StoreError

    try:
        return HarvestProject.open(path, create=create)
    except StoreError as error:
        raise CommandError(str(error)) from error


def _add_project(parser, *, author: bool = True) -> None:
    parser.add_argument("project", type=Path, help="harvest project folder")
    if author:
        parser.add_argument("--author", help="name recorded with changes (default: login name)")


def register(subparsers) -> None:
    """Add the project and round subcommands."""
    p = subparsers.add_parser("init", help="create a harvest project folder")
    _add_project(p, author=False)
    p.set_defaults(func=run_init)

    p = subparsers.add_parser(
        "import",
        help="import volumes (DeepLesion folder / DL_info.csv, NIfTI/NRRD/MHA/DICOM) and marks",
    )
    _add_project(p)
    p.add_argument("sources", nargs="+", type=Path, help="dataset folders, images, mark files")
    p.add_argument(
        "--split",
        default="V_H",
        choices=("V_H", "V_H_test", "V_D_test"),
        help="new volumes' split",
    )
    p.set_defaults(func=run_import)

    p = subparsers.add_parser(
        "annotate", help="add expert marks from a file; --complete puts their volumes in V_M"
    )
    _add_project(p)
    p.add_argument("--marks", type=Path, required=True, help="DL_info CSV, marks CSV/JSON, .pkl")
    p.add_argument(
        "--complete",
        action="store_true",
        help="mark the volumes of the file fully annotated (held-out volumes are not moved)",
    )
    p.set_defaults(func=run_annotate)

    p = subparsers.add_parser("split", help="hold volumes out for evaluation")
    _add_project(p)
    p.add_argument("--volumes", type=Path, required=True, help="text file, one volume id a line")
    p.add_argument("--as", dest="split", required=True, choices=("V_H_test", "V_D_test", "V_H"))
    p.set_defaults(func=run_split)

    p = subparsers.add_parser("round", help="run (or resume) harvest rounds")
    _add_project(p, author=False)
    p.add_argument("--rounds", type=int, help="rounds to run now (default: up to max_rounds)")
    p.add_argument("--config", default="paper", help="lite, paper, or a JSON file of fields")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument(
        "--progress-json", action="store_true", help="JSON lines on stdout instead of bars"
    )
    p.set_defaults(func=run_round_command)

    p = subparsers.add_parser("export", help="write the completed annotations (marks + lesions)")
    _add_project(p, author=False)
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument(
        "--format",
        action="append",
        choices=("csv", "json", "paper"),
        help="csv, json, or paper (MinedLesions.pkl); repeatable; default all",
    )
    p.add_argument("--round", type=int, help="round whose lesions to export (default: latest)")
    p.set_defaults(func=run_export)

    p = subparsers.add_parser("status", help="splits, counts, rounds and last metrics")
    _add_project(p, author=False)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_status)


def run_init(args) -> int:
    with _open(args.project, create=True) as project:
        print(f"harvest project ready at {project.folder}")
    return 0


def run_import(args) -> int:
    from napari_lesion_harvest.harvest.importing import import_sources
    from napari_lesion_harvest.io.errors import LesionIOError
    from napari_lesion_harvest.store import StoreError

    with _open(args.project) as project:
        try:
            summary = import_sources(project, args.sources, split=args.split, author=_author(args))
        except (LesionIOError, StoreError, ValueError) as error:
            raise CommandError(str(error)) from error
    print(f"imported {len(summary.volumes)} volume(s) and {summary.marks} original mark(s)")
    for line in summary.skipped:
        print(f"  skipped: {line}", file=sys.stderr)
    return 0


def run_annotate(args) -> int:
    from napari_lesion_harvest.harvest.importing import read_mark_file
    from napari_lesion_harvest.io.errors import LesionIOError
    from napari_lesion_harvest.store import StoreError

    author = _author(args)
    with _open(args.project) as project:
        try:
            marks, skipped = read_mark_file(args.marks)
            known = {v.volume_id: v for v in project.volumes()}
            unknown = sorted({vid for vid, _ in marks if vid not in known})
            if unknown:
                raise CommandError(
                    f"{args.marks}: {len(unknown)} volume(s) are not in the project, e.g. "
                    f"{unknown[0]}; import them first"
                )
            project.add_marks(marks, author=author, origin="expert")
            completed, held_out = 0, []
            if args.complete:
                for volume_id in dict.fromkeys(vid for vid, _ in marks):
                    if known[volume_id].split in ("V_H_test", "V_D_test"):
                        held_out.append(volume_id)
                        continue
                    project.set_volume_complete(volume_id, author=author)
                    completed += 1
        except (LesionIOError, StoreError, ValueError) as error:
            raise CommandError(str(error)) from error
    print(f"added {len(marks)} expert mark(s); {completed} volume(s) now fully annotated (V_M)")
    if held_out:
        print(f"  {len(held_out)} held-out volume(s) keep their split (marks hidden from rounds)")
    for line in skipped:
        print(f"  skipped: {line}", file=sys.stderr)
    return 0


def run_split(args) -> int:
    from napari_lesion_harvest.store import StoreError

    try:
        lines = args.volumes.read_text().splitlines()
    except OSError as error:
        raise CommandError(f"{args.volumes}: {error}") from error
    volume_ids = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    with _open(args.project) as project:
        known = {v.volume_id for v in project.volumes()}
        unknown = [v for v in volume_ids if v not in known]
        if unknown:
            raise CommandError(f"{args.volumes}: unknown volume(s): {', '.join(unknown[:5])}")
        try:
            for volume_id in volume_ids:
                project.set_split(volume_id, args.split, author=_author(args))
        except StoreError as error:
            raise CommandError(str(error)) from error
    print(f"{len(volume_ids)} volume(s) now {args.split}")
    return 0


def run_round_command(args) -> int:
    from napari_lesion_harvest.harvest.config import load_config
    from napari_lesion_harvest.harvest.distributed import ProjectFolder, launched_rank
    from napari_lesion_harvest.workers.progress import Cancelled, JsonLinesProgress, TqdmProgress

    overrides = {} if args.seed is None else {"seed": args.seed}
    config = load_config(args.config, **overrides)
    progress = JsonLinesProgress() if args.progress_json else TqdmProgress()

    def run(project) -> list:
        return run_rounds_stoppably(
            project, config, rounds=args.rounds, device=args.device, progress=progress
        )

    try:
        if launched_rank() == 0:
            with _open(args.project) as project:
                summary = [_round_summary(r) for r in run(project)]
        else:  # under torchrun only rank 0 opens the project's database
            run(ProjectFolder(args.project))
            return 0  # rank 0 reports
    except Cancelled:
        print("stopped; the round is resumable: run the same command again", file=sys.stderr)
        return 130
    if args.progress_json:
        progress("done", len(summary), len(summary), "finished", {"rounds": summary})
    else:
        for line in summary:
            print(json.dumps(line))
    return 0


def run_rounds_stoppably(project, config, *, rounds, device, progress) -> list:
    """:func:`~napari_lesion_harvest.harvest.round.run_rounds` where Ctrl-C and SIGTERM
    stop the round cleanly at its next step (raising ``Cancelled``; it stays resumable)."""
    from napari_lesion_harvest.harvest.round import run_rounds
    from napari_lesion_harvest.workers.progress import CancelToken, TqdmProgress

    token = CancelToken()
    restore = token.install_signal_handlers()
    try:
        return run_rounds(
            project, config, rounds=rounds, device=device, progress=progress, cancelled=token
        )
    finally:
        restore()
        if isinstance(progress, TqdmProgress):
            progress.close()


def _round_summary(record) -> dict:
    harvest = record.metrics.get("harvest", {})
    evaluation = record.metrics.get("evaluation") or {}
    return {
        "round": record.number,
        "status": record.status,
        "harvested": harvest.get("P_pos_H"),
        "new_lesions": harvest.get("new_lesions"),
        "hard_negatives": harvest.get("P_neg_H"),
        "threshold": harvest.get("threshold"),
        "test_recall_at_precision": {
            f"R@{100 * r['precision_target']:g}P": r["recall"]
            for r in evaluation.get("p3d", {}).get("recall_at_precision", [])
        },
    }


def run_export(args) -> int:
    from napari_lesion_harvest.store import StoreError
    from napari_lesion_harvest.store.export import export_annotations

    formats = [{"paper": "pickle"}.get(f, f) for f in (args.format or ["csv", "json", "paper"])]
    with _open(args.project) as project:
        try:
            result = export_annotations(
                project, args.out, round_number=args.round, formats=formats
            )
        except StoreError as error:
            raise CommandError(str(error)) from error
    print(
        f"exported {result.n_marks} marks and {result.n_lesions} harvested lesions "
        f"(round {result.round_number}) to {result.folder}"
    )
    for path in result.files:
        print(f"  {path}")
    return 0


def run_status(args) -> int:
    from collections import Counter

    with _open(args.project) as project:
        summaries = project.volume_summaries()
        rounds = project.rounds.list()
    splits = Counter(s.split for s in summaries)
    status = {
        "volumes": len(summaries),
        "splits": dict(splits),
        "marks": sum(s.n_marks for s in summaries),
        "expert_marks": sum(s.n_expert_marks for s in summaries),
        "complete_volumes": sum(s.complete for s in summaries),
        "rounds": [
            {"number": r.number, "status": r.status, "stage": r.stage, "error": r.error}
            | _round_summary(r)
            for r in rounds
        ],
    }
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    print(
        f"{status['volumes']} volumes: " + ", ".join(f"{k} {v}" for k, v in sorted(splits.items()))
    )
    print(
        f"{status['marks']} marks ({status['expert_marks']} expert), "
        f"{status['complete_volumes']} complete volumes"
    )
    for r in rounds:
        line = _round_summary(r)
        print(
            f"round {r.number}: {r.status} (stage {r.stage}); harvested {line['harvested']}, "
            f"new {line['new_lesions']}, threshold {line['threshold']}"
            + (f"; error: {r.error}" if r.error else "")
        )
        if line["test_recall_at_precision"]:
            print(
                "  V_H_test "
                + "  ".join(f"{k} {v:.3f}" for k, v in line["test_recall_at_precision"].items())
            )
    return 0
