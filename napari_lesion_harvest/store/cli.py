"""``lesion-harvest check | backup | restore``: a project file's health, and its backups."""

from __future__ import annotations

import sys
from pathlib import Path

from napari_lesion_harvest.cli import CommandError

#: Problems of ``check`` listed one a line (the rest is counted).
MAX_PROBLEMS_SHOWN = 20


def register(subparsers) -> None:
    """Add the check, backup and restore subcommands."""
    p = subparsers.add_parser(
        "check", help="full integrity check of a project's database (exit 1 when damaged)"
    )
    p.add_argument("project", type=Path, help="harvest project folder")
    p.set_defaults(func=run_check)

    p = subparsers.add_parser(
        "backup", help="copy the project's database, safe while napari or a round uses it"
    )
    p.add_argument("project", type=Path, help="harvest project folder")
    p.add_argument(
        "out",
        nargs="?",
        type=Path,
        help="new backup file (default: PROJECT/backups/project-YYYYMMDD-HHMMSS.sqlite)",
    )
    p.set_defaults(func=run_backup)

    p = subparsers.add_parser(
        "restore",
        help="replace the project's database by a backup (the replaced file is kept)",
    )
    p.add_argument("project", type=Path, help="harvest project folder")
    p.add_argument("backup", type=Path, help="backup file (from lesion-harvest backup)")
    p.set_defaults(func=run_restore)


def run_check(args) -> int:
    from napari_lesion_harvest.store import StoreError
    from napari_lesion_harvest.store.backup import check_project
    from napari_lesion_harvest.store.database import restore_hint
    from napari_lesion_harvest.store.project import DATABASE_NAME

    path = args.project / DATABASE_NAME
    try:
        problems = check_project(args.project)
    except StoreError as error:
        raise CommandError(str(error)) from error
    if not problems:
        print(f"{path}: ok (integrity check and foreign keys)")
        return 0
    print(f"{path} is damaged: {len(problems)} problem(s); {restore_hint(path)}", file=sys.stderr)
    for line in problems[:MAX_PROBLEMS_SHOWN]:
        print(f"  {line}", file=sys.stderr)
    if len(problems) > MAX_PROBLEMS_SHOWN:
        print(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more", file=sys.stderr)
    return 1


def run_backup(args) -> int:
    from napari_lesion_harvest.store import HarvestProject, StoreError

    try:
        with HarvestProject.open(args.project) as project:
            written = project.backup(args.out)
    except StoreError as error:
        raise CommandError(str(error)) from error
    print(f"backed up {args.project} to {written} ({written.stat().st_size / 2**20:.1f} MiB)")
    return 0


def run_restore(args) -> int:
    from napari_lesion_harvest.store import StoreError
    from napari_lesion_harvest.store.backup import restore_project

    try:
        result = restore_project(args.project, args.backup)
    except StoreError as error:
        raise CommandError(str(error)) from error
    print(f"restored {result.project_file} from {args.backup}")
    if result.kept_aside is not None:
        print(f"  the replaced file is kept as {result.kept_aside}")
    return 0
