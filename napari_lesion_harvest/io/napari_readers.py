"""npe2 reader contributions: CT volumes and their RECIST marks as napari layer-data tuples.

Nothing here imports napari or Qt: each reader returns ``[(data, kwargs, layer_type)]``
tuples that napari turns into layers.

* Image layer: HU int16 array ``(Z, Y, X)``, ``scale`` = spacing ``(sz, sy, sx)``
  in mm, contrast limits = DeepLesion ``DICOM_windows`` when known.
* Marks layer (Shapes, ``shape_type="line"``): two lines per RECIST mark (long
  axis, short axis), each ``[[z, y1, x1], [z, y2, x2]]`` in the image's data
  coordinates, with the same ``scale`` and ``translate`` as the image, so they
  sit on the mark's slice. Feature ``axis`` is ``"long"`` / ``"short"`` and
  ``mark`` the mark's position in the list.

What can be dropped:

* a DeepLesion series folder ``Images_png/PPPPPP_SS_SS`` -> one image (+ marks)
  per sub-volume; ``DL_info.csv`` is looked for in the folder's parent and
  grand-parent for spacing, window and marks (spacing 1 mm when absent);
  sub-volumes are placed along z by their slice numbers;
* a ``DL_info.csv`` with ``Images_png`` beside it -> its first sub-volume whose
  slices are on disk (a warning says how many others it lists);
* a NIfTI / NRRD / MHA / MHD file or a DICOM series folder -> the axial volume
  (``translate`` = origin); with a ``DL_info.csv`` beside it (or one folder up)
  and a DeepLesion-style name, the marks of that sub-volume too.

Missing PNGs inside a sub-volume are filled with the nearest slice and named in
a warning and in the layer's ``metadata["missing_slices"]``. Damaged or hostile
files get the same checks as an import (every slice's header before decoding,
NIfTI / NRRD / MetaImage headers before SimpleITK, DL_info rows against the
files) and raise the same :class:`~.errors.LesionIOError`, whose one-line message
names the file (or DL_info line and column); napari shows it as the reader's error.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from napari_lesion_harvest.geometry import RecistMark
from napari_lesion_harvest.io.deeplesion import (
    DL_INFO_COLUMNS,
    DeepLesionDataset,
    DLInfo,
    open_series_range,
    parse_subvolume_id,
    read_dl_info,
    series_slice_files,
    subvolume_id,
)
from napari_lesion_harvest.io.errors import FormatError
from napari_lesion_harvest.io.sitk_reader import (
    is_dicom_folder,
    medical_suffix,
    read_sitk_volume,
)
from napari_lesion_harvest.io.volume import CTVolume

LayerData = tuple[object, dict, str]
ReaderFunction = Callable[[str | Sequence[str]], list[LayerData]]

LONG_AXIS_COLOR = "yellow"
SHORT_AXIS_COLOR = "cyan"
DL_INFO_NAME = "DL_info.csv"


# --------------------------------------------------------------------------- layer tuples


def marks_to_lines(marks: Sequence[RecistMark]) -> list[np.ndarray]:
    """RECIST marks as napari line shapes in ``(z, y, x)`` data coordinates.

    Returns
    -------
    list of ndarray, shape (2, 3)
        Two lines per mark, long axis first: ``[[z, y1, x1], [z, y2, x2]]``.
    """
    lines = []
    for mark in marks:
        for axis in (mark.long_axis, mark.short_axis):
            lines.append(np.column_stack([np.full(2, float(mark.z)), axis[:, 1], axis[:, 0]]))
    return lines


def volume_layer_data(
    volume: CTVolume,
    marks: Sequence[RecistMark] = (),
    *,
    translate: Sequence[float] | None = None,
) -> list[LayerData]:
    """Image layer (HU, physical scale) and, when there are marks, a Shapes layer of lines.

    Parameters
    ----------
    volume : CTVolume
        Read whole (``volume.array()``).
    marks : sequence of RecistMark
        Marks with ``z`` inside ``volume``.
    translate : sequence of 3 floats, optional
        World offset ``(z, y, x)`` in mm; default the volume's origin (or zeros).
    """
    if translate is None:
        translate = volume.origin if volume.origin is not None else (0.0, 0.0, 0.0)
    common = {"scale": tuple(volume.spacing), "translate": tuple(float(t) for t in translate)}
    metadata = {
        "volume_id": volume.volume_id,
        "source": volume.source,
        "spacing_known": volume.attributes.get("spacing_known", True),
        "missing_slices": list(volume.attributes.get("missing_slices", [])),
    }
    image_kwargs = {"name": volume.volume_id, "colormap": "gray", "metadata": metadata, **common}
    if volume.display_window is not None:
        image_kwargs["contrast_limits"] = tuple(float(v) for v in volume.display_window)
    layers: list[LayerData] = [(volume.array(), image_kwargs, "image")]
    if marks:
        lines = marks_to_lines(marks)
        shapes_kwargs = {
            "name": f"{volume.volume_id} marks",
            "shape_type": "line",
            "edge_color": [LONG_AXIS_COLOR, SHORT_AXIS_COLOR] * len(marks),
            "edge_width": 1.0,
            "features": {
                "axis": ["long", "short"] * len(marks),
                "mark": np.repeat(np.arange(len(marks)), 2),
            },
            "metadata": {"volume_id": volume.volume_id},
            **common,
        }
        layers.append((lines, shapes_kwargs, "shapes"))
    return layers


# --------------------------------------------------------------------------- helpers


def _single_path(path: str | Sequence[str]) -> Path | None:
    if isinstance(path, list | tuple):
        return Path(path[0]) if len(path) == 1 else None
    return Path(path)


def _find_dl_info(folder: Path) -> DLInfo | None:
    for candidate in (folder / DL_INFO_NAME, folder.parent / DL_INFO_NAME):
        if candidate.is_file():
            info = read_dl_info(candidate)
            if info.report.skipped:
                warnings.warn(info.report.summary(), stacklevel=3)
            return info
    return None


def _is_dl_info(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            first_line = handle.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return first_line.strip().split(",")[: len(DL_INFO_COLUMNS)] == list(DL_INFO_COLUMNS)


def _warn_missing(volume: CTVolume) -> None:
    missing = volume.attributes.get("missing_slices")
    if missing:
        warnings.warn(
            f"{volume.volume_id}: slice files {missing} are missing; the nearest slices are "
            "shown in their place",
            stacklevel=3,
        )


def _contiguous_runs(numbers: Sequence[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for number in sorted(numbers):
        if runs and number == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], number)
        else:
            runs.append((number, number))
    return runs


# --------------------------------------------------------------------------- readers


def read_series_folder(path: str | Sequence[str]) -> list[LayerData]:
    """Layers for a DeepLesion series folder ``Images_png/PPPPPP_SS_SS``."""
    folder = _single_path(path)
    files = series_slice_files(folder)
    info = _find_dl_info(folder.parent)
    rows = [r for r in info.rows if r.series == folder.name] if info is not None else []
    layers: list[LayerData] = []
    if rows:
        dataset = DeepLesionDataset(folder.parent, info, on_missing="nearest")
        volume_ids = list(dict.fromkeys(r.volume_id for r in rows))
        lowest = min(parse_subvolume_id(v)[1] for v in volume_ids)
        for volume_id in volume_ids:
            volume = dataset.open(volume_id)
            _warn_missing(volume)
            offset = (parse_subvolume_id(volume_id)[1] - lowest) * volume.spacing[0]
            layers += volume_layer_data(
                volume, dataset.marks(volume_id), translate=(offset, 0.0, 0.0)
            )
        return layers
    warnings.warn(
        f"{folder}: no {DL_INFO_NAME} with this series found beside Images_png; "
        "showing the slices with 1 mm spacing and no marks",
        stacklevel=2,
    )
    runs = _contiguous_runs(list(files))
    for first, last in runs:
        volume = open_series_range(
            folder,
            first,
            last,
            spacing_zyx=(1.0, 1.0, 1.0),
            files=files,
            attributes={"spacing_known": False},
        )
        layers += volume_layer_data(volume, translate=(first - runs[0][0], 0.0, 0.0))
    return layers


def read_dl_info_csv(path: str | Sequence[str]) -> list[LayerData]:
    """Layers for ``DL_info.csv``: its first sub-volume whose slices are on disk."""
    csv_path = _single_path(path)
    info = read_dl_info(csv_path)
    if info.report.skipped:
        warnings.warn(info.report.summary(), stacklevel=2)
    images_dir = csv_path.parent / "Images_png"
    dataset = DeepLesionDataset(images_dir, info, on_missing="nearest")
    shown = next(
        (v for v in dataset.volume_ids if (images_dir / dataset.rows(v)[0].series).is_dir()),
        None,
    )
    if shown is None:
        raise FormatError(
            csv_path, f"none of its {len(dataset)} sub-volumes has a folder in {images_dir}"
        )
    if len(dataset) > 1:
        warnings.warn(
            f"{csv_path} lists {len(dataset)} sub-volumes; showing {shown}. Drop a series "
            "folder from Images_png, or import the dataset into a harvest project, for others",
            stacklevel=2,
        )
    volume = dataset.open(shown)
    _warn_missing(volume)
    return volume_layer_data(volume, dataset.marks(shown), translate=(0.0, 0.0, 0.0))


def read_medical_image(path: str | Sequence[str]) -> list[LayerData]:
    """Layers for a NIfTI / NRRD / MHA / MHD file or a DICOM series folder."""
    image_path = _single_path(path)
    volume = read_sitk_volume(image_path)
    marks: list[RecistMark] = []
    try:
        series, first, last = parse_subvolume_id(volume.volume_id)
    except ValueError:
        series = None
    info = _find_dl_info(image_path.parent) if series else None
    if info is not None:
        volume_id = subvolume_id(series, first, last)
        marks = [r.mark for r in info.rows if r.volume_id == volume_id]
        if marks and max(m.z for m in marks) >= volume.shape[0]:
            raise FormatError(
                image_path,
                f"has {volume.shape[0]} slices but {DL_INFO_NAME} marks slice "
                f"{max(m.z for m in marks)} of {volume_id}",
            )
    return volume_layer_data(volume, marks)


# --------------------------------------------------------------------------- npe2 commands


def get_deeplesion_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """npe2 ``get_reader`` for a DeepLesion series folder or a ``DL_info.csv``."""
    single = _single_path(path)
    if single is None:
        return None
    if single.is_file() and single.suffix.lower() == ".csv" and _is_dl_info(single):
        return read_dl_info_csv
    if single.is_dir() and series_slice_files(single):
        return read_series_folder
    return None


def get_medical_image_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """npe2 ``get_reader`` for NIfTI / NRRD / MHA / MHD files and DICOM series folders."""
    single = _single_path(path)
    if single is None:
        return None
    if single.is_file() and medical_suffix(single):
        return read_medical_image
    if single.is_dir() and is_dicom_folder(single):
        return read_medical_image
    return None
