"""LPG inference: decoding, box mapping, and the shared-feature path equal to the naive one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpg.config import get_config
from napari_lesion_harvest.lpg.infer import (
    detect_volume,
    heatmap_peaks,
    peak_boxes,
    peak_heads,
    predict_volume,
)
from napari_lesion_harvest.lpg.model import build_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lite_model():
    torch.manual_seed(0)
    model = build_model(get_config("lite", max_side=48)).eval()
    # Move batch-norm statistics away from identity so that they matter.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def noise_volume(num_slices: int, slice_mm: float, seed: int = 0) -> CTVolume:
    rng = np.random.default_rng(seed)
    hu = rng.normal(0, 300, (num_slices, 40, 36))
    return CTVolume.from_array(f"noise{seed}", hu, (slice_mm, 0.8, 0.8))


def count_stem_images(model):
    counter = {"images": 0}
    original = model.stem

    def counting_stem(images):
        counter["images"] += images.shape[0]
        return original(images)

    model.stem = counting_stem
    return counter, original


@pytest.mark.parametrize(("slice_mm", "batch_size"), [(2.0, 4), (5.0, 3), (1.0, 5)])
def test_shared_features_equal_naive_per_slice_computation(lite_model, slice_mm, batch_size):
    volume = noise_volume(13, slice_mm)
    naive = list(predict_volume(lite_model, volume, shared=False, batch_size=batch_size))
    counter, original = count_stem_images(lite_model)
    try:
        shared = list(predict_volume(lite_model, volume, shared=True, batch_size=batch_size))
    finally:
        lite_model.stem = original
    assert [zs for zs, _, _ in naive] == [zs for zs, _, _ in shared]
    for (_, a, _), (_, b, _) in zip(naive, shared, strict=True):
        assert_same_heads(a, b)
    if slice_mm == 2.0:
        # Three-slice images are keyed by their z positions: at 2 mm they are the
        # 13 + 2 * 3 windows centred on -3..15 clamped to the volume, far fewer than 3 * 13.
        assert counter["images"] < 2 * 13
    elif slice_mm == 5.0:
        # No image is shared at 5 mm: the naive path runs (all 3 x 13 images).
        assert counter["images"] == 3 * 13
    else:
        assert counter["images"] <= 3 * 13


def assert_same_heads(a: dict, b: dict, tolerance: float = 1e-4) -> None:
    """Two batches of :func:`peak_heads` outputs agree: same peaks, same values."""
    assert torch.equal(a["index"], b["index"])
    for name in ("heatmap", "scores", "size", "offset"):
        assert (a[name].float() - b[name].float()).abs().max().item() < tolerance


def test_decode_picks_peaks_and_builds_boxes_in_canvas_pixels():
    heatmap = torch.full((1, 1, 8, 8), -10.0)
    heatmap[0, 0, 3, 5] = 3.0  # peak
    heatmap[0, 0, 3, 6] = 2.0  # neighbour of the peak: suppressed by the 3x3 max-pool
    heatmap[0, 0, 6, 1] = 0.0  # second, weaker peak
    scores, index = heatmap_peaks(heatmap, top_k=3)
    assert index[0, :2].tolist() == [3 * 8 + 5, 6 * 8 + 1]
    size = torch.zeros(1, 2, 3)
    offset = torch.zeros(1, 2, 3)
    size[0, :, 0] = torch.tensor([4.0, 2.0])
    offset[0, :, 0] = torch.tensor([0.5, 0.25])
    outputs = {"heatmap": heatmap, "scores": scores, "index": index, "size": size}
    [(boxes, scores)] = peak_boxes({**outputs, "offset": offset}, stride=4)
    assert scores[0] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert scores[1] == pytest.approx(0.5)
    np.testing.assert_allclose(boxes[0], np.array([3.5, 2.25, 7.5, 4.25]) * 4)
    np.testing.assert_allclose(boxes[1], np.array([1, 6, 1, 6]) * 4)  # zero size
    assert len(scores) == 3 and scores[2] < 1e-3  # the third "peak" is background


@pytest.mark.parametrize("channels_last", [False, True])
def test_box_heads_at_the_peaks_equal_the_dense_heads_there(lite_model, channels_last):
    # Every cell of a 7 x 5 map, the borders included (the 3x3 convolution's zero
    # padding), and the peaks that peak_heads picks: the heads evaluated only there
    # equal the dense heads of predict() at those cells.
    torch.manual_seed(1)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    maps = [
        torch.randn(2, lite_model.config.feature_channels, 7, 5).contiguous(memory_format=layout)
        for _ in range(3)
    ]
    with torch.no_grad():
        dense = lite_model.predict(*maps)
        fused = lite_model.fused_map(*maps)
        every_cell = torch.arange(7 * 5).repeat(2, 1)
        for name, at_cells in zip(
            ("size", "offset"), lite_model.box_heads_at(fused, every_cell), strict=True
        ):
            torch.testing.assert_close(at_cells, dense[name].flatten(2), rtol=1e-4, atol=1e-5)
        peaks = peak_heads(lite_model, *maps, top_k=6)
    torch.testing.assert_close(peaks["heatmap"], dense["heatmap"])
    for name in ("size", "offset"):
        gathered = dense[name].flatten(2).gather(2, peaks["index"][:, None].expand(-1, 2, -1))
        torch.testing.assert_close(peaks[name], gathered, rtol=1e-4, atol=1e-5)


def test_detect_volume_gives_sorted_boxes_in_original_pixels(lite_model):
    rng = np.random.default_rng(3)
    volume = CTVolume.from_array("fine", rng.normal(0, 300, (5, 90, 70)), (2.0, 0.4, 0.4))
    detections = detect_volume(lite_model, volume, top_k=10, batch_size=2)
    assert [d.z for d in detections] == list(range(5))
    for d in detections:
        assert d.boxes.shape == (10, 4) and d.scores.shape == (10,)
        assert np.all(np.diff(d.scores) <= 0)
        assert d.boxes[:, [0, 2]].min() >= 0 and d.boxes[:, [0, 2]].max() <= 69
        assert d.boxes[:, [1, 3]].min() >= 0 and d.boxes[:, [1, 3]].max() <= 89
    some = detect_volume(lite_model, volume, top_k=10, slices=[3, 1], min_score=0.5)
    assert [d.z for d in some] == [1, 3]
    assert all((d.scores >= 0.5).all() for d in some)
    np.testing.assert_array_equal(
        some[1].scores, detections[3].scores[detections[3].scores >= 0.5]
    )


def test_input_pipeline_on_a_volume_tensor_equals_the_lazy_volume():
    # GPU inference keeps the whole volume as one tensor on the device and runs
    # interpolation, windowing and resampling there; on the CPU it reads lazily.
    from napari_lesion_harvest.lpg.preprocess import make_transform, prepare_slices

    volume = noise_volume(9, 5.0, seed=3)
    config = get_config("lite", max_side=32)  # 40 x 36 slices are downsampled
    transform = make_transform(volume.shape[1:], volume.spacing[1:], config)
    positions = [0.0, 0.4, 3.2, 7.6, 8.0]
    lazy = prepare_slices(volume, positions, transform, config)
    tensor = prepare_slices(torch.from_numpy(volume.array()), positions, transform, config)
    assert tensor.shape == lazy.shape == (5, *transform.canvas_shape)
    assert (tensor - lazy).abs().max().item() < 1e-4


def test_channels_last_gives_the_same_outputs(lite_model):
    volume = noise_volume(7, 2.0, seed=4)
    plain = list(predict_volume(lite_model, volume, channels_last=False, batch_size=4))
    nhwc = list(predict_volume(lite_model, volume, channels_last=True, batch_size=4))
    lite_model.to(memory_format=torch.contiguous_format)
    for (_, a, _), (_, b, _) in zip(plain, nhwc, strict=True):
        assert_same_heads(a, b)


def test_bfloat16_precision_keeps_the_strong_detections(lite_model):
    volume = noise_volume(7, 2.0, seed=5)
    exact = detect_volume(lite_model, volume, precision="float32", top_k=5)
    rounded = detect_volume(lite_model, volume, precision="bfloat16", top_k=5)
    for a, b in zip(exact, rounded, strict=True):
        # bfloat16 keeps 8 bits of mantissa: the best peak stays where it was and
        # its score agrees to about 1e-2 (weaker peaks may swap ranks).
        assert abs(a.scores[0] - b.scores[0]) < 0.02
        np.testing.assert_allclose(a.boxes[0], b.boxes[0], atol=1.0)
    with pytest.raises(ValueError, match="precision"):
        detect_volume(lite_model, volume, precision="half")


def test_interleaved_predictions_leave_no_inference_mode_behind(lite_model):
    # Two generators consumed in lockstep (as when comparing precisions) must not
    # leave inference mode or autocast switched on once both are done.
    volume = noise_volume(6, 2.0, seed=6)
    pairs = zip(
        predict_volume(lite_model, volume, batch_size=2),
        predict_volume(lite_model, volume, batch_size=2, precision="bfloat16"),
        strict=True,
    )
    for _ in pairs:
        assert not torch.is_inference_mode_enabled()
    assert not torch.is_inference_mode_enabled()
    assert not torch.is_autocast_enabled("cpu")
    weight = torch.ones(2, requires_grad=True)
    assert (weight * 2).sum().requires_grad


@pytest.mark.slow
def test_compiled_scan_at_fixed_rows_equals_the_eager_scan(lite_model):
    # 7 targets in batches of 3: the last call of every piece (stem, side map,
    # centre and heads) is padded to full rows and its padding dropped. The "eager"
    # backend traces the pieces with TorchDynamo without generating kernels
    # (inductor, the users' backend, is measured by benchmarks/lpg_gpu_bench.py).
    torch._dynamo.reset()
    volume = noise_volume(7, 2.0, seed=7)
    options = {"batch_size": 3, "top_k": 5}
    eager = list(predict_volume(lite_model, volume, **options))
    compiled = list(predict_volume(lite_model, volume, compile_backend="eager", **options))
    assert [zs for zs, _, _ in compiled] == [[0, 1, 2], [3, 4, 5], [6]]
    for (_, a, _), (_, b, _) in zip(eager, compiled, strict=True):
        assert b["scores"].shape[0] == a["scores"].shape[0]
        assert_same_heads(a, b)
