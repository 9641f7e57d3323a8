"""Ground truth of a phantom lesion: 3D extent, per-slice boxes and a radiologist's RECIST mark."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from napari_lesion_harvest.geometry import RECIST_BOX_PADDING, Proposal3D, RecistMark

#: Decimals kept in RECIST endpoints, so that text files reproduce them exactly.
COORDINATE_DECIMALS = 3


@dataclass
class LesionTruth:
    """Everything known about one phantom lesion.

    Attributes
    ----------
    lesion_id : int
        Index of the lesion in its volume (0-based).
    kind : str
        Lesion kind (see :data:`.lesions.LESION_KINDS`).
    coarse_type : int
        DeepLesion ``Coarse_lesion_type`` (1..8).
    recist : RecistMark
        RECIST mark on the widest axial slice: the long axis is the longest
        diameter of that cross-section, the short axis the longest chord
        perpendicular to it (endpoints on the lesion's edge, pixel coordinates).
    extent : Proposal3D
        The lesion on every slice it occupies: per-slice ``xyxy`` boxes of the
        lesion's pixels, widened by half a pixel (pixel edges) and padded by
        ``RECIST_BOX_PADDING`` like DeepLesion's boxes; scores are 1.
    diameter_mm : float
        Designed long diameter.
    contrast_hu : float
        Lesion HU minus its surroundings' (negative: hypodense).
    conspicuity : float
        Size times capped contrast, the weight used to pick original marks.
    marked : bool
        Whether the lesion carries an original (DL_info) mark.
    """

    lesion_id: int
    kind: str
    coarse_type: int
    recist: RecistMark
    extent: Proposal3D
    diameter_mm: float
    contrast_hu: float
    conspicuity: float
    marked: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def box_3d(self) -> np.ndarray:
        """Padded 3D box ``xyzxyz`` of the lesion, shape ``(6,)``."""
        return self.extent.box_3d


def _farthest_pair(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two points of ``points`` (N, 2) farthest apart."""
    diff = points[:, None, :] - points[None, :, :]
    dist = np.einsum("ijk,ijk->ij", diff, diff)
    i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return points[i], points[j]


def recist_from_mask(mask: np.ndarray, z: int, *, offset_xy=(0, 0)) -> RecistMark:
    """Measure a lesion cross-section as a radiologist does.

    Parameters
    ----------
    mask : ndarray of bool, shape (Y, X)
        The lesion's pixels on one axial slice (non-empty).
    z : int
        Slice index for the mark.
    offset_xy : tuple of int
        Pixel coordinates ``(x, y)`` of ``mask[0, 0]`` in the full image.

    Returns
    -------
    RecistMark
        Long axis: the farthest pair of edge pixels, extended by half a pixel
        at both ends (edge to edge). Short axis: the longest chord perpendicular
        to it (sampled every pixel along the long axis), extended the same way.
        Coordinates are rounded to :data:`COORDINATE_DECIMALS` decimals.
    """
    edge = mask & ~ndimage.binary_erosion(mask)
    ys, xs = np.nonzero(edge)
    points = np.column_stack([xs, ys]).astype(np.float64)
    start, end = _farthest_pair(points)
    axis = end - start
    length = float(np.hypot(*axis))
    u = axis / length if length > 0 else np.array([1.0, 0.0])
    v = np.array([-u[1], u[0]])
    all_ys, all_xs = np.nonzero(mask)
    pixels = np.column_stack([all_xs, all_ys]).astype(np.float64) - start
    along = pixels @ u
    across = pixels @ v
    bins = np.rint(along).astype(np.int64)
    best_bin, best_width, best_lo, best_hi = 0, -1.0, 0.0, 0.0
    middle = length / 2.0
    for b in np.unique(bins):
        sel = across[bins == b]
        width = float(sel.max() - sel.min())
        better = width > best_width + 1e-9
        tie = abs(width - best_width) <= 1e-9 and abs(b - middle) < abs(best_bin - middle)
        if better or tie:
            best_bin, best_width, best_lo, best_hi = (
                int(b),
                width,
                float(sel.min()),
                float(sel.max()),
            )
    long_axis = np.array([start - 0.5 * u, end + 0.5 * u])
    foot = start + best_bin * u
    short_axis = np.array([foot + (best_lo - 0.5) * v, foot + (best_hi + 0.5) * v])
    shift = np.asarray(offset_xy, dtype=np.float64)
    return RecistMark(
        z=z,
        long_axis=np.round(long_axis + shift, COORDINATE_DECIMALS),
        short_axis=np.round(short_axis + shift, COORDINATE_DECIMALS),
    )


def lesion_truth(
    mask: np.ndarray,
    window: tuple[slice, slice, slice],
    *,
    lesion_id: int,
    kind: str,
    coarse_type: int,
    diameter_mm: float,
    contrast_hu: float,
    conspicuity: float,
) -> LesionTruth:
    """Ground truth of a lesion from its voxel mask.

    Parameters
    ----------
    mask : ndarray of bool, shape (k, m, n)
        The lesion's voxels inside ``window``.
    window : tuple of slice
        Where ``mask`` sits in the volume, ``(z, y, x)`` index slices.

    Returns
    -------
    LesionTruth
        The RECIST mark is measured on the slice with the longest long axis
        (ties: the larger area).
    """
    z0, y0, x0 = window[0].start, window[1].start, window[2].start
    slices, boxes, best = [], [], None
    pad = 0.5 + RECIST_BOX_PADDING
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        plane = mask[k]
        ys, xs = np.nonzero(plane)
        slices.append(z0 + int(k))
        boxes.append(
            [xs.min() + x0 - pad, ys.min() + y0 - pad, xs.max() + x0 + pad, ys.max() + y0 + pad]
        )
        mark = recist_from_mask(plane, z0 + int(k), offset_xy=(x0, y0))
        key = (round(mark.diameters_px()[0], 6), int(plane.sum()))
        if best is None or key > best[0]:
            best = (key, mark)
    extent = Proposal3D(
        slices=slices, boxes=boxes, scores=np.ones(len(slices)), meta={"lesion_id": lesion_id}
    )
    return LesionTruth(
        lesion_id=lesion_id,
        kind=kind,
        coarse_type=coarse_type,
        recist=best[1],
        extent=extent,
        diameter_mm=diameter_mm,
        contrast_hu=contrast_hu,
        conspicuity=conspicuity,
    )
