"""CenterNet losses with the hard negative suppression loss (HNSL).

HNSL needs no loss of its own: the penalty-reduced focal loss treats every
pixel whose target is below 1 as a negative weighted by ``(1 - Y)^beta``, and
the HNSL heatmap (:func:`~napari_lesion_harvest.lpg.targets.hnsl_heatmap`)
writes hard negatives as negative values, so their peaks weigh ``2^beta``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from napari_lesion_harvest.lpg.config import LPGConfig

#: ``count(local_count) -> count over the global batch``; the identity in one process.
CountReducer = Callable[[torch.Tensor], torch.Tensor]


def _local(count: torch.Tensor) -> torch.Tensor:
    return count


#: Sigmoid outputs are clamped to [EPS, 1 - EPS] (CenterNet).
EPS = 1e-4


def heatmap_probability(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid of heatmap logits clamped to ``[1e-4, 1 - 1e-4]``."""
    return torch.sigmoid(logits.float()).clamp(EPS, 1 - EPS)


def focal_loss_map(
    logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    """Per-pixel penalty-reduced focal loss (not normalised).

    Parameters
    ----------
    logits, target : Tensor, shape (B, 1, h, w)
        ``target`` is 1 at object centres, in (-1, 1) elsewhere (HNSL allows < 0).

    Returns
    -------
    Tensor, shape (B, 1, h, w)
        ``-(1 - p)^alpha log p`` at ``target == 1``;
        ``-(1 - Y)^beta p^alpha log(1 - p)`` elsewhere.
    """
    p = heatmap_probability(logits)
    target = target.float()
    positive = target.eq(1)
    positive_loss = -torch.log(p) * (1 - p) ** alpha
    negative_loss = -torch.log(1 - p) * p**alpha * (1 - target) ** beta
    return torch.where(positive, positive_loss, negative_loss)


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 2.0,
    beta: float = 4.0,
    count: CountReducer = _local,
    world_size: int = 1,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss summed over the batch and divided by the number of objects (at least 1).

    ``weight`` (shape of ``target``; 1 supervised, 0 ignored) masks the pixels
    whose target is unknown; an object is a peak (``target == 1``) with a weight,
    so an ignored peak neither adds loss nor counts.

    Under ``DistributedDataParallel`` (which averages the ranks' gradients), pass
    ``count`` summing a count over the ranks and ``world_size``: the rank's sum is
    then divided by the global number of objects over ``world_size``, so the
    averaged gradient is that of one process holding the global batch.
    """
    peaks = target.eq(1)
    losses = focal_loss_map(logits, target, alpha=alpha, beta=beta)
    if weight is not None:
        peaks = peaks & (weight > 0)
        losses = losses * weight.float()
    num_objects = count(peaks.sum()).clamp(min=1) / world_size
    return losses.sum() / num_objects


def regression_l1(
    prediction: torch.Tensor,
    indices: torch.Tensor,
    mask: torch.Tensor,
    target: torch.Tensor,
    *,
    count: CountReducer = _local,
    world_size: int = 1,
) -> torch.Tensor:
    """Mean L1 error of a 2-channel head at object centres (``count``, ``world_size``:
    as in :func:`focal_loss`).

    Parameters
    ----------
    prediction : Tensor, shape (B, 2, h, w)
    indices : Tensor, shape (B, K), int64
        Flat centre index ``y * w + x``.
    mask : Tensor, shape (B, K)
        1 for real objects.
    target : Tensor, shape (B, K, 2)
    """
    batch, channels = prediction.shape[:2]
    flat = prediction.float().reshape(batch, channels, -1).transpose(1, 2)
    gathered = flat.gather(1, indices[..., None].expand(-1, -1, channels))
    weight = mask[..., None].float()
    error = (gathered - target.float()).abs() * weight
    return error.sum() / ((count(weight.sum()) * channels + 1e-4) / world_size)


def mscn_loss(
    outputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    config: LPGConfig,
    *,
    count: CountReducer = _local,
    world_size: int = 1,
) -> dict[str, torch.Tensor]:
    """Heatmap focal loss (HNSL targets) + 0.1 L1 size + 1 L1 offset.

    Parameters
    ----------
    outputs : dict
        Model outputs (``heatmap``, ``size``, ``offset``).
    targets : dict
        Batched :class:`~napari_lesion_harvest.lpg.targets.CenterNetTargets` fields
        as tensors.
    count, world_size
        Normalise by the global batch's objects under ``DistributedDataParallel``
        (see :func:`focal_loss`); the defaults normalise by this batch's.

    Returns
    -------
    dict of Tensor
        ``total``, ``heatmap``, ``size``, ``offset``.
    """
    heatmap = focal_loss(
        outputs["heatmap"],
        targets["heatmap"],
        alpha=config.focal_alpha,
        beta=config.focal_beta,
        count=count,
        world_size=world_size,
        weight=targets.get("heatmap_weight"),
    )
    shared = {"count": count, "world_size": world_size}
    size = regression_l1(
        outputs["size"], targets["indices"], targets["mask"], targets["size"], **shared
    )
    offset = regression_l1(
        outputs["offset"], targets["indices"], targets["mask"], targets["offset"], **shared
    )
    total = heatmap + config.size_weight * size + config.offset_weight * offset
    return {"total": total, "heatmap": heatmap, "size": size, "offset": offset}
