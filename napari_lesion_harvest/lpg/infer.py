"""Slice-wise inference of the LPG over whole volumes.

Every slice of a volume is a target: its 9-slice stack gives 2D boxes with
scores, decoded from the CenterNet heads (3x3 max-pool peaks, top K) and mapped
back to original pixel coordinates. The heatmap head runs on the whole stride-4
map; the size and offset heads only at the top K peaks, the only cells decoding
reads (:func:`peak_heads`).

Two paths give the same numbers:

``shared=False`` (naive)
    Each target's 9-slice stack goes through the whole network.
``shared=True``
    Neighbouring targets share three-slice images: with 2 mm stacks on 2 mm
    slices, the image ``-4..-2`` of slice ``z`` is the image ``-1..+1`` of slice
    ``z - 3``. Each distinct three-slice image (keyed by its z positions) runs
    through the trunk up to the fusion point once, and its unfused side map
    (denseblock3 + top-down path) once; per target only the centre fusion,
    the centre's denseblock3 + top-down path, the 3-way fusion and the heads run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.geometry import clip_boxes
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpg.config import uses_bfloat16
from napari_lesion_harvest.lpg.preprocess import (
    SliceTransform,
    make_transform,
    prepare_slices,
    stack_positions,
)

#: Decimal places used to decide that two three-slice images are the same.
_POSITION_DECIMALS = 6
#: The shared-feature path runs when each distinct three-slice image serves at least
#: this many (target, position) uses on average; below, the naive path is faster
#: (docs/experiments/lpg-shared-features.md).
MIN_IMAGE_REUSE = 1.2


@dataclass
class SliceDetections:
    """The LPG's 2D boxes on one slice.

    Attributes
    ----------
    z : int
        0-based slice index.
    boxes : ndarray, shape (K, 4)
        ``xyxy`` in original pixel coordinates, best first.
    scores : ndarray, shape (K,)
        Heatmap peak values in (0, 1).
    """

    z: int
    boxes: np.ndarray
    scores: np.ndarray


def heatmap_peaks(heatmap, top_k: int):
    """The heatmap's local maxima (3x3 max-pool), the ``top_k`` best per image.

    Parameters
    ----------
    heatmap : Tensor, shape (B, 1, h, w)
        Heatmap logits.

    Returns
    -------
    scores : Tensor, float32, shape (B, K)
        Peak probabilities, decreasing (``K = min(top_k, h * w)``; cells that are
        not peaks score 0).
    index : Tensor, int64, shape (B, K)
        Flat cell indices ``y * w + x``.
    """
    import torch
    import torch.nn.functional as F

    from napari_lesion_harvest.lpg.losses import heatmap_probability

    heat = heatmap_probability(heatmap.float())
    batch, _, height, width = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    return torch.topk(peaks.reshape(batch, -1), min(top_k, height * width))


def peak_heads(model, previous, centre, following, *, top_k: int) -> dict:
    """The heads of the fused stride-4 map: the heatmap everywhere, the size and offset
    heads only at the heatmap's ``top_k`` peaks.

    Parameters
    ----------
    model : MultiSliceCenterNet
    previous, centre, following : Tensor, shape (B, F, h, w)
        Stride-4 maps of the three three-slice images.

    Returns
    -------
    dict of Tensor
        ``heatmap`` (B, 1, h, w) logits, ``scores`` and ``index`` (B, K) as
        :func:`heatmap_peaks`, ``size`` and ``offset`` (B, 2, K) at the peaks.
    """
    fused = model.fused_map(previous, centre, following)
    heatmap = model.heatmap_head(fused)
    scores, index = heatmap_peaks(heatmap, top_k)
    size, offset = model.box_heads_at(fused, index)
    return {"heatmap": heatmap, "scores": scores, "index": index, "size": size, "offset": offset}


def peak_boxes(outputs: dict, *, stride: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The peaks of :func:`peak_heads` as boxes in canvas pixels.

    Returns
    -------
    list of (boxes, scores)
        Per image: ``boxes`` (K, 4) ``xyxy`` in canvas pixels and ``scores`` (K,),
        sorted by decreasing score.
    """
    import torch

    width = outputs["heatmap"].shape[-1]
    index, scores = outputs["index"], outputs["scores"]
    ys, xs = (index // width).float(), (index % width).float()
    offset, size = outputs["offset"].float(), outputs["size"].float().clamp(min=0)
    cx, cy = xs + offset[:, 0], ys + offset[:, 1]
    half_w, half_h = size[:, 0] / 2, size[:, 1] / 2
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1) * stride
    boxes, scores = boxes.cpu().numpy().astype(np.float64), scores.cpu().numpy()
    return [(boxes[i], scores[i]) for i in range(len(boxes))]


def _triplet_keys(positions: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """The three three-slice images of a 9-slice stack, as position tuples."""
    return tuple(tuple(float(p) for p in positions[3 * i : 3 * i + 3]) for i in range(3))


@dataclass(frozen=True)
class InferenceSettings:
    """Where and how the network runs.

    Attributes
    ----------
    device : torch.device
    bfloat16 : bool
        Autocast convolutions to bfloat16 (CUDA); decoding stays in float32.
    channels_last : bool
        Model weights and inputs in NHWC memory layout.
    """

    device: object
    bfloat16: bool
    channels_last: bool

    @classmethod
    def resolve(cls, model, device=None, precision: str = "auto", channels_last: bool = False):
        """Settings for ``model``: ``precision`` one of
        :data:`~napari_lesion_harvest.lpg.config.PRECISIONS`. NCHW unless
        ``channels_last`` or bfloat16 on the CPU (oneDNN's bfloat16 convolutions want
        NHWC): NCHW scans faster than NHWC on a GPU
        (``docs/experiments/lpg-gpu-scan.md``); on the CPU NHWC is faster but not the
        default in float32 (``docs/experiments/cpu-efficiency.md``)."""
        import torch

        device = torch.device(device or next(model.parameters()).device)
        bfloat16 = uses_bfloat16(precision, device.type)
        return cls(device, bfloat16, channels_last or (bfloat16 and device.type == "cpu"))

    def network_input(self, images):
        """``images`` ``(N, C, H, W)`` on the device, in the model's memory layout."""
        import torch

        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def volume_source(self, volume: CTVolume):
        """What the input pipeline reads: the volume itself on the CPU (read lazily,
        slice by slice), else the whole volume as an int16 tensor on the device, so
        that interpolation, windowing and resampling run there."""
        import torch

        if self.device.type == "cpu":
            return volume
        return torch.from_numpy(volume.array()).to(self.device)


def _pad_rows(value, rows: int):
    """``value`` (Tensor or StemFeatures) with zero rows appended up to ``rows``."""
    import torch.nn.functional as F

    from napari_lesion_harvest.lpg.model import StemFeatures

    if isinstance(value, StemFeatures):
        return StemFeatures(*(_pad_rows(t, rows) for t in vars(value).values()))
    missing = rows - value.shape[0]
    if missing <= 0:
        return value
    return F.pad(value, (0, 0) * (value.dim() - 1) + (0, missing))


def _first_rows(value, rows: int):
    """The first ``rows`` rows of a Tensor, StemFeatures or dict of Tensors."""
    from napari_lesion_harvest.lpg.model import StemFeatures

    if isinstance(value, dict):
        return {name: tensor[:rows] for name, tensor in value.items()}
    if isinstance(value, StemFeatures):
        return value.select(slice(0, rows))
    return value[:rows]


def _rows_of(value):
    """The Tensor whose first axis counts ``value``'s rows (Tensor or StemFeatures)."""
    from napari_lesion_harvest.lpg.model import StemFeatures

    return value.block1 if isinstance(value, StemFeatures) else value


class ScanNetwork:
    """The pieces of the network a scan calls, run eagerly or compiled.

    Compiled (``torch.compile`` with ``backend``), every call's inputs are padded
    with zero rows to a fixed row count (the last chunk of a volume is short) and
    the padding rows' outputs dropped, so each piece compiles once per canvas size
    (and once more for any size once the sizes vary: automatic dynamic shapes).
    Rows are independent in eval mode, so the padding changes no result.

    Parameters
    ----------
    model : MultiSliceCenterNet
    top_k : int
        Peaks per slice.
    batch_size : int
        Targets per call; images and side maps go ``3 * batch_size`` per call.
    backend : str, optional
        ``torch.compile`` backend (``"inductor"``); None runs eagerly.
    """

    def __init__(self, model, *, top_k: int, batch_size: int, backend: str | None = None):
        def naive(stacks):
            return peak_heads(model, *model.image_maps(stacks), top_k=top_k)

        def centre(previous, centre, following, side_previous, side_following):
            fused = model.fuse_centre(
                previous.transition2, centre.transition2, following.transition2
            )
            centre_maps = model.centre_map(centre, fused)
            return peak_heads(model, side_previous, centre_maps, side_following, top_k=top_k)

        self.config = model.config
        self.image_rows = 3 * batch_size
        self.naive = self._fixed_rows(naive, batch_size, backend)
        self.centre = self._fixed_rows(centre, batch_size, backend)
        self.stem = self._fixed_rows(model.stem, self.image_rows, backend)
        self.side_map = self._fixed_rows(model.side_map, self.image_rows, backend)

    @staticmethod
    def _fixed_rows(function, rows: int, backend: str | None):
        if backend is None:
            return function
        import torch

        compiled = torch.compile(function, backend=backend)

        def call(*inputs):
            count = _rows_of(inputs[0]).shape[0]
            return _first_rows(compiled(*(_pad_rows(x, rows) for x in inputs)), count)

        return call


def _naive_heads(network: ScanNetwork, source, targets, positions, transform, settings):
    import torch

    config = network.config
    stacks = [prepare_slices(source, positions[z], transform, config) for z in targets]
    return network.naive(settings.network_input(torch.stack(stacks)))


class _SharedFeatureCache:
    """Stem features and side maps of three-slice images, computed once each."""

    def __init__(self, network: ScanNetwork, source, transform, settings, last_use: dict):
        self.network, self.source, self.transform = network, source, transform
        self.settings, self.last_use = settings, last_use
        self.stems: dict = {}
        self.side_maps: dict = {}

    def ensure_stems(self, keys) -> None:
        import torch

        missing = list(dict.fromkeys(k for k in keys if k not in self.stems))
        config, chunk = self.network.config, self.network.image_rows
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            images = torch.stack(
                [prepare_slices(self.source, key, self.transform, config) for key in part]
            )
            features = self.network.stem(self.settings.network_input(images))
            for row, key in enumerate(part):
                self.stems[key] = features.select(slice(row, row + 1))

    def ensure_side_maps(self, keys) -> None:
        from napari_lesion_harvest.lpg.model import StemFeatures

        missing = list(dict.fromkeys(k for k in keys if k not in self.side_maps))
        chunk = self.network.image_rows
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            maps = self.network.side_map(StemFeatures.cat([self.stems[k] for k in part]))
            for row, key in enumerate(part):
                self.side_maps[key] = maps[row : row + 1]

    def evict(self, done_through: int) -> None:
        for store in (self.stems, self.side_maps):
            for key in [k for k in store if self.last_use[k] <= done_through]:
                del store[key]


def _shared_heads(targets, keys, cache: _SharedFeatureCache) -> dict:
    import torch

    from napari_lesion_harvest.lpg.model import StemFeatures

    triplets = [keys[z] for z in targets]
    cache.ensure_stems([key for triplet in triplets for key in triplet])
    cache.ensure_side_maps([key for triplet in triplets for key in (triplet[0], triplet[2])])
    stems = [StemFeatures.cat([cache.stems[t[i]] for t in triplets]) for i in range(3)]
    side = [torch.cat([cache.side_maps[t[i]] for t in triplets]) for i in (0, 2)]
    return cache.network.centre(*stems, *side)


def predict_volume(
    model,
    volume: CTVolume,
    *,
    shared: bool = True,
    batch_size: int = 8,
    max_side: int | None = None,
    slices: Sequence[int] | None = None,
    device: str | None = None,
    precision: str = "auto",
    channels_last: bool = False,
    top_k: int | None = None,
    compile_backend: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[list[int], dict, SliceTransform]]:
    """Head outputs at the heatmap's peaks for the target slices of a volume, batch by batch.

    Parameters
    ----------
    model : MultiSliceCenterNet
        Used in eval mode (batch-norm running statistics).
    volume : CTVolume
    shared : bool
        Reuse per-image features across targets (same results as the naive path)
        where the stacks share images. When they hardly do (thick slices: at 5 mm
        the 2 mm positions fall between real slices), the naive path runs
        instead: the same work without the bookkeeping.
    batch_size : int
        Targets per forward pass.
    max_side : int, optional
        Longest resampled side (default ``model.config.max_side``).
    slices : sequence of int, optional
        Target slices in increasing order (default: all).
    device : str, optional
        Default: the model's device. Off the CPU the whole volume is copied to the
        device once and the input pipeline runs there.
    precision : {"auto", "float32", "bfloat16"}
        ``"auto"``: bfloat16 autocast on CUDA, float32 elsewhere.
    channels_last : bool
        NHWC weights and inputs. Converts ``model`` in place.
    top_k : int, optional
        Peaks per slice (default ``model.config.top_k``).
    compile_backend : str, optional
        Compile the network's pieces with ``torch.compile`` and this backend
        (``"inductor"``), at fixed batch rows (:class:`ScanNetwork`); None: eager.
    progress : callable, optional
        ``progress(done, total)`` after each batch.

    Yields
    ------
    zs : list of int
        The batch's target slices.
    outputs : dict of Tensor
        As :func:`peak_heads`: ``heatmap`` (B, 1, h, w) logits, the peaks' ``scores``
        and ``index`` (B, K), ``size`` and ``offset`` (B, 2, K) (bfloat16 under
        bfloat16 precision).
    transform : SliceTransform
        Canvas mapping of the volume's slices.
    """
    import torch

    config = model.config
    settings = InferenceSettings.resolve(model, device, precision, channels_last)
    top_k = config.top_k if top_k is None else int(top_k)
    model.eval()
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    targets = list(range(volume.num_slices)) if slices is None else sorted(int(z) for z in slices)
    transform = make_transform(volume.shape[1:], volume.spacing[1:], config, max_side=max_side)
    # Rounded so that equal images computed from different targets get equal keys.
    positions = {
        z: np.round(
            stack_positions(
                z,
                volume.num_slices,
                volume.spacing[0],
                interval_mm=config.slice_interval_mm,
                count=config.num_slices,
            ),
            _POSITION_DECIMALS,
        )
        for z in targets
    }
    keys = {z: _triplet_keys(positions[z]) for z in targets}
    distinct_images = len({key for z in targets for key in keys[z]})
    shared = shared and 3 * len(targets) >= MIN_IMAGE_REUSE * distinct_images
    last_use = {}
    for z in targets:
        for key in keys[z]:
            last_use[key] = z
    source = settings.volume_source(volume)
    network = ScanNetwork(model, top_k=top_k, batch_size=batch_size, backend=compile_backend)
    cache = _SharedFeatureCache(network, source, transform, settings, last_use)
    for start in range(0, len(targets), batch_size):
        batch = targets[start : start + batch_size]
        # Entered per batch, never held across a yield: a suspended generator must
        # not leave inference mode or autocast switched on for its caller.
        with (
            torch.inference_mode(),
            torch.autocast(settings.device.type, torch.bfloat16, enabled=settings.bfloat16),
        ):
            if shared:
                outputs = _shared_heads(batch, keys, cache)
                cache.evict(batch[-1])
            else:
                outputs = _naive_heads(network, source, batch, positions, transform, settings)
        yield batch, outputs, transform
        if progress is not None:
            progress(start + len(batch), len(targets))


def detect_volume(
    model,
    volume: CTVolume,
    *,
    shared: bool = True,
    batch_size: int = 8,
    max_side: int | None = None,
    top_k: int | None = None,
    min_score: float = 0.0,
    slices: Sequence[int] | None = None,
    device: str | None = None,
    precision: str = "auto",
    channels_last: bool = False,
    compile_backend: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[SliceDetections]:
    """2D lesion proposals on every (or every listed) slice of a volume.

    Parameters
    ----------
    top_k : int, optional
        Peaks per slice (default ``model.config.top_k``, 100).
    min_score : float
        Drop boxes scoring below this (e.g. ``t_G = 0.1`` when harvesting).
    Other parameters
        As :func:`predict_volume`.

    Returns
    -------
    list of SliceDetections
        One per target slice, in slice order; boxes in original pixel coordinates,
        clipped to the slice.
    """
    config = model.config
    top_k = config.top_k if top_k is None else int(top_k)
    detections = []
    for zs, outputs, transform in predict_volume(
        model,
        volume,
        shared=shared,
        batch_size=batch_size,
        max_side=max_side,
        slices=slices,
        device=device,
        precision=precision,
        channels_last=channels_last,
        top_k=top_k,
        compile_backend=compile_backend,
        progress=progress,
    ):
        for z, (boxes, scores) in zip(zs, peak_boxes(outputs, stride=config.stride), strict=True):
            keep = scores >= min_score
            original = clip_boxes(transform.boxes_to_original(boxes[keep]), volume.shape[1:])
            detections.append(SliceDetections(z, original, scores[keep].astype(np.float64)))
    return detections


def detect_volumes(
    model,
    volumes: Sequence[CTVolume],
    *,
    progress: Callable[[int, int], None] | None = None,
    **options,
) -> dict[str, list[SliceDetections]] | None:
    """Run :func:`detect_volume` over many volumes, sharded across ``torchrun`` ranks.

    Each rank scans volumes ``rank, rank + world_size, ...``; the detections are
    gathered on rank 0, which returns ``{volume_id: detections}`` in the input
    order. Other ranks return ``None``. In a single process it simply scans all.

    Parameters
    ----------
    progress : callable, optional
        ``progress(volumes_done_on_this_rank, volumes_on_this_rank)``.
    **options
        Passed to :func:`detect_volume`.
    """
    from napari_lesion_harvest.lpg.distributed import current_context, gather_to_main, shard

    context = current_context()
    rank_volumes = shard(list(volumes), context)
    results = {}
    for done, volume in enumerate(rank_volumes, start=1):
        results[volume.volume_id] = detect_volume(model, volume, **options)
        if progress is not None:
            progress(done, len(rank_volumes))
    gathered = gather_to_main(results, context)
    if gathered is None:
        return None
    merged = {k: v for part in gathered for k, v in part.items()}
    return {volume.volume_id: merged[volume.volume_id] for volume in volumes}
