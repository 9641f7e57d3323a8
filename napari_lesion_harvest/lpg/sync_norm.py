"""Batch normalisation over the global batch of all ``torchrun`` ranks, on CPU as on GPU.

Under ``DistributedDataParallel`` each rank sees ``batch_size`` images of a
global batch of ``batch_size * world_size``. Plain ``BatchNorm2d`` would
normalise with the statistics of the rank's part only, so training would
differ from one process with the whole batch. :func:`synchronise_batch_norm`
swaps every ``BatchNorm2d`` for a layer whose training statistics (and
running averages) are those of the global batch: ``torch.nn.SyncBatchNorm`` on
CUDA, and :class:`GlobalBatchNorm2d` elsewhere (``SyncBatchNorm`` refuses CPU
tensors). :func:`restore_batch_norm` swaps them back. Parameters and buffers
are moved, not copied, so optimisers and state-dict keys are unaffected.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_lesion_harvest.lpg.layers import replace_layers


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are summed over every rank (gloo or nccl).

    Two differentiable all-reduces per call (sum, then sum of squared
    deviations), so the gradients through the statistics are those of one
    process holding the whole global batch. Outside training, or without a
    process group of several ranks, it is plain ``BatchNorm2d``.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        axes = (0, 2, 3)
        count = torch.tensor([input.numel() // input.shape[1]], dtype=torch.float64)
        dist.all_reduce(count)
        n = float(count.item())
        mean = _summed_over_ranks(input.sum(axes)) / n
        centred = input - mean[None, :, None, None]
        variance = _summed_over_ranks((centred * centred).sum(axes)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(variance.detach() * n / max(n - 1, 1.0), factor)
        output = centred * torch.rsqrt(variance + self.eps)[None, :, None, None]
        if self.affine:
            output = output * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return output


def _summed_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over the ranks (its gradient is summed over the ranks too)."""
    import warnings

    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():  # deprecated in favour of a private, async API
        warnings.filterwarnings("ignore", "torch.distributed.nn", FutureWarning)
        return all_reduce(tensor)


def _swap(module: nn.Module, source: type, target: type) -> nn.Module:
    """``module`` with every layer of exactly type ``source`` replaced by a ``target``
    holding the same parameters and buffers."""

    def moved(layer: nn.Module) -> nn.Module:
        swapped = target(
            layer.num_features,
            eps=layer.eps,
            momentum=layer.momentum,
            affine=layer.affine,
            track_running_stats=layer.track_running_stats,
        )
        swapped.weight, swapped.bias = layer.weight, layer.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(swapped, name, getattr(layer, name))
        swapped.train(layer.training)
        return swapped

    return replace_layers(module, source, moved)


def synchronise_batch_norm(model: nn.Module, device: str) -> nn.Module:
    """Swap ``model``'s ``BatchNorm2d`` layers (in place) for global-batch ones.

    Returns ``model`` (or the swapped layer when ``model`` is one).
    """
    target = nn.SyncBatchNorm if str(device).startswith("cuda") else GlobalBatchNorm2d
    return _swap(model, nn.BatchNorm2d, target)


def restore_batch_norm(model: nn.Module) -> nn.Module:
    """Undo :func:`synchronise_batch_norm`: plain ``BatchNorm2d`` layers again."""
    for source in (nn.SyncBatchNorm, GlobalBatchNorm2d):
        model = _swap(model, source, nn.BatchNorm2d)
    return model
