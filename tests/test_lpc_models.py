"""LPC variants, pretrained-weight lookup and checkpoints (lite widths, tiny patches)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from napari_lesion_harvest.lpc.checkpoint import load_checkpoint, save_checkpoint
from napari_lesion_harvest.lpc.models import (
    PRETRAINED_FILES,
    WEIGHTS_ENV,
    build_classifier,
    find_pretrained,
    resnet18_trunk,
)
from napari_lesion_harvest.store.checkpoints import CheckpointError

torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("variant", "patch_shape"),
    [("multiview", (3, 32, 32)), ("axial", (1, 32, 32)), ("3d", (16, 16, 16))],
)
def test_every_variant_maps_its_patches_to_one_logit(variant, patch_shape):
    torch.manual_seed(0)
    model = build_classifier(variant, width="lite", patch_size=32, pretrained=False).eval()
    assert model.spec.shape == patch_shape
    with torch.no_grad():
        logits = model(torch.randn(2, *patch_shape))
    assert logits.shape == (2,)
    assert torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="expects patches of shape"):
        model(torch.randn(2, 2, 32, 32))


def test_multiview_has_one_trunk_per_view_and_concatenates_their_features():
    model = build_classifier("multiview", width="lite", patch_size=32, pretrained=False)
    assert len(model.trunks) == 3
    assert model.fc.in_features == 3 * 128
    # views are independent inputs: changing the sagittal view changes the output
    model.eval()
    patches = torch.randn(1, 3, 32, 32)
    changed = patches.clone()
    changed[:, 2] += 5
    with torch.no_grad():
        assert not torch.allclose(model(patches), model(changed))


def test_paper_width_is_torchvision_resnet18_with_a_one_channel_stem():
    trunk, features, source = resnet18_trunk(width="paper", pretrained=False)
    assert features == 512 and source == "random"
    assert trunk.conv1.in_channels == 1 and trunk.conv1.out_channels == 64
    assert trunk.layer4[1].conv2.out_channels == 512


def test_local_weights_are_loaded_and_summed_over_rgb(tmp_path, monkeypatch):
    from torchvision.models import resnet18

    reference = resnet18()
    torch.save(reference.state_dict(), tmp_path / PRETRAINED_FILES["2d"])
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    assert find_pretrained("2d") == tmp_path / PRETRAINED_FILES["2d"]
    trunk, _, source = resnet18_trunk(width="paper", pretrained=True)
    assert source == str(tmp_path / PRETRAINED_FILES["2d"])
    torch.testing.assert_close(trunk.conv1.weight, reference.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(trunk.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)


def test_missing_weights_fall_back_to_random_with_a_note(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with caplog.at_level("WARNING"):
        _, _, source = resnet18_trunk(width="paper", pretrained=True)
    assert source == "random"
    assert PRETRAINED_FILES["2d"] in caplog.text
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resnet18_trunk(width="paper", pretrained=tmp_path / "nothing.pth")
    with pytest.raises(ValueError, match="width 'paper'"):
        resnet18_trunk(width="lite", pretrained=tmp_path / "nothing.pth")


def test_bad_variant_or_width_is_refused():
    with pytest.raises(ValueError, match="variant"):
        build_classifier("2.5d")
    with pytest.raises(ValueError, match="width"):
        build_classifier("axial", width="huge")


def test_checkpoint_round_trip_restores_config_weights_and_meta(tmp_path):
    torch.manual_seed(1)
    model = build_classifier("axial", width="lite", patch_size=32, pad_px=8, pretrained=False)
    path = save_checkpoint(model, tmp_path / "lpc" / "model.pt", meta={"epoch": 3, "loss": 0.25})
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temp file left
    loaded, meta = load_checkpoint(path)
    assert meta == {"epoch": 3, "loss": 0.25}
    assert loaded.config == model.config
    patches = torch.randn(2, 1, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(patches), model(patches))


def test_checkpoint_keeps_the_hu_window_and_reads_older_ones_with_the_papers(tmp_path):
    model = build_classifier(
        "axial", width="lite", patch_size=32, pad_px=8, hu_window=(-200, 300), pretrained=False
    )
    assert model.spec.hu_window == (-200.0, 300.0)
    loaded, _ = load_checkpoint(save_checkpoint(model, tmp_path / "soft.pt"))
    assert loaded.spec == model.spec
    # a checkpoint written before the field existed was trained on the paper's window
    payload = torch.load(tmp_path / "soft.pt", weights_only=True)
    del payload["config"]["hu_window"]
    torch.save(payload, tmp_path / "older.pt")
    older, _ = load_checkpoint(tmp_path / "older.pt")
    assert older.spec.hu_window == (-1024.0, 3071.0)


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    # a pickle that would run code is refused by the weights-only loader
    evil = tmp_path / "evil.pt"
    with evil.open("wb") as handle:
        pickle.dump(np.random.RandomState, handle)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(evil)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(CheckpointError, match="not an lpc-v1"):
        load_checkpoint(other)
