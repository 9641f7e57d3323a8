"""The ``lesion-harvest`` command.

Each subcommand lives next to the code it drives, in a module that defines
``register(subparsers)``; that function adds its parser and sets
``func=run`` on it, where ``run(args) -> int`` is the exit status. Modules are
imported only to build the parser; the work they import (torch, ...) is
imported inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules that contribute subcommands, in the order ``--help`` lists them.
COMMAND_MODULES: list[str] = [
    "napari_lesion_harvest.harvest.cli",
    "napari_lesion_harvest.harvest.pretrain_cli",
    "napari_lesion_harvest.harvest.demo",
    "napari_lesion_harvest.evaluation.cli",
    "napari_lesion_harvest.synthetic.cli",
    "napari_lesion_harvest.store.cli",
    "napari_lesion_harvest.weights.cli",
]


class CommandError(Exception):
    """A user-facing error: printed without a traceback, exit status 2.

    So are the package's typed errors
    (:data:`~napari_lesion_harvest.harvest.errors.USER_ERRORS`: bad input, a
    damaged or refused file, a project that refuses a change), whichever
    command meets them; any other exception is a bug and keeps its traceback.
    """


def positive_int(text: str) -> int:
    """An ``argparse`` type: a whole number >= 1 (``--rounds 0`` is refused by name)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="lesion-harvest",
        description="Harvest the lesions that a CT dataset's marks missed (Cai et al.).",
    )
    from napari_lesion_harvest import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    from napari_lesion_harvest.harvest.errors import USER_ERRORS, one_line

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except (CommandError, *USER_ERRORS) as error:
        print(f"lesion-harvest {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
