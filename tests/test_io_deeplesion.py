"""DeepLesion: DL_info.csv parsing (real rows, bad rows) and the lazy 16-bit PNG series reader."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from napari_lesion_harvest.io.deeplesion import (
    DeepLesionDataset,
    normalize_volume_id,
    open_series_range,
    parse_subvolume_id,
    read_dl_info,
    read_hu_png,
    subvolume_id,
)
from napari_lesion_harvest.io.errors import FormatError, ImageFormatError, MissingSlicesError
from tests.io_layout import dl_info_row, write_dl_info, write_hu_png, write_series

MEASUREMENT = [30.5, 20.0, 40.5, 34.0, 31.0, 30.0, 39.0, 24.0]
SPACING = (0.7, 0.7, 2.5)


def test_real_dl_info_rows(dl_info_rows_csv):
    info = read_dl_info(dl_info_rows_csv, strict=True)
    assert info.report.ok and info.report.rows_read == 6
    ids = [row.volume_id for row in info.rows]
    assert ids == [
        "000089_01_01_031-043",
        "000089_02_01_029-041",
        "000089_05_02_146-206",
        "000090_01_01_085-145",
        "000091_04_01_069-105",
        "000092_02_03_182-242",
    ]
    first = info.rows[0]
    assert first.z == 37 - 31 and first.key_slice == 37
    assert first.spacing_zyx == (5.0, 0.859375, 0.859375)
    assert first.dicom_window == (-175.0, 275.0)
    assert (first.possibly_noisy, first.train_val_test, first.gender, first.age) == (
        False,
        1,
        "F",
        71,
    )
    assert info.rows[4].dicom_window == (-177.5, 307.5) and info.rows[4].lesion_type == 3
    for row in info.rows:
        np.testing.assert_allclose(row.mark.box(), row.bounding_box, atol=1e-3)
        np.testing.assert_allclose(row.mark.diameters_px(), row.diameters_px, rtol=1e-4)
        assert parse_subvolume_id(row.volume_id) == (row.series, *row.slice_range)
    assert [m.z for m in info.marks_by_volume()["000092_02_03_182-242"]] == [30]


def test_volume_ids_normalise_the_annot_suffix():
    assert subvolume_id("000001_01_01", 3, 45) == "000001_01_01_003-045"
    assert normalize_volume_id("003433_01_01_024-040.annot") == "003433_01_01_024-040"
    assert parse_subvolume_id("003433_01_01_024-040.annot") == ("003433_01_01", 24, 40)
    with pytest.raises(ValueError, match="not a DeepLesion sub-volume id"):
        parse_subvolume_id("scan.nii")


def _rewrite(path, transform):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    rows = transform(rows)
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def test_missing_or_renamed_columns_are_fatal_and_named(tmp_path, dl_info_rows_csv):
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(dl_info_rows_csv.read_text().replace("Spacing_mm_px_", "Spacing"))
    with pytest.raises(FormatError, match=r"renamed\.csv, line 1.*Spacing_mm_px_") as info:
        read_dl_info(renamed)
    assert info.value.column == "Spacing_mm_px_"
    dropped = tmp_path / "dropped.csv"
    dropped.write_text(dl_info_rows_csv.read_text())
    _rewrite(dropped, lambda rows: [r[:-1] for r in rows])
    with pytest.raises(FormatError, match="Train_Val_Test"):
        read_dl_info(dropped)


def test_every_bad_row_is_reported_and_strict_mode_raises(tmp_path, dl_info_rows_csv):
    path = tmp_path / "DL_info.csv"
    path.write_text(dl_info_rows_csv.read_text())
    columns = list(csv.reader(dl_info_rows_csv.open()))[0]

    def corrupt(rows):
        col = columns.index
        rows[1][col("Measurement_coordinates")] = "1, 2, 3"  # line 2: wrong count
        rows[2][col("Spacing_mm_px_")] = "0.7, -0.7, 5"  # line 3: negative spacing
        rows[3][col("Slice_range")] = "180, 190"  # line 4: key slice 176 outside
        rows[4][col("Bounding_boxes")] = "1, 2, x, 4"  # line 5: unparsable
        rows[5][col("DICOM_windows")] = "nan, 200"  # line 6: non-finite
        return rows

    _rewrite(path, corrupt)
    info = read_dl_info(path)
    assert [row.line for row in info.rows] == [7]
    assert [(s.row, s.column) for s in info.report.skipped] == [
        (2, "Measurement_coordinates"),
        (3, "Spacing_mm_px_"),
        (4, "Slice_range"),
        (5, "Bounding_boxes"),
        (6, "DICOM_windows"),
    ]
    assert "expected 8 numbers, got 3" in info.report.skipped[0].reason
    with pytest.raises(FormatError, match=r"DL_info\.csv, line 2, column 'Measurement_coord"):
        read_dl_info(path, strict=True)


def _phantom(z, y=48, x=64, seed=0):
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1024, 3072, size=(z, y, x)).astype(np.int16)
    hu[0, 0, :4] = [-32768, 32767, 0, -1]  # the whole 16-bit range survives
    return hu


def _dataset(tmp_path, *, skip=()):
    hu = _phantom(6)
    images = tmp_path / "Images_png"
    write_series(images, "000007_02_01", 11, hu, skip=skip)
    rows = [
        dl_info_row(
            "000007_02_01", 13, (11, 16), MEASUREMENT, image_size_yx=(48, 64), spacing_xyz=SPACING
        ),
        dl_info_row(
            "000007_02_01",
            15,
            (11, 16),
            MEASUREMENT,
            image_size_yx=(48, 64),
            spacing_xyz=SPACING,
            noisy=1,
            window=(-1000, 500),
        ),
    ]
    return hu, images, write_dl_info(tmp_path / "DL_info.csv", rows)


def test_series_reads_lazily_with_exact_hu_spacing_window_and_marks(tmp_path):
    hu, images, csv_path = _dataset(tmp_path)
    dataset = DeepLesionDataset(images, csv_path)
    assert dataset.volume_ids == ["000007_02_01_011-016"]
    volume = dataset.open("000007_02_01_011-016")
    assert volume.shape == (6, 48, 64) and not volume._cache  # nothing decoded yet
    assert volume.spacing == (2.5, 0.7, 0.7)
    assert volume.display_window == (-175.0, 275.0)
    assert volume.attributes["possibly_noisy"] == [False, True]
    assert volume.attributes["missing_slices"] == []
    np.testing.assert_array_equal(volume.slice(2), hu[2])
    assert list(volume._cache) == [2]
    array = volume.array()
    assert array.dtype == np.int16
    np.testing.assert_array_equal(array, hu)
    assert [m.z for m in dataset.marks(volume.volume_id)] == [2, 4]


def test_missing_pngs_are_reported_never_shifted(tmp_path):
    hu, images, csv_path = _dataset(tmp_path, skip={13, 14})
    dataset = DeepLesionDataset(images, csv_path)
    with pytest.raises(MissingSlicesError, match="2 slice file.*range 11-16 missing: 13, 14") as e:
        dataset.open("000007_02_01_011-016")
    assert e.value.missing == [13, 14] and "000007_02_01" in e.value.path
    assert list(dataset.iter_volumes(skip_missing=True)) == []
    assert dataset.missing == {"000007_02_01_011-016": [13, 14]}

    filled = DeepLesionDataset(images, csv_path, on_missing="nearest")
    volume = filled.open("000007_02_01_011-016")
    assert volume.shape[0] == 6 and volume.attributes["missing_slices"] == [13, 14]
    for z in (0, 1, 4, 5):  # present slices stay at their own z
        np.testing.assert_array_equal(volume.slice(z), hu[z])
    np.testing.assert_array_equal(volume.slice(2), hu[1])  # 13 <- 12 (nearest, lower on tie)
    np.testing.assert_array_equal(volume.slice(3), hu[4])  # 14 <- 15
    assert filled.missing == {"000007_02_01_011-016": [13, 14]}
    with pytest.raises(MissingSlicesError, match="6 slice file"):
        open_series_range(images / "no_such_series", 1, 6, spacing_zyx=(1, 1, 1))


def test_bad_pngs_raise_image_errors_naming_the_file(tmp_path):
    good = write_hu_png(tmp_path / "s" / "001.png", _phantom(1)[0])
    eight_bit = tmp_path / "s" / "002.png"
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(eight_bit)
    rgb = tmp_path / "s" / "003.png"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(rgb)
    wrong_size = write_hu_png(tmp_path / "s" / "004.png", np.zeros((48, 63), np.int16))
    truncated = tmp_path / "s" / "005.png"
    truncated.write_bytes(good.read_bytes()[:-200])
    not_png = tmp_path / "s" / "006.png"
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(not_png, format="JPEG")
    garbage = tmp_path / "s" / "007.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)

    with pytest.raises(
        ImageFormatError, match=r"002\.png: expected a 16-bit grayscale PNG, got 8-bit grayscale"
    ):
        read_hu_png(eight_bit)
    with pytest.raises(ImageFormatError, match=r"003\.png: .*got 8-bit RGB"):
        read_hu_png(rgb)
    with pytest.raises(ImageFormatError, match=r"004\.png: slice size \(48, 63\) .* differs"):
        read_hu_png(wrong_size, expected_shape=(48, 64))
    with pytest.raises(ImageFormatError, match=r"005\.png: truncated PNG"):
        read_hu_png(truncated)
    with pytest.raises(ImageFormatError, match=r"006\.png: not a PNG file"):
        read_hu_png(not_png)
    with pytest.raises(ImageFormatError, match=r"007\.png: truncated or damaged PNG header"):
        read_hu_png(garbage)
    # opening a range checks every slice file before any is decoded
    with pytest.raises(ImageFormatError, match=r"002\.png: expected a 16-bit"):
        open_series_range(tmp_path / "s", 1, 5, spacing_zyx=(1, 1, 1))
    np.testing.assert_array_equal(
        open_series_range(tmp_path / "s", 1, 1, spacing_zyx=(1, 1, 1)).slice(0), _phantom(1)[0]
    )
