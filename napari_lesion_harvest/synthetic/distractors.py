"""Lesion-like structures that are not lesions: the hard negatives of a proposal classifier.

The anatomy already holds vessel cross-sections, bowel loops (some with oral
contrast: bright pools) and the gallbladder. This module adds calcifications
(lung granulomas, vascular plaques, calcified liver/spleen granulomas) and
small normal lymph nodes (below the 10 mm short axis that makes a node a lesion).
"""

from __future__ import annotations

import numpy as np

from napari_lesion_harvest.synthetic.canvas import Canvas, Tissue
from napari_lesion_harvest.synthetic.shapes import ellipsoid

#: (host tissues, mean count per volume, radius range mm, HU range, label written)
DISTRACTORS = (
    ((Tissue.LUNG,), 1.0, (1.2, 3.0), (400, 1000), Tissue.CALCIFICATION),
    ((Tissue.VESSEL,), 1.5, (1.0, 2.5), (500, 1000), Tissue.CALCIFICATION),
    ((Tissue.LIVER, Tissue.SPLEEN), 0.6, (1.5, 3.5), (300, 800), Tissue.CALCIFICATION),
    ((Tissue.CAVITY_FAT,), 3.0, (2.0, 4.0), (25, 55), Tissue.NODE),
)


def add_distractors(canvas: Canvas, rng: np.random.Generator) -> int:
    """Draw calcifications and small normal nodes into ``canvas`` (in place).

    Returns
    -------
    int
        Number of structures drawn.
    """
    drawn = 0
    for hosts, mean_count, radius_range, hu_range, tissue in DISTRACTORS:
        voxels = np.flatnonzero(np.isin(canvas.labels[1:-1], np.array(hosts, dtype=np.uint8)))
        if voxels.size == 0:
            continue
        for _ in range(int(rng.poisson(mean_count))):
            iz, iy, ix = np.unravel_index(
                voxels[rng.integers(voxels.size)], canvas.labels[1:-1].shape
            )
            center = (float(canvas.z[iz + 1]), float(canvas.y[iy]), float(canvas.x[ix]))
            radius = rng.uniform(*radius_range)
            radii = (radius * rng.uniform(0.8, 1.3), radius, radius * rng.uniform(0.6, 1.0))
            mask = canvas.paint(
                *ellipsoid(center, radii), rng.uniform(*hu_range), tissue, into=hosts
            )
            drawn += int(mask is not None and mask.any())
    return drawn
