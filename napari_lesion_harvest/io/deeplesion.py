"""DeepLesion: ``DL_info.csv`` rows and the 16-bit PNG slice folders, read lazily.

Layout::

    Images_png/PPPPPP_SS_SS/NNN.png    one axial slice, HU = stored value - 32768
    DL_info.csv                        one row per RECIST mark, 18 columns

Each mark comes with a sub-volume, its ``Slice_range`` (1-based, inclusive
file numbers). A sub-volume is one :class:`~.volume.CTVolume` with the id
``PPPPPP_SS_SS_aaa-bbb`` (``aaa``/``bbb`` = first/last slice, at least three
digits), the same ids as the paper's pickles. A mark's ``z`` inside it is
``Key_slice_index - aaa`` (:func:`napari_lesion_harvest.geometry.key_slice_to_index`).

Slices are decoded on demand with Pillow (the fastest 16-bit PNG decoder
available here; imageio and scikit-image wrap it). Missing files inside a
range are an error by default (:class:`~.errors.MissingSlicesError`); with
``on_missing="nearest"`` the nearest present file stands in for a missing one
and the volume lists the missing numbers in ``attributes["missing_slices"]``;
slice positions are never shifted, and only gaps between the series' files are
filled.

Damaged input is refused with an error naming the file, row or column: every
slice file of a sub-volume is checked when it opens, from its first 33 and last
12 bytes (:mod:`.png_header`), and a slice whose data does not decode raises
:class:`~.errors.ImageFormatError` when it is read; DL_info rows are checked
against their own ``Image_size`` when parsed (RECIST endpoints and boxes on the
image, ``Slice_range`` length) and against the files when their sub-volume
opens (:meth:`DeepLesionDataset.open`).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import operator
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from napari_lesion_harvest.geometry import RECIST_BOX_PADDING, RecistMark, key_slice_to_index
from napari_lesion_harvest.io.errors import (
    FormatError,
    ImageFormatError,
    MissingSlicesError,
    ReadReport,
)
from napari_lesion_harvest.io.limits import MAX_SLICE_SIDE, MAX_SUBVOLUME_SLICES
from napari_lesion_harvest.io.png_header import hu_png_shape
from napari_lesion_harvest.io.volume import CTVolume

#: The 18 columns of ``DL_info.csv``, in order.
DL_INFO_COLUMNS = (
    "File_name",
    "Patient_index",
    "Study_index",
    "Series_ID",
    "Key_slice_index",
    "Measurement_coordinates",
    "Bounding_boxes",
    "Lesion_diameters_Pixel_",
    "Normalized_lesion_location",
    "Coarse_lesion_type",
    "Possibly_noisy",
    "Slice_range",
    "Spacing_mm_px_",
    "Image_size",
    "DICOM_windows",
    "Patient_gender",
    "Patient_age",
    "Train_Val_Test",
)
#: Offset between stored PNG values and Hounsfield units.
HU_OFFSET = 32768
#: Suffix the ``Revised-*`` pickles append to volume keys.
ANNOT_SUFFIX = ".annot"

_VOLUME_ID = re.compile(r"^(\d+_\d+_\d+)_(\d{3,})-(\d{3,})$")
_FILE_NAME = re.compile(r"^(\d+_\d+_\d+)_(\d+)\.png$")
OnMissing = Literal["raise", "nearest"]


# --------------------------------------------------------------------------- volume ids


def subvolume_id(series: str, first: int, last: int) -> str:
    """The sub-volume id ``PPPPPP_SS_SS_aaa-bbb`` of slices ``first..last`` of ``series``."""
    return f"{series}_{int(first):03d}-{int(last):03d}"


def normalize_volume_id(key: str) -> str:
    """Strip the ``.annot`` suffix of the ``Revised-*`` pickles' keys (other keys unchanged)."""
    return key[: -len(ANNOT_SUFFIX)] if key.endswith(ANNOT_SUFFIX) else key


def parse_subvolume_id(volume_id: str) -> tuple[str, int, int]:
    """Split ``PPPPPP_SS_SS_aaa-bbb`` (``.annot`` allowed) into ``(series, first, last)``.

    Raises
    ------
    ValueError
        When the id does not have that form.
    """
    match = _VOLUME_ID.match(normalize_volume_id(volume_id))
    if not match:
        raise ValueError(f"{volume_id!r} is not a DeepLesion sub-volume id PPPPPP_SS_SS_aaa-bbb")
    series, first, last = match.group(1), int(match.group(2)), int(match.group(3))
    if not 1 <= first <= last:
        raise ValueError(f"{volume_id!r}: slice range {first}-{last} is empty")
    return series, first, last


# --------------------------------------------------------------------------- DL_info.csv


class DLInfoRow(NamedTuple):
    """One row of ``DL_info.csv`` (one RECIST mark), parsed and checked.

    Coordinates are kept exactly as in the file (pixel ``x, y``; no shift).
    ``spacing_xyz`` is the file's ``(x, y, slice interval)`` order; use
    :attr:`spacing_zyx` for volumes. A named tuple (immutable), because a
    full DL_info has 32,735 rows and tuples are ten times cheaper to make
    than dataclass instances.
    """

    line: int
    file_name: str
    series: str
    patient_index: int
    study_index: int
    series_index: int
    key_slice: int
    measurement: tuple[float, ...]
    bounding_box: tuple[float, ...]
    diameters_px: tuple[float, ...]
    normalized_location: tuple[float, ...]
    lesion_type: int
    possibly_noisy: bool
    slice_range: tuple[int, int]
    spacing_xyz: tuple[float, float, float]
    image_size: tuple[int, int]
    dicom_window: tuple[float, float]
    gender: str
    age: int | None
    train_val_test: int

    @property
    def volume_id(self) -> str:
        """The sub-volume id ``PPPPPP_SS_SS_aaa-bbb``."""
        return subvolume_id(self.series, *self.slice_range)

    @property
    def z(self) -> int:
        """0-based index of the key slice inside the sub-volume."""
        return key_slice_to_index(self.key_slice, self.slice_range[0])

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Voxel spacing ``(sz, sy, sx)`` in mm."""
        sx, sy, sz = self.spacing_xyz
        return (sz, sy, sx)

    @property
    def mark(self) -> RecistMark:
        """The RECIST mark on slice :attr:`z` of the sub-volume."""
        return RecistMark.from_measurement_coordinates(self.measurement, self.z)


@dataclass
class DLInfo:
    """The parsed rows of a ``DL_info.csv`` and the report of rows skipped."""

    path: str
    rows: list[DLInfoRow]
    report: ReadReport

    def by_volume(self) -> dict[str, list[DLInfoRow]]:
        """Rows grouped by sub-volume id, in first-appearance order."""
        groups: dict[str, list[DLInfoRow]] = {}
        for row in self.rows:
            groups.setdefault(row.volume_id, []).append(row)
        return groups

    def marks_by_volume(self) -> dict[str, list[RecistMark]]:
        """RECIST marks grouped by sub-volume id."""
        return {vid: [r.mark for r in rows] for vid, rows in self.by_volume().items()}


#: How each numeric column's cell reads: ``(numbers per cell, whole numbers only)``.
#: ``Patient_age`` may be empty (age unknown).
DL_INFO_NUMBERS = {
    "Patient_index": (1, True),
    "Study_index": (1, True),
    "Series_ID": (1, True),
    "Key_slice_index": (1, True),
    "Measurement_coordinates": (8, False),
    "Bounding_boxes": (4, False),
    "Lesion_diameters_Pixel_": (2, False),
    "Normalized_lesion_location": (3, False),
    "Coarse_lesion_type": (1, True),
    "Possibly_noisy": (1, True),
    "Slice_range": (2, True),
    "Spacing_mm_px_": (3, False),
    "Image_size": (2, True),
    "DICOM_windows": (2, False),
    "Patient_age": (1, True),
    "Train_Val_Test": (1, True),
}

#: Why a numeric cell is refused, in the order the reasons are tested.
_CELL_REASONS = (
    None,
    "unparsable number in {text!r}",
    "expected {count} numbers, got {found} in {text!r}",
    "non-finite number in {text!r}",
    "expected whole numbers in {text!r}",
)
_CELL_OK, _UNPARSABLE, _WRONG_COUNT, _NON_FINITE, _NOT_WHOLE = range(len(_CELL_REASONS))


def _parse_numbers(texts: list[str], count: int, whole: bool) -> tuple[np.ndarray, np.ndarray]:
    """Parse the cells of one numeric column, all rows at once.

    Returns
    -------
    values : ndarray, shape (N, count), float64
        NaN in the rows of a refused cell.
    codes : ndarray, shape (N,), int
        Index into :data:`_CELL_REASONS`: ``_CELL_OK`` or why the cell is refused.
    """
    n = len(texts)
    tokens = np.fromiter(map(operator.methodcaller("count", ","), texts), np.int64, n) + 1
    codes = np.where(tokens == count, _CELL_OK, _WRONG_COUNT)
    ok = codes == _CELL_OK
    values = np.full((n, count), np.nan)
    try:
        if ok.all():
            values = np.array(",".join(texts).split(","), dtype=np.float64).reshape(n, count)
        elif ok.any():
            chosen = [t for t, good in zip(texts, ok, strict=True) if good]
            values[ok] = np.array(",".join(chosen).split(","), dtype=np.float64).reshape(-1, count)
    except ValueError:  # some cell does not parse: find them one by one
        for i in np.flatnonzero(ok):
            try:
                values[i] = [float(t) for t in texts[i].split(",")]
            except ValueError:
                codes[i] = _UNPARSABLE
    for i in np.flatnonzero(codes == _WRONG_COUNT):  # an unparsable number is named first
        try:
            [float(t) for t in texts[i].split(",")]
        except ValueError:
            codes[i] = _UNPARSABLE
    codes[(codes == _CELL_OK) & ~np.isfinite(values).all(axis=1)] = _NON_FINITE
    if whole:
        with np.errstate(invalid="ignore"):
            codes[(codes == _CELL_OK) & ~(values == np.round(values)).all(axis=1)] = _NOT_WHOLE
    return values, codes


class _Columns:
    """The cells of the DL_info records that have 18 fields, by column, and the numbers
    parsed from them so far (:meth:`parse`), for the rules of :data:`_DL_INFO_RULES`."""

    def __init__(self, cells: list[list[str]]):
        self.cells = dict(zip(DL_INFO_COLUMNS, zip(*cells, strict=True), strict=True))
        self.names = [_FILE_NAME.match(t.strip()) for t in self.cells["File_name"]]
        #: The slice number in each ``File_name`` (-1 where the name is malformed), ``(N,)``.
        self.name_slices = np.array(
            [int(m.group(2)) if m else -1 for m in self.names], dtype=np.float64
        )
        ages = [t.strip() for t in self.cells["Patient_age"]]
        self.ages_known = list(map(bool, ages))
        #: What is parsed of each column where it is not the cell itself (an unknown age: 0).
        self.texts = {"Patient_age": [t or "0" for t in ages]}
        self.values: dict[str, np.ndarray] = {}
        self.codes: dict[str, np.ndarray] = {}

    def parse(self, column: str) -> np.ndarray:
        """Parse a numeric column; which rows' cells are refused, shape ``(N,)``."""
        texts = self.texts.get(column) or list(self.cells[column])
        parsed = _parse_numbers(texts, *DL_INFO_NUMBERS[column])
        self.values[column], self.codes[column] = parsed
        return self.codes[column] != _CELL_OK

    def __getitem__(self, column: str) -> np.ndarray:
        """The numbers of a parsed column, shape ``(N, count)``."""
        return self.values[column]

    def cell_reason(self, column: str, i: int) -> str:
        """Why row ``i``'s cell of ``column`` is refused."""
        text = self.cells[column][i]
        return _CELL_REASONS[self.codes[column][i]].format(
            text=text, count=DL_INFO_NUMBERS[column][0], found=text.count(",") + 1
        )

    def fields(self, i: int) -> dict:
        """Row ``i``'s values as the error messages show them: the file name and its
        slice, and each column parsed so far (a whole number, or a tuple)."""
        fields = {"File_name": self.cells["File_name"][i].strip(), "pad": RECIST_BOX_PADDING}
        if self.names[i]:
            fields["name_slice"] = self.names[i].group(2)
        for column, values in self.values.items():
            count, whole = DL_INFO_NUMBERS[column]
            row = tuple(int(v) for v in values[i]) if whole else tuple(values[i].tolist())
            fields[column] = row[0] if count == 1 else row
        if "Slice_range" in fields:
            fields["first"], fields["last"] = fields["Slice_range"]
            fields["slices"] = fields["last"] - fields["first"] + 1
        if "Image_size" in fields:
            fields["width"], fields["height"] = fields["Image_size"]
        return fields


class _Rule(NamedTuple):
    """A check of DL_info rows: the column its error names, which rows break it
    (``fails(columns)``, bool ``(N,)``) and why (a template of :meth:`_Columns.fields`,
    or None: the cells of ``column`` do not hold their :data:`DL_INFO_NUMBERS`)."""

    column: str
    fails: Callable[[_Columns], np.ndarray]
    reason: str | None = None

    def reason_of(self, columns: _Columns, i: int) -> str:
        """The error message of row ``i``."""
        if self.reason is None:
            return columns.cell_reason(self.column, i)
        return self.reason.format_map(columns.fields(i))


def _cells(column: str) -> _Rule:
    """The rule that the cells of ``column`` hold their :data:`DL_INFO_NUMBERS`."""
    return _Rule(column, lambda c: c.parse(column))


def _outside_image(points: np.ndarray, size: np.ndarray, pad: float = 0.0) -> np.ndarray:
    """Rows with a point ``(x, y)`` of ``points`` (N, 2K) off the image of ``size``
    (N, 2: width, height) by more than ``pad``."""
    xs, ys = points[:, 0::2], points[:, 1::2]
    inside_x = (xs >= -pad) & (xs <= size[:, :1] + pad)
    inside_y = (ys >= -pad) & (ys <= size[:, 1:] + pad)
    return ~(inside_x.all(axis=1) & inside_y.all(axis=1))


#: The checks of a DL_info row, in order: a row is refused for the first it breaks.
_DL_INFO_RULES = (
    _Rule(
        "File_name",
        lambda c: c.name_slices < 0,
        "{File_name!r} is not PPPPPP_SS_SS_KKK.png",
    ),
    _cells("Key_slice_index"),
    _Rule(
        "Key_slice_index",
        lambda c: c.name_slices != c["Key_slice_index"][:, 0],
        "File_name slice {name_slice} differs from Key_slice_index {Key_slice_index}",
    ),
    _cells("Slice_range"),
    _Rule(
        "Slice_range",
        lambda c: (
            ~(
                (c["Slice_range"][:, 0] >= 1)
                & (c["Slice_range"][:, 0] <= c["Key_slice_index"][:, 0])
                & (c["Key_slice_index"][:, 0] <= c["Slice_range"][:, 1])
            )
        ),
        "need 1 <= first <= key slice {Key_slice_index} <= last, got range {first}-{last}",
    ),
    _cells("Spacing_mm_px_"),
    _Rule(
        "Spacing_mm_px_",
        lambda c: (c["Spacing_mm_px_"] <= 0).any(axis=1),
        "spacing must be positive, got {Spacing_mm_px_}",
    ),
    _Rule(
        "Slice_range",
        lambda c: c["Slice_range"][:, 1] - c["Slice_range"][:, 0] + 1 > MAX_SUBVOLUME_SLICES,
        "range {first}-{last} has {slices} slices; a sub-volume has at most "
        f"{MAX_SUBVOLUME_SLICES}",
    ),
    _cells("Image_size"),
    _Rule(
        "Image_size",
        lambda c: ~((c["Image_size"] >= 1) & (c["Image_size"] <= MAX_SLICE_SIDE)).all(axis=1),
        f"image size {{Image_size}} (width, height): each side must be 1 to {MAX_SLICE_SIDE}",
    ),
    _cells("Measurement_coordinates"),
    _cells("Bounding_boxes"),
    _Rule(
        "Measurement_coordinates",
        lambda c: _outside_image(c["Measurement_coordinates"], c["Image_size"]),
        "an endpoint lies outside the {width} x {height} image (Image_size)",
    ),
    _Rule(
        "Bounding_boxes",
        lambda c: ~(c["Bounding_boxes"][:, :2] <= c["Bounding_boxes"][:, 2:]).all(axis=1),
        "box {Bounding_boxes} needs x1 <= x2 and y1 <= y2",
    ),
    _Rule(
        "Bounding_boxes",
        lambda c: _outside_image(c["Bounding_boxes"], c["Image_size"], RECIST_BOX_PADDING),
        "box {Bounding_boxes} reaches outside the {width} x {height} image (Image_size) by "
        "more than the {pad:g} px padding",
    ),
    _cells("DICOM_windows"),
    _Rule(
        "DICOM_windows",
        lambda c: c["DICOM_windows"][:, 0] >= c["DICOM_windows"][:, 1],
        "window min >= max: {DICOM_windows}",
    ),
    _cells("Possibly_noisy"),
    _Rule(
        "Possibly_noisy",
        lambda c: ~np.isin(c["Possibly_noisy"][:, 0], (0, 1)),
        "expected 0 or 1, got {Possibly_noisy}",
    ),
    _cells("Train_Val_Test"),
    _Rule(
        "Train_Val_Test",
        lambda c: ~np.isin(c["Train_Val_Test"][:, 0], (1, 2, 3)),
        "expected 1, 2 or 3, got {Train_Val_Test}",
    ),
    _cells("Coarse_lesion_type"),
    _Rule(
        "Coarse_lesion_type",
        lambda c: ~np.isin(c["Coarse_lesion_type"][:, 0], (-1, *range(1, 9))),
        "expected -1 or 1..8, got {Coarse_lesion_type}",
    ),
    *(
        _cells(column)
        for column in (
            "Patient_index",
            "Study_index",
            "Series_ID",
            "Lesion_diameters_Pixel_",
            "Normalized_lesion_location",
            "Patient_age",
        )
    ),
)


def _parse_records(
    records: list[tuple[int, list[str]]], path: str
) -> list[DLInfoRow | FormatError]:
    """Check and convert DL_info records ``(line, cells)``, column by column.

    Returns
    -------
    list
        Per record, in order: its :class:`DLInfoRow`, or the :class:`FormatError`
        of the first rule of :data:`_DL_INFO_RULES` it breaks (naming line and column).
    """
    n_columns = len(DL_INFO_COLUMNS)
    complete = [record for record in records if len(record[1]) == n_columns]
    outcomes: dict[int, DLInfoRow | FormatError] = {}
    if complete:
        columns = _Columns([cells for _, cells in complete])
        alive = np.ones(len(complete), dtype=bool)
        with np.errstate(invalid="ignore"):
            for rule in _DL_INFO_RULES:
                broken = np.flatnonzero(alive & rule.fails(columns))
                for i in broken.tolist():
                    reason = rule.reason_of(columns, i)
                    line = complete[i][0]
                    outcomes[i] = FormatError(path, reason, row=line, column=rule.column)
                alive[broken] = False
        outcomes.update(_rows(columns, np.flatnonzero(alive), complete))
    parsed: list[DLInfoRow | FormatError] = []
    position = 0
    for line, cells in records:
        if len(cells) == n_columns:
            parsed.append(outcomes[position])
            position += 1
        else:
            reason = f"expected {n_columns} fields, got {len(cells)}"
            parsed.append(FormatError(path, reason, row=line))
    return parsed


def _rows(
    columns: _Columns, keep: np.ndarray, records: list[tuple[int, list[str]]]
) -> dict[int, DLInfoRow]:
    """The rows of the records at positions ``keep`` (which break no rule), by position."""

    def values(column: str) -> list:
        count, whole = DL_INFO_NUMBERS[column]
        array = columns[column][keep]
        if column == "Possibly_noisy":
            return (array[:, 0] == 1).tolist()
        array = array.astype(np.int64) if whole else array
        return array[:, 0].tolist() if count == 1 else list(map(tuple, array.tolist()))

    keep = keep.tolist()
    *numbers, ages, splits = (values(column) for column in DL_INFO_NUMBERS)  # DLInfoRow order
    rows = map(
        DLInfoRow,
        [records[i][0] for i in keep],
        [records[i][1][0].strip() for i in keep],
        [columns.names[i].group(1) for i in keep],
        *numbers,
        [records[i][1][15].strip() for i in keep],
        [age if columns.ages_known[i] else None for i, age in zip(keep, ages, strict=True)],
        splits,
    )
    return dict(zip(keep, rows, strict=True))


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector while making many small acyclic objects.

    Parsing makes ~30 lists, tuples and floats per row; without the pause the
    collector rescans them again and again (half the run time on 32,735 rows).
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def read_dl_info(path: str | PathLike, *, strict: bool = False) -> DLInfo:
    """Parse ``DL_info.csv``.

    Parameters
    ----------
    path : path
        The CSV file; its header must be exactly :data:`DL_INFO_COLUMNS`.
    strict : bool
        Raise on the first bad row instead of skipping it.

    Returns
    -------
    DLInfo
        Good rows in file order and a :class:`~.errors.ReadReport` listing every
        skipped row (line, column, reason).

    Raises
    ------
    FormatError
        Unreadable file, missing / renamed / reordered columns, or (``strict``) a bad row.
    """
    path = str(path)
    report = ReadReport(path)
    rows: list[DLInfoRow] = []
    try:
        with open(path, newline="", encoding="utf-8") as handle, _gc_paused():
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            if tuple(header) != DL_INFO_COLUMNS:
                missing = [name for name in DL_INFO_COLUMNS if name not in header]
                extra = [name for name in header if name not in DL_INFO_COLUMNS]
                raise FormatError(
                    path,
                    f"header is not the 18 DL_info columns (missing {missing}, unexpected "
                    f"{extra}; order must be {', '.join(DL_INFO_COLUMNS)})",
                    row=1,
                    column=(missing or extra or [None])[0],
                )
            records = []
            line = reader.line_num
            for cells in reader:
                row_line, line = line + 1, reader.line_num
                if cells:
                    records.append((row_line, cells))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise FormatError(path, f"cannot read as CSV: {error}") from error
    report.rows_read = len(records)
    with _gc_paused():
        parsed = _parse_records(records, path)
    for row in parsed:
        if isinstance(row, FormatError):
            report.skip(row, strict=strict)
        else:
            rows.append(row)
    return DLInfo(path, rows, report)


# --------------------------------------------------------------------------- PNG slices


def read_hu_png(path: str | PathLike, *, expected_shape: tuple[int, int] | None = None):
    """Decode one DeepLesion slice to HU.

    Parameters
    ----------
    path : path
        16-bit grayscale PNG, stored value = HU + 32768.
    expected_shape : (int, int), optional
        Required ``(Y, X)``; checked from the header before decoding.

    Returns
    -------
    ndarray, shape (Y, X), int16
        Hounsfield units.

    Raises
    ------
    ImageFormatError
        Not a PNG, not 16-bit grayscale, wrong or oversized size, truncated
        (:func:`~.png_header.hu_png_shape`), or compressed data that does not decode.
    """
    from PIL import Image

    hu_png_shape(path, expected_shape=expected_shape)
    try:
        with Image.open(path, formats=["PNG"]) as image:
            image.load()
            raw = np.asarray(image)
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error) as error:
        raise ImageFormatError(path, f"damaged PNG data: {error}") from error
    if raw.dtype.kind == "i":  # Pillow mode "I" (int32)
        if raw.min(initial=0) < 0 or raw.max(initial=0) > 0xFFFF:
            raise ImageFormatError(path, "values outside the 16-bit range")
    return (raw.astype("<u2", copy=False) ^ np.uint16(HU_OFFSET)).view(np.int16)


def check_series_slices(paths: list[Path]) -> tuple[int, int]:
    """Check the header and end of every distinct slice file without decoding.

    Parameters
    ----------
    paths : list of Path
        Slice files in slice order (repeats allowed).

    Returns
    -------
    (int, int)
        ``(Y, X)`` of the first file, which every other file must share.

    Raises
    ------
    ImageFormatError
        For the first file that is not a complete 16-bit grayscale PNG of that
        size (:func:`~.png_header.hu_png_shape`); the message names it.
    """
    shape_yx = hu_png_shape(paths[0])
    for path in dict.fromkeys(paths[1:]):
        hu_png_shape(path, expected_shape=shape_yx)
    return shape_yx


def series_slice_files(series_dir: str | PathLike) -> dict[int, Path]:
    """The slice files of one series folder, by 1-based slice number (``NNN.png``)."""
    series_dir = Path(series_dir)
    files: dict[int, Path] = {}
    try:
        entries = list(os.scandir(series_dir))
    except OSError:
        return files
    for entry in entries:
        stem, dot, ext = entry.name.partition(".")
        if dot and ext.lower() == "png" and stem.isascii() and stem.isdigit():
            files[int(stem)] = Path(entry.path)
    return files


def _nearest_present(number: int, present: list[int]) -> int:
    index = int(np.searchsorted(present, number))
    candidates = present[max(index - 1, 0) : index + 1]
    return min(candidates, key=lambda n: (abs(n - number), n))


def open_series_range(
    series_dir: str | PathLike,
    first: int,
    last: int,
    *,
    spacing_zyx: tuple[float, float, float],
    on_missing: OnMissing = "raise",
    files: dict[int, Path] | None = None,
    **volume_kwargs,
) -> CTVolume:
    """Open slices ``first..last`` (1-based, inclusive) of a series folder as a lazy volume.

    Parameters
    ----------
    series_dir : path
        ``Images_png/PPPPPP_SS_SS``.
    first, last : int
        Slice range (file numbers).
    spacing_zyx : (float, float, float)
        Voxel spacing in mm.
    on_missing : {"raise", "nearest"}
        What to do when files inside the range are missing: raise
        :class:`~.errors.MissingSlicesError`, or read the nearest present file in
        their place (listed in ``attributes["missing_slices"]``). Only gaps
        between the folder's files are filled: a range reaching before its
        first file or after its last raises :class:`~.errors.MissingSlicesError`.
    files : dict, optional
        Output of :func:`series_slice_files` when the caller already listed the folder.
    **volume_kwargs
        Passed to :class:`~.volume.CTVolume` (``display_window``, ``attributes``, ...).

    Returns
    -------
    CTVolume
        Shape ``(last - first + 1, Y, X)``; ``volume_id`` ``PPPPPP_SS_SS_aaa-bbb``.

    Raises
    ------
    MissingSlicesError
        Files missing, per ``on_missing``.
    ImageFormatError
        A slice file that is not a complete 16-bit grayscale PNG of the first
        slice's size (every file's header and end are checked here, without
        decoding; :func:`check_series_slices`), or later, when a slice is
        read, one whose data does not decode.
    """
    series_dir = Path(series_dir)
    files = series_slice_files(series_dir) if files is None else files
    first, last = int(first), int(last)
    wanted = range(first, last + 1)
    missing = [n for n in wanted if n not in files]
    present = [n for n in wanted if n in files]
    if missing and (on_missing == "raise" or not present):
        raise MissingSlicesError(series_dir, missing, first=first, last=last)
    files_span = (min(files), max(files))
    beyond = [n for n in missing if not files_span[0] <= n <= files_span[1]]
    if beyond:
        raise MissingSlicesError(series_dir, beyond, first=first, last=last, files_span=files_span)
    sources = [files[n] if n in files else files[_nearest_present(n, present)] for n in wanted]
    shape_yx = check_series_slices(sources)
    attributes = dict(volume_kwargs.pop("attributes", {}))
    attributes["series_dir"] = str(series_dir)
    attributes["slice_range"] = (int(first), int(last))
    attributes["missing_slices"] = missing

    def load_slice(z: int) -> np.ndarray:
        return read_hu_png(sources[z], expected_shape=shape_yx)

    return CTVolume(
        volume_id=subvolume_id(series_dir.name, first, last),
        shape=(len(sources), *shape_yx),
        spacing=spacing_zyx,
        load_slice=load_slice,
        source=f"deeplesion:{series_dir}",
        attributes=attributes,
        **volume_kwargs,
    )


class DeepLesionDataset:
    """The sub-volumes of a DeepLesion-layout dataset, opened lazily one at a time.

    Parameters
    ----------
    images_dir : path
        The ``Images_png`` folder.
    dl_info : DLInfo or path
        Parsed ``DL_info.csv`` (or its path, parsed leniently).
    on_missing : {"raise", "nearest"}
        Passed to :func:`open_series_range`.
    cache_slices : int
        Slices each open volume keeps decoded.

    Notes
    -----
    Iterating yields one :class:`~.volume.CTVolume` per sub-volume; nothing but
    the current volume's slice cache is held, so memory stays flat over
    thousands of sub-volumes. :meth:`iter_volumes` with ``skip_missing=True``
    skips volumes whose files are missing and lists them in :attr:`missing`.
    """

    def __init__(
        self,
        images_dir: str | PathLike,
        dl_info: DLInfo | str | PathLike,
        *,
        on_missing: OnMissing = "raise",
        cache_slices: int = 16,
    ):
        self.images_dir = Path(images_dir)
        self.dl_info = dl_info if isinstance(dl_info, DLInfo) else read_dl_info(dl_info)
        self.on_missing = on_missing
        self.cache_slices = cache_slices
        self._rows = self.dl_info.by_volume()
        #: Volume id -> missing 1-based slice numbers, for volumes skipped or filled.
        self.missing: dict[str, list[int]] = {}

    @property
    def volume_ids(self) -> list[str]:
        """Sub-volume ids in DL_info order."""
        return list(self._rows)

    def rows(self, volume_id: str) -> list[DLInfoRow]:
        """The DL_info rows (marks) of one sub-volume."""
        return self._rows[volume_id]

    def marks(self, volume_id: str) -> list[RecistMark]:
        """The RECIST marks of one sub-volume, ``z`` inside it."""
        return [row.mark for row in self._rows[volume_id]]

    def open(self, volume_id: str) -> CTVolume:
        """Open one sub-volume (lazy) after checking its slice files against its DL_info rows.

        Raises
        ------
        FormatError
            A row that disagrees with the files, naming the DL_info line and
            column: a ``Slice_range`` reaching past the series folder's first or
            last file, or an ``Image_size`` other than the slices' size.
        MissingSlicesError
            Files missing inside the range (``on_missing="raise"``) or no file at all.
        ImageFormatError
            A slice file that is not a complete 16-bit grayscale PNG of the
            series' size (names the file).
        """
        rows = self._rows[volume_id]
        first_row = rows[0]
        series_dir = self.images_dir / first_row.series
        files = series_slice_files(series_dir)
        first, last = first_row.slice_range
        if files and (first < min(files) or last > max(files)):
            raise FormatError(
                self.dl_info.path,
                f"range {first}-{last} reaches past the slice files of {series_dir} "
                f"({min(files)}-{max(files)})",
                row=first_row.line,
                column="Slice_range",
            )
        attributes = {
            "possibly_noisy": [row.possibly_noisy for row in rows],
            "lesion_types": [row.lesion_type for row in rows],
            "train_val_test": first_row.train_val_test,
            "patient_index": first_row.patient_index,
            "patient_gender": first_row.gender,
            "patient_age": first_row.age,
        }
        volume = open_series_range(
            series_dir,
            first,
            last,
            spacing_zyx=first_row.spacing_zyx,
            on_missing=self.on_missing,
            files=files,
            display_window=first_row.dicom_window,
            attributes=attributes,
            cache_slices=self.cache_slices,
        )
        height, width = volume.shape[1:]
        for row in rows:
            if row.image_size != (width, height):
                raise FormatError(
                    self.dl_info.path,
                    f"Image_size {row.image_size[0]} x {row.image_size[1]} differs from the "
                    f"{width} x {height} slices of {series_dir}",
                    row=row.line,
                    column="Image_size",
                )
        if volume.attributes["missing_slices"]:
            self.missing[volume_id] = volume.attributes["missing_slices"]
        return volume

    def iter_volumes(self, *, skip_missing: bool = False) -> Iterator[CTVolume]:
        """Yield every sub-volume; with ``skip_missing`` volumes with missing files are skipped."""
        for volume_id in self._rows:
            try:
                yield self.open(volume_id)
            except MissingSlicesError as error:
                if not skip_missing:
                    raise
                self.missing[volume_id] = error.missing

    def __iter__(self) -> Iterator[CTVolume]:
        return self.iter_volumes()

    def __len__(self) -> int:
        return len(self._rows)
