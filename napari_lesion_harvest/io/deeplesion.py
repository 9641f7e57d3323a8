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
import math
import operator
import os
import re
import struct
import zlib
from collections.abc import Iterator
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


def _floats(text: str, count: int, path: str, line: int, column: str) -> tuple[float, ...]:
    try:
        values = tuple(float(token) for token in text.split(","))
    except ValueError:
        reason = f"unparsable number in {text!r}"
        raise FormatError(path, reason, row=line, column=column) from None
    if len(values) != count:
        reason = f"expected {count} numbers, got {len(values)} in {text!r}"
        raise FormatError(path, reason, row=line, column=column)
    if not all(math.isfinite(v) for v in values):
        raise FormatError(path, f"non-finite number in {text!r}", row=line, column=column)
    return values


def _ints(text: str, count: int, path: str, line: int, column: str) -> tuple[int, ...]:
    values = _floats(text, count, path, line, column)
    if any(v != int(v) for v in values):
        raise FormatError(path, f"expected whole numbers in {text!r}", row=line, column=column)
    return tuple(int(v) for v in values)


def _check_inside_image(measurement, box, image_size, path: str, line: int) -> None:
    """Refuse RECIST endpoints off the image and boxes off it by more than their padding."""
    width, height = image_size
    xs, ys = measurement[0::2], measurement[1::2]
    if not (all(0 <= x <= width for x in xs) and all(0 <= y <= height for y in ys)):
        raise FormatError(
            path,
            f"an endpoint lies outside the {width} x {height} image (Image_size)",
            row=line,
            column="Measurement_coordinates",
        )
    x1, y1, x2, y2 = box
    if not (x1 <= x2 and y1 <= y2):
        reason = f"box {box} needs x1 <= x2 and y1 <= y2"
        raise FormatError(path, reason, row=line, column="Bounding_boxes")
    pad = RECIST_BOX_PADDING
    if x1 < -pad or y1 < -pad or x2 > width + pad or y2 > height + pad:
        raise FormatError(
            path,
            f"box {box} reaches outside the {width} x {height} image (Image_size) by more "
            f"than the {pad:g} px padding",
            row=line,
            column="Bounding_boxes",
        )


def _parse_row(cells: list[str], path: str, line: int) -> DLInfoRow:
    if len(cells) != len(DL_INFO_COLUMNS):
        raise FormatError(
            path, f"expected {len(DL_INFO_COLUMNS)} fields, got {len(cells)}", row=line
        )
    c = dict(zip(DL_INFO_COLUMNS, cells, strict=True))

    def one_int(column: str) -> int:
        return _ints(c[column], 1, path, line, column)[0]

    def floats(column: str, count: int) -> tuple[float, ...]:
        return _floats(c[column], count, path, line, column)

    name = c["File_name"].strip()
    match = _FILE_NAME.match(name)
    if not match:
        raise FormatError(
            path, f"{name!r} is not PPPPPP_SS_SS_KKK.png", row=line, column="File_name"
        )
    key_slice = one_int("Key_slice_index")
    if int(match.group(2)) != key_slice:
        raise FormatError(
            path,
            f"File_name slice {match.group(2)} differs from Key_slice_index {key_slice}",
            row=line,
            column="Key_slice_index",
        )
    first, last = _ints(c["Slice_range"], 2, path, line, "Slice_range")
    if not 1 <= first <= key_slice <= last:
        raise FormatError(
            path,
            f"need 1 <= first <= key slice {key_slice} <= last, got range {first}-{last}",
            row=line,
            column="Slice_range",
        )
    spacing = floats("Spacing_mm_px_", 3)
    if min(spacing) <= 0:
        raise FormatError(
            path, f"spacing must be positive, got {spacing}", row=line, column="Spacing_mm_px_"
        )
    if last - first + 1 > MAX_SUBVOLUME_SLICES:
        raise FormatError(
            path,
            f"range {first}-{last} has {last - first + 1} slices; a sub-volume has at most "
            f"{MAX_SUBVOLUME_SLICES}",
            row=line,
            column="Slice_range",
        )
    image_size = _ints(c["Image_size"], 2, path, line, "Image_size")
    if not all(1 <= side <= MAX_SLICE_SIDE for side in image_size):
        raise FormatError(
            path,
            f"image size {image_size} (width, height): each side must be 1 to {MAX_SLICE_SIDE}",
            row=line,
            column="Image_size",
        )
    measurement = floats("Measurement_coordinates", 8)
    box = floats("Bounding_boxes", 4)
    _check_inside_image(measurement, box, image_size, path, line)
    window = floats("DICOM_windows", 2)
    if window[0] >= window[1]:
        raise FormatError(path, f"window min >= max: {window}", row=line, column="DICOM_windows")
    noisy = one_int("Possibly_noisy")
    if noisy not in (0, 1):
        raise FormatError(path, f"expected 0 or 1, got {noisy}", row=line, column="Possibly_noisy")
    split = one_int("Train_Val_Test")
    if split not in (1, 2, 3):
        reason = f"expected 1, 2 or 3, got {split}"
        raise FormatError(path, reason, row=line, column="Train_Val_Test")
    lesion_type = one_int("Coarse_lesion_type")
    if lesion_type != -1 and not 1 <= lesion_type <= 8:
        raise FormatError(
            path, f"expected -1 or 1..8, got {lesion_type}", row=line, column="Coarse_lesion_type"
        )
    age_text = c["Patient_age"].strip()
    return DLInfoRow(
        line=line,
        file_name=name,
        series=match.group(1),
        patient_index=one_int("Patient_index"),
        study_index=one_int("Study_index"),
        series_index=one_int("Series_ID"),
        key_slice=key_slice,
        measurement=measurement,
        bounding_box=box,
        diameters_px=floats("Lesion_diameters_Pixel_", 2),
        normalized_location=floats("Normalized_lesion_location", 3),
        lesion_type=lesion_type,
        possibly_noisy=bool(noisy),
        slice_range=(first, last),
        spacing_xyz=spacing,
        image_size=image_size,
        dicom_window=window,
        gender=c["Patient_gender"].strip(),
        age=one_int("Patient_age") if age_text else None,
        train_val_test=split,
    )


#: Numeric DL_info columns: (number count, whole numbers only).
_NUMERIC_COLUMNS = {
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
    "Train_Val_Test": (1, True),
}


def _parse_column(texts: list[str], count: int, whole: bool) -> tuple[np.ndarray, np.ndarray]:
    """Parse one numeric column of every row at once.

    Returns the values ``(N, count)`` and a mask ``(N,)`` of rows whose cell has
    exactly ``count`` finite numbers (whole numbers when ``whole``).
    """
    n = len(texts)
    commas = np.fromiter(map(operator.methodcaller("count", ","), texts), np.int64, n)
    ok = commas == count - 1
    values = np.full((n, count), np.nan)
    try:
        if ok.all():
            values = np.array(",".join(texts).split(","), dtype=np.float64).reshape(n, count)
        else:
            chosen = [t for t, good in zip(texts, ok, strict=True) if good]
            if chosen:
                parsed = np.array(",".join(chosen).split(","), dtype=np.float64)
                values[ok] = parsed.reshape(-1, count)
    except ValueError:  # some cell does not parse: find them one by one
        for i in np.flatnonzero(ok):
            try:
                values[i] = [float(t) for t in texts[i].split(",")]
            except ValueError:
                ok[i] = False
    ok &= np.isfinite(values).all(axis=1)
    if whole:
        with np.errstate(invalid="ignore"):
            ok &= (values == np.round(values)).all(axis=1)
    return values, ok


def _parse_rows_fast(records: list[tuple[int, list[str]]], path: str) -> list[DLInfoRow | None]:
    """Column-wise parse of DL_info records; ``None`` for every row it does not accept.

    Accepts only rows that :func:`_parse_row` accepts too (same checks, vectorised),
    so rejected rows can be handed to :func:`_parse_row` for the exact error.
    """
    n_columns = len(DL_INFO_COLUMNS)
    complete_records = [record for record in records if len(record[1]) == n_columns]
    if not complete_records:
        return [None] * len(records)
    complete = [cells for _, cells in complete_records]
    columns = dict(zip(DL_INFO_COLUMNS, zip(*complete, strict=True), strict=True))
    values, ok = {}, np.ones(len(complete), dtype=bool)
    for name, (count, whole) in _NUMERIC_COLUMNS.items():
        values[name], column_ok = _parse_column(list(columns[name]), count, whole)
        ok &= column_ok
    ages_text = [t.strip() for t in columns["Patient_age"]]
    ages, ages_ok = _parse_column([t or "0" for t in ages_text], 1, True)
    ok &= ages_ok
    names = [_FILE_NAME.match(t.strip()) for t in columns["File_name"]]
    name_keys = np.array([int(m.group(2)) if m else -1 for m in names], dtype=np.float64)
    key = values["Key_slice_index"][:, 0]
    first, last = values["Slice_range"][:, 0], values["Slice_range"][:, 1]
    lesion_type = values["Coarse_lesion_type"][:, 0]
    with np.errstate(invalid="ignore"):
        ok &= name_keys == key
        ok &= (first >= 1) & (first <= key) & (key <= last)
        ok &= last - first + 1 <= MAX_SUBVOLUME_SLICES
        ok &= (values["Spacing_mm_px_"] > 0).all(axis=1)
        size = values["Image_size"]
        ok &= ((size >= 1) & (size <= MAX_SLICE_SIDE)).all(axis=1)
        width, height = size[:, :1], size[:, 1:]
        points = values["Measurement_coordinates"]
        ok &= ((points[:, 0::2] >= 0) & (points[:, 0::2] <= width)).all(axis=1)
        ok &= ((points[:, 1::2] >= 0) & (points[:, 1::2] <= height)).all(axis=1)
        x1, y1, x2, y2 = values["Bounding_boxes"].T
        pad = RECIST_BOX_PADDING
        ok &= (x1 <= x2) & (y1 <= y2) & (x1 >= -pad) & (y1 >= -pad)
        ok &= (x2 <= width[:, 0] + pad) & (y2 <= height[:, 0] + pad)
        ok &= values["DICOM_windows"][:, 0] < values["DICOM_windows"][:, 1]
        ok &= np.isin(values["Possibly_noisy"][:, 0], (0, 1))
        ok &= np.isin(values["Train_Val_Test"][:, 0], (1, 2, 3))
        ok &= (lesion_type == -1) | ((lesion_type >= 1) & (lesion_type <= 8))
    keep = np.flatnonzero(ok)

    def column(name: str, *, as_int: bool = False, single: bool = False) -> list:
        array = values[name][keep]
        array = array.astype(np.int64) if as_int else array
        return (array[:, 0] if single else array).tolist()

    def tuples(name: str, *, as_int: bool = False) -> list[tuple]:
        return list(map(tuple, column(name, as_int=as_int)))

    good_rows = zip(
        keep.tolist(),
        column("Patient_index", as_int=True, single=True),
        column("Study_index", as_int=True, single=True),
        column("Series_ID", as_int=True, single=True),
        column("Key_slice_index", as_int=True, single=True),
        tuples("Measurement_coordinates"),
        tuples("Bounding_boxes"),
        tuples("Lesion_diameters_Pixel_"),
        tuples("Normalized_lesion_location"),
        column("Coarse_lesion_type", as_int=True, single=True),
        column("Possibly_noisy", as_int=True, single=True),
        tuples("Slice_range", as_int=True),
        tuples("Spacing_mm_px_"),
        tuples("Image_size", as_int=True),
        tuples("DICOM_windows"),
        ages[keep, 0].astype(np.int64).tolist(),
        column("Train_Val_Test", as_int=True, single=True),
        strict=True,
    )
    by_position: dict[int, DLInfoRow] = {}
    for i, patient, study, series_no, key_slice, *numbers, age, split in good_rows:
        measurement, box, diameters, location, kind, noisy, *rest = numbers
        slice_range, spacing, size, window = rest
        line, cells = complete_records[i]
        by_position[i] = DLInfoRow(
            line,
            cells[0].strip(),
            names[i].group(1),
            patient,
            study,
            series_no,
            key_slice,
            measurement,
            box,
            diameters,
            location,
            kind,
            bool(noisy),
            slice_range,
            spacing,
            size,
            window,
            cells[15].strip(),
            age if ages_text[i] else None,
            split,
        )
    parsed: list[DLInfoRow | None] = []
    position = 0
    for _, cells in records:
        if len(cells) == n_columns:
            parsed.append(by_position.get(position))
            position += 1
        else:
            parsed.append(None)
    return parsed


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
        fast = _parse_rows_fast(records, path)
    for (row_line, cells), row in zip(records, fast, strict=True):
        if row is None:  # rejected by the fast path: the row-by-row parser names the fault
            try:
                row = _parse_row(cells, path, row_line)
            except FormatError as error:
                report.skip(error, strict=strict)
                continue
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
