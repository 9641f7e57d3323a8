"""``--set FIELD=JSON``: change round-configuration fields from a script's command line.

The option of the scripts in ``benchmarks/`` and ``tools/`` that run or re-run rounds
with another configuration, e.g. ``--set lpg_ignore_known_lesions=true``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """``--set FIELD=JSON`` (repeatable): change one round-configuration field."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="change one round-configuration field (repeatable), e.g. lpg_crop_px=128",
    )


def with_set_fields(config, texts: list[str], parser: argparse.ArgumentParser):
    """``config`` with the ``--set`` changes ``texts``; an unknown field or a bad value
    ends the program with a message that names it."""
    try:
        return replace(config, **dict(_field_value(text, parser) for text in texts))
    except (TypeError, ValueError) as error:
        parser.error(f"--set: {error}")


def _field_value(text: str, parser: argparse.ArgumentParser) -> tuple[str, object]:
    """``FIELD=JSON`` of ``--set`` as ``(field, value)``."""
    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        parser.error(f"--set {text}: the value after '=' must be JSON (true, 0.5, [1, 2])")
