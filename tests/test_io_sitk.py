"""SimpleITK formats: axial reorientation, geometry, NIfTI round trip, DICOM series, errors."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from napari_lesion_harvest.io.errors import FormatError, ImageFormatError
from napari_lesion_harvest.io.sitk_reader import (
    read_sitk_volume,
    volume_id_from_path,
    write_sitk_volume,
)
from napari_lesion_harvest.io.volume import CTVolume
from tests.io_layout import write_dicom_series


def _physical_zyx(volume: CTVolume, index_zyx) -> np.ndarray:
    """Position of element [k, j, i] by the module's documented convention."""
    step = np.asarray(volume.spacing) * np.asarray(index_zyx, dtype=float)
    return np.asarray(volume.origin) + np.asarray(volume.direction) @ step


@pytest.mark.parametrize(
    "direction_xyz",
    [
        np.diag([-1.0, -1.0, 1.0]),  # RAS-stored (typical NIfTI from nibabel)
        np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),  # sagittal-stored
    ],
)
def test_reorientation_to_axial_keeps_every_voxel_at_its_place(tmp_path, direction_xyz):
    values = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 100  # unique values
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection(direction_xyz.ravel().tolist())
    path = tmp_path / "000001_01_01_011-014.nii.gz"
    sitk.WriteImage(image, str(path))

    volume = read_sitk_volume(path)
    assert volume.volume_id == "000001_01_01_011-014"
    np.testing.assert_allclose(volume.direction, np.eye(3), atol=1e-6)
    array = volume.array()
    assert array.dtype == np.int16 and sorted(array.ravel()) == sorted(values.ravel())
    for value in (values[0, 0, 0], values[3, 4, 5], values[1, 2, 3], values[2, 0, 4]):
        k, j, i = np.argwhere(values == value)[0]
        expected_xyz = image.TransformIndexToPhysicalPoint((int(i), int(j), int(k)))
        where = np.argwhere(array == value)[0]
        np.testing.assert_allclose(_physical_zyx(volume, where), expected_xyz[::-1], atol=1e-4)
    # axial: z follows the superior axis, the slice spacing is the one along S
    assert volume.attributes["original_orientation"] != "LPS"


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_volume_written_and_read_back_is_identical(tmp_path, suffix):
    rng = np.random.default_rng(3)
    hu = rng.integers(-1024, 3072, size=(7, 9, 11)).astype(np.int16)
    hu[0, 0, :2] = [-32768, 32767]
    original = CTVolume.from_array(
        "000002_03_01_100-106",
        hu,
        (2.5, 0.75, 0.75),
        origin=(-40.0, 12.5, -3.25),
        direction=np.eye(3),
    )
    path = tmp_path / f"000002_03_01_100-106{suffix}"
    write_sitk_volume(original, path)
    back = read_sitk_volume(path)
    assert back.volume_id == original.volume_id
    np.testing.assert_array_equal(back.array(), hu)
    np.testing.assert_allclose(back.spacing, original.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin, original.origin, atol=1e-5)
    np.testing.assert_allclose(back.direction, np.eye(3), atol=1e-6)
    assert not list(tmp_path.glob(".partial-*"))


def test_dicom_series_folder_reads_in_hu_with_spacing(tmp_path):
    rng = np.random.default_rng(5)
    hu = rng.integers(-1000, 2000, size=(5, 8, 10)).astype(np.int16)
    write_dicom_series(tmp_path / "scan", hu, (3.0, 0.6, 0.7))
    volume = read_sitk_volume(tmp_path / "scan")
    assert volume.volume_id == "scan"
    np.testing.assert_array_equal(volume.array(), hu)
    np.testing.assert_allclose(volume.spacing, (3.0, 0.6, 0.7), rtol=1e-6)

    write_dicom_series(tmp_path / "scan", hu, (3.0, 0.6, 0.7), series="1.2.3.5")
    with pytest.raises(FormatError, match="2 DICOM series"):
        read_sitk_volume(tmp_path / "scan")
    picked = read_sitk_volume(tmp_path / "scan", series_uid="1.2.3.5")
    np.testing.assert_array_equal(picked.array(), hu)


def test_bad_medical_images_raise_typed_errors(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ImageFormatError, match=r"broken\.nii\.gz: cannot read the NIfTI header"):
        read_sitk_volume(broken)
    with pytest.raises(ImageFormatError, match="no DICOM series"):
        read_sitk_volume(tmp_path)
    flat = tmp_path / "flat.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4), np.int16)), str(flat))
    with pytest.raises(ImageFormatError, match=r"flat\.mha: expected a 3D image, got 2D"):
        read_sitk_volume(flat)
    rgb = tmp_path / "rgb.mha"
    sitk.WriteImage(
        sitk.GetImageFromArray(np.zeros((2, 4, 4, 3), np.uint8), isVector=True), str(rgb)
    )
    with pytest.raises(ImageFormatError, match="expected one channel"):
        read_sitk_volume(rgb)
    huge = tmp_path / "huge.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((2, 2, 2), 1e6, np.float32)), str(huge))
    with pytest.raises(ImageFormatError, match="do not fit int16"):
        read_sitk_volume(huge)
    with pytest.raises(FormatError, match="cannot write this extension"):
        write_sitk_volume(
            CTVolume.from_array("v", np.zeros((1, 2, 2)), (1, 1, 1)), tmp_path / "v.png"
        )


def test_float_images_are_rounded_to_int16_hu_and_flagged(tmp_path):
    path = tmp_path / "scan.nii"
    values = np.array([[[-1000.4, 20.6], [0.0, 1.0]]], np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(values), str(path))
    volume = read_sitk_volume(path)
    assert volume.attributes["hu_rounded"] is True
    np.testing.assert_array_equal(volume.array(), [[[-1000, 21], [0, 1]]])
    assert volume_id_from_path(tmp_path / "a.b.NII.GZ") == "a.b"
