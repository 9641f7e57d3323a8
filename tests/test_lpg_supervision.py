"""LPG supervision: known lesions ignored (not background) away from their own slice,
and training stacks clamped at a volume's end exactly as scanning clamps them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_lesion_harvest.geometry import RecistMark
from napari_lesion_harvest.harvest.blob_project import (
    SHAPE,
    SPACING,
    V_M,
    blob_volumes,
    make_blob_project,
)
from napari_lesion_harvest.harvest.training_sets import (
    known_lesion_region,
    lpg_training_slices,
    on_regions,
)
from napari_lesion_harvest.io.sources import open_volume
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpg.config import get_config
from napari_lesion_harvest.lpg.data import LPGSample, SliceAugmentation, make_example
from napari_lesion_harvest.lpg.infer import predict_volume
from napari_lesion_harvest.lpg.job import (
    JobError,
    _load_volumes,
    _samples,
    _train_options,
    run_job,
)
from napari_lesion_harvest.lpg.losses import focal_loss, focal_loss_map
from napari_lesion_harvest.lpg.model import build_model
from napari_lesion_harvest.lpg.preprocess import stack_reach
from napari_lesion_harvest.lpg.targets import build_targets
from tests.lpg_phantoms import TINY_JOB_CONFIG, ellipsoid_phantom, job_inputs
from tests.round_runs import next_round_snapshot as round_one_snapshot

torch.set_num_threads(1)

# ---------------------------------------------------------------- targets and loss


def test_an_ignore_box_is_unsupervised_except_on_positive_gaussians():
    """Weight 0 on the ignore box's cells, background and hard-negative Gaussian alike;
    a positive's Gaussian keeps weight 1 where it enters the box."""
    lesion, negative = [[8.0, 8.0, 24.0, 24.0]], [[40.0, 40.0, 56.0, 56.0]]
    ignore = [[20.0, 20.0, 44.0, 44.0]]  # over the lesion's corner and the negative's
    plain = build_targets(lesion, negative, (16, 16), stride=4, min_overlap=0.7)
    ignoring = build_targets(
        lesion, negative, (16, 16), stride=4, min_overlap=0.7, ignore_boxes=ignore
    )
    np.testing.assert_array_equal(ignoring.heatmap, plain.heatmap)
    heat, weight = ignoring.heatmap[0], ignoring.heatmap_weight[0]
    cells = np.zeros((16, 16), dtype=bool)
    cells[5:12, 5:12] = True  # y, x 20..44 px at stride 4: cells 5..11
    assert (weight[cells & (heat <= 0)] == 0).all()
    assert (weight[cells & (heat > 0)] == 1).all() and (cells & (heat > 0)).any()
    assert (cells & (heat < 0)).any()  # part of the hard negative's Gaussian is ignored
    assert (weight[~cells] == 1).all()
    assert heat[12, 12] == -1 and weight[12, 12] == 1  # its peak, outside the box, is taught


def test_the_loss_does_not_depend_on_predictions_in_an_ignore_box():
    lesion, ignore = [[8.0, 8.0, 24.0, 24.0]], [[32.0, 32.0, 60.0, 60.0]]
    targets = build_targets(
        lesion, np.zeros((0, 4)), (16, 16), stride=4, min_overlap=0.7, ignore_boxes=ignore
    )
    target = torch.from_numpy(targets.heatmap)[None]
    weight = torch.from_numpy(targets.heatmap_weight)[None]
    logits = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    changed = logits.clone()
    changed[0, 0, 8:16, 8:16] = 8.0  # confident "lesion" everywhere in the ignore box
    logits.requires_grad_(True)
    loss = focal_loss(logits, target, weight=weight)
    assert focal_loss(changed, target, weight=weight) == loss
    assert focal_loss(changed, target) > loss + 1.0  # without the weight it would cost
    loss.backward()
    assert (logits.grad[0, 0, 8:16, 8:16] == 0).all() and logits.grad[0, 0, :8].abs().sum() > 0


def test_the_focal_loss_counts_only_the_peaks_it_supervises():
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, 0, 0] = target[0, 0, 3, 3] = 1
    weight = torch.ones_like(target)
    logits = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    both = focal_loss(logits, target, weight=weight)
    weight[0, 0, 3, 3] = 0
    per_pixel = focal_loss_map(logits, target) * weight
    assert focal_loss(logits, target, weight=weight).item() == pytest.approx(
        per_pixel.sum().item()  # one object left, not two
    )
    assert both.item() == pytest.approx(focal_loss_map(logits, target).sum().item() / 2)


def test_ignore_boxes_follow_the_sample_through_zoom_shift_and_flip():
    volume, boxes = ellipsoid_phantom(0, shape=(12, 64, 64), lesions=1)
    z, lesion = next(iter(sorted(boxes.items())))
    ignore = np.array([[4.0, 4.0, 20.0, 20.0]])  # top-left, away from the body's lesion
    sample = LPGSample(volume, z, lesion, ignore_boxes=ignore)
    steady = {"scale_range": (1.0, 1.0), "max_shift_px": 0, "interval_range": (1.0, 1.0)}
    config = get_config("lite")
    for flip in (0.0, 1.0):
        _, targets = make_example(
            sample,
            config,
            canvas_shape=(64, 64),
            rng=np.random.default_rng(0),
            augmentation=SliceAugmentation(**steady, flip_probability=flip),
        )
        weight = targets.heatmap_weight[0]
        left, right = weight[1:5, 1:5], weight[1:5, 11:15]  # cells of x, y 4..20 px
        assert (left == 0).all() != (flip == 1.0)
        assert (right == 0).all() == (flip == 1.0)
        assert weight[8:].min() == 1  # the rest is taught


# ---------------------------------------------------------------- known lesion regions


def test_a_known_lesion_region_spans_one_long_diameter_and_holds_any_ellipse():
    """Along z: one long diameter plus half a slice either side, inside the volume.
    In-plane: every ellipse of that long diameter centred on the axis's midpoint."""
    d_px, centre = 20.0, np.array([40.0, 30.0])
    axis = np.array([np.cos(np.pi / 4), np.sin(np.pi / 4)]) * d_px / 2
    short = np.array([-axis[1], axis[0]]) * 0.6
    mark = RecistMark(
        z=6, long_axis=[centre - axis, centre + axis], short_axis=[centre - short, centre + short]
    )
    spacing = (5.0, 0.5, 0.8)  # anisotropic pixels: the ellipse is one in mm
    slices, box = known_lesion_region(mark, spacing, num_slices=30)
    d_mm = mark.diameters_mm(spacing[1:])[0]
    reach = int((d_mm + 2.5) // 5.0)
    np.testing.assert_array_equal(slices, np.arange(6 - reach, 6 + reach + 1))
    assert (box[:2] <= mark.box()[:2]).all() and (box[2:] >= mark.box()[2:]).all()
    angles = np.linspace(0, 2 * np.pi, 360)
    for turn in np.linspace(0, np.pi, 13):  # the lesion's section, any orientation (mm)
        a, b = d_mm / 2, d_mm / 2 * np.random.default_rng(int(turn * 10)).uniform(0.2, 1)
        x_mm = a * np.cos(angles) * np.cos(turn) - b * np.sin(angles) * np.sin(turn)
        y_mm = a * np.cos(angles) * np.sin(turn) + b * np.sin(angles) * np.cos(turn)
        x, y = centre[0] + x_mm / spacing[2], centre[1] + y_mm / spacing[1]
        assert box[0] - 1e-9 <= x.min() and x.max() <= box[2] + 1e-9
        assert box[1] - 1e-9 <= y.min() and y.max() <= box[3] + 1e-9
    near_end, _ = known_lesion_region(
        RecistMark(z=1, long_axis=mark.long_axis, short_axis=mark.short_axis),
        spacing,
        num_slices=3,
    )
    np.testing.assert_array_equal(near_end, [0, 1, 2])


def test_a_box_lies_on_a_region_when_centred_in_it_or_overlapping_it_much():
    region = np.array([[10.0, 10.0, 50.0, 50.0]])
    boxes = np.array(
        [
            [20.0, 20.0, 26.0, 26.0],  # a small piece inside: IoU 0.02, centre inside
            [40.0, 40.0, 70.0, 70.0],  # centre outside, IoU 0.06
            [5.0, 5.0, 45.0, 60.0],  # centre inside and IoU 0.6
            [60.0, 60.0, 70.0, 70.0],  # elsewhere
        ]
    )
    assert on_regions(boxes, region).tolist() == [True, False, True, False]
    assert on_regions(boxes, np.zeros((0, 4))).tolist() == [False] * 4


# ---------------------------------------------------------------- round 1's slices


@pytest.fixture(scope="module")
def blob_snapshot(tmp_path_factory):
    """Round 1's inputs of the blob project: V_M fully marked, V_H and V_H_test with
    one original mark per volume (V_H_test, two volumes, also with hidden full marks:
    in ``vol06`` on other slices than its original mark's)."""
    folder = tmp_path_factory.mktemp("supervision")
    return round_one_snapshot(make_blob_project(folder, n_test=2))


def test_a_lesion_crossing_a_v_m_key_slice_is_ignored_there_not_background(blob_snapshot):
    """The blob volumes' three lesions are ellipsoids that cross each other's key
    slices. The paper's targets teach those cross-sections as background on the V_M
    key slices; with ``ignore_known_lesions`` their centres are not supervised."""
    plain = lpg_training_slices(blob_snapshot, use_pool=False)
    ignoring = lpg_training_slices(blob_snapshot, use_pool=False, ignore_known_lesions=True)
    _, truth, _ = blob_volumes()
    records = {r.volume_id: r for rs in blob_snapshot.volumes.values() for r in rs}
    config = get_config("lite", max_side=SHAPE[1])
    z_scale = SPACING[0] / SPACING[1] / 2  # blob_volumes: z semi-axis is 2 radii in mm
    crossings = 0
    assert [(s.volume_id, s.z) for s in ignoring] == [(s.volume_id, s.z) for s in plain]
    for paper, slice_ in zip(plain, ignoring, strict=True):
        np.testing.assert_array_equal(slice_.positive_boxes, paper.positive_boxes)
        assert not len(paper.ignore_boxes)
        if slice_.volume_id not in V_M:
            continue
        volume = open_volume(records[slice_.volume_id])
        examples = [
            make_example(
                LPGSample(volume, s.z, s.positive_boxes, ignore_boxes=s.ignore_boxes),
                config,
                canvas_shape=SHAPE[1:],
            )[1]
            for s in (paper, slice_)
        ]
        for record in (r for r in truth if r.volume_id == slice_.volume_id):
            mark = record.mark
            radius = mark.diameters_px()[0] / 2
            if mark.z == slice_.z or abs(slice_.z - mark.z) * z_scale >= radius:
                continue  # its own slice, or a lesion that does not reach this one
            x, y = (mark.long_axis.mean(axis=0) / config.stride).astype(int)
            before, after = examples
            assert before.heatmap_weight[0, y, x] == 1 and before.heatmap[0, y, x] <= 0
            assert after.heatmap_weight[0, y, x] == 0
            crossings += 1
        for box in slice_.positive_boxes:  # the slice's own lesion stays a taught peak
            x, y = (((box[:2] + box[2:]) / 2) / config.stride).astype(int)
            assert examples[1].heatmap[0, y, x] == 1 and examples[1].heatmap_weight[0, y, x] == 1
    assert crossings >= len(V_M)


def test_v_h_test_hidden_full_marks_never_enter_the_ignore_regions(blob_snapshot):
    """V_H_test gives the LPG its original marks only: its hidden full marks, which
    cross the original mark's slice, add no ignore region there."""
    test_ids = {r.volume_id for r in blob_snapshot.volumes["V_H_test"]}
    slices = lpg_training_slices(blob_snapshot, use_pool=False, ignore_known_lesions=True)
    on_test = [s for s in slices if s.volume_id in test_ids]
    assert on_test
    crossing_hidden = 0
    for record in blob_snapshot.volumes["V_H_test"]:
        stored = blob_snapshot.marks[record.volume_id]
        original_slices = {m.mark.z for m in stored if m.origin == "original"}
        for mark in (m.mark for m in stored if m.mark.z not in original_slices):
            reached = known_lesion_region(mark, SPACING, SHAPE[0])[0]
            crossing_hidden += sum(
                s.volume_id == record.volume_id and s.z in reached for s in on_test
            )
    assert crossing_hidden  # the full marks would have added regions there
    assert not any(len(s.ignore_boxes) for s in on_test)


# ---------------------------------------------------------------- edge stacks


@pytest.fixture(scope="module")
def edge_setup():
    volume, boxes = ellipsoid_phantom(3, shape=(16, 32, 32), lesions=1)
    config = get_config("lite", max_side=32)
    torch.manual_seed(0)
    model = build_model(config, pretrained=False).eval()
    return volume, boxes, config, model


def scanned_stack(model, volume: CTVolume, z: int) -> torch.Tensor:
    """The 9-slice input that scanning (``predict_volume``) feeds the model for ``z``."""
    seen = []
    # The trunk's first convolution sees the stack as three three-slice images.
    first_conv = model.trunk["conv0"]
    hook = first_conv.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        list(predict_volume(model, volume, shared=False, slices=[z], batch_size=1))
    finally:
        hook.remove()
    return seen[0].reshape(9, *seen[0].shape[2:])


def test_an_edge_stack_in_training_is_the_stack_scanning_builds_at_a_volume_end(edge_setup):
    """With ``edge_probability`` 1, each training stack of slice ``z`` equals scanning's
    stack of the same slice in a volume cut ``k`` slices above or below it (``k`` below
    the stack's reach), and over seeds both sides and several ``k`` come up."""
    volume, boxes, config, model = edge_setup
    z = 8
    reach = stack_reach(volume.spacing[0], interval_mm=config.slice_interval_mm, count=9)
    assert reach == 4
    last = volume.num_slices - 1
    cuts = [(z - k, last) for k in range(reach)] + [(0, z + k) for k in range(reach)]
    scanned = {}
    for first, end in cuts:
        cut = CTVolume.from_array("cut", volume.array()[first : end + 1], volume.spacing)
        scanned[first, end] = scanned_stack(model, cut, z - first)
    full = scanned_stack(model, volume, z)
    assert all(not torch.equal(stack, full) for stack in scanned.values())
    steady = {"scale_range": (1.0, 1.0), "max_shift_px": 0, "interval_range": (1.0, 1.0)}
    sample = LPGSample(volume, z, boxes.get(z, np.zeros((0, 4))))
    seen = set()
    for seed in range(16):
        stack, _ = make_example(
            sample,
            config,
            canvas_shape=(32, 32),
            rng=np.random.default_rng(seed),
            augmentation=SliceAugmentation(**steady, flip_probability=0.0, edge_probability=1.0),
        )
        matches = [cut for cut, scan in scanned.items() if torch.equal(stack, scan)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) >= 5 and {first == 0 for first, _ in seen} == {True, False}
    plain, _ = make_example(
        sample,
        config,
        canvas_shape=(32, 32),
        rng=np.random.default_rng(0),
        augmentation=SliceAugmentation(**steady, flip_probability=0.0),
    )
    assert torch.equal(plain, full)


def test_edge_stacks_leave_every_other_random_draw_as_it_was(edge_setup):
    """The edge draw comes last: with it, zoom, shift, interval and flip (and so the
    targets) are those of the same seed without it."""
    volume, boxes, config, _ = edge_setup
    z = min(boxes)
    sample = LPGSample(volume, z, boxes[z])
    for seed in range(4):
        targets = [
            make_example(
                sample,
                config,
                canvas_shape=(32, 32),
                rng=np.random.default_rng(seed),
                augmentation=SliceAugmentation(edge_probability=p),
            )[1]
            for p in (0.0, 1.0)
        ]
        np.testing.assert_array_equal(targets[0].heatmap, targets[1].heatmap)
        np.testing.assert_array_equal(targets[0].size, targets[1].size)


# ---------------------------------------------------------------- job files


def test_a_job_file_round_trips_ignore_boxes_and_the_edge_augmentation(tmp_path):
    volumes, samples = job_inputs(tmp_path)
    samples[0]["ignore_boxes"] = [[1.0, 2.0, 9.0, 12.0], [20.0, 20.0, 30.0, 31.0]]
    options = {
        "steps": 2,
        "batch_size": 2,
        "warmup_steps": 1,
        "augmentation": {"edge_probability": 0.25, "scale_range": [0.9, 1.1]},
    }
    job = {
        "mode": "train",
        "volumes": volumes,
        "samples": samples,
        "config": TINY_JOB_CONFIG,
        "options": options,
        "checkpoint": "lpg.pt",
    }
    job_path = tmp_path / "ignore.job"
    job_path.write_text(json.dumps(job))
    read = json.loads(job_path.read_text())
    loaded = _samples(read, _load_volumes(read, tmp_path, job_path), job_path)
    np.testing.assert_array_equal(loaded[0].ignore_boxes, samples[0]["ignore_boxes"])
    assert all(s.ignore_boxes.shape == (0, 4) for s in loaded[1:])
    augmentation = _train_options(read, job_path).augmentation
    assert augmentation == SliceAugmentation(edge_probability=0.25, scale_range=(0.9, 1.1))
    assert run_job(job_path)["steps"] == 2 and (tmp_path / "lpg.pt").is_file()

    samples[1]["ignore_boxes"] = [[1.0, 2.0, 3.0]]
    job_path.write_text(json.dumps(job | {"checkpoint": "bad.pt"}))
    with pytest.raises(
        JobError, match=r"ignore\.job: samples\[1\]: .*ignore_boxes must have shape"
    ):
        run_job(job_path)
    samples[1]["ignore_boxes"] = []
    job_path.write_text(json.dumps(job | {"options": options | {"augmentation": {"edges": 1}}}))
    with pytest.raises(JobError, match=r"ignore\.job: options: .*edges"):
        run_job(job_path)
    assert not (tmp_path / "bad.pt").exists()
