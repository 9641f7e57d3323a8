"""napari reader contributions: layer tuples headless, and a real viewer opening the files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_lesion_harvest.io.napari_readers import (
    get_deeplesion_reader,
    get_medical_image_reader,
    marks_to_lines,
)
from napari_lesion_harvest.io.sitk_reader import write_sitk_volume
from napari_lesion_harvest.io.volume import CTVolume
from tests.io_layout import dl_info_row, write_dl_info, write_series

LONG_SHORT = [100.0, 60.0, 140.0, 80.0, 115.0, 82.0, 125.0, 58.0]
SECOND = [20.0, 30.0, 40.0, 30.0, 30.0, 25.0, 30.0, 35.0]
GEOMETRY = {"image_size_yx": (160, 200), "spacing_xyz": (0.6, 0.7, 2.5)}


def _layout(tmp_path):
    rng = np.random.default_rng(11)
    hu = rng.integers(-1024, 2000, size=(5, 160, 200)).astype(np.int16)
    images = tmp_path / "Images_png"
    write_series(images, "000004_01_02", 21, hu)
    write_series(images, "000004_01_02", 40, hu[:3])  # a second sub-volume of the series
    rows = [
        dl_info_row("000004_01_02", 23, (21, 25), LONG_SHORT, **GEOMETRY),
        dl_info_row("000004_01_02", 24, (21, 25), SECOND, **GEOMETRY),
        dl_info_row("000004_01_02", 41, (40, 42), SECOND, **GEOMETRY),
    ]
    csv_path = write_dl_info(tmp_path / "DL_info.csv", rows)
    return hu, images / "000004_01_02", csv_path


def test_series_folder_gives_hu_image_with_spacing_and_line_marks(tmp_path):
    hu, series_dir, _ = _layout(tmp_path)
    reader = get_deeplesion_reader(str(series_dir))
    assert reader is not None and get_medical_image_reader(str(series_dir)) is None
    layers = reader(str(series_dir))
    assert [layer_type for _, _, layer_type in layers] == ["image", "shapes", "image", "shapes"]
    image, image_kwargs, _ = layers[0]
    np.testing.assert_array_equal(image, hu)
    assert image_kwargs["name"] == "000004_01_02_021-025"
    assert image_kwargs["scale"] == (2.5, 0.7, 0.6)
    assert image_kwargs["contrast_limits"] == (-175.0, 275.0)
    lines, shapes_kwargs, _ = layers[1]
    assert shapes_kwargs["shape_type"] == "line" and len(lines) == 4
    # long axis of the first mark on z = 23 - 21 = 2, as [[z, y1, x1], [z, y2, x2]]
    np.testing.assert_array_equal(lines[0], [[2, 60, 100], [2, 80, 140]])
    np.testing.assert_array_equal(lines[1], [[2, 82, 115], [2, 58, 125]])
    assert lines[2][0, 0] == 3
    assert shapes_kwargs["features"]["axis"] == ["long", "short", "long", "short"]
    # the second sub-volume sits (40 - 21) slices further along z
    assert layers[2][1]["translate"] == (19 * 2.5, 0.0, 0.0)
    assert layers[3][1]["translate"] == layers[2][1]["translate"]


def test_dl_info_csv_opens_first_sub_volume_and_warns_about_the_rest(tmp_path):
    hu, _, csv_path = _layout(tmp_path)
    reader = get_deeplesion_reader(str(csv_path))
    with pytest.warns(UserWarning, match="lists 2 sub-volumes; showing 000004_01_02_021-025"):
        layers = reader(str(csv_path))
    np.testing.assert_array_equal(layers[0][0], hu)
    assert len(layers[1][0]) == 4
    other_csv = tmp_path / "other.csv"
    other_csv.write_text("a,b\n1,2\n")
    assert get_deeplesion_reader(str(other_csv)) is None


def test_nifti_with_deeplesion_name_gets_its_dl_info_marks(tmp_path):
    hu, _, _ = _layout(tmp_path)
    nifti_dir = tmp_path / "Images_nifti"
    nifti_dir.mkdir()
    path = nifti_dir / "000004_01_02_021-025.nii.gz"
    write_sitk_volume(CTVolume.from_array("v", hu, (2.5, 0.7, 0.6)), path)
    reader = get_medical_image_reader(str(path))
    assert reader is not None and get_deeplesion_reader(str(path)) is None
    layers = reader(str(path))
    np.testing.assert_array_equal(layers[0][0], hu)
    np.testing.assert_allclose(layers[0][1]["scale"], (2.5, 0.7, 0.6), rtol=1e-6)
    np.testing.assert_array_equal(layers[1][0][0], [[2, 60, 100], [2, 80, 140]])


def test_series_folder_without_dl_info_warns_and_uses_unit_spacing(tmp_path):
    hu = np.zeros((3, 8, 8), np.int16)
    series_dir = write_series(tmp_path / "Images_png", "000009_01_01", 5, hu, skip={6})
    with pytest.warns(UserWarning, match="no DL_info.csv"):
        layers = get_deeplesion_reader(str(series_dir))(str(series_dir))
    assert [data.shape for data, _, _ in layers] == [(1, 8, 8), (1, 8, 8)]  # runs 5 and 7
    assert layers[1][1]["translate"] == (2.0, 0.0, 0.0)
    assert layers[0][1]["metadata"]["spacing_known"] is False


def test_reader_module_imports_neither_napari_nor_qt():
    code = (
        "import sys, napari_lesion_harvest.io.napari_readers as m;"
        "bad = [n for n in sys.modules if n == 'napari' or n.startswith(('napari.', 'qtpy',"
        " 'PyQt', 'torch'))];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_marks_to_lines_order():
    from napari_lesion_harvest.geometry import RecistMark

    mark = RecistMark.from_measurement_coordinates(LONG_SHORT, z=7)
    lines = marks_to_lines([mark])
    assert [line.shape for line in lines] == [(2, 3), (2, 3)]
    assert lines[0][:, 0].tolist() == [7.0, 7.0]


@pytest.mark.gui
def test_real_viewer_opens_series_folder_and_nifti(make_napari_viewer, tmp_path):
    hu, series_dir, _ = _layout(tmp_path)
    viewer = make_napari_viewer()
    viewer.open(str(series_dir), plugin="napari-lesion-harvest")
    names = [layer.name for layer in viewer.layers]
    assert names == [
        "000004_01_02_021-025",
        "000004_01_02_021-025 marks",
        "000004_01_02_040-042",
        "000004_01_02_040-042 marks",
    ]
    image, marks = viewer.layers[0], viewer.layers[1]
    assert type(image).__name__ == "Image" and type(marks).__name__ == "Shapes"
    np.testing.assert_array_equal(image.data, hu)
    np.testing.assert_allclose(image.scale, (2.5, 0.7, 0.6))
    np.testing.assert_allclose(marks.scale, image.scale)
    assert marks.shape_type == ["line"] * 4
    np.testing.assert_allclose(marks.data[0], [[2, 60, 100], [2, 80, 140]])
    # same world position: the mark's endpoint lands on the image voxel it names
    world = marks.data_to_world(marks.data[0][0])
    np.testing.assert_allclose(image.world_to_data(world), [2, 60, 100])
    # on the key slice the mark is shown; one slice off it is not
    viewer.dims.set_point(0, 2 * 2.5)
    assert set(marks._view_indices) == {0, 1}  # long and short axis of mark 0
    viewer.dims.set_point(0, 0.0)
    assert marks._view_indices.size == 0

    nifti = tmp_path / "000004_01_02_021-025.nii.gz"
    write_sitk_volume(CTVolume.from_array("v", hu, (2.5, 0.7, 0.6)), nifti)
    viewer.layers.clear()
    viewer.open(str(nifti), plugin="napari-lesion-harvest")
    # DL_info.csv lies beside the file: the sub-volume's marks come too
    assert [layer.name for layer in viewer.layers] == [
        "000004_01_02_021-025",
        "000004_01_02_021-025 marks",
    ]
    np.testing.assert_allclose(viewer.layers[0].scale, (2.5, 0.7, 0.6), rtol=1e-6)
