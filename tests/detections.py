"""Seeded detections made from real lesion marks, for the evaluation tests."""

from __future__ import annotations

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D


def jittered_tracklets(rng, centres, *, n_false=3):
    """Proposals around ``centres`` plus up to ``n_false`` random boxes, distinct scores.

    Parameters
    ----------
    rng : numpy.random.Generator
    centres : list of (int, ndarray)
        ``(z, box)`` per lesion: its slice and its box ``(x1, y1, x2, y2)``, shape (4,).
    n_false : int
        The most random two-slice proposals away from the lesions.

    Returns
    -------
    list of Proposal3D
        None, one or two jittered tracklets around each lesion (slices ``z - 2`` to
        ``z + 2`` at the most), then the random ones.
    """
    proposals = []
    for z, box in centres:
        size = box[2:] - box[:2] + 1.0
        for _ in range(rng.choice([0, 1, 1, 1, 2])):  # missed, found, found twice
            below, above = rng.integers(0, 3, size=2)
            slices = np.arange(z - below, z + above + 1)
            slices = slices[slices >= 0]
            shift = rng.normal(0, 0.12, size=(len(slices), 4)) * np.r_[size, size]
            boxes = box + shift
            boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
            proposals.append(Proposal3D(slices, boxes, rng.uniform(0, 1, len(slices))))
    for _ in range(rng.integers(0, n_false + 1)):
        corner = rng.uniform(0, 400, 2)
        box = np.r_[corner, corner + rng.uniform(10, 60, 2)]
        z0 = int(rng.integers(0, 20))
        proposals.append(Proposal3D([z0, z0 + 1], [box, box], rng.uniform(0, 1, 2)))
    return proposals
