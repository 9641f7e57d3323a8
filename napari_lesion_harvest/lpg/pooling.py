"""Max pooling that runs torch's fast CPU kernel on NCHW tensors, with equal results.

On the CPU, torch's max pooling of an NCHW tensor loops over the channels one plane at
a time; its kernel for NHWC (channels-last) tensors vectorises over the channels. At
the networks' shapes it is several times faster when they infer, and the scan gains
about a tenth; their training steps take as long as before
(docs/experiments/cpu-efficiency.md).
A maximum is exact in any order, and the backward pass adds each window's gradient to
its input position in the same order, so pooling an NCHW tensor through NHWC gives
the same outputs and gradients to the bit. :class:`ChannelsLastMaxPool2d` does that
for NCHW tensors on the CPU and leaves every other tensor to ``nn.MaxPool2d``; the
trunks of both networks (the LPG's DenseNet stem, the LPC's ResNets) pool with it.

This module imports torch: import it from the model modules only.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_lesion_harvest.lpg.layers import replace_layers


class ChannelsLastMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that pools NCHW CPU tensors in NHWC; same outputs and gradients.

    Input and output ``(N, C, H, W)``; the output keeps the input's memory format.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or _is_channels_last(x):
            return super().forward(x)
        return super().forward(_ChannelsLast.apply(x)).contiguous()


def with_fast_max_pools(module: nn.Module) -> nn.Module:
    """``module`` with each ``nn.MaxPool2d`` in it replaced by a :class:`ChannelsLastMaxPool2d`.

    The replacements have the same settings and no parameters, so state dicts are
    unchanged. Returns ``module`` (changed in place).
    """

    def fast(pool: nn.MaxPool2d) -> ChannelsLastMaxPool2d:
        return ChannelsLastMaxPool2d(
            pool.kernel_size,
            stride=pool.stride,
            padding=pool.padding,
            dilation=pool.dilation,
            return_indices=pool.return_indices,
            ceil_mode=pool.ceil_mode,
        )

    return replace_layers(module, nn.MaxPool2d, fast)


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class _ChannelsLast(torch.autograd.Function):
    """An NHWC copy of an NCHW tensor whose gradient returns in NCHW.

    The gradient's layout decides how the layers before it reduce it (batch norm's
    sums), so it goes back in the layout the forward pass had.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()
