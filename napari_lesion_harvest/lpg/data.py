"""Training samples of the LPG and their conversion to network inputs and targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from napari_lesion_harvest.geometry import as_boxes
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpg.config import LPGConfig
from napari_lesion_harvest.lpg.preprocess import make_transform, prepare_stack, stack_reach
from napari_lesion_harvest.lpg.targets import CenterNetTargets, build_targets

if TYPE_CHECKING:
    import torch


@dataclass
class LPGSample:
    """One training slice: lesions and hard negatives on slice ``z`` of a volume.

    Parameters
    ----------
    volume : CTVolume
    z : int
        0-based slice index.
    positive_boxes : array_like, shape (N, 4)
        Lesion ``xyxy`` boxes in original pixel coordinates (may be empty).
    hard_negative_boxes : array_like, shape (M, 4)
        Hard-negative ``xyxy`` boxes in original pixel coordinates (may be empty).
    background_known : bool
        True (default): every pixel outside the boxes is background. False: the
        slice may show lesions that nobody marked, so only the neighbourhoods
        of its boxes are supervised.
    ignore_boxes : array_like, shape (K, 4)
        ``xyxy`` regions (original pixel coordinates) that may show a known lesion
        whose extent there is unknown: the heatmap is not supervised on them,
        except on the positives' Gaussians (may be empty).
    """

    volume: CTVolume
    z: int
    positive_boxes: np.ndarray
    hard_negative_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    background_known: bool = True
    ignore_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))

    def __post_init__(self):
        where = f"{self.volume.volume_id} slice {self.z}"
        if not 0 <= int(self.z) < self.volume.num_slices:
            raise ValueError(f"{where}: slice outside 0..{self.volume.num_slices - 1}")
        self.z = int(self.z)
        for name in ("positive_boxes", "hard_negative_boxes", "ignore_boxes"):
            raw = np.asarray(getattr(self, name), dtype=np.float64)
            if raw.size and (raw.ndim != 2 or raw.shape[1] != 4):
                raise ValueError(f"{where}: {name} must have shape (N, 4), got {raw.shape}")
            boxes = as_boxes(raw)
            if not np.isfinite(boxes).all() or (boxes[:, 2:] < boxes[:, :2]).any():
                raise ValueError(f"{where}: {name} must be finite xyxy boxes with x1<=x2, y1<=y2")
            setattr(self, name, boxes)


@dataclass(frozen=True)
class SliceAugmentation:
    """Random training augmentation.

    The zoom range and the left-right flip are CenterNet's (Zhou et al.), whose
    pipeline the paper follows; on the phantom (``benchmarks/lpg_phantom_bench.py``,
    docs/experiments/lpg-augmentation.md) each raised the share of held-out lesions the
    LPG proposes.

    Attributes
    ----------
    scale_range : tuple of float
        In-plane zoom factor range.
    max_shift_px : int
        Largest shift (canvas pixels) along x and y.
    interval_range : tuple of float
        Factor range applied to the 2 mm stack interval (z-interval jitter).
    flip_probability : float
        Probability of mirroring the sample left to right (CenterNet's flip).
    box_centred_crop : bool
        Where the zoomed slice is larger than the canvas (training on crops): show
        a window in which a random positive box (else a random hard-negative box,
        else nothing in particular) lies at a random spot, instead of the slice's
        centre, so that a crop rarely misses the lesions.
    edge_probability : float
        Probability of building the stack as if the volume ended ``k`` slices above
        or below the training slice (side and ``k`` uniform, ``k`` from 0 to one
        less than the stack's reach, :func:`~napari_lesion_harvest.lpg.preprocess.stack_reach`):
        the stack then repeats the edge slice exactly as scanning's stacks do at a
        volume's ends (:func:`edge_ends`). 0 (default): never.
    """

    scale_range: tuple[float, float] = (0.6, 1.4)
    max_shift_px: int = 8
    interval_range: tuple[float, float] = (0.8, 1.2)
    flip_probability: float = 0.5
    box_centred_crop: bool = False
    edge_probability: float = 0.0


def make_example(
    sample: LPGSample,
    config: LPGConfig,
    *,
    canvas_shape: tuple[int, int],
    rng: np.random.Generator | None = None,
    augmentation: SliceAugmentation | None = None,
) -> tuple[torch.Tensor, CenterNetTargets]:
    """Network input and targets of one sample on a fixed canvas.

    Parameters
    ----------
    canvas_shape : tuple of int
        ``(H, W)``, multiples of ``config.size_divisor``.
    rng, augmentation : optional
        Both given: random zoom, shift, z-interval jitter and left-right flip, with
        ``augmentation.box_centred_crop`` a window around a random box, and with
        ``augmentation.edge_probability`` a stack clamped at a random near end
        (drawn last, so the other draws do not depend on it).

    Returns
    -------
    stack : Tensor, shape (9, H, W)
    targets : CenterNetTargets
        On the ``(H / stride, W / stride)`` output grid.
    """
    scale, shift, interval, flip = 1.0, (0, 0), config.slice_interval_mm, False
    if rng is not None and augmentation is not None:
        scale = float(rng.uniform(*augmentation.scale_range))
        limit = augmentation.max_shift_px
        shift = tuple(int(s) for s in rng.integers(-limit, limit + 1, 2))
        interval *= float(rng.uniform(*augmentation.interval_range))
        flip = bool(rng.uniform() < augmentation.flip_probability)
    volume = sample.volume

    def transform_shifted(by: tuple[int, int]):
        return make_transform(
            volume.shape[1:],
            volume.spacing[1:],
            config,
            scale=scale,
            shift_xy=by,
            canvas_shape=canvas_shape,
        )

    transform = transform_shifted(shift)
    if augmentation is not None and augmentation.box_centred_crop and rng is not None:
        centred = transform_shifted((0, 0))
        transform = transform_shifted(_box_centred_shift(centred, sample, rng, jitter=shift))
    ends = None
    if augmentation is not None and rng is not None and augmentation.edge_probability > 0:
        if rng.uniform() < augmentation.edge_probability:
            ends = edge_ends(sample.z, volume, config, interval_mm=interval, rng=rng)
    stack = prepare_stack(volume, sample.z, transform, config, interval_mm=interval, ends=ends)
    if flip:
        stack = stack.flip(-1)
    return stack, sample_targets(sample, transform, config, flip=flip)


def sample_targets(
    sample: LPGSample, transform, config: LPGConfig, *, flip: bool = False
) -> CenterNetTargets:
    """The targets of ``sample`` on the canvas of ``transform`` (a
    :class:`~napari_lesion_harvest.lpg.preprocess.SliceTransform`), mirrored left to
    right with ``flip``; boxes whose centre falls off the canvas are left out, ignore
    boxes are kept wherever they reach.

    Returns
    -------
    CenterNetTargets
        On the ``(H / stride, W / stride)`` output grid of the ``(H, W)`` canvas.
    """
    canvas_shape = transform.canvas_shape
    positives, negatives, ignored = (
        transform.boxes_to_network(boxes)
        for boxes in (sample.positive_boxes, sample.hard_negative_boxes, sample.ignore_boxes)
    )
    if flip:
        positives, negatives, ignored = (
            _mirror(b, canvas_shape[1]) for b in (positives, negatives, ignored)
        )
    return build_targets(
        _visible(positives, canvas_shape),
        _visible(negatives, canvas_shape),
        (canvas_shape[0] // config.stride, canvas_shape[1] // config.stride),
        stride=config.stride,
        min_overlap=config.min_overlap,
        background_known=sample.background_known,
        ignore_boxes=ignored,
    )


def edge_ends(
    z: int, volume: CTVolume, config: LPGConfig, *, interval_mm: float, rng: np.random.Generator
) -> tuple[int, int]:
    """Slices ``(first, last)`` of a volume cut ``k`` slices above or below ``z``.

    The side is drawn with even odds and ``k`` uniformly from ``0`` to one less
    than the stack's reach (:func:`~napari_lesion_harvest.lpg.preprocess.stack_reach`),
    so that the cut always clamps the stack of ``z``; a real end nearer than the cut
    stays where it is.

    Returns
    -------
    tuple of int
        For :func:`~napari_lesion_harvest.lpg.preprocess.prepare_stack`'s ``ends``.
    """
    reach = stack_reach(volume.spacing[0], interval_mm=interval_mm, count=config.num_slices)
    k = int(rng.integers(0, reach))
    last = volume.num_slices - 1
    if rng.uniform() < 0.5:
        return max(0, z - k), last
    return 0, min(last, z + k)


def _box_centred_shift(
    centred, sample: LPGSample, rng: np.random.Generator, *, jitter: tuple[int, int]
) -> tuple[int, int]:
    """Shift ``(x, y)`` that moves a random box of ``sample`` to a random spot of the
    canvas of ``centred`` (the unshifted transform), or, for a slice without boxes,
    a random window of the slice onto the canvas. Along an axis on which the
    resampled slice fits the canvas, the augmentation's own ``jitter``."""
    boxes = sample.positive_boxes if len(sample.positive_boxes) else sample.hard_negative_boxes
    canvas = np.array(centred.canvas_shape[::-1], dtype=np.float64)  # (W, H)
    resized = np.array(centred.resized_shape[::-1], dtype=np.float64)
    offset = np.array([centred.offset_x, centred.offset_y], dtype=np.float64)
    if len(boxes):
        box = centred.boxes_to_network(boxes[rng.integers(len(boxes))])[0]
        centre = (box[:2] + box[2:]) / 2
        shift = rng.uniform(canvas / 8, canvas * 7 / 8) - centre
    else:  # the window's origin in the resampled slice, anywhere it fits
        shift = -rng.uniform(0, np.maximum(resized - canvas, 0)) - offset
    shift = np.where(resized <= canvas, jitter, np.round(shift))
    return int(shift[0]), int(shift[1])


def _mirror(boxes: np.ndarray, width: int) -> np.ndarray:
    """``xyxy`` boxes (pixel-centre coordinates) mirrored on a canvas ``width`` pixels wide."""
    mirrored = boxes.copy()
    mirrored[:, [0, 2]] = width - 1 - boxes[:, [2, 0]]
    return mirrored


def _visible(boxes: np.ndarray, canvas_shape: tuple[int, int]) -> np.ndarray:
    """Boxes whose centre lies on the canvas (a crop may cut others away)."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = (
        (centres >= 0).all(1)
        & (centres[:, 0] < canvas_shape[1])
        & (centres[:, 1] < canvas_shape[0])
    )
    return boxes[inside]


def collate(examples: list[tuple[torch.Tensor, CenterNetTargets]]):
    """Stack examples into a batch.

    Returns
    -------
    inputs : Tensor, shape (B, 9, H, W)
    targets : dict of Tensor
        ``heatmap`` (B, 1, h, w), ``indices`` (B, K), ``size`` / ``offset`` (B, K, 2),
        ``mask`` (B, K), ``heatmap_weight`` (B, 1, h, w).
    """
    import torch

    inputs = torch.stack([stack for stack, _ in examples])
    targets = {
        name: torch.from_numpy(np.stack([getattr(t, name) for _, t in examples]))
        for name in ("heatmap", "indices", "size", "offset", "mask", "heatmap_weight")
    }
    return inputs, targets
