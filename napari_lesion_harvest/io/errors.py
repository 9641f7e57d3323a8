"""Typed reader errors that name the file (and row / column), and the skipped-row report.

Every reader in :mod:`napari_lesion_harvest.io` raises a subclass of
:class:`LesionIOError` for bad input, never a bare ``KeyError`` or
``struct.error``. The errors subclass :class:`ValueError` so that generic
callers that catch ``ValueError`` keep working.

Row-oriented readers (``DL_info.csv``, the annotation CSV files) skip bad rows
by default and list every skipped row in a :class:`ReadReport`; with
``strict=True`` the first bad row raises instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike


class LesionIOError(ValueError):
    """Base class: bad input in a file that a reader was asked to load.

    Parameters
    ----------
    path : str or PathLike
        The file (or folder) at fault.
    reason : str
        What is wrong, in words.
    row : int, optional
        1-based line number in the file for row-oriented text formats.
    column : str, optional
        Column (or field) name at fault in a table or record.
    key : str, optional
        Key (volume id, lesion) at fault in a nested structure such as a pickle.
    """

    def __init__(
        self,
        path: str | PathLike,
        reason: str,
        *,
        row: int | None = None,
        column: str | None = None,
        key: str | None = None,
    ):
        self.path = str(path)
        self.reason = reason
        self.row = row
        self.column = column
        self.key = key
        where = self.path
        if row is not None:
            where += f", line {row}"
        if column is not None:
            where += f", column {column!r}"
        if key is not None:
            where += f", key {key!r}"
        super().__init__(f"{where}: {reason}")


class FormatError(LesionIOError):
    """A text or pickle file's content does not follow its format (columns, numbers, keys)."""


class UnsafePickleError(LesionIOError):
    """A pickle names a global outside the allowed numpy / codecs set; nothing was run."""


class ImageFormatError(LesionIOError):
    """An image file is unreadable, truncated, of the wrong bit depth / channels or size."""


class MissingSlicesError(LesionIOError):
    """Slice files inside a requested slice range are not on disk.

    Attributes
    ----------
    missing : list of int
        The missing 1-based slice numbers.

    Notes
    -----
    With ``files_span`` (the folder's first and last file numbers) the error
    says that the range reaches past the folder's files: such slices have no
    neighbour on one side, so nearest-slice filling does not apply.
    """

    def __init__(
        self,
        path: str | PathLike,
        missing: list[int],
        *,
        first: int,
        last: int,
        files_span: tuple[int, int] | None = None,
    ):
        self.missing = list(missing)
        shown = ", ".join(str(n) for n in self.missing[:20])
        more = f" (+{len(self.missing) - 20} more)" if len(self.missing) > 20 else ""
        if files_span is None:
            reason = f"{len(self.missing)} slice file(s) of range {first}-{last} missing"
        else:
            reason = (
                f"range {first}-{last} reaches past the slice files {files_span[0]}-"
                f"{files_span[1]}: {len(self.missing)} slice(s) with no file on that side"
            )
        super().__init__(path, f"{reason}: {shown}{more}")


@dataclass(frozen=True)
class SkippedRow:
    """One input row (or record) that a lenient reader skipped.

    Attributes
    ----------
    row : int or None
        1-based line number in a text file; None for records of nested formats.
    column : str or None
        Column or field at fault, when one is.
    reason : str
        Why it was skipped.
    key : str or None
        Record at fault in a nested format (``marks[3]``), when not a line.
    """

    row: int | None
    column: str | None
    reason: str
    key: str | None = None

    def __str__(self) -> str:
        parts = [f"line {self.row}"] if self.row is not None else []
        if self.key is not None:
            parts.append(f"key {self.key!r}")
        if self.column:
            parts.append(f"column {self.column!r}")
        return f"{', '.join(parts)}: {self.reason}"


@dataclass
class ReadReport:
    """What a lenient reader skipped.

    Attributes
    ----------
    path : str
        The file read.
    rows_read : int
        Data rows seen (good and bad).
    skipped : list of SkippedRow
        Every skipped row with its reason, in file order.
    """

    path: str
    rows_read: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no row was skipped."""
        return not self.skipped

    def skip(self, error: LesionIOError, *, strict: bool) -> None:
        """Record ``error`` as a skipped row, or raise it when ``strict``."""
        if strict:
            raise error
        self.skipped.append(SkippedRow(error.row, error.column, error.reason, error.key))

    def summary(self) -> str:
        """One line per skipped row, headed by the counts."""
        head = f"{self.path}: {self.rows_read} rows, {len(self.skipped)} skipped"
        return "\n".join([head, *(f"  {s}" for s in self.skipped)])
