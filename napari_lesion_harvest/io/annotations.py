"""This package's own annotation files: RECIST marks and 3D lesions, as CSV or JSON.

The formats are specified in ``docs/formats.md`` ("Marks and lesions"). Both
round-trip exactly: floats are written with Python's shortest repr, which
reads back to the same float64.

Marks CSV columns (:data:`MARK_COLUMNS`)::

    volume_id, z, long_x1, long_y1, long_x2, long_y2,
    short_x1, short_y1, short_x2, short_y2, origin, author

Lesions CSV columns (:data:`LESION_COLUMNS`), one row per slice of a lesion::

    volume_id, lesion, z, x1, y1, x2, y2, score

The JSON files hold the same content (plus each lesion's ``meta``) under
``{"format": ..., "version": 1, "marks" | "lesions": [...]}``. The file
extension (``.csv`` / ``.json``) picks the format. Readers skip bad rows (or
records) and list them in a :class:`~.errors.ReadReport`; ``strict=True``
raises :class:`~.errors.FormatError` instead.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D, RecistMark
from napari_lesion_harvest.io.errors import FormatError, ReadReport

MARK_COLUMNS = (
    "volume_id",
    "z",
    "long_x1",
    "long_y1",
    "long_x2",
    "long_y2",
    "short_x1",
    "short_y1",
    "short_x2",
    "short_y2",
    "origin",
    "author",
)
LESION_COLUMNS = ("volume_id", "lesion", "z", "x1", "y1", "x2", "y2", "score")
MARKS_FORMAT = "napari-lesion-harvest.marks"
LESIONS_FORMAT = "napari-lesion-harvest.lesions"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class MarkRecord:
    """A RECIST mark with where it belongs and where it came from.

    Attributes
    ----------
    volume_id : str
        Volume the mark is on.
    mark : RecistMark
        The mark (``z`` 0-based inside the volume, pixel coordinates).
    origin : str
        Where the mark came from, e.g. ``"dl_info"`` (original DeepLesion mark)
        or ``"user"`` (drawn in napari). Must not be empty.
    author : str
        Who drew it (may be empty).
    """

    volume_id: str
    mark: RecistMark
    origin: str
    author: str = ""


# --------------------------------------------------------------------------- helpers


def _atomic_write_text(path: str | PathLike, text: str) -> None:
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(text, encoding="utf-8", newline="")
    partial.replace(target)


def _suffix(path: str | PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".json"):
        raise FormatError(path, f"unknown annotation file type {suffix!r} (use .csv or .json)")
    return suffix


def _float(value, path: str, *, row=None, column=None, key=None) -> float:
    if isinstance(value, bool):
        reason = f"expected a number, got {value!r}"
        raise FormatError(path, reason, row=row, column=column, key=key)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FormatError(
            path, f"unparsable number {value!r}", row=row, column=column, key=key
        ) from None
    if not math.isfinite(number):
        raise FormatError(path, f"non-finite number {value!r}", row=row, column=column, key=key)
    return number


def _slice(value, path: str, **where) -> int:
    if isinstance(value, str):
        value = value.strip()
        if not value.isdigit():
            raise FormatError(path, f"slice index must be an integer >= 0, got {value!r}", **where)
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FormatError(path, f"slice index must be an integer >= 0, got {value!r}", **where)
    return value


def _text(value, path: str, *, required: bool, **where) -> str:
    if not isinstance(value, str) or (required and not value.strip()):
        raise FormatError(path, f"expected {'non-empty ' if required else ''}text", **where)
    return value


def _read_csv_rows(
    path: str, columns: Sequence[str], parse: Callable[[dict, int], object], strict: bool
) -> tuple[list, ReadReport]:
    """Read a CSV with exactly ``columns``; ``parse(cells_by_column, line)`` per data row."""
    report = ReadReport(path)
    results = []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            if tuple(header) != tuple(columns):
                missing = [c for c in columns if c not in header]
                raise FormatError(
                    path,
                    f"header must be {', '.join(columns)}; got {', '.join(header) or 'nothing'}",
                    row=1,
                    column=missing[0] if missing else None,
                )
            line = reader.line_num
            for cells in reader:
                row_line, line = line + 1, reader.line_num
                if not cells:
                    continue
                report.rows_read += 1
                try:
                    if len(cells) != len(columns):
                        raise FormatError(
                            path, f"expected {len(columns)} fields, got {len(cells)}", row=row_line
                        )
                    results.append(parse(dict(zip(columns, cells, strict=True)), row_line))
                except FormatError as error:
                    report.skip(error, strict=strict)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise FormatError(path, f"cannot read as CSV: {error}") from error
    return results, report


def _read_json_records(path: str, format_name: str, list_key: str) -> list:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise FormatError(path, f"cannot read as JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != format_name:
        raise FormatError(path, f"not a {format_name} file (missing 'format': {format_name!r})")
    if document.get("version") != FORMAT_VERSION:
        raise FormatError(path, f"unsupported version {document.get('version')!r}", key="version")
    records = document.get(list_key)
    if not isinstance(records, list):
        raise FormatError(path, f"{list_key!r} must be a list", key=list_key)
    return records


def _csv_text(columns: Sequence[str], rows: Iterable[Sequence]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


# --------------------------------------------------------------------------- marks


def _mark_from_csv(cells: dict, line: int, path: str) -> MarkRecord:
    coords = [_float(cells[c], path, row=line, column=c) for c in MARK_COLUMNS[2:10]]
    return MarkRecord(
        volume_id=_text(cells["volume_id"], path, required=True, row=line, column="volume_id"),
        mark=RecistMark.from_measurement_coordinates(
            coords, _slice(cells["z"], path, row=line, column="z")
        ),
        origin=_text(cells["origin"], path, required=True, row=line, column="origin"),
        author=cells["author"],
    )


def _mark_from_json(record, index: int, path: str) -> MarkRecord:
    key = f"marks[{index}]"
    if not isinstance(record, dict):
        raise FormatError(path, "a mark must be an object", key=key)
    required = ("volume_id", "z", "long_axis", "short_axis", "origin")
    missing = [name for name in required if name not in record]
    if missing:
        raise FormatError(path, f"missing field(s) {missing}", key=key, column=missing[0])
    axes = []
    for name in ("long_axis", "short_axis"):
        points = record[name]
        if not (
            isinstance(points, list)
            and len(points) == 2
            and all(isinstance(p, list) and len(p) == 2 for p in points)
        ):
            raise FormatError(path, "expected [[x1, y1], [x2, y2]]", key=key, column=name)
        axes.extend(_float(v, path, key=key, column=name) for p in points for v in p)
    return MarkRecord(
        volume_id=_text(record["volume_id"], path, required=True, key=key, column="volume_id"),
        mark=RecistMark.from_measurement_coordinates(
            axes, _slice(record["z"], path, key=key, column="z")
        ),
        origin=_text(record["origin"], path, required=True, key=key, column="origin"),
        author=_text(record.get("author", ""), path, required=False, key=key, column="author"),
    )


def write_marks(path: str | PathLike, records: Iterable[MarkRecord]) -> None:
    """Write marks to ``path`` (``.csv`` or ``.json``), atomically.

    Parameters
    ----------
    path : path
        Output file; the extension picks the format.
    records : iterable of MarkRecord
    """
    records = list(records)
    if _suffix(path) == ".csv":
        rows = (
            [r.volume_id, r.mark.z, *map(repr, r.mark.measurement_coordinates().tolist())]
            + [r.origin, r.author]
            for r in records
        )
        _atomic_write_text(path, _csv_text(MARK_COLUMNS, rows))
        return
    document = {
        "format": MARKS_FORMAT,
        "version": FORMAT_VERSION,
        "marks": [
            {
                "volume_id": r.volume_id,
                "z": r.mark.z,
                "long_axis": r.mark.long_axis.tolist(),
                "short_axis": r.mark.short_axis.tolist(),
                "origin": r.origin,
                "author": r.author,
            }
            for r in records
        ],
    }
    _atomic_write_text(path, json.dumps(document, indent=1, allow_nan=False) + "\n")


def read_marks(
    path: str | PathLike, *, strict: bool = False
) -> tuple[list[MarkRecord], ReadReport]:
    """Read marks written by :func:`write_marks` (or by hand in the same format).

    Returns
    -------
    records : list of MarkRecord
        In file order.
    report : ReadReport
        Every skipped row / record and why.

    Raises
    ------
    FormatError
        Unreadable file, wrong header / format tag, or (``strict``) a bad row.
    """
    path = str(path)
    if _suffix(path) == ".csv":
        return _read_csv_rows(path, MARK_COLUMNS, lambda c, n: _mark_from_csv(c, n, path), strict)
    report = ReadReport(path)
    records = []
    for index, record in enumerate(_read_json_records(path, MARKS_FORMAT, "marks")):
        report.rows_read += 1
        try:
            records.append(_mark_from_json(record, index, path))
        except FormatError as error:
            report.skip(error, strict=strict)
    return records, report


# --------------------------------------------------------------------------- 3D lesions


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"lesion meta value of type {type(value).__name__} is not JSON serialisable")


def write_lesions(path: str | PathLike, lesions: Mapping[str, Sequence[Proposal3D]]) -> None:
    """Write 3D lesions (per-slice boxes and scores) to ``.csv`` or ``.json``, atomically.

    Parameters
    ----------
    path : path
        Output file; the extension picks the format. Only JSON keeps ``meta``
        (JSON-native values; numpy scalars / arrays are written as numbers / lists).
    lesions : mapping of str to sequence of Proposal3D
        Volume id to its lesions, in order (the CSV ``lesion`` column is the position).
    """
    if _suffix(path) == ".csv":
        rows = (
            [volume_id, number, int(z), *map(repr, box.tolist()), repr(float(score))]
            for volume_id, proposals in lesions.items()
            for number, p in enumerate(proposals)
            for z, box, score in zip(p.slices, p.boxes, p.scores, strict=True)
        )
        _atomic_write_text(path, _csv_text(LESION_COLUMNS, rows))
        return
    document = {
        "format": LESIONS_FORMAT,
        "version": FORMAT_VERSION,
        "lesions": [
            {
                "volume_id": volume_id,
                "slices": p.slices.tolist(),
                "boxes": p.boxes.tolist(),
                "scores": p.scores.tolist(),
                "meta": p.meta,
            }
            for volume_id, proposals in lesions.items()
            for p in proposals
        ],
    }
    text = json.dumps(document, indent=1, allow_nan=False, default=_json_default)
    _atomic_write_text(path, text + "\n")


def _lesion_row_from_csv(cells: dict, line: int, path: str) -> tuple:
    volume_id = _text(cells["volume_id"], path, required=True, row=line, column="volume_id")
    number = _slice(cells["lesion"], path, row=line, column="lesion")
    z = _slice(cells["z"], path, row=line, column="z")
    box = [_float(cells[c], path, row=line, column=c) for c in ("x1", "y1", "x2", "y2")]
    score = _float(cells["score"], path, row=line, column="score")
    return volume_id, number, z, box, score, line


def _lesion_from_json(record, index: int, path: str) -> tuple[str, Proposal3D]:
    key = f"lesions[{index}]"
    if not isinstance(record, dict):
        raise FormatError(path, "a lesion must be an object", key=key)
    for name in ("volume_id", "slices", "boxes", "scores"):
        if name not in record:
            raise FormatError(path, f"missing field {name!r}", key=key, column=name)
    volume_id = _text(record["volume_id"], path, required=True, key=key, column="volume_id")
    slices, boxes, scores = record["slices"], record["boxes"], record["scores"]
    if not all(isinstance(v, list) for v in (slices, boxes, scores)) or not slices:
        raise FormatError(path, "slices, boxes and scores must be non-empty lists", key=key)
    if not len(slices) == len(boxes) == len(scores):
        raise FormatError(path, "slices, boxes and scores differ in length", key=key)
    z_values = [_slice(z, path, key=key, column="slices") for z in slices]
    if len(set(z_values)) != len(z_values):
        raise FormatError(path, "a slice appears twice", key=key, column="slices")
    for box in boxes:
        if not isinstance(box, list) or len(box) != 4:
            raise FormatError(path, "each box must be [x1, y1, x2, y2]", key=key, column="boxes")
    box_values = [[_float(v, path, key=key, column="boxes") for v in box] for box in boxes]
    score_values = [_float(s, path, key=key, column="scores") for s in scores]
    meta = record.get("meta", {})
    if not isinstance(meta, dict):
        raise FormatError(path, "meta must be an object", key=key, column="meta")
    return volume_id, Proposal3D(z_values, box_values, score_values, meta=meta)


def read_lesions(
    path: str | PathLike, *, strict: bool = False
) -> tuple[dict[str, list[Proposal3D]], ReadReport]:
    """Read 3D lesions written by :func:`write_lesions`.

    Returns
    -------
    lesions : dict of str to list of Proposal3D
        Volume id to its lesions; in the CSV format ordered by the ``lesion`` column.
    report : ReadReport
        Every skipped row / record and why (a CSV row repeating a lesion's slice
        is skipped; the rest of that lesion loads).

    Raises
    ------
    FormatError
        Unreadable file, wrong header / format tag, or (``strict``) a bad row.
    """
    path = str(path)
    if _suffix(path) == ".json":
        report = ReadReport(path)
        lesions: dict[str, list[Proposal3D]] = {}
        for index, record in enumerate(_read_json_records(path, LESIONS_FORMAT, "lesions")):
            report.rows_read += 1
            try:
                volume_id, proposal = _lesion_from_json(record, index, path)
            except FormatError as error:
                report.skip(error, strict=strict)
                continue
            lesions.setdefault(volume_id, []).append(proposal)
        return lesions, report

    rows, report = _read_csv_rows(
        path, LESION_COLUMNS, lambda c, n: _lesion_row_from_csv(c, n, path), strict
    )
    grouped: dict[str, dict[int, dict[int, tuple]]] = {}
    for volume_id, number, z, box, score, line in rows:
        per_slice = grouped.setdefault(volume_id, {}).setdefault(number, {})
        if z in per_slice:
            error = FormatError(
                path, f"lesion {number} of {volume_id} repeats slice {z}", row=line, column="z"
            )
            report.skip(error, strict=strict)
            continue
        per_slice[z] = (box, score)
    report.skipped.sort(key=lambda skipped: skipped.row or 0)
    lesions = {
        volume_id: [
            Proposal3D(
                list(per_slice),
                [box for box, _ in per_slice.values()],
                [score for _, score in per_slice.values()],
            )
            for _, per_slice in sorted(numbered.items())
        ]
        for volume_id, numbered in grouped.items()
    }
    return lesions, report
