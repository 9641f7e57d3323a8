"""Input pipeline of the lesion proposal generator.

For a target slice ``z`` of a :class:`~napari_lesion_harvest.io.volume.CTVolume`:

1. :func:`stack_positions`: 9 z positions at a fixed physical interval (2 mm)
   around ``z``, in (fractional) slice indices, clamped to the volume (or, for
   training's edge stacks, to a part of it ending near ``z``).
2. :func:`interpolate_slices`: linear interpolation between the two real
   slices around each position, shape ``(9, Y, X)`` in HU.
3. :func:`window_hu`: HU window [-1024, 3071] -> [0, 255], minus the mean 50.
4. :class:`SliceTransform` / :func:`resample_slices`: in-plane resampling to
   0.8 mm (longest side at most ``max_side``), placed on a canvas padded to a
   multiple of 16. The transform maps boxes both ways between original pixel
   coordinates and network-input pixel coordinates.

Pixel coordinates follow :mod:`napari_lesion_harvest.geometry`: ``(x, y)`` is the
centre of element ``[y, x]``. Resizing is centre-aligned (``align_corners=False``),
so ``x_net = (x + 0.5) * scale_x - 0.5 + offset_x``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_lesion_harvest.geometry import as_boxes
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpg.config import LPGConfig

if TYPE_CHECKING:
    import torch


def stack_positions(
    z: float,
    num_volume_slices: int,
    slice_spacing_mm: float,
    *,
    interval_mm: float,
    count: int,
    ends: tuple[int, int] | None = None,
) -> np.ndarray:
    """Fractional slice indices of a stack centred on ``z`` at a physical interval.

    Scanning and training both take their stacks from here, so a stack clamped at
    a volume's end is built one way only.

    Parameters
    ----------
    z : float
        Target slice index (0-based).
    num_volume_slices : int
        Number of slices ``Z`` of the volume.
    slice_spacing_mm : float
        Slice interval of the volume (``sz``).
    interval_mm : float
        Wanted interval between the stack's slices (2 mm for MSCN).
    count : int
        Number of slices (odd; 9 for MSCN).
    ends : (int, int), optional
        ``(first, last)``: clamp as if the volume held only slices ``first..last``
        (training's edge augmentation); the stack of slice ``z`` is then that of
        slice ``z - first`` of the cut volume, shifted by ``first``. Default
        ``(0, Z - 1)``.

    Returns
    -------
    ndarray, shape (count,), float64
        ``z + k * interval_mm / slice_spacing_mm`` for ``k = -(count//2) .. count//2``,
        clamped to ``[first, last]`` (the edge slices repeat).
    """
    first, last = (0, num_volume_slices - 1) if ends is None else ends
    if ends is not None and not 0 <= first <= z <= last <= num_volume_slices - 1:
        raise ValueError(
            f"stack ends {first}..{last} must hold slice {z} within 0..{num_volume_slices - 1}"
        )
    half = count // 2
    steps = np.arange(-half, half + 1, dtype=np.float64) * (interval_mm / slice_spacing_mm)
    return np.clip(z + steps, float(first), float(last))


def stack_reach(slice_spacing_mm: float, *, interval_mm: float, count: int) -> int:
    """How many slices beyond its target a stack reaches on each side: a volume
    ending fewer slices than this above (or below) the target clamps its stack.

    Returns
    -------
    int
        ``ceil((count // 2) * interval_mm / slice_spacing_mm)``, at least 1.
    """
    return max(1, int(np.ceil((count // 2) * interval_mm / slice_spacing_mm - 1e-9)))


def slice_brackets(positions, volume_id: str, num_slices: int):
    """The two real slices around each fractional position and the weight of the upper one.

    Parameters
    ----------
    positions : array_like, shape (K,)
        Fractional slice indices within ``[0, Z - 1]``.
    volume_id : str
        Named in the error.
    num_slices : int
        ``Z``.

    Returns
    -------
    lower, upper : ndarray, shape (K,), int64
        ``floor(position)`` and the next slice (``lower`` itself on a real slice).
    weight : ndarray, shape (K,), float32
        ``position - lower``.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.size and (positions.min() < 0 or positions.max() > num_slices - 1):
        raise ValueError(f"{volume_id}: slice positions outside 0..{num_slices - 1}")
    lower = np.floor(positions).astype(np.int64)
    weight = (positions - lower).astype(np.float32)
    return lower, np.where(weight > 0, lower + 1, lower), weight


def interpolate_slices(volume: CTVolume | torch.Tensor, positions):
    """Linearly interpolated axial slices at fractional positions.

    Parameters
    ----------
    volume : CTVolume or torch.Tensor
        A lazily read volume, or the whole volume in HU as a tensor of shape
        ``(Z, Y, X)`` on any device (GPU inference keeps it there).
    positions : array_like, shape (K,)
        Fractional slice indices within ``[0, Z - 1]``.

    Returns
    -------
    ndarray or torch.Tensor, shape (K, Y, X), float32
        HU values (a tensor on the volume's device for a tensor volume); a position
        on a real slice returns that slice exactly.
    """
    volume_id = getattr(volume, "volume_id", "volume tensor")
    lower, upper, weight = slice_brackets(positions, volume_id, volume.shape[0])
    if isinstance(volume, CTVolume):
        below, above = (volume.slices(z).astype(np.float32) for z in (lower, upper))
    else:
        import torch

        device = volume.device
        below, above = (volume[torch.as_tensor(z, device=device)].float() for z in (lower, upper))
        weight = torch.as_tensor(weight, device=device)
    return below + weight[:, None, None] * (above - below)


def checked_hu_window(value, what: str) -> tuple[float, float]:
    """``value`` as a ``(low, high)`` HU window of floats (JSON gives a list).

    Raises
    ------
    ValueError
        Not two numbers with low < high; the message starts with ``what``.
    """
    window = tuple(float(v) for v in value)
    if len(window) != 2 or not window[0] < window[1]:
        raise ValueError(f"{what} must be [low, high] HU with low < high, got {value!r}")
    return window


def window_hu(hu, *, window: tuple[float, float], mean: float):
    """Map HU to network intensities: clip to ``window``, scale to [0, 255], subtract ``mean``.

    Parameters
    ----------
    hu : array_like or torch.Tensor
        Any shape.

    Returns
    -------
    ndarray or torch.Tensor, float32, same shape
        A tensor (on the same device) for a tensor input.
    """
    low, high = window
    if hasattr(hu, "clamp"):
        clipped = hu.float().clamp(low, high)
    else:
        clipped = np.clip(np.asarray(hu, dtype=np.float32), low, high)
    return (clipped - low) * (255.0 / (high - low)) - np.float32(mean)


@dataclass(frozen=True)
class SliceTransform:
    """In-plane mapping from an original slice to the network input canvas.

    ``x_net = (x + 0.5) * scale_x - 0.5 + offset_x`` and the same for ``y``.

    Attributes
    ----------
    input_shape : tuple of int
        ``(Y, X)`` of the original slice.
    resized_shape : tuple of int
        ``(h, w)`` of the resampled slice.
    canvas_shape : tuple of int
        ``(H, W)`` of the network input (multiple of the size divisor).
    offset_x, offset_y : int
        Where the resampled slice's element ``[0, 0]`` lands on the canvas.
    """

    input_shape: tuple[int, int]
    resized_shape: tuple[int, int]
    canvas_shape: tuple[int, int]
    offset_x: int = 0
    offset_y: int = 0

    @property
    def scale_x(self) -> float:
        """Resampled pixels per original pixel along x."""
        return self.resized_shape[1] / self.input_shape[1]

    @property
    def scale_y(self) -> float:
        """Resampled pixels per original pixel along y."""
        return self.resized_shape[0] / self.input_shape[0]

    def _scale_offset(self) -> tuple[np.ndarray, np.ndarray]:
        scale = np.array([self.scale_x, self.scale_y] * 2)
        offset = np.array([self.offset_x, self.offset_y] * 2, dtype=np.float64)
        return scale, offset

    def boxes_to_network(self, boxes) -> np.ndarray:
        """Map ``xyxy`` boxes, shape ``(N, 4)``, from original to canvas pixel coordinates."""
        scale, offset = self._scale_offset()
        return (as_boxes(boxes) + 0.5) * scale - 0.5 + offset

    def boxes_to_original(self, boxes) -> np.ndarray:
        """Map ``xyxy`` boxes, shape ``(N, 4)``, from canvas to original pixel coordinates."""
        scale, offset = self._scale_offset()
        return (as_boxes(boxes) - offset + 0.5) / scale - 0.5


def _round_up(value: int, divisor: int) -> int:
    return -(-value // divisor) * divisor


def make_transform(
    image_shape_yx,
    pixel_spacing_yx,
    config: LPGConfig,
    *,
    max_side: int | None = None,
    scale: float = 1.0,
    shift_xy: tuple[int, int] = (0, 0),
    canvas_shape: tuple[int, int] | None = None,
) -> SliceTransform:
    """The transform that resamples a slice to ``config.pixel_spacing_mm``.

    Parameters
    ----------
    image_shape_yx : tuple of int
        ``(Y, X)`` of the original slice.
    pixel_spacing_yx : tuple of float
        ``(sy, sx)`` in mm.
    config : LPGConfig
    max_side : int, optional
        Longest side after resampling (default ``config.max_side``); the
        spacing-normalised size is shrunk to fit.
    scale : float
        Extra zoom (training augmentation), applied after the ``max_side`` limit.
    shift_xy : tuple of int
        Extra integer shift (training augmentation) in canvas pixels.
    canvas_shape : tuple of int, optional
        Fixed ``(H, W)`` canvas (training batches); the resampled slice is centred
        on it, then shifted, and cropped where it does not fit. Default: the
        resampled size rounded up to ``config.size_divisor``, slice at ``[0, 0]``.
    """
    max_side = config.max_side if max_side is None else int(max_side)
    size_y, size_x = (int(s) for s in image_shape_yx)
    spacing_y, spacing_x = (float(s) for s in pixel_spacing_yx)
    height = size_y * spacing_y / config.pixel_spacing_mm
    width = size_x * spacing_x / config.pixel_spacing_mm
    fit = min(1.0, max_side / max(height, width))
    resized = (
        max(1, int(round(height * fit * scale))),
        max(1, int(round(width * fit * scale))),
    )
    if canvas_shape is None:
        canvas = (
            _round_up(resized[0], config.size_divisor),
            _round_up(resized[1], config.size_divisor),
        )
        offset_y, offset_x = 0, 0
    else:
        canvas = (int(canvas_shape[0]), int(canvas_shape[1]))
        offset_y = (canvas[0] - resized[0]) // 2
        offset_x = (canvas[1] - resized[1]) // 2
    return SliceTransform(
        input_shape=(size_y, size_x),
        resized_shape=resized,
        canvas_shape=canvas,
        offset_x=offset_x + int(shift_xy[0]),
        offset_y=offset_y + int(shift_xy[1]),
    )


def resample_slices(images, transform: SliceTransform, *, fill_value: float) -> torch.Tensor:
    """Resample windowed slices onto the network canvas.

    Parameters
    ----------
    images : ndarray or torch.Tensor, shape (K, Y, X), float32
        Windowed slices (see :func:`window_hu`); a tensor stays on its device.
    transform : SliceTransform
    fill_value : float
        Canvas value outside the slice (the window's air value).

    Returns
    -------
    torch.Tensor, shape (K, H, W), float32
        On the input tensor's device (CPU for an array).
    """
    import torch
    import torch.nn.functional as F

    if not isinstance(images, torch.Tensor):
        images = np.ascontiguousarray(images)
    tensor = torch.as_tensor(images, dtype=torch.float32)
    if tuple(tensor.shape[1:]) != tuple(transform.input_shape):
        raise ValueError(
            f"slices of shape {tuple(tensor.shape[1:])} do not match the transform's "
            f"input shape {transform.input_shape}"
        )
    if tuple(transform.resized_shape) != tuple(transform.input_shape):
        downsampling = transform.scale_x < 1 or transform.scale_y < 1
        tensor = F.interpolate(
            tensor[None],
            size=transform.resized_shape,
            mode="bilinear",
            align_corners=False,
            antialias=downsampling,
        )[0]
    canvas = torch.full(
        (tensor.shape[0], *transform.canvas_shape), float(fill_value), device=tensor.device
    )
    (h, w), (canvas_h, canvas_w) = transform.resized_shape, transform.canvas_shape
    y0, x0 = max(0, transform.offset_y), max(0, transform.offset_x)
    y1 = min(canvas_h, transform.offset_y + h)
    x1 = min(canvas_w, transform.offset_x + w)
    if y1 > y0 and x1 > x0:
        canvas[:, y0:y1, x0:x1] = tensor[
            :,
            y0 - transform.offset_y : y1 - transform.offset_y,
            x0 - transform.offset_x : x1 - transform.offset_x,
        ]
    return canvas


def air_value(config: LPGConfig) -> float:
    """Network intensity of the lowest HU of the window (canvas padding)."""
    return float(window_hu(config.hu_window[0], window=config.hu_window, mean=config.pixel_mean))


def prepare_slices(
    volume: CTVolume | torch.Tensor, positions, transform: SliceTransform, config: LPGConfig
) -> torch.Tensor:
    """Interpolate, window and resample slices at fractional ``positions``.

    Parameters
    ----------
    volume : CTVolume or torch.Tensor
        As :func:`interpolate_slices`: a tensor ``(Z, Y, X)`` in HU keeps the
        whole pipeline on its device.

    Returns
    -------
    torch.Tensor, shape (len(positions), H, W), float32
        On the volume tensor's device (CPU for a CTVolume).
    """
    hu = interpolate_slices(volume, positions)
    windowed = window_hu(hu, window=config.hu_window, mean=config.pixel_mean)
    return resample_slices(windowed, transform, fill_value=air_value(config))


def prepare_stack(
    volume: CTVolume,
    z: int,
    transform: SliceTransform,
    config: LPGConfig,
    *,
    interval_mm: float | None = None,
    ends: tuple[int, int] | None = None,
) -> torch.Tensor:
    """The 9-slice network input of target slice ``z``.

    Parameters
    ----------
    interval_mm : float, optional
        Stack interval (default ``config.slice_interval_mm``; training jitters it).
    ends : (int, int), optional
        Clamp as if the volume held only these slices (see :func:`stack_positions`).

    Returns
    -------
    torch.Tensor, shape (9, H, W), float32
    """
    positions = stack_positions(
        z,
        volume.num_slices,
        volume.spacing[0],
        interval_mm=config.slice_interval_mm if interval_mm is None else interval_mm,
        count=config.num_slices,
        ends=ends,
    )
    return prepare_slices(volume, positions, transform, config)
