"""Max pooling through NHWC on the CPU: the same outputs and gradients as torch's NCHW
pooling to the bit, in the pooling itself and in training steps of both networks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from napari_lesion_harvest.lpc.models import build_classifier
from napari_lesion_harvest.lpg.layers import replace_layers
from napari_lesion_harvest.lpg.losses import mscn_loss
from napari_lesion_harvest.lpg.model import build_model
from napari_lesion_harvest.lpg.pooling import ChannelsLastMaxPool2d, with_fast_max_pools
from napari_lesion_harvest.lpg.targets import build_targets


def _ties(*shape: int) -> torch.Tensor:
    """Post-ReLU values on a coarse grid: many equal maxima in a window, zeros included."""
    generator = torch.Generator().manual_seed(0)
    return ((torch.randn(*shape, generator=generator) * 4).round() / 4).relu()


@pytest.mark.parametrize("settings", [(3, 2, 1, False), (2, 2, 0, True), (3, 1, 1, False)])
def test_outputs_and_gradients_equal_torchs_pooling_to_the_bit(settings):
    kernel, stride, padding, ceil_mode = settings
    reference = nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    fast = ChannelsLastMaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    x = _ties(6, 5, 17, 18)
    outputs, gradients = [], []
    for pool in (reference, fast):
        leaf = x.clone().requires_grad_(True)
        layer_before = leaf * 1.0
        layer_before.register_hook(gradients.append)  # the gradient the layer before gets
        y = pool(layer_before)
        y.backward(torch.linspace(-1, 1, y.numel()).reshape(y.shape))
        outputs.append(y)
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(gradients[0], gradients[1])
    assert outputs[1].is_contiguous() and gradients[1].is_contiguous()  # NCHW, as before
    with torch.no_grad():
        assert torch.equal(reference(x), fast(x))
        nhwc = fast(x.contiguous(memory_format=torch.channels_last))
    assert nhwc.is_contiguous(memory_format=torch.channels_last)  # left to torch, as it was
    assert torch.equal(nhwc, outputs[0])


def _with_torchs_pools(model: nn.Module) -> nn.Module:
    """A copy of ``model`` pooling with ``nn.MaxPool2d`` again."""
    return replace_layers(
        copy.deepcopy(model),
        ChannelsLastMaxPool2d,
        lambda pool: nn.MaxPool2d(pool.kernel_size, pool.stride, pool.padding),
    )


def _train(model: nn.Module, loss_of, steps: int = 3) -> list[torch.Tensor]:
    """The state after ``steps`` AdamW steps on one batch, from the same start."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        loss = loss_of(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return list(model.state_dict().values())


def _same_training(model: nn.Module, loss_of) -> None:
    plain = _with_torchs_pools(model)
    assert not any(isinstance(m, ChannelsLastMaxPool2d) for m in plain.modules())
    fast, reference = _train(model, loss_of), _train(plain, loss_of)
    assert all(torch.equal(a, b) for a, b in zip(fast, reference, strict=True))


def test_the_lpcs_resnet_trunks_pool_fast_and_train_as_with_torchs_pooling():
    model = build_classifier("multiview", patch_size=32, width="lite", pretrained=False)
    assert all(isinstance(trunk.maxpool, ChannelsLastMaxPool2d) for trunk in model.trunks)
    patches = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    labels = torch.tensor([1.0, 0.0] * 4)
    _same_training(
        model,
        lambda m: nn.functional.binary_cross_entropy_with_logits(m(patches), labels),
    )


def test_the_lpgs_trunk_pools_fast_and_trains_as_with_torchs_pooling():
    model = build_model("lite", pretrained=False)
    assert isinstance(model.trunk["pool0"], ChannelsLastMaxPool2d)
    images = torch.rand(2, 9, 64, 64, generator=torch.Generator().manual_seed(2))
    lesion = build_targets(
        np.array([[20.0, 24.0, 36.0, 38.0]]), np.zeros((0, 4)), (16, 16), stride=4, min_overlap=0.7
    )
    targets = {
        name: torch.from_numpy(np.stack([value, value])) for name, value in vars(lesion).items()
    }
    _same_training(model, lambda m: mscn_loss(m(images), targets, m.config)["total"])


def test_replacing_keeps_the_settings_and_the_state_dict():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.MaxPool2d(2, 2, ceil_mode=True)))
    keys = list(net.state_dict())
    fast = with_fast_max_pools(net)
    pool = fast[1][0]
    assert type(pool) is ChannelsLastMaxPool2d and pool.ceil_mode and pool.kernel_size == 2
    assert list(fast.state_dict()) == keys
