"""LPG input pipeline: z resampling, HU window, in-plane resampling and box mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpg.config import get_config
from napari_lesion_harvest.lpg.data import LPGSample, SliceAugmentation, make_example
from napari_lesion_harvest.lpg.preprocess import (
    air_value,
    interpolate_slices,
    make_transform,
    prepare_stack,
    resample_slices,
    stack_positions,
    window_hu,
)

torch.set_num_threads(1)


def ramp_volume(num_slices=12, size=32, spacing=(2.0, 0.8, 0.8)) -> CTVolume:
    """Slice z is filled with 10 * z HU."""
    hu = np.repeat(np.arange(num_slices, dtype=np.int16)[:, None, None] * 10, size, 1)
    hu = np.repeat(hu, size, 2)
    return CTVolume.from_array("ramp", hu, spacing)


def test_stack_positions_at_2mm_are_real_neighbours():
    positions = stack_positions(10, 30, 2.0, interval_mm=2.0, count=9)
    np.testing.assert_array_equal(positions, np.arange(6, 15))


def test_stack_positions_at_5mm_interpolate_and_clamp_at_edges():
    positions = stack_positions(10, 30, 5.0, interval_mm=2.0, count=9)
    np.testing.assert_allclose(positions, 10 + 0.4 * np.arange(-4, 5))
    # 1 mm slices: 2 slices per step; the first slice repeats at the top edge.
    edge = stack_positions(1, 30, 1.0, interval_mm=2.0, count=9)
    np.testing.assert_array_equal(edge, [0, 0, 0, 0, 1, 3, 5, 7, 9])
    last = stack_positions(29, 30, 2.0, interval_mm=2.0, count=9)
    np.testing.assert_array_equal(last, [25, 26, 27, 28, 29, 29, 29, 29, 29])


def test_interpolate_slices_is_linear_between_real_slices():
    volume = ramp_volume()
    out = interpolate_slices(volume, [0, 2.25, 3.5, 11])
    assert out.shape == (4, 32, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 5, 7], [0.0, 22.5, 35.0, 110.0], atol=1e-5)
    with pytest.raises(ValueError, match="ramp"):
        interpolate_slices(volume, [11.5])


def test_window_maps_hu_range_to_0_255_minus_mean():
    out = window_hu([-2000, -1024, 0, 3071, 5000], window=(-1024, 3071), mean=50)
    np.testing.assert_allclose(out, [-50, -50, 1024 * 255 / 4095 - 50, 205, 205], atol=1e-4)
    assert air_value(get_config("paper")) == pytest.approx(-50.0)


def test_transform_normalises_spacing_and_limits_longest_side():
    config = get_config("paper")
    same = make_transform((512, 512), (0.8, 0.8), config)
    assert same.resized_shape == (512, 512) and same.canvas_shape == (512, 512)
    fine = make_transform((512, 400), (0.4, 0.4), config)
    assert fine.resized_shape == (256, 200) and fine.canvas_shape == (256, 208)
    coarse = make_transform((512, 512), (1.6, 1.6), config)  # 1024 px at 0.8 mm -> capped
    assert coarse.resized_shape == (512, 512)
    lite = make_transform((512, 512), (0.7, 0.7), config, max_side=256)
    assert lite.resized_shape == (256, 256)


def test_box_mapping_round_trips_and_follows_pixel_centres():
    config = get_config("lite")
    transform = make_transform((100, 80), (0.4, 0.4), config, scale=1.1, shift_xy=(3, -2))
    boxes = np.array([[10.0, 20.0, 30.5, 44.0], [0.0, 0.0, 79.0, 99.0]])
    np.testing.assert_allclose(
        transform.boxes_to_original(transform.boxes_to_network(boxes)), boxes, atol=1e-9
    )
    # Halving: original pixel centres 0 and 1 straddle resampled pixel centre 0.
    half = make_transform((100, 100), (0.4, 0.4), config)
    np.testing.assert_allclose(half.boxes_to_network([[0.5, 0.5, 2.5, 2.5]]), [[0, 0, 1, 1]])


def test_resampled_lesion_lands_where_the_transform_maps_its_box():
    config = get_config("lite")
    image = np.zeros((1, 100, 100), dtype=np.float32)
    image[0, 20:40, 40:60] = 100.0  # box x 40..59, y 20..39
    transform = make_transform((100, 100), (0.4, 0.4), config, shift_xy=(5, 3))
    out = resample_slices(image, transform, fill_value=-50.0).numpy()[0]
    assert out.shape == transform.canvas_shape == (64, 64)
    x1, y1, x2, y2 = transform.boxes_to_network([[40, 20, 59, 39]])[0]
    ys, xs = np.nonzero(out > 50)
    assert abs(xs.mean() - (x1 + x2) / 2) < 0.5 and abs(ys.mean() - (y1 + y2) / 2) < 0.5
    assert out[0, 0] == -50.0 and out[-1, -1] == -50.0  # outside the slice: padding
    assert out[3 + 10, 5 + 5] == 0.0  # inside the slice, background


def test_prepare_stack_orders_slices_top_to_bottom():
    volume = ramp_volume(num_slices=12, size=40, spacing=(1.0, 0.8, 0.8))
    config = get_config("lite")
    transform = make_transform(volume.shape[1:], volume.spacing[1:], config)
    stack = prepare_stack(volume, 5, transform, config)
    assert stack.shape == (9, 48, 48)
    expected = window_hu(
        10 * np.clip(5 + 2 * np.arange(-4, 5), 0, 11), window=(-1024, 3071), mean=50
    )
    np.testing.assert_allclose(stack[:, 10, 10].numpy(), expected, atol=1e-4)


def test_flip_augmentation_mirrors_the_stack_and_its_lesion_targets():
    hu = np.full((12, 64, 64), -1000, dtype=np.int16)
    hu[:, 20:36, 18:30] = 200  # a lesion left of centre: x 18..29, y 20..35
    volume = CTVolume.from_array("block", hu, (2.0, 1.0, 1.0))
    sample = LPGSample(volume, 6, [[17.5, 19.5, 29.5, 35.5]])
    config = get_config("lite")
    steady = {"scale_range": (1.0, 1.0), "max_shift_px": 0, "interval_range": (1.0, 1.0)}
    examples = {
        p: make_example(
            sample,
            config,
            canvas_shape=(64, 64),
            rng=np.random.default_rng(0),
            augmentation=SliceAugmentation(**steady, flip_probability=p),
        )
        for p in (0.0, 1.0)
    }
    (plain, plain_targets), (mirrored, mirrored_targets) = examples[0.0], examples[1.0]
    torch.testing.assert_close(mirrored, plain.flip(-1))
    for stack, targets in ((plain, plain_targets), (mirrored, mirrored_targets)):
        peak_y, peak_x = np.unravel_index(targets.heatmap[0].argmax(), targets.heatmap[0].shape)
        centre_x, centre_y = (peak_x + 0.5) * config.stride, (peak_y + 0.5) * config.stride
        bright_x = np.nonzero(stack[4, 28].numpy() > 0)[0]  # columns of the lesion on row 28
        assert bright_x.min() <= centre_x <= bright_x.max() and 20 <= centre_y <= 36
    assert mirrored_targets.size[0].tolist() == plain_targets.size[0].tolist()


def corner_lesion_sample(*, boxes=True) -> LPGSample:
    """128 px slices with a 200 HU lesion near the lower-left corner (x 10..21, y
    100..115) on soft tissue (0 HU), or, without boxes, on a gradient (4x + 2y HU);
    160 px once resampled to the lite 0.8 mm."""
    y, x = np.mgrid[:128, :128]
    hu = np.repeat((0 * x if boxes else 4 * x + 2 * y)[None].astype(np.int16), 12, 0)
    hu[:, 100:116, 10:22] = 200
    volume = CTVolume.from_array("corner", hu, (2.0, 1.0, 1.0))
    return LPGSample(volume, 6, [[9.5, 99.5, 21.5, 115.5]] if boxes else np.zeros((0, 4)))


@pytest.mark.parametrize("box_centred", [False, True])
def test_a_box_centred_crop_keeps_the_lesion_in_view(box_centred):
    config = get_config("lite")
    augmentation = SliceAugmentation(
        scale_range=(1.0, 1.0),
        max_shift_px=0,
        interval_range=(1.0, 1.0),
        flip_probability=0.0,
        box_centred_crop=box_centred,
    )
    peaks_on_lesion = []
    for seed in range(12):
        stack, targets = make_example(
            corner_lesion_sample(),
            config,
            canvas_shape=(64, 64),
            rng=np.random.default_rng(seed),
            augmentation=augmentation,
        )
        assert stack.shape == (9, 64, 64)
        if not targets.mask.any():
            peaks_on_lesion.append(False)
            continue
        peak_y, peak_x = np.unravel_index(targets.heatmap[0].argmax(), targets.heatmap[0].shape)
        centre = stack[4, int((peak_y + 0.5) * 4), int((peak_x + 0.5) * 4)].item()
        peaks_on_lesion.append(centre > stack[4].min().item())
    # a centred 64 px window of the 160 px slice never shows the corner lesion
    assert all(peaks_on_lesion) if box_centred else not any(peaks_on_lesion)


def test_a_box_centred_crop_of_a_slice_without_boxes_stays_inside_the_slice():
    config = get_config("lite")
    augmentation = SliceAugmentation(box_centred_crop=True, scale_range=(1.0, 1.0))
    air = air_value(config)
    origins = set()
    for seed in range(8):
        stack, targets = make_example(
            corner_lesion_sample(boxes=False),
            config,
            canvas_shape=(64, 64),
            rng=np.random.default_rng(seed),
            augmentation=augmentation,
        )
        assert not targets.mask.any()
        assert (stack > air).all()  # no canvas fill: the window lies on the slice
        origins.add(round(stack[4, 0, 0].item(), 3))
    assert len(origins) > 1  # and it moves from draw to draw
