"""Geometry: boxes, IoU, RECIST marks, proposals; checked against real DL_info rows."""

import csv

import numpy as np
import pytest

from napari_lesion_harvest.geometry import (
    Proposal3D,
    RecistMark,
    index_to_key_slice,
    iou_2d,
    iou_3d,
    key_slice_to_index,
    xyxyzz_to_xyzxyz,
    xyzxyz_to_xyxyzz,
)


def _floats(text):
    return [float(v) for v in text.split(",")]


def test_recist_box_and_diameters_reproduce_real_dl_info_rows(dl_info_rows_csv):
    with open(dl_info_rows_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    for row in rows:
        first, _last = (int(v) for v in row["Slice_range"].split(","))
        z = key_slice_to_index(int(row["Key_slice_index"]), first)
        mark = RecistMark.from_measurement_coordinates(_floats(row["Measurement_coordinates"]), z)
        np.testing.assert_allclose(mark.box(), _floats(row["Bounding_boxes"]), atol=1e-3)
        np.testing.assert_allclose(
            mark.diameters_px(), _floats(row["Lesion_diameters_Pixel_"]), rtol=1e-4
        )
        assert mark.is_perpendicular()
        assert index_to_key_slice(z, first) == int(row["Key_slice_index"])
        np.testing.assert_allclose(
            mark.measurement_coordinates(), _floats(row["Measurement_coordinates"])
        )


def test_recist_mm_lengths_use_xy_spacing():
    mark = RecistMark(z=0, long_axis=[[0, 0], [10, 0]], short_axis=[[5, -2], [5, 2]])
    assert mark.diameters_mm((0.5, 2.0)) == (20.0, 2.0)
    assert mark.axis_angle_deg() == pytest.approx(90.0)
    assert mark.is_perpendicular()
    skew = RecistMark(z=0, long_axis=[[0, 0], [10, 0]], short_axis=[[0, 0], [10, 3]])
    assert not skew.is_perpendicular()


def test_recist_box_clips_to_image():
    mark = RecistMark(z=3, long_axis=[[1, 1], [20, 2]], short_axis=[[10, 0], [10, 4]])
    np.testing.assert_allclose(mark.box(image_shape_yx=(32, 24)), [0, 0, 23, 9])


def test_recist_rejects_bad_coordinates():
    with pytest.raises(ValueError, match="8 coordinates"):
        RecistMark.from_measurement_coordinates([1, 2, 3], 0)
    with pytest.raises(ValueError, match="non-finite"):
        RecistMark(z=0, long_axis=[[0, np.nan], [1, 1]], short_axis=[[0, 0], [1, 1]])


def test_iou_2d_hand_computed_both_conventions():
    a = [[0, 0, 9, 9]]
    b = [[5, 0, 14, 9], [20, 20, 30, 30], [0, 0, 9, 9]]
    plain = iou_2d(a, b)
    np.testing.assert_allclose(plain, [[4 * 9 / (81 + 81 - 36), 0.0, 1.0]])
    plus = iou_2d(a, b, plus_one=True)
    np.testing.assert_allclose(plus, [[50 / 150, 0.0, 1.0]])
    assert iou_2d(np.zeros((0, 4)), b).shape == (0, 3)


def test_iou_3d_and_mode_conversion():
    a = xyxyzz_to_xyzxyz([[0, 0, 10, 10, 0, 4]])
    np.testing.assert_allclose(a, [[0, 0, 0, 10, 10, 4]])
    np.testing.assert_allclose(xyzxyz_to_xyxyzz(a), [[0, 0, 10, 10, 0, 4]])
    b = [[0, 0, 2, 10, 10, 6]]
    assert iou_3d(a, b)[0, 0] == pytest.approx(200 / 600)
    assert iou_3d(a, b, plus_one=True)[0, 0] == pytest.approx(121 * 3 / (121 * 10 - 121 * 3))


def test_proposal3d_orders_slices_and_derives_box():
    proposal = Proposal3D(
        slices=[5, 3, 4],
        boxes=[[10, 10, 20, 20], [12, 11, 18, 19], [8, 9, 22, 21]],
        scores=[0.2, 0.1, 0.9],
    )
    assert proposal.slices.tolist() == [3, 4, 5]
    assert proposal.s_g == 0.9
    assert proposal.best_slice == 4
    np.testing.assert_allclose(proposal.best_box, [8, 9, 22, 21])
    np.testing.assert_allclose(proposal.box_3d, [8, 9, 3, 22, 21, 5])
    assert proposal.box_on_slice(7) is None
    with pytest.raises(ValueError, match="one box and one score"):
        Proposal3D(slices=[1, 2], boxes=[[0, 0, 1, 1]], scores=[0.5, 0.4])


def test_mark_from_box_reproduces_the_box_with_the_longer_axis_first():
    wide = RecistMark.from_box([10, 20, 50, 40], z=4)
    np.testing.assert_allclose(wide.box(), [10, 20, 50, 40])
    assert wide.diameters_px() == (30.0, 10.0) and wide.z == 4
    tall = RecistMark.from_box([0, 0, 12, 40], z=0)
    assert tall.diameters_px() == (30.0, 2.0)
    with pytest.raises(ValueError, match="twice the padding"):
        RecistMark.from_box([0, 0, 6, 6], z=0)
