"""``lesion-harvest init | import | annotate | split | marks | round | status | export``."""

from __future__ import annotations

import getpass
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from napari_lesion_harvest.cli import CommandError, positive_int
from napari_lesion_harvest.vocabulary import Origin, Role, RoundStatus, Split


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
        default=Split.V_H,
        choices=(Split.V_H.value, Split.V_H_test.value, Split.V_D_test.value),
        help="new volumes' split",
    )
    _add_skip_invalid(p)
    p.set_defaults(func=run_import)

    p = subparsers.add_parser(
        "annotate",
        help="add expert marks from a file; --complete flags their volumes fully annotated",
    )
    _add_project(p)
    p.add_argument("--marks", type=Path, required=True, help="DL_info CSV, marks CSV/JSON, .pkl")
    choice = p.add_mutually_exclusive_group()
    choice.add_argument(
        "--complete",
        action="store_true",
        help="mark the volumes of the file fully annotated: training volumes join V_M; "
        "held-out volumes keep their split and become the evaluation's truth",
    )
    _add_skip_invalid(choice)
    p.set_defaults(func=run_annotate)

    p = subparsers.add_parser("split", help="hold volumes out for evaluation")
    _add_project(p)
    p.add_argument("--volumes", type=Path, required=True, help="text file, one volume id a line")
    p.add_argument(
        "--as",
        dest="split",
        required=True,
        choices=(Split.V_H_test.value, Split.V_D_test.value, Split.V_H.value),
    )
    p.set_defaults(func=run_split)

    p = subparsers.add_parser(
        "marks", help="list marks with their ids; --delete / --restore marks by id"
    )
    _add_project(p)
    p.add_argument("--volume", help="only the marks of this volume")
    p.add_argument("--deleted", action="store_true", help="also list soft-deleted marks")
    p.add_argument("--json", action="store_true", help="print JSON")
    change = p.add_mutually_exclusive_group()
    change.add_argument(
        "--delete", type=int, nargs="+", metavar="ID", help="soft-delete marks (--restore undoes)"
    )
    change.add_argument(
        "--restore", type=int, nargs="+", metavar="ID", help="bring soft-deleted marks back"
    )
    p.set_defaults(func=run_marks)

    p = subparsers.add_parser(
        "round",
        help="run harvest rounds (a stopped round is resumed first, or --discard it)",
    )
    _add_project(p)
    p.add_argument(
        "--rounds", type=positive_int, help="rounds to run now (default: up to max_rounds)"
    )
    p.add_argument("--config", default="paper", help="lite, paper, or a JSON file of fields")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument(
        "--progress-json", action="store_true", help="JSON lines on stdout instead of bars"
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--discard",
        action="store_true",
        help="cancel the stopped (failed or queued) round instead of resuming it, then start "
        "a new round with --config; what it committed stays in the project, unused",
    )
    when.add_argument(
        "--check",
        action="store_true",
        help="check the project, --config and --device, say what a round would do, and exit "
        "without running it (exit status 2 and the reason when a round would be refused)",
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
    p.add_argument(
        "--round", type=positive_int, help="round whose lesions to export (default: latest)"
    )
    p.set_defaults(func=run_export)

    p = subparsers.add_parser("status", help="splits, counts, rounds and last metrics")
    _add_project(p, author=False)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_status)


def run_init(args) -> int:
    with _open(args.project, create=True) as project:
        print(f"harvest project ready at {project.folder}")
    return 0


@contextmanager
def _user_errors():
    """Bad input and refused changes (store errors, reader errors, OS errors) as one line."""
    from napari_lesion_harvest.store import StoreError

    try:
        yield
    except (StoreError, ValueError, OSError) as error:  # reader errors are ValueErrors
        raise CommandError(str(error)) from error


def _add_skip_invalid(parser) -> None:
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip bad files, volumes and rows (each one listed) instead of stopping at the first",
    )


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _print_skipped(skipped: list[str]) -> None:
    for line in skipped:
        print(f"  skipped: {line}", file=sys.stderr)


def run_import(args) -> int:
    from napari_lesion_harvest.harvest.importing import import_sources

    with _open(args.project) as project, _user_errors():
        summary = import_sources(
            project,
            args.sources,
            split=args.split,
            author=_author(args),
            skip_invalid=args.skip_invalid,
            checked=lambda plan: _progress(f"{plan.describe()}; writing in one transaction"),
        )
    print(f"imported {summary.counts()}")
    _print_skipped(summary.skipped)
    return 0


def run_annotate(args) -> int:
    from napari_lesion_harvest.harvest.importing import mark_counts, read_mark_source
    from napari_lesion_harvest.store import DataBatch

    with _open(args.project) as project, _user_errors():
        plan = read_mark_source(project, args.marks, skip_invalid=args.skip_invalid)
        volume_ids = list(dict.fromkeys(entry.volume_id for entry in plan.marks))
        _progress(f"{plan.describe()}; writing in one transaction")
        batch = DataBatch(
            marks=plan.marks,
            mark_origin=Origin.expert,
            complete=volume_ids if args.complete else (),
        )
        result = project.add_batch(batch, author=_author(args))
    counts = mark_counts(len(result.marks_added), result.marks_present, result.marks_kept_deleted)
    print(f"expert marks: {counts}")
    if args.complete:
        print(
            f"{len(result.completed)} volume(s) now fully annotated (V_M), "
            f"{len(result.already_complete)} already were"
        )
    if result.held_out:
        print(
            f"{len(result.held_out)} held-out volume(s) now fully annotated: they keep their "
            "split, and their marks (hidden from rounds) are the evaluation's truth"
        )
    _print_skipped(plan.skipped)
    return 0


def run_split(args) -> int:
    from napari_lesion_harvest.store import DataBatch

    with _user_errors():
        lines = args.volumes.read_text().splitlines()
    volume_ids = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    with _open(args.project) as project, _user_errors():
        known = {v.volume_id for v in project.volumes()}
        unknown = [v for v in volume_ids if v not in known]
        if unknown:
            raise CommandError(f"{args.volumes}: unknown volume(s): {', '.join(unknown[:5])}")
        batch = DataBatch(splits=dict.fromkeys(volume_ids, args.split))
        result = project.add_batch(batch, author=_author(args))
    print(
        f"{len(result.split_changed)} volume(s) moved to {args.split}, "
        f"{len(result.split_unchanged)} already there"
    )
    return 0


def run_marks(args) -> int:
    with _open(args.project) as project, _user_errors():
        if args.delete or args.restore:
            _change_marks(project, args)
            return 0
        marks = project.marks(args.volume, include_deleted=args.deleted)
    if args.json:
        print(json.dumps([_mark_json(m) for m in marks], indent=1))
        return 0
    print("id\tvolume\tz\torigin\tauthor\tlong_px\tshort_px\tdeleted")
    for m in marks:
        long_px, short_px = m.mark.diameters_px()
        print(
            f"{m.id}\t{m.volume_id}\t{m.mark.z}\t{m.origin}\t{m.author}\t"
            f"{long_px:.1f}\t{short_px:.1f}\t{'yes' if m.deleted else 'no'}"
        )
    return 0


def _change_marks(project, args) -> None:
    """``--delete`` / ``--restore``: one transaction; marks already so are reported."""
    deleting = bool(args.delete)
    asked = args.delete or args.restore
    change = project.delete_marks if deleting else project.restore_marks
    changed = change(asked, author=_author(args))
    verb, undo = ("deleted", "--restore") if deleting else ("restored", "--delete")
    ids = " ".join(map(str, changed))
    print(f"{verb} {len(changed)} mark(s)" + (f": {ids}" if changed else ""))
    unchanged = [mark_id for mark_id in dict.fromkeys(asked) if mark_id not in changed]
    if unchanged:
        print(f"  already {verb}: {' '.join(map(str, unchanged))}")
    if changed:
        print(f"  undo: lesion-harvest marks {args.project} {undo} {ids}")


def _mark_json(stored) -> dict:
    return {
        "id": stored.id,
        "volume_id": stored.volume_id,
        "z": stored.mark.z,
        "long_axis": stored.mark.long_axis.tolist(),
        "short_axis": stored.mark.short_axis.tolist(),
        "origin": stored.origin,
        "author": stored.author,
        "created_at": stored.created_at,
        "edited_at": stored.edited_at,
        "deleted": stored.deleted,
    }


def run_round_command(args) -> int:
    from napari_lesion_harvest.harvest.config import load_config
    from napari_lesion_harvest.harvest.distributed import ProjectFolder, launched_rank
    from napari_lesion_harvest.progress import Cancelled, JsonLinesProgress, TqdmProgress

    config = load_config(args.config, {} if args.seed is None else {"seed": args.seed})
    progress = JsonLinesProgress() if args.progress_json else TqdmProgress()

    def run(project) -> list:
        return run_rounds_stoppably(
            project, config, rounds=args.rounds, device=args.device, progress=progress
        )

    if args.check:
        with _open(args.project) as project:
            return _check_round(project, args, progress)
    try:
        if launched_rank() == 0:
            with _open(args.project) as project:
                if args.discard:
                    _discard_stopped_rounds(project, args, progress)
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


def _stopped_rounds(project) -> list:
    """The rounds ``round`` would resume first: failed ones and queued ones (a round
    still ``running`` is refused: another process runs it)."""
    from napari_lesion_harvest.store import RoundLockedError

    project.rounds.recover_interrupted()
    records = project.rounds.list()
    running = [r.number for r in records if r.status == RoundStatus.running]
    if running:
        holder = project.rounds.lock_holder()
        who = f"round {running[0]}" if holder is None else holder.describe()
        raise RoundLockedError(
            f"{who} is running; stop it first (the dock's Stop, or Ctrl-C where it runs)"
        )
    return [r for r in records if r.status in (RoundStatus.failed, RoundStatus.queued)]


def _check_round(project, args, progress) -> int:
    """``round --check``: the engine's own refusals, then what a round would do."""
    from napari_lesion_harvest.harvest.config import stored_config
    from napari_lesion_harvest.harvest.round import check_inputs, resolve_device

    check_inputs(project)
    device = resolve_device(args.device)
    stopped = _stopped_rounds(project)
    if stopped:
        record = stopped[0]
        stored_config(record.number, record.config)  # one this version refuses cannot resume
        done = ", ".join(record.completed_stages) or "no stage"
        plan = f"round {record.number} would resume after {done} (its own configuration)"
    else:
        plan = f"round {project.rounds.next_number()} would start with config {args.config}"
    message = f"ready on {device}: {plan}"
    metrics = {"device": device, "resume": stopped[0].number if stopped else None}
    if args.progress_json:
        progress("check", 1, 1, message, metrics)
    else:
        print(message)
    return 0


def _discard_stopped_rounds(project, args, progress) -> None:
    """``round --discard``: cancel the stopped rounds, after the checks a new round would
    meet first (so a refused round discards nothing)."""
    from napari_lesion_harvest.harvest.round import check_inputs, resolve_device

    check_inputs(project)
    resolve_device(args.device)
    for record in _stopped_rounds(project):
        project.rounds.cancel(record.number, author=_author(args))
        message = (
            f"round {record.number} discarded (it stopped after {record.stage or 'no stage'})"
        )
        if args.progress_json:
            progress("discard", 1, 1, message, {"round": record.number})
        else:
            print(message, file=sys.stderr)


def run_rounds_stoppably(project, config, *, rounds, device, progress) -> list:
    """:func:`~napari_lesion_harvest.harvest.round.run_rounds` where Ctrl-C and SIGTERM
    stop the round cleanly at its next step (raising ``Cancelled``; it stays resumable)."""
    from napari_lesion_harvest.harvest.round import run_rounds
    from napari_lesion_harvest.progress import CancelToken, TqdmProgress

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
    """A round's harvest counts and its V_H_test recall at precision: the cumulative
    row ``R + P_H,1..i`` (the paper's Table I) and the round's proposals alone."""
    harvest = record.metrics.get("harvest", {})
    evaluation = record.metrics.get("evaluation") or {}

    def recalls(row: str) -> dict:
        return {
            f"R@{100 * r['precision_target']:g}P": r["recall"]
            for r in evaluation.get(row, {}).get("p3d", {}).get("recall_at_precision", [])
        }

    return {
        "round": record.number,
        "status": record.status,
        "harvested": harvest.get(Role.P_pos_H),
        "new_lesions": harvest.get("new_lesions"),
        "expected_false_positives": harvest.get("expected_false_positives"),
        "hard_negatives": harvest.get(Role.P_neg_H),
        "threshold": harvest.get("threshold"),
        "test_recall_at_precision": recalls("cumulative"),
        "test_recall_at_precision_this_round": recalls("per_round"),
        "evaluation_note": record.metrics.get("evaluation_note"),
    }


def run_export(args) -> int:
    from napari_lesion_harvest.store.export import export_annotations

    formats = [{"paper": "pickle"}.get(f, f) for f in (args.format or ["csv", "json", "paper"])]
    with _open(args.project) as project, _user_errors():
        result = export_annotations(project, args.out, round_number=args.round, formats=formats)
    print(
        f"exported {result.n_marks} marks and {result.n_lesions} harvested lesions "
        f"(round {result.round_number}) to {result.folder}"
    )
    for path in result.files:
        print(f"  {path}")
    return 0


def _pretrained_summary(weights) -> dict | None:
    """``status --json``'s figures of a network's pretrained weights (None: none);
    ``config``: the LPG configuration's name, or the LPC's variant, width and patch size;
    ``pretext``: what they learnt from."""
    if weights is None:
        return None
    if weights.network == "lpg":
        config = weights.config.get("name")
    else:
        config = {k: weights.config.get(k) for k in ("variant", "width", "patch_size")}
    return {
        "steps": weights.step,
        "total_steps": weights.total_steps,
        "minutes": round(weights.minutes, 2),
        "config": config,
        "pretext": weights.pretext,
        "path": weights.path,
    }


def run_status(args) -> int:
    from collections import Counter

    from napari_lesion_harvest.harvest.report import harvest_counts

    with _open(args.project) as project:
        summaries = project.volume_summaries()
        rounds = project.rounds.list()
        pretrained = project.pretrained.current("lpg")
        pretrained_lpc = project.pretrained.current("lpc")
    splits = Counter(s.split for s in summaries)
    status = {
        "volumes": len(summaries),
        "splits": dict(splits),
        "marks": sum(s.n_marks for s in summaries),
        "expert_marks": sum(s.n_expert_marks for s in summaries),
        "complete_volumes": sum(s.complete for s in summaries),
        "complete_v_h_test": sum(s.complete and s.split == Split.V_H_test for s in summaries),
        "rounds": [
            {"number": r.number, "status": r.status, "stage": r.stage, "error": r.error}
            | _round_summary(r)
            for r in rounds
        ],
        "pretrained": _pretrained_summary(pretrained),
        "pretrained_lpc": _pretrained_summary(pretrained_lpc),
    }
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    print(
        f"{status['volumes']} volumes: " + ", ".join(f"{k} {v}" for k, v in sorted(splits.items()))
    )
    print(
        f"{status['marks']} marks ({status['expert_marks']} expert), "
        f"{status['complete_volumes']} complete volumes ({status['complete_v_h_test']} of them "
        "in V_H_test: the evaluation's truth)"
    )
    print(
        f"pretrained LPG trunk: {pretrained.describe()}"
        if pretrained
        else "pretrained LPG trunk: none (lesion-harvest pretrain)"
    )
    print(
        f"pretrained LPC trunks: {pretrained_lpc.describe()}"
        if pretrained_lpc
        else "pretrained LPC trunks: none (lesion-harvest pretrain --network lpc)"
    )
    for r in rounds:
        line = _round_summary(r)
        counts = harvest_counts({"n_harvested": line["harvested"], **line})
        print(
            f"round {r.number}: {r.status} (stage {r.stage}); {counts}"
            + (f"; error: {r.error}" if r.error else "")
        )
        for key, label in (
            ("test_recall_at_precision", f"R + P_H,1..{r.number} (cumulative, Table I)"),
            ("test_recall_at_precision_this_round", f"R + P_H,{r.number} alone"),
        ):
            if line[key]:
                print(
                    f"  V_H_test {label}: "
                    + "  ".join(f"{k} {v:.3f}" for k, v in line[key].items())
                )
        if line["evaluation_note"]:
            print(f"  not evaluated: {line['evaluation_note']}")
    return 0
