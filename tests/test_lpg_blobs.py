"""The label-free blob detector of the LPG's blob pretraining (lpg.blobs)."""

from __future__ import annotations

import numpy as np

from napari_lesion_harvest.lpg.blobs import blob_boxes, blob_sigmas

WINDOW = (-200.0, 300.0)


def _abdomen(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, tuple[float, float, float]]]:
    """A 320 x 256 slice at 1 mm: air around an elliptic body of soft tissue
    (300 x 220 mm) holding a bright and a dark disc; the discs' centre x, centre y and
    diameter (mm) by name."""
    y, x = np.mgrid[:256, :320].astype(np.float64)
    hu = np.full((256, 320), -1000.0)
    hu[((x - 160) / 150) ** 2 + ((y - 128) / 110) ** 2 <= 1] = 40.0
    discs = {"bright": (100.0, 120.0, 12.0, +80.0), "dark": (220.0, 140.0, 24.0, -60.0)}
    for cx, cy, diameter, contrast in discs.values():
        hu[(x - cx) ** 2 + (y - cy) ** 2 <= (diameter / 2) ** 2] += contrast
    hu += rng.normal(0.0, 5.0, hu.shape)
    return hu, {name: disc[:3] for name, disc in discs.items()}


def test_the_discs_are_found_at_their_place_and_size_and_the_body_outline_is_not_a_blob():
    hu, discs = _abdomen(np.random.default_rng(0))
    boxes = blob_boxes(hu, pixel_mm=1.0, hu_window=WINDOW)
    assert boxes.shape == (2, 4), boxes
    centres, sides = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2] - boxes[:, 0]
    for row, name in enumerate(("bright", "dark")):  # strongest first
        cx, cy, diameter = discs[name]
        assert np.hypot(*(centres[row] - (cx, cy))) <= 1.5, (name, centres[row])
        assert 0.6 * diameter <= sides[row] <= 1.6 * diameter, (name, sides[row])


def test_a_uniform_slice_has_no_blob_and_max_blobs_keeps_the_strongest():
    assert blob_boxes(np.full((64, 64), 40.0), pixel_mm=1.0, hu_window=WINDOW).shape == (0, 4)
    hu, discs = _abdomen(np.random.default_rng(1))
    (box,) = blob_boxes(hu, pixel_mm=1.0, hu_window=WINDOW, max_blobs=1)
    assert np.hypot((box[0] + box[2]) / 2 - discs["bright"][0], (box[1] + box[3]) / 2 - 120) <= 1.5


def test_the_scales_span_the_diameters_in_pixels_and_none_is_below_one_pixel():
    sigmas = blob_sigmas(0.5, (5.0, 40.0), 4)
    np.testing.assert_allclose(sigmas[[0, -1]] * 2 * np.sqrt(2) * 0.5, (5.0, 40.0))
    assert np.all(np.diff(sigmas) > 0)
    assert blob_sigmas(4.0, (5.0, 40.0), 4).min() == 1.0
