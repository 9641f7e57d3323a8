"""A lite MSCN trained for about a minute on CPU finds held-out phantom lesions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lpg_phantoms import ellipsoid_phantom

from napari_lesion_harvest.evaluation.report import evaluate
from napari_lesion_harvest.evaluation.tables import ProposalTable, RecistTruth
from napari_lesion_harvest.lpg.config import get_config
from napari_lesion_harvest.lpg.data import LPGSample
from napari_lesion_harvest.lpg.infer import detect_volume
from napari_lesion_harvest.lpg.train import TrainOptions, train_lpg


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
        options=TrainOptions(steps=110, batch_size=6, learning_rate=2e-3, warmup_steps=15),
    )
    marks, volumes = key_slice_truth(range(100, 105))
    slice_z, slice_boxes, slice_scores, slice_volume = [], [], [], []
    for index, volume in enumerate(volumes):
        for found in detect_volume(result.model, volume, top_k=20, min_score=0.01):
            slice_z += [found.z] * len(found.scores)
            slice_boxes.append(found.boxes)
            slice_scores.append(found.scores)
            slice_volume += [index] * len(found.scores)
    detections = ProposalTable.from_slices(
        [v.volume_id for v in volumes],
        slice_volume,
        np.arange(len(slice_z)),
        slice_z,
        np.concatenate(slice_boxes),
        np.concatenate(slice_scores),
    )
    report = evaluate(
        RecistTruth.from_mapping(marks), detections, metric="2d", fp_rates=(0.5, 1, 2, 4)
    )
    print(report.format_text())
    sensitivity = dict(zip(report.fp_rates, report.sensitivities, strict=True))
    # Random boxes essentially never reach IoU 0.5; measured here: 0.53, 0.87, 0.87, 0.87
    # at 0.5, 1, 2, 4 FPs per marked slice (110 steps, 1 thread).
    assert sensitivity[1.0] >= 0.6, sensitivity
    assert sensitivity[4.0] >= 0.7, sensitivity
