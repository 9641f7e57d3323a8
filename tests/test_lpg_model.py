"""MSCN model: shapes, fusion structure, configs, ImageNet weight loading without downloads."""

from __future__ import annotations

import torch

from napari_lesion_harvest.lpg.config import CONFIGS, LPGConfig, get_config
from napari_lesion_harvest.lpg.model import (
    DENSENET121_ENV,
    build_model,
    trunk_channels,
)

torch.set_num_threads(1)


def test_configs_by_name_round_trip_through_plain_dicts():
    for name in ("paper", "lite"):
        config = get_config(name)
        data = config.to_dict()
        assert all(not isinstance(v, tuple) for v in data.values())
        assert LPGConfig.from_dict(data) == config
    assert get_config("lite", max_side=128).max_side == 128
    assert trunk_channels(CONFIGS["paper"]) == (256, 512, 256, 1024)


def test_lite_model_outputs_stride4_heads_with_heatmap_bias():
    torch.manual_seed(0)
    model = build_model("lite").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 9, 64, 48))
    assert out["heatmap"].shape == (2, 1, 16, 12)
    assert out["size"].shape == (2, 2, 16, 12) and out["offset"].shape == (2, 2, 16, 12)
    assert model.heatmap_head[-1].bias.item() == torch.tensor(-2.19).item()
    assert "random" in model.pretrained_note


def test_side_images_are_unfused_and_centre_sees_all_three():
    """Changing the first 3 slices changes the output through the fusions, and the
    side maps depend only on their own image."""
    torch.manual_seed(0)
    model = build_model("lite").eval()
    x = torch.randn(1, 9, 32, 32)
    y = x.clone()
    y[:, 0:3] += 1.0
    with torch.no_grad():
        stems = [model.stem(t.reshape(3, 3, 32, 32)) for t in (x, y)]
        side_x, side_y = (model.side_map(s.select(slice(2, 3))) for s in stems)
        assert torch.equal(side_x, side_y)  # the following image did not change
        assert not torch.equal(model(x)["heatmap"], model(y)["heatmap"])


def test_paper_model_loads_imagenet_trunk_from_local_file(tmp_path, monkeypatch):
    import torchvision

    torch.manual_seed(1)
    reference = torchvision.models.densenet121(weights=None)
    state = reference.state_dict()
    # Old torchvision files name dense-layer parts "norm.1"; the loader maps them.
    legacy = {
        k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v for k, v in state.items()
    }
    path = tmp_path / "densenet121.pth"
    torch.save(legacy, path)
    monkeypatch.setenv(DENSENET121_ENV, str(path))
    model = build_model("paper")
    assert str(path) in model.pretrained_note
    block3 = model.trunk["denseblock3"].denselayer24.conv2.weight
    assert torch.equal(block3, state["features.denseblock3.denselayer24.conv2.weight"])
    assert torch.equal(model.trunk["conv0"].weight, state["features.conv0.weight"])


def test_paper_model_without_weights_notes_random_init(tmp_path, monkeypatch):
    monkeypatch.setenv(DENSENET121_ENV, str(tmp_path / "missing.pth"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    model = build_model("paper")
    assert "not found" in model.pretrained_note and "random" in model.pretrained_note
