"""Tiny writers of io test data: DeepLesion layout (16-bit PNG slices + DL_info.csv), DICOM."""

from __future__ import annotations

import csv
import locale
from pathlib import Path

import numpy as np
from PIL import Image

from napari_lesion_harvest.io.deeplesion import DL_INFO_COLUMNS, HU_OFFSET


def write_hu_png(path: Path, hu: np.ndarray) -> Path:
    """Write one slice (HU, shape (Y, X)) as a 16-bit PNG with value = HU + 32768."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((hu.astype(np.int32) + HU_OFFSET).astype(np.uint16)).save(path)
    return path


def write_series(images_dir: Path, series: str, first: int, hu: np.ndarray, *, skip=()) -> Path:
    """Write ``hu`` (Z, Y, X) as slices ``first, first+1, ...`` of ``series``, except ``skip``."""
    folder = images_dir / series
    for offset, image in enumerate(hu):
        number = first + offset
        if number not in skip:
            write_hu_png(folder / f"{number:03d}.png", image)
    return folder


def dl_info_row(
    series: str,
    key_slice: int,
    slice_range: tuple[int, int],
    measurement,
    *,
    image_size_yx: tuple[int, int],
    spacing_xyz=(0.8, 0.8, 2.0),
    window=(-175, 275),
    noisy=0,
    split=1,
) -> dict[str, str]:
    """One DL_info row (column -> text) with consistent file name, box and diameters.

    ``image_size_yx`` is the slices' ``(Y, X)``, written as DL_info's ``width, height``.
    """
    m = np.asarray(measurement, dtype=float)
    pts = m.reshape(4, 2)
    box = np.concatenate([pts.min(0) - 5, pts.max(0) + 5])
    patient, study, series_no = (int(p) for p in series.split("_"))
    text = lambda values: ", ".join(f"{v:g}" for v in values)  # noqa: E731
    return {
        "File_name": f"{series}_{key_slice:03d}.png",
        "Patient_index": str(patient),
        "Study_index": str(study),
        "Series_ID": str(series_no),
        "Key_slice_index": str(key_slice),
        "Measurement_coordinates": text(m),
        "Bounding_boxes": text(box),
        "Lesion_diameters_Pixel_": text(
            [np.linalg.norm(pts[1] - pts[0]), np.linalg.norm(pts[3] - pts[2])]
        ),
        "Normalized_lesion_location": "0.5, 0.5, 0.5",
        "Coarse_lesion_type": "-1",
        "Possibly_noisy": str(noisy),
        "Slice_range": text(slice_range),
        "Spacing_mm_px_": text(spacing_xyz),
        "Image_size": text(image_size_yx[::-1]),
        "DICOM_windows": text(window),
        "Patient_gender": "F",
        "Patient_age": "60",
        "Train_Val_Test": str(split),
    }


def write_dl_info(path: Path, rows: list[dict[str, str]]) -> Path:
    """Write DL_info.csv with the exact 18 columns."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=DL_INFO_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_dicom_series(folder, hu, spacing_zyx, *, intercept=-1024.0, series="1.2.3.4"):
    """Write ``hu`` (Z, Y, X) as one CT slice file per z, ``<series>_<k>.dcm``, in ``folder``.

    GDCM's writer sets the process locale to "C", which makes Python's default
    text encoding ASCII for every later test; the locale is restored here.
    """
    previous_locale = locale.setlocale(locale.LC_ALL)
    try:
        _write_dicom_slices(folder, hu, spacing_zyx, intercept=intercept, series=series)
    finally:
        locale.setlocale(locale.LC_ALL, previous_locale)


def _write_dicom_slices(folder, hu, spacing_zyx, *, intercept, series):
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    sz, sy, sx = spacing_zyx
    for k, image_hu in enumerate(hu):
        # GDCM stores (HU - intercept) / slope on disk and the reader applies the rescale
        image = sitk.GetImageFromArray(image_hu)
        image.SetSpacing((sx, sy))
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{series}.{k + 1}",
            "0008|0060": "CT",
            "0020|000d": "1.2.3",
            "0020|000e": series,
            "0020|0013": str(k + 1),
            "0020|0032": f"0\\0\\{k * sz}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{sy}\\{sx}",
            "0018|0050": str(sz),
            "0028|1052": str(intercept),
            "0028|1053": "1",
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series}_{k:03d}.dcm"))
        writer.Execute(image)
