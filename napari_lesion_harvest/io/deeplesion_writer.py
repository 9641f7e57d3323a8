"""Write datasets in DeepLesion's layout: 16-bit PNG slice folders and ``DL_info.csv``.

Layout written (the one :mod:`napari_lesion_harvest.io.deeplesion` reads)::

    Images_png/PPPPPP_SS_SS/NNN.png    uint16, stored value = HU + 32768, NNN 1-based
    DL_info.csv                        one row per RECIST mark, DeepLesion's 18 columns

Rows are :class:`~napari_lesion_harvest.io.deeplesion.DLInfoRow` values, the
reader's own model, built from a mark with :func:`dl_info_row`. Numbers are
written like the real file: several numbers in one cell are joined by ``", "``
(so the cell is quoted), with at most 6 significant digits unless more are
needed to read the same float back (diameters, derived values, always use 6).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from os import PathLike
from pathlib import Path

import numpy as np

from napari_lesion_harvest.durable import replace_text
from napari_lesion_harvest.geometry import RecistMark, index_to_key_slice
from napari_lesion_harvest.io.deeplesion import DL_INFO_COLUMNS, HU_OFFSET, DLInfoRow


def format_number(value: float) -> str:
    """A number as DeepLesion writes it: ``%.6g`` unless that loses precision.

    Integers print without a decimal point (``5``, ``-175``).
    """
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"cannot write the non-finite number {value!r} to DL_info.csv")
    text = f"{value:.6g}"
    if float(text) != value:
        text = repr(value)
    return text


def _join(values) -> str:
    return ", ".join(format_number(v) for v in values)


def dl_info_row(
    mark: RecistMark,
    *,
    series: str,
    slice_range: tuple[int, int],
    spacing_zyx: tuple[float, float, float],
    image_size_yx: tuple[int, int],
    normalized_location: tuple[float, float, float],
    lesion_type: int = -1,
    dicom_window: tuple[float, float] = (-175.0, 275.0),
    gender: str = "",
    age: int | None = None,
    train_val_test: int = 1,
    possibly_noisy: bool = False,
    line: int = 0,
) -> DLInfoRow:
    """The ``DL_info.csv`` row of one RECIST mark.

    Parameters
    ----------
    mark : RecistMark
        The mark, ``z`` 0-based inside the sub-volume ``slice_range``.
    series : str
        ``PPPPPP_SS_SS``.
    slice_range : tuple of int
        First and last 1-based slice numbers of the sub-volume.
    spacing_zyx : tuple of float
        ``(sz, sy, sx)`` in mm (written in DL_info's ``x, y, z`` order).
    image_size_yx : tuple of int
        ``(Y, X)`` of the slices (written as DL_info's ``width, height``).
    normalized_location : tuple of float
        Lesion position ``(x, y, z)`` normalised to [0, 1] in the body.

    Returns
    -------
    DLInfoRow
        ``Bounding_boxes`` is the endpoints' min/max padded by 5 px
        (:meth:`RecistMark.box`); ``Lesion_diameters_Pixel_`` the axis lengths.

    Raises
    ------
    ValueError
        When the mark's slice lies outside ``slice_range``.
    """
    first, last = (int(v) for v in slice_range)
    key_slice = index_to_key_slice(mark.z, first)
    if not first <= key_slice <= last:
        raise ValueError(
            f"{series}: mark on slice index {mark.z} is outside the sub-volume {first}-{last}"
        )
    patient, study, series_index = (int(part) for part in series.split("_"))
    sz, sy, sx = spacing_zyx
    height, width = image_size_yx
    return DLInfoRow(
        line=line,
        file_name=f"{series}_{key_slice:03d}.png",
        series=series,
        patient_index=patient,
        study_index=study,
        series_index=series_index,
        key_slice=key_slice,
        measurement=tuple(float(v) for v in mark.measurement_coordinates()),
        bounding_box=tuple(float(v) for v in mark.box()),
        diameters_px=tuple(float(v) for v in mark.diameters_px()),
        normalized_location=tuple(float(v) for v in normalized_location),
        lesion_type=int(lesion_type),
        possibly_noisy=bool(possibly_noisy),
        slice_range=(first, last),
        spacing_xyz=(float(sx), float(sy), float(sz)),
        image_size=(int(width), int(height)),
        dicom_window=(float(dicom_window[0]), float(dicom_window[1])),
        gender=gender,
        age=age,
        train_val_test=int(train_val_test),
    )


def _cells(row: DLInfoRow) -> list[str]:
    """The 18 cells of a row, in :data:`DL_INFO_COLUMNS` order."""
    return [
        row.file_name,
        str(row.patient_index),
        str(row.study_index),
        str(row.series_index),
        str(row.key_slice),
        _join(row.measurement),
        _join(row.bounding_box),
        ", ".join(f"{v:.6g}" for v in row.diameters_px),
        _join(row.normalized_location),
        str(row.lesion_type),
        str(int(row.possibly_noisy)),
        _join(row.slice_range),
        _join(row.spacing_xyz),
        _join(row.image_size),
        _join(row.dicom_window),
        row.gender,
        "" if row.age is None else str(row.age),
        str(row.train_val_test),
    ]


def write_dl_info(path: str | PathLike, rows: Iterable[DLInfoRow]) -> Path:
    """Write ``DL_info.csv`` (header and one line per row), atomically.

    Returns
    -------
    Path
        The file written.
    """
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(DL_INFO_COLUMNS)
    for row in rows:
        writer.writerow(_cells(row))
    return replace_text(path, text.getvalue())


def write_series_pngs(
    images_dir: str | PathLike,
    series: str,
    hu,
    first_slice: int,
    *,
    compress_level: int = 1,
) -> list[Path]:
    """Write a sub-volume as ``Images_png/<series>/NNN.png`` files.

    Parameters
    ----------
    images_dir : path
        The ``Images_png`` folder (created if needed).
    series : str
        ``PPPPPP_SS_SS``.
    hu : ndarray, shape (Z, Y, X)
        Hounsfield units (integers in -32768..32767).
    first_slice : int
        1-based file number of ``hu[0]``.
    compress_level : int
        zlib level 0-9 (1 is fast and within ~10% of the smallest for CT noise).

    Returns
    -------
    list of Path
        The files written, in slice order.
    """
    from PIL import Image

    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"{series}: expected a (Z, Y, X) volume, got shape {hu.shape}")
    if hu.min(initial=0) < -HU_OFFSET or hu.max(initial=0) > 65535 - HU_OFFSET:
        raise ValueError(f"{series}: HU outside the 16-bit PNG range")
    folder = Path(images_dir) / series
    folder.mkdir(parents=True, exist_ok=True)
    stored = (hu.astype(np.int32) + HU_OFFSET).astype(np.uint16)
    paths = []
    for z, image in enumerate(stored):
        path = folder / f"{first_slice + z:03d}.png"
        Image.fromarray(image).save(path, format="PNG", compress_level=compress_level)
        paths.append(path)
    return paths
