"""Blobs of a CT slice: the label-free pseudo-objects of the LPG's blob pretraining.

A blob is a round region brighter or darker than its surroundings, found by the
scale-normalised Laplacian of Gaussian (Lindeberg's blob detector): at each of
``scales`` Gaussian widths ``sigma`` spread geometrically over the diameters asked
for (a disc of diameter ``d`` answers most strongly at ``sigma = d / (2 sqrt 2)``),
the response is ``-sigma^2 * laplace(gaussian(slice, sigma))``; blobs are the local
extrema of its magnitude over position and scale whose magnitude reaches
``min_contrast_hu`` and whose curvature is round (the ratio of the Hessian's
principal curvatures at most :data:`EDGE_RATIO`, as SIFT rejects edges: organ
boundaries and the body's outline answer strongly but are long) and whose centre is
tissue (above :data:`AIR_HU` and above the window's low end: gas in the bowel and
the air around the body are not objects). Most lesions are
such regions, and so are many normal structures (vessels in cross-section, bowel,
bone, lymph nodes): the detector is a sensitive, unspecific objectness prior that
reads no label.
"""

from __future__ import annotations

import numpy as np

#: Blob diameters looked for (mm): the span of DeepLesion's lesions' long axes.
DIAMETERS_MM = (5.0, 40.0)
#: Gaussian widths searched between the two diameters.
SCALES = 6
#: Weakest blob kept: its response in HU. A disc of contrast ``c`` answers with
#: ``2 c / e``, about ``0.74 c``, at its own scale, so this keeps discs of about 27 HU.
MIN_CONTRAST_HU = 20.0
#: Centres at or below this (or the window's low end) are air, not blobs.
AIR_HU = -500.0
#: Largest ratio of the principal curvatures of a blob: a lesion's long axis is rarely
#: more than twice its short, which gives a ratio up to about 4; curved edges (the
#: body's outline, organ boundaries) and ridges give more.
EDGE_RATIO = 4.0
#: Blobs kept per slice, strongest first, after suppressing overlapping ones: a slice
#: of the body holds tens of round structures, and the prior is meant to be sensitive.
MAX_BLOBS = 32
#: Boxes of weaker blobs overlapping a kept one by more than this IoU are dropped.
OVERLAP_IOU = 0.3


def blob_sigmas(pixel_mm: float, diameters_mm=DIAMETERS_MM, scales: int = SCALES) -> np.ndarray:
    """Gaussian widths (pixels), shape (scales,), for blob diameters ``diameters_mm``
    on pixels of ``pixel_mm``; none below one pixel (narrower ones answer to noise)."""
    low, high = (max(d / (2.0 * np.sqrt(2.0)) / pixel_mm, 1.0) for d in diameters_mm)
    return np.geomspace(low, max(high, low), scales)


def blob_boxes(
    hu: np.ndarray,
    *,
    pixel_mm: float,
    hu_window: tuple[float, float],
    diameters_mm=DIAMETERS_MM,
    scales: int = SCALES,
    min_contrast_hu: float = MIN_CONTRAST_HU,
    max_blobs: int = MAX_BLOBS,
) -> np.ndarray:
    """Boxes of the strongest blobs of one slice.

    Parameters
    ----------
    hu : ndarray, shape (H, W)
        The slice in HU (rows y, columns x).
    pixel_mm : float
        In-plane pixel spacing.
    hu_window : (low, high)
        The window the network sees: intensities are clipped to it first, so blobs
        are judged on what the network is shown.

    Returns
    -------
    ndarray, shape (N, 4), float64
        ``xyxy`` boxes (pixel coordinates of ``hu``) of at most ``max_blobs`` blobs,
        strongest first: centre at the extremum, side ``2 sqrt(2) sigma`` (the
        blob's diameter).
    """
    from scipy import ndimage

    image = np.clip(np.asarray(hu, dtype=np.float32), *hu_window)
    sigmas = blob_sigmas(pixel_mm, diameters_mm, scales)
    hessians = np.stack(
        [_hessian(ndimage.gaussian_filter(image, sigma)) for sigma in sigmas]
    )  # (scales, 3, H, W): d2/dx2, d2/dy2, d2/dxdy
    response = np.abs(sigmas[:, None, None] ** 2 * (hessians[:, 0] + hessians[:, 1]))
    peaks = (response == ndimage.maximum_filter(response, size=3)) & (response >= min_contrast_hu)
    scale_index, ys, xs = np.nonzero(peaks)
    xx, yy, xy = hessians[scale_index, :, ys, xs].T
    determinant = xx * yy - xy**2
    limit = (EDGE_RATIO + 1.0) ** 2 / EDGE_RATIO
    round_ = (determinant > 0) & ((xx + yy) ** 2 < limit * determinant)
    tissue = image[ys, xs] > max(AIR_HU, hu_window[0])
    kept = round_ & tissue
    scale_index, ys, xs = scale_index[kept], ys[kept], xs[kept]
    order = np.argsort(response[scale_index, ys, xs], kind="stable")[::-1]
    radius = np.sqrt(2.0) * sigmas[scale_index[order]]
    centre_x, centre_y = xs[order].astype(np.float64), ys[order].astype(np.float64)
    boxes = np.stack(
        [centre_x - radius, centre_y - radius, centre_x + radius, centre_y + radius], axis=1
    )
    return _strongest_apart(boxes, max_blobs)


def _hessian(smoothed: np.ndarray) -> np.ndarray:
    """Second derivatives of an image (H, W): shape (3, H, W), ``d2/dx2``, ``d2/dy2``,
    ``d2/dxdy``."""
    dy, dx = np.gradient(smoothed)
    dyy, dyx = np.gradient(dy)
    dxx = np.gradient(dx, axis=1)
    return np.stack([dxx, dyy, dyx])


def _strongest_apart(boxes: np.ndarray, limit: int) -> np.ndarray:
    """The first ``limit`` boxes of ``boxes`` (strongest first, shape (N, 4)) that
    overlap no earlier kept box by more than :data:`OVERLAP_IOU`."""
    from napari_lesion_harvest.geometry import iou_2d

    kept: list[np.ndarray] = []
    for box in boxes:
        if len(kept) == limit:
            break
        if not kept or iou_2d(box[None], np.array(kept)).max() <= OVERLAP_IOU:
            kept.append(box)
    return np.array(kept, dtype=np.float64).reshape(-1, 4)
