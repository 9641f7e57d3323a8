"""CenterNet training targets with hard-negative heatmaps (HNSL, Eq. 3 of the paper).

Boxes are ``xyxy`` in network-canvas pixel coordinates; the heads work on the
stride-``s`` output grid, where a canvas coordinate ``x`` is ``x / s``.

The HNSL heatmap is ``Y = -Y_n`` where ``Y_n > 0``, else ``Y_p``: positives'
Gaussians ``Y_p`` peak at +1, hard negatives' Gaussians ``Y_n`` are written as
negative values, so the focal loss weight ``(1 - Y)^beta`` of a hard-negative
peak is ``2^4 = 16`` times that of plain background.

A slice whose background is not known (a fine-tuning slice of an incompletely
marked volume that holds only hard negatives, see
:class:`~napari_lesion_harvest.lpg.data.LPGSample`) supervises the heatmap only
on its boxes and their Gaussians: ``heatmap_weight`` is 0 elsewhere.

Ignore boxes (regions that may show a known lesion whose extent there is not
known) get ``heatmap_weight`` 0 on every cell they cover, except where a
positive's Gaussian is (``Y_p > 0`` wins): no background and no hard-negative
Gaussian is taught there. Positive peaks therefore always keep weight 1, and
the focal loss's count of objects (the peaks with a weight) stays the number of
positives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.geometry import as_boxes

#: Objects per image kept for the size/offset targets (padded with mask 0).
MAX_OBJECTS = 64


def gaussian_radius(height: float, width: float, *, min_overlap: float = 0.7) -> float:
    """CenterNet's Gaussian radius for an object of ``height x width`` cells.

    The smallest of the three corner-displacement radii for which a box moved
    by that radius still overlaps the true box by ``min_overlap`` (CenterNet's
    rule, as used by its reference code).
    """
    h, w, o = float(height), float(width), float(min_overlap)
    b1, c1 = h + w, w * h * (1 - o) / (1 + o)
    r1 = (b1 + np.sqrt(b1**2 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - o) * w * h
    r2 = (b2 + np.sqrt(b2**2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * o, -2 * o * (h + w), (o - 1) * w * h
    r3 = (b3 + np.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return float(min(r1, r2, r3))


def draw_gaussian(heatmap: np.ndarray, centre_xy: tuple[int, int], radius: int) -> None:
    """Max-merge a Gaussian peak of 1 at integer ``centre_xy`` into ``heatmap`` in place.

    Parameters
    ----------
    heatmap : ndarray, shape (h, w), float32
    centre_xy : tuple of int
        ``(x, y)`` cell.
    radius : int
        Half-size of the drawn window; ``sigma = (2 * radius + 1) / 6``.
    """
    sigma = (2 * radius + 1) / 6.0
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    kernel[kernel < np.finfo(np.float64).eps * kernel.max()] = 0
    x, y = centre_xy
    height, width = heatmap.shape
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"Gaussian centre {centre_xy} outside a heatmap of shape {heatmap.shape}")
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    region = heatmap[y - top : y + bottom, x - left : x + right]
    patch = kernel[radius - top : radius + bottom, radius - left : radius + right]
    np.maximum(region, patch.astype(heatmap.dtype), out=region)


def _object_cells(boxes: np.ndarray, output_shape: tuple[int, int], stride: int):
    """Clip boxes to the output grid; yield (centre float, centre cell, w, h) per visible box."""
    height, width = output_shape
    cells = as_boxes(boxes) / stride
    cells[:, [0, 2]] = np.clip(cells[:, [0, 2]], 0, width - 1)
    cells[:, [1, 3]] = np.clip(cells[:, [1, 3]], 0, height - 1)
    for x1, y1, x2, y2 in cells:
        w, h = x2 - x1, y2 - y1
        if w <= 0 or h <= 0:
            continue
        centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        yield centre, centre.astype(np.int64), w, h


def box_cells(boxes, output_shape: tuple[int, int], stride: int) -> np.ndarray:
    """1 on every output cell that one of the canvas-pixel ``xyxy`` ``boxes`` covers.

    Returns
    -------
    ndarray, shape ``output_shape`` ``(h, w)``, float32
    """
    covered = np.zeros(output_shape, dtype=np.float32)
    for x1, y1, x2, y2 in as_boxes(boxes) / stride:
        rows = slice(max(0, int(np.floor(y1))), max(0, int(np.ceil(y2)) + 1))
        columns = slice(max(0, int(np.floor(x1))), max(0, int(np.ceil(x2)) + 1))
        covered[rows, columns] = 1
    return covered


def gaussian_heatmap(
    boxes, output_shape: tuple[int, int], *, stride: int, min_overlap: float
) -> np.ndarray:
    """Heatmap with one Gaussian per box, shape ``output_shape`` ``(h, w)``, float32."""
    heatmap = np.zeros(output_shape, dtype=np.float32)
    for _, cell, w, h in _object_cells(boxes, output_shape, stride):
        radius = max(0, int(gaussian_radius(np.ceil(h), np.ceil(w), min_overlap=min_overlap)))
        draw_gaussian(heatmap, (int(cell[0]), int(cell[1])), radius)
    return heatmap


def hnsl_heatmap(positive: np.ndarray, hard_negative: np.ndarray) -> np.ndarray:
    """Combine ``Y_p`` and ``Y_n`` (Eq. 3): ``-Y_n`` where ``Y_n > 0``, else ``Y_p``."""
    return np.where(hard_negative > 0, -hard_negative, positive).astype(np.float32)


@dataclass
class CenterNetTargets:
    """Training targets of one image.

    Attributes
    ----------
    heatmap : ndarray, shape (1, h, w), float32
        HNSL heatmap (positives in (0, 1], hard negatives in [-1, 0)).
    indices : ndarray, shape (MAX_OBJECTS,), int64
        Flat index ``y * w + x`` of each positive's centre cell.
    size : ndarray, shape (MAX_OBJECTS, 2), float32
        Box width and height in output cells.
    offset : ndarray, shape (MAX_OBJECTS, 2), float32
        Sub-cell centre offset ``(x, y)``.
    mask : ndarray, shape (MAX_OBJECTS,), float32
        1 for real objects, 0 for padding.
    heatmap_weight : ndarray, shape (1, h, w), float32
        1 where the heatmap is supervised: everywhere when the background is
        known, else only on the cells that a box covers or where ``heatmap`` is
        not 0 (a box's Gaussian); in both cases 0 on the cells of the ignore
        boxes where ``heatmap`` is not positive.
    """

    heatmap: np.ndarray
    indices: np.ndarray
    size: np.ndarray
    offset: np.ndarray
    mask: np.ndarray
    heatmap_weight: np.ndarray


def build_targets(
    positive_boxes,
    hard_negative_boxes,
    output_shape: tuple[int, int],
    *,
    stride: int,
    min_overlap: float,
    background_known: bool = True,
    ignore_boxes=(),
) -> CenterNetTargets:
    """Targets of one image from canvas-pixel ``xyxy`` boxes.

    Parameters
    ----------
    positive_boxes : array_like, shape (N, 4)
        Lesions, network-canvas pixel coordinates.
    hard_negative_boxes : array_like, shape (M, 4)
        Hard negatives (same coordinates); may be empty.
    output_shape : tuple of int
        ``(h, w)`` of the heads' output.
    background_known : bool
        False: cells outside every box and its Gaussian are not supervised.
    ignore_boxes : array_like, shape (K, 4)
        Regions (same coordinates) not supervised outside the positives' Gaussians.
    """
    positive = gaussian_heatmap(
        positive_boxes, output_shape, stride=stride, min_overlap=min_overlap
    )
    negative = gaussian_heatmap(
        hard_negative_boxes, output_shape, stride=stride, min_overlap=min_overlap
    )
    indices = np.zeros(MAX_OBJECTS, dtype=np.int64)
    size = np.zeros((MAX_OBJECTS, 2), dtype=np.float32)
    offset = np.zeros((MAX_OBJECTS, 2), dtype=np.float32)
    mask = np.zeros(MAX_OBJECTS, dtype=np.float32)
    objects = list(_object_cells(positive_boxes, output_shape, stride))[:MAX_OBJECTS]
    for k, (centre, cell, w, h) in enumerate(objects):
        indices[k] = cell[1] * output_shape[1] + cell[0]
        size[k] = (w, h)
        offset[k] = centre - cell
        mask[k] = 1
    heatmap = hnsl_heatmap(positive, negative)[None]
    if background_known:
        weight = np.ones_like(heatmap)
    else:
        weight = (heatmap != 0).astype(np.float32)
        for boxes in (positive_boxes, hard_negative_boxes):
            weight[0] = np.maximum(weight[0], box_cells(boxes, output_shape, stride))
    ignored = box_cells(ignore_boxes, output_shape, stride) > 0
    weight[0][ignored & (positive <= 0)] = 0
    return CenterNetTargets(heatmap, indices, size, offset, mask, weight)
