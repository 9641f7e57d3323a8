"""Lite MSCNs trained for minutes on the CPU find held-out lesions (ellipsoid volumes,
and the project's CT phantom)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_lesion_harvest.evaluation.bootstrap import resampled_froc
from napari_lesion_harvest.lpg.config import get_config
from napari_lesion_harvest.lpg.data import LPGSample, SliceAugmentation
from napari_lesion_harvest.lpg.phantom_froc import (
    detection_froc,
    froc_steps,
    full_marks,
    key_slice_samples,
    synthetic_ct,
)
from napari_lesion_harvest.lpg.train import LPGTrainOptions, train_lpg
from tests.lpg_phantoms import ellipsoid_phantom


def training_samples(seeds) -> list[LPGSample]:
    samples = []
    for seed in seeds:
        volume, boxes = ellipsoid_phantom(seed)
        samples += [LPGSample(volume, z, b) for z, b in boxes.items()]
        samples += [LPGSample(volume, z, np.zeros((0, 4))) for z in (0, 15) if z not in boxes]
    return samples


def key_slice_truth(seeds) -> tuple[dict, list]:
    """Each lesion marked once, on its largest slice (like a RECIST key slice)."""
    marks, volumes = {}, []
    for seed in seeds:
        volume, boxes = ellipsoid_phantom(seed)
        volumes.append(volume)
        rows = [(z, box) for z, slice_boxes in boxes.items() for box in slice_boxes]
        by_lesion: dict[tuple, tuple] = {}
        for z, box in rows:  # a lesion keeps its centre across slices
            key = tuple(np.round((box[:2] + box[2:]) / 2, 6))
            if (
                key not in by_lesion
                or box[2] - box[0] > by_lesion[key][1][2] - by_lesion[key][1][0]
            ):
                by_lesion[key] = (z, box)
        zs = [z for z, _ in by_lesion.values()]
        marks[volume.volume_id] = (zs, np.array([b for _, b in by_lesion.values()]))
    return marks, volumes


@pytest.mark.slow
def test_lite_model_detects_held_out_phantom_lesions():
    torch.set_num_threads(1)
    result = train_lpg(
        training_samples(range(10)),
        config=get_config("lite", max_side=64),
        options=LPGTrainOptions(
            steps=110,
            batch_size=6,
            learning_rate=2e-3,
            warmup_steps=15,
            # 110 steps learn faster without the flip and the wide zoom (with the flip
            # and zoom 0.8-1.2: 0.47, 0.73, 0.73, 0.73, too close to the thresholds)
            augmentation=SliceAugmentation(scale_range=(0.8, 1.2), flip_probability=0.0),
        ),
    )
    marks, volumes = key_slice_truth(range(100, 105))
    rates = (0.5, 1, 2, 4)
    sensitivity = detection_froc(result.model, volumes, marks, rates)
    # Random boxes essentially never reach IoU 0.5; measured here: 0.53, 0.87, 0.87, 0.87
    # at 0.5, 1, 2, 4 FPs per marked slice (110 steps, 1 thread).
    assert sensitivity[1.0] >= 0.6, sensitivity
    assert sensitivity[4.0] >= 0.7, sensitivity
    # the benchmarks' curve, merged from per-volume detections, is the evaluator's
    steps, marked_slices = froc_steps(result.model, volumes, marks)
    every_volume_once = np.ones((1, len(volumes)), dtype=np.int64)
    merged = resampled_froc(steps, every_volume_once, images=marked_slices, fp_rates=rates)
    np.testing.assert_allclose(merged[0], [sensitivity[rate] for rate in rates])


@pytest.fixture
def two_torch_threads():
    """Both cores of the CI machine for the longest training here (1.5x faster than
    one); the previous thread count is restored for the tests that follow."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
def test_lite_model_finds_lesions_of_the_synthetic_ct_phantom(two_torch_threads):
    # The project's phantom: organs, look-alikes, lesions of 5-60 mm with 10-80 HU of
    # contrast. Every lesion's key slice, with all lesion boxes on it, is a sample.
    samples = []
    for phantom in (synthetic_ct(i, 128) for i in range(24)):
        samples += key_slice_samples(phantom, phantom.lesions)
    # A soft-tissue window, as the demo uses for CPU training (harvest/demo.py).
    config = get_config("lite", max_side=128, hu_window=(-200.0, 300.0))
    result = train_lpg(
        samples,
        config=config,
        options=LPGTrainOptions(steps=800, batch_size=8, learning_rate=1e-3, warmup_steps=50),
        pretrained=False,
    )
    held_out = [synthetic_ct(500 + i, 128) for i in range(8)]
    sensitivity = detection_froc(
        result.model, [p.volume for p in held_out], full_marks(held_out), (0.5, 1, 2, 4, 8)
    )
    print("sensitivity at 0.5, 1, 2, 4, 8 FPs per marked slice:", sensitivity)
    # Measured (112 training slices, 38 held-out lesions, 2 threads, idle CPU, 181-184 s):
    # 0.13, 0.16, 0.32, 0.42, 0.50 at 0.5, 1, 2, 4, 8 FPs per marked slice; random boxes
    # score ~0. The paper's wide window gave 0.05 to 0.24 after 1,200 steps
    # (docs/performance.md).
    assert sensitivity[1.0] >= 0.1, sensitivity
    assert sensitivity[8.0] >= 0.2, sensitivity
