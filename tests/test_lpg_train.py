"""LPG training: checkpoints, resume, cancellation, fine-tuning, sample validation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from napari_lesion_harvest.lpg.checkpoint import load_checkpoint, load_model
from napari_lesion_harvest.lpg.config import get_config
from napari_lesion_harvest.lpg.data import LPGSample
from napari_lesion_harvest.lpg.train import (
    LPGTrainOptions,
    global_batch_indices,
    learning_rate_at,
    train_lpg,
)
from napari_lesion_harvest.store.checkpoints import CheckpointError
from tests.lpg_phantoms import ellipsoid_phantom

torch.set_num_threads(1)
CONFIG = get_config("lite", max_side=32)


@pytest.fixture(scope="module")
def samples():
    volume, boxes = ellipsoid_phantom(0, shape=(10, 32, 32), lesions=2)
    out = [LPGSample(volume, z, b) for z, b in sorted(boxes.items())]
    out.append(LPGSample(volume, 0, np.zeros((0, 4)), hard_negative_boxes=[[2, 2, 9, 9]]))
    return out


def options(steps: int, **changes) -> LPGTrainOptions:
    return LPGTrainOptions(
        **{"steps": steps, "batch_size": 2, "learning_rate": 1e-3, "warmup_steps": 2} | changes
    )


def test_training_writes_a_safe_checkpoint_and_reports_progress(samples, tmp_path):
    calls = []
    path = tmp_path / "lpg.pt"
    result = train_lpg(
        samples,
        config=CONFIG,
        options=options(3),
        checkpoint_path=path,
        progress=lambda step, total, parts: calls.append((step, total, parts)),
    )
    assert result.step == 3 and not result.stopped and len(result.history) == 3
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)]
    assert set(calls[0][2]) == {"total", "heatmap", "size", "offset", "lr"}
    state = load_checkpoint(path)
    assert state["step"] == 3 and state["config"]["name"] == "lite"
    assert state["config"]["max_side"] == 32
    model = load_model(path)
    assert model.config == CONFIG
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name])
    assert not list(tmp_path.glob(".*.tmp"))


def test_resumed_training_equals_uninterrupted_training(samples, tmp_path):
    straight = train_lpg(
        samples, config=CONFIG, options=options(4), checkpoint_path=tmp_path / "a.pt"
    )
    stop_after = iter([False, False, True])
    first = train_lpg(
        samples,
        config=CONFIG,
        options=options(4),
        checkpoint_path=tmp_path / "b.pt",
        should_stop=lambda: next(stop_after),
    )
    assert first.stopped and first.step == 2
    assert load_checkpoint(tmp_path / "b.pt")["step"] == 2
    resumed = train_lpg(
        samples, config=CONFIG, options=options(4), checkpoint_path=tmp_path / "b.pt"
    )
    assert resumed.step == 4 and len(resumed.history) == 2
    for name, tensor in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=1e-5, atol=1e-6)


def test_batches_built_by_worker_processes_train_the_same_model(samples):
    # GPU training builds the next batches in DataLoader workers; the batches, and
    # so the trained weights, must not depend on where they were built.
    inline = train_lpg(samples, config=CONFIG, options=options(3, loader_workers=0))
    workers = train_lpg(samples, config=CONFIG, options=options(3, loader_workers=2))
    assert inline.history == workers.history
    for name, tensor in inline.model.state_dict().items():
        assert torch.equal(workers.model.state_dict()[name], tensor), name


def test_fine_tuning_starts_from_checkpoint_weights_and_config(samples, tmp_path):
    base = train_lpg(
        samples, config=CONFIG, options=options(2), checkpoint_path=tmp_path / "r1.pt"
    )
    tuned = train_lpg(
        samples,
        config="paper",  # ignored: the checkpoint gives the architecture
        options=options(2, learning_rate=1e-4),
        init_checkpoint=tmp_path / "r1.pt",
        checkpoint_path=tmp_path / "r2.pt",
    )
    assert tuned.model.config == CONFIG and tuned.step == 2
    changed = [
        not torch.equal(tensor, tuned.model.state_dict()[name])
        for name, tensor in base.model.state_dict().items()
        if tensor.is_floating_point()
    ]
    assert any(changed)


def test_learning_rate_schedule_and_sample_order():
    opts = LPGTrainOptions(steps=10, learning_rate=1.0, warmup_steps=2)
    assert [round(learning_rate_at(s, opts), 6) for s in (0, 1, 2, 6)] == [0.5, 1.0, 1.0, 0.5]
    assert learning_rate_at(10, opts) == pytest.approx(0.0)
    first_epoch = global_batch_indices(0, 5, 5, seed=3)
    assert sorted(first_epoch) == list(range(5))  # one epoch visits each sample once
    # Batches are cut from the same stream whatever their size (resume, ranks).
    assert global_batch_indices(0, 10, 5, seed=3)[:5] == first_epoch
    assert global_batch_indices(1, 2, 5, seed=3) == first_epoch[2:4]


def test_bad_samples_and_checkpoints_raise_clear_errors(tmp_path):
    volume, _ = ellipsoid_phantom(1, shape=(6, 32, 32), lesions=1)
    with pytest.raises(ValueError, match="phantom1 slice 9"):
        LPGSample(volume, 9, np.zeros((0, 4)))
    with pytest.raises(ValueError, match="positive_boxes must have shape"):
        LPGSample(volume, 1, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="x1<=x2"):
        LPGSample(volume, 1, [[5, 5, 2, 9]])
    with pytest.raises(ValueError, match="no training samples"):
        train_lpg([], config=CONFIG)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"kind": "lpg-mscn", "payload": object()}))
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(evil)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not an LPG checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="missing.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_bfloat16_training_on_the_cpu_follows_float32_training(samples, tmp_path):
    exact = train_lpg(samples, config=CONFIG, options=options(3, precision="float32"))
    path = tmp_path / "bf16.pt"
    rounded = train_lpg(
        samples, config=CONFIG, options=options(3, precision="bfloat16"), checkpoint_path=path
    )
    assert rounded.history != exact.history  # the forward pass really ran in bfloat16
    for ran, reference in zip(rounded.history, exact.history, strict=True):
        assert ran["total"] == pytest.approx(reference["total"], rel=0.05)
    assert all(p.dtype == torch.float32 for p in rounded.model.parameters())
    assert load_model(path).config == CONFIG
    with pytest.raises(ValueError, match="precision must be one of"):
        train_lpg(samples, config=CONFIG, options=options(1, precision="half"))
