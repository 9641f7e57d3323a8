"""Training-time augmentation of LPC patches: 3D-consistent flips, rotation, jitter.

Flips along z, y, x and the exchange of x and y (with flips: every 90 degree
rotation about z) are applied to all views of a proposal consistently, as if the
volume had been flipped: flipping x flips the axial and coronal columns,
swapping x and y transposes the axial view and exchanges coronal and sagittal.
On top, each proposal gets a small rotation about z (axial view, cube), a
translation of its centre applied consistently to all views, and an intensity
jitter (offset and gain). What the rotation and translation bring in at the
patch border follows the spec's ``outside``: air, or the patch mirrored.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from napari_lesion_harvest.lpc.options import PatchAugmentation
from napari_lesion_harvest.lpc.patches import AIR_HU, PatchSpec, lpc_window

# Volume axes that each view's rows and columns follow (see lpc.patches).
_VIEW_ROWS_COLS = {"axial": ("y", "x"), "coronal": ("z", "x"), "sagittal": ("z", "y")}
# Dims of a cube batch (N, z, y, x).
_CUBE_DIMS = {"z": 1, "y": 2, "x": 3}
_AXIS_INDEX = {"z": 0, "y": 1, "x": 2}


def _flip(batch, mask, dim: int) -> None:
    """Flip ``batch[mask]`` along ``dim`` in place (``batch`` may be a view of a larger tensor)."""
    if mask.any():
        batch[mask] = batch[mask].flip(dim)


def _swap_xy(batch, mask, spec: PatchSpec):
    """Exchange x and y for the proposals in ``mask`` (a reflection about the diagonal)."""
    if not mask.any():
        return
    if spec.kind == "cube":
        batch[mask] = batch[mask].transpose(2, 3)
        return
    chosen = batch[mask]
    views = list(spec.views)
    out = chosen.clone()
    for i, view in enumerate(views):
        if view == "axial":
            out[:, i] = chosen[:, i].transpose(-1, -2)
        else:
            partner = "sagittal" if view == "coronal" else "coronal"
            out[:, i] = chosen[:, views.index(partner)]
    batch[mask] = out


def _spatial_jitter(batch, spec: PatchSpec, aug: PatchAugmentation, generator):
    """Rotation about z and a consistent translation, resampled with air or the
    mirrored patch outside (``spec.outside``)."""
    n = batch.shape[0]
    device = batch.device
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(aug.max_rotation_deg)
    shift = (torch.rand(n, 3, generator=generator) * 2 - 1) * aug.max_shift  # (dz, dy, dx)
    cos, sin = angle.cos(), angle.sin()
    air = float(lpc_window(AIR_HU, spec.hu_window))
    padding = "reflection" if spec.outside == "mirror" else "zeros"  # zeros: air, below
    if spec.kind == "cube":
        theta = torch.zeros(n, 3, 4)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        theta[:, 2, 2] = 1
        theta[:, :, 3] = shift.flip(1)  # affine_grid's last axis order is (x, y, z)
        grid = F.affine_grid(theta.to(device), (n, 1, *batch.shape[1:]), align_corners=False)
        moved = F.grid_sample(
            batch.unsqueeze(1) - air, grid, padding_mode=padding, align_corners=False
        )
        return moved.squeeze(1) + air
    out = torch.empty_like(batch)
    for i, view in enumerate(spec.views):
        rows_axis, cols_axis = _VIEW_ROWS_COLS[view]
        theta = torch.zeros(n, 2, 3)
        if view == "axial":
            theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        else:
            theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, 0, 2] = shift[:, _AXIS_INDEX[cols_axis]]
        theta[:, 1, 2] = shift[:, _AXIS_INDEX[rows_axis]]
        view_batch = batch[:, i : i + 1]
        grid = F.affine_grid(theta.to(device), view_batch.shape, align_corners=False)
        out[:, i : i + 1] = (
            F.grid_sample(view_batch - air, grid, padding_mode=padding, align_corners=False) + air
        )
    return out


def augment_patches(
    batch: torch.Tensor,
    spec: PatchSpec,
    *,
    augmentation: PatchAugmentation | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Randomly transformed copy of a batch of windowed patches.

    Parameters
    ----------
    batch : Tensor, float, shape (N, V, S, S) for views or (N, S, S, S) for a cube
        Windowed patches laid out as ``spec`` describes.
    spec : PatchSpec
    augmentation : PatchAugmentation, optional
        Default: ``PatchAugmentation()``.
    generator : torch.Generator, optional
        CPU generator for repeatable draws.

    Returns
    -------
    Tensor, same shape and device as ``batch``
    """
    augmentation = augmentation or PatchAugmentation()
    batch = batch.clone()
    n = batch.shape[0]
    if augmentation.flips:
        coins = torch.rand(n, 4, generator=generator) < 0.5
        coins = coins.to(batch.device)
        for axis in "zyx":
            mask = coins[:, _AXIS_INDEX[axis]]
            if spec.kind == "cube":
                _flip(batch, mask, _CUBE_DIMS[axis])
                continue
            for i, view in enumerate(spec.views):
                rows_cols = _VIEW_ROWS_COLS[view]
                if axis in rows_cols:
                    _flip(batch[:, i], mask, -2 + rows_cols.index(axis))
        exchange_ok = spec.kind == "cube" or (
            ("coronal" in spec.views) == ("sagittal" in spec.views)
        )
        if exchange_ok:
            _swap_xy(batch, coins[:, 3], spec)
    if augmentation.max_rotation_deg > 0 or augmentation.max_shift > 0:
        batch = _spatial_jitter(batch, spec, augmentation, generator)
    gain = 1 + torch.randn(n, generator=generator) * augmentation.intensity_gain
    offset = torch.randn(n, generator=generator) * augmentation.intensity_offset
    shape = (n,) + (1,) * (batch.ndim - 1)
    return batch * gain.to(batch.device).view(shape) + offset.to(batch.device).view(shape)
