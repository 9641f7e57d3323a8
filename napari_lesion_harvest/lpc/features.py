"""Proposal features for the small-data LPC: shape of the track, HU contrast, s_g.

A few numbers per 3D proposal that a radiologist would also look at, read from
the proposal's boxes and objectness scores and from at most three slices of
the volume. None depends on how a particular dataset draws its lesions:

=========================  ==========================================================
feature                    what it measures
=========================  ==========================================================
``log_s_g``                log of the LPG's objectness s_g (highest 2D score)
``track_score_ratio``      mean 2D score over the track / s_g: a steady detection or
                           one peak among weak boxes
``log_extent_mm``          log(1 + track length along z in mm: slices x interval)
``log_size_mm``            log(1 + largest in-plane box size in mm, sqrt(w h))
``elongation``             log(track length / in-plane size): about 0 for a round
                           lesion, large for a vessel running along z, negative
                           for a one-slice blob
``end_size_ratio``         mean box size on the first and last slices / largest
                           size: a lesion narrows towards its ends, a tube does not
``centre_drift``           in-plane shift of the box centre from first to last slice,
                           over the size: an oblique vessel moves, a lesion stays
``aspect``                 abs(log(width / height)) of the best box
``hu_inside``              median HU in the central ellipse of the best box on the
                           best slice (/ 100, clipped to [-10, 10])
``hu_contrast``            that median minus the median of a ring around the box (/ 100)
``hu_spread``              interquartile range of HU inside (/ 100)
``continuation``           how much of the contrast persists on the slices just beyond
                           the track's ends (same ellipse, end boxes): about 1 for a
                           structure that goes on (vessel), about 0 for one that ends
=========================  ==========================================================

The proposal's place in the sub-volume is left out on purpose: on DeepLesion the
sub-volumes are cut around the marked key slice, so the marked lesions a round
trains on lie mid-volume and unmarked ones anywhere, and a place feature would
teach that (on the 60-volume phantom the distance to the nearer end, capped at
16 mm, changed nothing: docs/experiments/lpc-small-data.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpc.patches import SliceWindow

FEATURE_NAMES = (
    "log_s_g",
    "track_score_ratio",
    "log_extent_mm",
    "log_size_mm",
    "elongation",
    "end_size_ratio",
    "centre_drift",
    "aspect",
    "hu_inside",
    "hu_contrast",
    "hu_spread",
    "continuation",
)
#: Half-axes of the inner ellipse, as a fraction of the box's half-sides.
INNER_FRACTION = 0.6
#: The ring around the box: between these multiples of the box's half-sides.
RING_FRACTIONS = (1.2, 2.0)
#: Smallest contrast (HU) that ``continuation`` divides by (about CT noise).
MIN_CONTRAST_HU = 20.0
_HU_SCALE = 100.0
_SCORE_FLOOR = 1e-4


def proposal_features(volume: CTVolume, proposals: Sequence[Proposal3D]) -> np.ndarray:
    """Features of every proposal of one volume (:data:`FEATURE_NAMES`, in that order).

    Parameters
    ----------
    volume : CTVolume
        The volume the proposals belong to; slices are read lazily, each once per call.
    proposals : sequence of Proposal3D

    Returns
    -------
    ndarray, float64, shape (N, len(FEATURE_NAMES))
    """
    out = np.zeros((len(proposals), len(FEATURE_NAMES)))
    order = sorted(range(len(proposals)), key=lambda i: max(proposals[i].slices[0] - 1, 0))
    slices = SliceWindow(volume)
    for rank, i in enumerate(order):
        out[i] = _features(proposals[i], volume, slices)
        if rank + 1 < len(order):
            slices.release_below(max(proposals[order[rank + 1]].slices[0] - 1, 0))
    return out


def _features(proposal: Proposal3D, volume: CTVolume, slices: SliceWindow) -> np.ndarray:
    sz, sy, sx = volume.spacing
    boxes = proposal.boxes
    widths = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-3) * sx
    heights = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-3) * sy
    sizes = np.sqrt(widths * heights)
    size_mm = float(sizes.max())
    extent_mm = len(proposal.slices) * sz
    centres = np.stack(
        [(boxes[:, 0] + boxes[:, 2]) / 2 * sx, (boxes[:, 1] + boxes[:, 3]) / 2 * sy], axis=1
    )
    s_g = max(proposal.s_g, _SCORE_FLOOR)
    best = proposal.best_index
    first, last = int(proposal.slices[0]), int(proposal.slices[-1])
    n_slices = volume.shape[0]

    image = slices.get(proposal.best_slice)
    inside, ring, spread = _inside_and_ring(image, boxes[best])
    contrast = inside - ring
    beyond = [
        _inside_and_ring(slices.get(z), box)[0]
        for z, box in ((first - 1, boxes[0]), (last + 1, boxes[-1]))
        if 0 <= z < n_slices
    ]
    if beyond:
        persisting = (np.mean(beyond) - ring) * np.sign(contrast or 1.0)
        continuation = persisting / max(abs(contrast), MIN_CONTRAST_HU)
    else:  # the track spans the whole sub-volume: nothing beyond to compare
        continuation = 1.0
    return np.array(
        [
            np.log(s_g),
            float(proposal.scores.mean()) / s_g,
            np.log1p(extent_mm),
            np.log1p(size_mm),
            np.log(extent_mm / size_mm),
            float((sizes[0] + sizes[-1]) / 2) / size_mm,
            float(np.linalg.norm(centres[-1] - centres[0])) / size_mm,
            abs(np.log(widths[best] / heights[best])),
            np.clip(inside / _HU_SCALE, -10, 10),
            np.clip(contrast / _HU_SCALE, -10, 10),
            min(spread / _HU_SCALE, 10),
            np.clip(continuation, -2, 2),
        ]
    )


def _inside_and_ring(image: np.ndarray, box) -> tuple[float, float, float]:
    """Median HU in the box's central ellipse, median HU of the ring around it, and the
    interquartile range inside; pixels outside the image are left out.

    Parameters
    ----------
    image : ndarray, shape (Y, X)
        One slice in HU.
    box : array_like, shape (4,)
        ``(x1, y1, x2, y2)`` in pixels.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    ax, ay = max((x2 - x1) / 2, 0.5), max((y2 - y1) / 2, 0.5)
    ys = _pixel_range(cy, RING_FRACTIONS[1] * ay, image.shape[0])
    xs = _pixel_range(cx, RING_FRACTIONS[1] * ax, image.shape[1])
    if ys.size == 0 or xs.size == 0:
        return 0.0, 0.0, 0.0
    window = image[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1].astype(np.float64)
    dx = (xs[None, :] - cx) / ax  # a pixel coordinate is the centre of its element
    dy = (ys[:, None] - cy) / ay
    radius = np.sqrt(dx**2 + dy**2)
    inner = window[radius <= INNER_FRACTION]
    if inner.size == 0:  # a box narrower than a pixel: its nearest pixel
        inner = window[np.unravel_index(np.argmin(radius), radius.shape)].reshape(1)
    ring = window[(radius >= RING_FRACTIONS[0]) & (radius <= RING_FRACTIONS[1])]
    inside = float(np.median(inner))
    around = float(np.median(ring)) if ring.size else inside
    q75, q25 = np.percentile(inner, [75, 25])
    return inside, around, float(q75 - q25)


def _pixel_range(centre: float, half: float, length: int) -> np.ndarray:
    """Indices of the pixels within ``half`` of ``centre`` along an axis of ``length``."""
    return np.arange(
        max(int(np.ceil(centre - half)), 0), min(int(np.floor(centre + half)) + 1, length)
    )
