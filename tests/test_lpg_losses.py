"""CenterNet targets, focal loss and HNSL, checked on small hand-made heatmaps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_lesion_harvest.lpg.config import get_config
from napari_lesion_harvest.lpg.losses import focal_loss, focal_loss_map, mscn_loss, regression_l1
from napari_lesion_harvest.lpg.targets import (
    build_targets,
    draw_gaussian,
    gaussian_heatmap,
    gaussian_radius,
    hnsl_heatmap,
)


def logits_for(p: float, shape) -> torch.Tensor:
    return torch.full(shape, math.log(p / (1 - p)), dtype=torch.float64)


def test_gaussian_radius_follows_centernet_rule():
    # Hand-computed for a 10 x 10 box at overlap 0.7: the three radii are
    # (20 + sqrt(400 - 4 * 30 / 1.7)) / 2 = 19.08, (40 + sqrt(1600 - 480)) / 2 = 36.73
    # and (-28 + sqrt(784 + 336)) / 2 = 2.73; the rule takes the smallest.
    assert gaussian_radius(10, 10, min_overlap=0.7) == pytest.approx(
        (-28 + math.sqrt(1120)) / 2, rel=1e-12
    )
    assert gaussian_radius(20, 20) > gaussian_radius(10, 10)
    assert gaussian_radius(10, 10, min_overlap=0.9) < gaussian_radius(10, 10, min_overlap=0.7)


def test_gaussian_peak_and_sigma_is_diameter_over_six():
    heatmap = np.zeros((15, 15), dtype=np.float32)
    draw_gaussian(heatmap, (7, 5), 3)
    sigma = 7 / 6
    assert heatmap[5, 7] == 1.0 and heatmap.max() == 1.0
    assert heatmap[5, 8] == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-6)
    assert heatmap[7, 9] == pytest.approx(math.exp(-8 / (2 * sigma**2)), rel=1e-6)
    assert heatmap[5, 11] == 0.0  # outside the radius
    # Max-merge, no sum: a second weaker peak does not raise the first.
    draw_gaussian(heatmap, (8, 5), 3)
    assert heatmap[5, 7] == 1.0 and heatmap[5, 8] == 1.0
    with pytest.raises(ValueError, match="outside"):
        draw_gaussian(heatmap, (15, 0), 2)


def test_hard_negative_peak_costs_16_background_pixels():
    target = torch.zeros(1, 1, 1, 3, dtype=torch.float64)
    target[..., 0] = 1.0  # lesion centre
    target[..., 2] = -1.0  # hard-negative peak
    p = 0.3
    loss = focal_loss_map(logits_for(p, target.shape), target)
    background = -math.log(1 - p) * p**2
    assert loss[0, 0, 0, 1].item() == pytest.approx(background, rel=1e-6)
    assert loss[0, 0, 0, 2].item() == pytest.approx(16 * background, rel=1e-6)
    assert loss[0, 0, 0, 0].item() == pytest.approx(-math.log(p) * (1 - p) ** 2, rel=1e-6)
    # Half-way down a hard negative's Gaussian (Y = -0.5): (1.5)^4 = 5.0625.
    target[..., 2] = -0.5
    half = focal_loss_map(logits_for(p, target.shape), target)
    assert half[0, 0, 0, 2].item() == pytest.approx(5.0625 * background, rel=1e-6)
    # Normalised by the number of objects (1 here).
    assert focal_loss(logits_for(p, target.shape), target).item() == pytest.approx(
        half.sum().item()
    )


def test_focal_loss_normalises_by_number_of_objects():
    target = torch.zeros(2, 1, 4, 4)
    logits = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    target[0, 0, 1, 1] = 1
    one = focal_loss(logits, target)
    target[1, 0, 2, 2] = 1
    two = focal_loss(logits, target)
    per_pixel = focal_loss_map(logits, target)
    assert two.item() == pytest.approx(per_pixel.sum().item() / 2)
    assert one.item() != pytest.approx(two.item())


def test_hnsl_heatmap_writes_negatives_over_positives():
    positive = np.array([[0.2, 1.0, 0.5]], dtype=np.float32)
    negative = np.array([[0.0, 0.0, 0.8]], dtype=np.float32)
    expected = np.array([[0.2, 1.0, -0.8]], dtype=np.float32)
    np.testing.assert_array_equal(hnsl_heatmap(positive, negative), expected)


def test_hnsl_without_hard_negatives_equals_plain_focal_loss_exactly():
    boxes = np.array([[8.0, 8.0, 30.0, 24.0], [40.0, 36.0, 60.0, 62.0]])
    targets = build_targets(boxes, np.zeros((0, 4)), (16, 16), stride=4, min_overlap=0.7)
    plain = gaussian_heatmap(boxes, (16, 16), stride=4, min_overlap=0.7)
    logits = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    hnsl = focal_loss(logits, torch.from_numpy(targets.heatmap)[None])
    reference = focal_loss(logits, torch.from_numpy(plain)[None, None])
    assert torch.equal(hnsl, reference)
    # With a hard negative far from the lesions the loss grows.
    with_negative = build_targets(
        boxes, [[0.0, 40.0, 16.0, 60.0]], (16, 16), stride=4, min_overlap=0.7
    )
    assert with_negative.heatmap.min() == -1.0
    assert focal_loss(logits, torch.from_numpy(with_negative.heatmap)[None]) > hnsl


def test_a_slice_of_unknown_background_is_supervised_only_on_its_boxes():
    lesion, negative = [[8.0, 8.0, 30.0, 24.0]], [[36.0, 40.0, 52.0, 56.0]]
    known = build_targets(lesion, negative, (16, 16), stride=4, min_overlap=0.7)
    unknown = build_targets(
        lesion, negative, (16, 16), stride=4, min_overlap=0.7, background_known=False
    )
    np.testing.assert_array_equal(unknown.heatmap, known.heatmap)
    assert known.heatmap_weight.min() == 1.0
    weight = unknown.heatmap_weight[0]
    assert weight[2:7, 2:8].min() == 1.0 and weight[10:15, 9:14].min() == 1.0  # box cells
    assert weight[unknown.heatmap[0] != 0].min() == 1.0  # every Gaussian cell
    assert weight[0, 15] == weight[15, 0] == 0.0 and 0 < weight.mean() < 0.5
    # A confident prediction away from the boxes costs nothing there, and only there.
    logits = torch.full((1, 1, 16, 16), -6.0)
    far = logits.clone()
    far[0, 0, 15, 0] = 6.0
    weights = torch.from_numpy(unknown.heatmap_weight)[None]
    targets = torch.from_numpy(unknown.heatmap)[None]

    def losses(weight):
        return [focal_loss(x, targets, weight=weight).item() for x in (logits, far)]

    unweighted, weighted = losses(None), losses(weights)
    assert weighted[0] == pytest.approx(weighted[1]) and weighted[0] < unweighted[0]
    assert unweighted[1] > unweighted[0] + 1.0
    near = logits.clone()
    near[0, 0, 12, 11] = 6.0  # the hard negative's centre cell
    assert focal_loss(near, targets, weight=weights) > weighted[0] + 1.0


def test_build_targets_centres_sizes_and_offsets():
    boxes = np.array([[8.0, 10.0, 30.0, 26.0]])  # centre (19, 18) px -> (4.75, 4.5) cells
    targets = build_targets(boxes, np.zeros((0, 4)), (16, 16), stride=4, min_overlap=0.7)
    assert targets.mask.sum() == 1
    assert targets.indices[0] == 4 * 16 + 4
    np.testing.assert_allclose(targets.size[0], [22 / 4, 16 / 4])
    np.testing.assert_allclose(targets.offset[0], [0.75, 0.5])
    assert targets.heatmap[0, 4, 4] == 1.0 and (targets.heatmap == 1).sum() == 1


def test_regression_l1_reads_only_object_centres():
    prediction = torch.zeros(1, 2, 4, 4)
    prediction[0, :, 1, 2] = torch.tensor([3.0, 5.0])
    prediction[0, :, 3, 3] = 100.0  # not a centre: ignored
    indices = torch.tensor([[1 * 4 + 2, 0]])
    mask = torch.tensor([[1.0, 0.0]])
    target = torch.tensor([[[2.0, 7.0], [9.0, 9.0]]])
    assert regression_l1(prediction, indices, mask, target).item() == pytest.approx(1.5, rel=1e-4)


def test_mscn_loss_weights_its_parts():
    config = get_config("lite")
    targets = build_targets([[8.0, 8.0, 30.0, 24.0]], [], (16, 16), stride=4, min_overlap=0.7)
    batch = {k: torch.from_numpy(np.asarray(v))[None] for k, v in vars(targets).items()}
    generator = torch.Generator().manual_seed(2)
    outputs = {
        "heatmap": torch.randn(1, 1, 16, 16, generator=generator),
        "size": torch.randn(1, 2, 16, 16, generator=generator),
        "offset": torch.randn(1, 2, 16, 16, generator=generator),
    }
    parts = mscn_loss(outputs, batch, config)
    expected = parts["heatmap"] + 0.1 * parts["size"] + 1.0 * parts["offset"]
    assert parts["total"].item() == pytest.approx(expected.item())
