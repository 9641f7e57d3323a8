"""NIfTI, NRRD, MHA/MHD and DICOM series through SimpleITK, reoriented to axial ``(z, y, x)``.

Orientation convention
----------------------
Every volume is resampled-free reoriented (axes permuted and flipped, never
interpolated) with ``SimpleITK.DICOMOrient(image, "LPS")`` so that, in the
patient (DICOM / ITK LPS) frame:

* array axis ``x`` (columns) runs from the patient's right to left,
* array axis ``y`` (rows) runs from anterior to posterior,
* array axis ``z`` (slices) runs from inferior to superior.

That is the usual radiological display of an axial CT slice (patient's right
on the image's left, anterior at the top), the same as DeepLesion's PNGs.
The volume keeps where it lies:

* ``spacing`` is ``(sz, sy, sx)`` in mm,
* ``origin`` is the LPS position of voxel ``[0, 0, 0]`` in ``(z, y, x)``
  component order (``(S, P, L)`` in mm),
* ``direction[:, k]`` is the unit vector of array axis ``k`` (``z, y, x``),
  written in ``(z, y, x)`` = ``(S, P, L)`` components. It is the identity for
  scans aligned with the patient axes; oblique scans keep their (nearly
  identity) cosines.

So the physical position of element ``[k, j, i]`` is
``origin + direction @ (spacing * [k, j, i])`` (all in ``(z, y, x)`` order).

Intensities are returned as int16 HU. DICOM rescale slope / intercept and
NIfTI scaling are applied by SimpleITK; non-integer results are rounded
(``attributes["hu_rounded"]`` is then True).

Volume ids are the file name without its extension, so DeepLesion-style names
``PPPPPP_SS_SS_aaa-bbb.nii.gz`` map to the same ids as the PNG reader and the
pickles; a DICOM folder's id is the folder name.
"""

from __future__ import annotations

import math
import re
from os import PathLike
from pathlib import Path

import numpy as np

from napari_lesion_harvest.io.errors import FormatError, ImageFormatError
from napari_lesion_harvest.io.limits import MAX_VOXELS
from napari_lesion_harvest.io.medical_headers import check_metaimage, check_nifti, check_nrrd
from napari_lesion_harvest.io.volume import CTVolume

#: File extensions read (and written) through SimpleITK, longest first.
MEDICAL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Single-file formats :func:`write_sitk_volume` writes.
WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
#: Target orientation code (SimpleITK/DICOM convention: axes point to L, P, S).
ORIENTATION = "LPS"
#: Header checks run before SimpleITK reads a file (:mod:`.medical_headers`).
_HEADER_CHECKS = {
    ".nii.gz": check_nifti,
    ".nii": check_nifti,
    ".nrrd": check_nrrd,
    ".nhdr": check_nrrd,
    ".mha": check_metaimage,
    ".mhd": check_metaimage,
}


def medical_suffix(path: str | PathLike) -> str | None:
    """The known medical-image extension of ``path`` (``".nii.gz"``, ...) or None."""
    name = Path(path).name.lower()
    return next((s for s in MEDICAL_SUFFIXES if name.endswith(s)), None)


def volume_id_from_path(path: str | PathLike) -> str:
    """Volume id for a file or DICOM folder: its name without the medical extension."""
    name = Path(path).name
    suffix = medical_suffix(path)
    return name[: -len(suffix)] if suffix else name


def is_dicom_folder(path: str | PathLike) -> bool:
    """Whether ``path`` is a folder with at least one DICOM series that GDCM recognises."""
    import SimpleITK as sitk

    return Path(path).is_dir() and bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))


def _sitk_reason(error: RuntimeError) -> str:
    """The ITK / SimpleITK error text without source locations and object addresses, one line."""
    text = str(error).strip()
    match = re.search(
        r"(?:ITK ERROR|sitk::ERROR):\s*(?:\w+\s*\(0x[0-9a-f]+\):\s*)?(.*)", text, re.S
    )
    reason = match.group(1) if match else (text.splitlines() or ["unreadable"])[-1]
    return " ".join(reason.split())[:300]


def _check_image_information(path: Path, size, components: int) -> None:
    """Refuse, before reading voxels, a non-3D, multi-channel or oversized image."""
    if components != 1:
        raise ImageFormatError(path, f"expected one channel, got {components}")
    if len(size) != 3:
        raise ImageFormatError(path, f"expected a 3D image, got {len(size)}D")
    if math.prod(size) > MAX_VOXELS:
        shown = " x ".join(str(s) for s in size)
        raise ImageFormatError(
            path, f"refusing an image of {shown} voxels (at most {MAX_VOXELS:,})"
        )


def _read_file(path: Path):
    import SimpleITK as sitk

    check_header = _HEADER_CHECKS.get(medical_suffix(path))
    if check_header is not None:
        check_header(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    _check_image_information(path, reader.GetSize(), reader.GetNumberOfComponents())
    return reader.Execute()


def _unreadable_dicom_files(folder: Path, series_files: set[str]) -> list[str]:
    """Names of files in ``folder`` that look like DICOM (``.dcm``, ``DICM`` tag) but are in no
    series GDCM found (``series_files``: names of the files it did read)."""
    suspects = []
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or entry.name in series_files or entry.name == "DICOMDIR":
            continue
        try:
            with open(entry, "rb") as handle:
                preamble = handle.read(132)
        except OSError:
            preamble = b""
        if entry.suffix.lower() == ".dcm" or preamble[128:132] == b"DICM":
            suspects.append(entry.name)
    return suspects


def _check_slice_positions(folder: Path, reader, names: list[str]) -> None:
    """Refuse a DICOM series whose slices are not evenly spaced (a slice missing or doubled)."""
    keys = ("0020|0032", "0020|0037")  # ImagePositionPatient, ImageOrientationPatient
    if len(names) < 3 or not all(
        reader.HasMetaDataKey(i, k) for i in range(len(names)) for k in keys
    ):
        return
    try:
        cosines = [float(v) for v in reader.GetMetaData(0, keys[1]).split("\\")]
        normal = np.cross(cosines[:3], cosines[3:6])
        positions = np.array(
            [
                [float(v) for v in reader.GetMetaData(i, keys[0]).split("\\")]
                for i in range(len(names))
            ]
        )
    except ValueError:
        raise ImageFormatError(folder, "unreadable slice position or orientation tags") from None
    steps = np.diff(positions @ normal)
    interval = float(np.median(steps))
    worst = int(np.argmax(np.abs(steps - interval)))
    if abs(steps[worst] - interval) > 0.1 * abs(interval) + 1e-3 or interval == 0:
        raise ImageFormatError(
            folder,
            f"slices are not evenly spaced: {Path(names[worst]).name} and "
            f"{Path(names[worst + 1]).name} lie {abs(steps[worst]):.3g} mm apart, the series' "
            f"slice interval is {abs(interval):.3g} mm (a slice missing, unreadable or doubled)",
        )


def _read_dicom_series(path: Path, series_uid: str | None):
    import SimpleITK as sitk

    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
    if not series:
        raise ImageFormatError(path, "no DICOM series in this folder")
    if series_uid is None and len(series) > 1:
        raise FormatError(
            path, f"{len(series)} DICOM series in this folder; pick one of {list(series)}"
        )
    uid = series_uid or series[0]
    if uid not in series:
        raise FormatError(path, f"no DICOM series {uid!r} here; found {list(series)}")
    names = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), uid))
    in_series = {Path(name).name for name in names}
    for other in series:
        if other != uid:
            other_names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), other)
            in_series.update(Path(name).name for name in other_names)
    unreadable = _unreadable_dicom_files(path, in_series)
    if unreadable:
        raise ImageFormatError(
            path, f"{len(unreadable)} file(s) that GDCM cannot read as DICOM: {unreadable[:5]}"
        )
    first = sitk.ImageFileReader()
    first.SetFileName(names[0])
    first.ReadImageInformation()
    size = (*first.GetSize()[:2], len(names))
    _check_image_information(path, size, first.GetNumberOfComponents())
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    _check_slice_positions(path, reader, names)
    return image


def _read_image(path: Path, series_uid: str | None):
    try:
        return _read_dicom_series(path, series_uid) if path.is_dir() else _read_file(path)
    except RuntimeError as error:  # SimpleITK reports every read failure this way
        raise ImageFormatError(path, f"SimpleITK cannot read it: {_sitk_reason(error)}") from error


def _to_hu_int16(array: np.ndarray, path: Path) -> tuple[np.ndarray, bool]:
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise ImageFormatError(path, "image has non-finite intensities")
        rounded = np.rint(array)
        was_rounded = bool(np.any(np.abs(rounded - array) > 1e-3))
        array = rounded
    elif array.dtype.kind not in "iu":
        raise ImageFormatError(path, f"unsupported pixel type {array.dtype}")
    else:
        was_rounded = False
    info = np.iinfo(np.int16)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise ImageFormatError(
            path, f"intensities {array.min()}..{array.max()} do not fit int16 HU"
        )
    return array.astype(np.int16), was_rounded


def read_sitk_volume(
    path: str | PathLike,
    *,
    series_uid: str | None = None,
    volume_id: str | None = None,
) -> CTVolume:
    """Read a NIfTI / NRRD / MHA / MHD file or a DICOM series folder as an axial volume.

    Parameters
    ----------
    path : path
        Image file, or a folder holding one DICOM series (or several and ``series_uid``).
    series_uid : str, optional
        DICOM SeriesInstanceUID to read from a folder with several series.
    volume_id : str, optional
        Id to give the volume; default :func:`volume_id_from_path`.

    Returns
    -------
    CTVolume
        HU int16 of shape ``(Z, Y, X)`` in the orientation described in this
        module's docstring, with spacing, origin and direction.

    Raises
    ------
    ImageFormatError
        Unreadable or damaged, not 3D single-channel, more than
        :data:`~.limits.MAX_VOXELS` voxels, bad spacing, or intensities that do
        not fit int16. Files are checked by :mod:`.medical_headers` first
        (truncation, NaN / zero / negative spacing, data files outside the
        header's folder); a DICOM folder is refused when a ``.dcm`` file in it
        is not readable as DICOM or its slices are not evenly spaced.
    FormatError
        A DICOM folder with several series and no ``series_uid``.
    """
    import SimpleITK as sitk

    path = Path(path)
    image = _read_image(path, series_uid)
    original = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    image = sitk.DICOMOrient(image, ORIENTATION)
    spacing = tuple(reversed(image.GetSpacing()))
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ImageFormatError(path, f"spacing must be finite and positive, got {spacing}")
    hu, was_rounded = _to_hu_int16(sitk.GetArrayFromImage(image), path)
    direction_xyz = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    return CTVolume.from_array(
        volume_id or volume_id_from_path(path),
        hu,
        spacing,
        source=f"sitk:{path}",
        origin=tuple(reversed(image.GetOrigin())),
        direction=direction_xyz[::-1, ::-1].copy(),
        attributes={"original_orientation": original, "hu_rounded": was_rounded},
    )


def write_sitk_volume(volume: CTVolume, path: str | PathLike) -> None:
    """Write ``volume`` (int16 HU) to NIfTI / NRRD / MHA, atomically.

    Spacing, origin and direction are written so that :func:`read_sitk_volume`
    returns the same array and geometry (NIfTI keeps spacing and origin in
    float32, so they come back to float32 precision).

    Parameters
    ----------
    volume : CTVolume
    path : path
        Output file; the extension (one of :data:`WRITE_SUFFIXES`) picks the format.
    """
    import SimpleITK as sitk

    path = Path(path)
    if medical_suffix(path) not in WRITE_SUFFIXES:
        raise FormatError(path, f"cannot write this extension; use one of {WRITE_SUFFIXES}")
    image = sitk.GetImageFromArray(volume.array())
    image.SetSpacing(tuple(reversed(volume.spacing)))
    if volume.origin is not None:
        image.SetOrigin(tuple(float(v) for v in reversed(volume.origin)))
    if volume.direction is not None:
        direction_zyx = np.asarray(volume.direction, dtype=np.float64).reshape(3, 3)
        image.SetDirection(direction_zyx[::-1, ::-1].ravel().tolist())
    partial = path.with_name(f".partial-{path.name}")
    try:
        sitk.WriteImage(image, str(partial))
    except RuntimeError as error:
        raise ImageFormatError(path, f"SimpleITK cannot write it: {error}") from error
    partial.replace(path)
