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

from os import PathLike
from pathlib import Path

import numpy as np

from napari_lesion_harvest.io.errors import FormatError, ImageFormatError
from napari_lesion_harvest.io.volume import CTVolume

#: File extensions read (and written) through SimpleITK, longest first.
MEDICAL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Single-file formats :func:`write_sitk_volume` writes.
WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
#: Target orientation code (SimpleITK/DICOM convention: axes point to L, P, S).
ORIENTATION = "LPS"


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


def _read_image(path: Path, series_uid: str | None):
    import SimpleITK as sitk

    try:
        if not path.is_dir():
            return sitk.ReadImage(str(path))
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
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), uid))
        return reader.Execute()
    except RuntimeError as error:  # SimpleITK reports every read failure this way
        message = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise ImageFormatError(path, f"SimpleITK cannot read it: {message}") from error


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
        Unreadable, not 3D single-channel, bad spacing, or intensities that do not fit int16.
    FormatError
        A DICOM folder with several series and no ``series_uid``.
    """
    import SimpleITK as sitk

    path = Path(path)
    image = _read_image(path, series_uid)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageFormatError(
            path, f"expected one channel, got {image.GetNumberOfComponentsPerPixel()}"
        )
    if image.GetDimension() != 3:
        raise ImageFormatError(path, f"expected a 3D image, got {image.GetDimension()}D")
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
