"""``--set FIELD=JSON``: change round-configuration fields from a script's command line.

The option of the scripts in ``benchmarks/`` and ``tools/`` that run or re-run rounds
with another configuration, e.g. ``--set lpg.ignore_known_lesions=true``. A field is
named by its dotted name or by an earlier version's flat name (``lpg_ignore_known_lesions``),
as :func:`~napari_lesion_harvest.harvest.config.with_changes` takes them.
"""

from __future__ import annotations

import argparse
import json

from napari_lesion_harvest.harvest.config import with_changes
from napari_lesion_harvest.harvest.errors import RoundConfigError


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """``--set FIELD=JSON`` (repeatable): change one round-configuration field."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="change one round-configuration field (repeatable), e.g. lpg.crop_px=128",
    )


def with_set_fields(config, texts: list[str], parser: argparse.ArgumentParser):
    """``config`` with the ``--set`` changes ``texts``; an unknown field or a bad value
    ends the program with a message that names it."""
    try:
        return with_changes(config, dict(_field_value(text, parser) for text in texts))
    except RoundConfigError as error:
        parser.error(f"--set: {error}")


def _field_value(text: str, parser: argparse.ArgumentParser) -> tuple[str, object]:
    """``FIELD=JSON`` of ``--set`` as ``(field, value)``."""
    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        parser.error(f"--set {text}: the value after '=' must be JSON (true, 0.5, [1, 2])")
