"""Max pooling that runs torch's fast CPU kernel on NCHW tensors, with equal results.

On the CPU, torch's max pooling of an NCHW tensor loops over the channels one plane at
a time; its kernel for NHWC (channels-last) tensors vectorises over the channels and
is several times faster, forward and backward (``benchmarks/cpu_roofline_bench.py``).
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
    for name, child in list(module.named_children()):
        if type(child) is nn.MaxPool2d:
            fast = ChannelsLastMaxPool2d(
                child.kernel_size,
                stride=child.stride,
                padding=child.padding,
                dilation=child.dilation,
                return_indices=child.return_indices,
                ceil_mode=child.ceil_mode,
            )
            setattr(module, name, fast)
        else:
            with_fast_max_pools(child)
    return module


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
