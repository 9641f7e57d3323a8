"""Scanning a volume: the LPG's 2D boxes on every slice, stacked into 3D proposals."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpg.config import get_config
from napari_lesion_harvest.lpg.infer import detect_volume
from napari_lesion_harvest.lpg.model import build_model
from napari_lesion_harvest.tracking.scan import scan_volume

torch.set_num_threads(1)

OPTIONS = {
    "score_threshold": 0.0,
    "link_iou": 0.3,
    "fuse_iou": 0.3,
    "batch_size": 4,
    "precision": "float32",
}


@pytest.fixture(scope="module")
def model_and_volume():
    """An untrained lite LPG whose size head gives every box the same proper size
    (random sizes would be clipped to nothing), and a noise volume with a bright block."""
    torch.manual_seed(0)
    model = build_model(get_config("lite", max_side=48)).eval()
    with torch.no_grad():
        model.size_head[-1].weight.zero_()
        model.size_head[-1].bias.fill_(3.0)
    hu = np.random.default_rng(0).normal(0, 300, (10, 40, 36))
    hu[:, 10:22, 12:24] += 400  # a bright block through every slice
    return model, CTVolume.from_array("block", hu, (2.0, 0.8, 0.8))


def test_proposals_stand_on_the_lpgs_own_boxes(model_and_volume):
    model, volume = model_and_volume
    proposals, boxes_2d = scan_volume(model, volume, **OPTIONS, duplicate_iou=2.0)
    detections = {
        d.z: d for d in detect_volume(model, volume, min_score=OPTIONS["score_threshold"])
    }
    assert boxes_2d == sum(len(d.scores) for d in detections.values()) > 0
    assert proposals
    for proposal in proposals:
        found = detections[proposal.best_slice]
        same = np.flatnonzero(np.all(np.isclose(found.boxes, proposal.best_box), axis=1))
        assert same.size and np.isclose(found.scores[same], proposal.s_g).any()
        x1, y1, x2, y2 = proposal.best_box
        assert x2 > x1 and y2 > y1 and proposal.s_g >= OPTIONS["score_threshold"]
        assert 0 <= min(proposal.slices) and max(proposal.slices) < volume.num_slices


def test_duplicates_of_one_lesion_are_dropped(model_and_volume):
    model, volume = model_and_volume
    everything, _ = scan_volume(model, volume, **OPTIONS, duplicate_iou=2.0)
    kept, _ = scan_volume(model, volume, **OPTIONS, duplicate_iou=0.3)
    assert 0 < len(kept) < len(everything)

    def key(proposal):
        return tuple(proposal.slices), proposal.boxes.tobytes(), proposal.s_g

    assert {key(p) for p in kept} < {key(p) for p in everything}


def test_a_bfloat16_scan_finds_what_the_float32_scan_finds(model_and_volume):
    model, volume = model_and_volume
    exact, _ = scan_volume(copy.deepcopy(model), volume, **OPTIONS, duplicate_iou=0.3)
    in_bfloat16 = {**OPTIONS, "precision": "bfloat16"}
    rounded, _ = scan_volume(copy.deepcopy(model), volume, **in_bfloat16, duplicate_iou=0.3)
    strongest, strongest_rounded = (max(p, key=lambda q: q.s_g) for p in (exact, rounded))
    assert strongest_rounded.s_g == pytest.approx(strongest.s_g, abs=0.02)
    assert strongest_rounded.best_slice == strongest.best_slice
    assert np.allclose(strongest_rounded.best_box, strongest.best_box, atol=1.0)
