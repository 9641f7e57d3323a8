"""Typed errors of harvest rounds: what a user can fix, told in one line.

The command line prints them as ``lesion-harvest round: error: ...`` (exit
status 2) without a traceback; they subclass :class:`ValueError` so that
generic callers that catch it keep working.
"""

from __future__ import annotations

from napari_lesion_harvest.io.errors import LesionIOError
from napari_lesion_harvest.store.errors import StoreError


class HarvestInputError(ValueError):
    """The project or the round's inputs cannot give a round; the message says what
    is missing and what to do.

    Raised in a stage, it ends the round ``cancelled``: its inputs are frozen when
    it starts, so resuming it would fail the same way, and the next round takes
    the project as it is then.
    """


class RoundConfigError(HarvestInputError):
    """A round configuration that cannot be used; the message names the field and
    the file."""


#: The package's typed error families: bad input, a damaged or refused file, a
#: project that refuses a change. Each names what is at fault in one line; any
#: other exception is a bug and keeps its traceback.
USER_ERRORS = (HarvestInputError, LesionIOError, StoreError)


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (some libraries' messages run over several)."""
    return " ".join(str(error).split())
