"""Small CT-like volumes for the LPC tests: spherical lesions and tube-shaped look-alikes.

On an axial slice a lesion (a sphere) and a distractor (a vessel-like tube along
z of the same radius and density) look the same; coronal and sagittal views (or
3D context) tell them apart. Proposals around both have the same distribution
of box sizes and slice extents, so the classifier must look at the image.
"""

from __future__ import annotations

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpc.train import ProposalSet

SPACING = (2.0, 0.8, 0.8)
SHAPE = (24, 64, 64)


def _proposal(rng, centre_zyx, radius_mm, depth_slices, s_g):
    cz, cy, cx = centre_zyx
    r_px = radius_mm / SPACING[1]
    half = int(depth_slices) // 2
    z0 = int(np.clip(round(cz) - half, 0, SHAPE[0] - 1))
    z1 = int(np.clip(round(cz) + half, 0, SHAPE[0] - 1))
    slices = np.arange(z0, z1 + 1)
    jitter = rng.uniform(-1.5, 1.5, size=(len(slices), 4))
    boxes = np.array([cx - r_px - 2, cy - r_px - 2, cx + r_px + 2, cy + r_px + 2]) + jitter
    scores = s_g * rng.uniform(0.7, 1.0, len(slices))
    scores[len(slices) // 2] = s_g
    return Proposal3D(slices, boxes, scores)


def phantom_volume(seed: int, *, lesions: int = 2, distractors: int = 2, background: int = 1):
    """One volume with its proposals and labels (1 = lesion).

    Returns
    -------
    ProposalSet
        ``fully_annotated`` True; proposals around lesions, distractors and plain tissue.
    """
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(
        *(np.arange(n) * s for n, s in zip(SHAPE, SPACING, strict=True)), indexing="ij"
    )
    body = ((y - 25.6) / 24) ** 2 + ((x - 25.6) / 24) ** 2 <= 1
    hu = np.where(body, 40.0, -1000.0) + rng.normal(0, 15, SHAPE)
    proposals, labels = [], []
    taken: list[np.ndarray] = []
    for index in range(lesions + distractors + background):
        kind = "lesion" if index < lesions else "tube" if index < lesions + distractors else "none"
        radius = rng.uniform(3.5, 6.0)
        for _ in range(100):
            centre = np.array([rng.uniform(8, 16), rng.uniform(14, 38), rng.uniform(14, 38)])
            centre_mm = centre * np.array([SPACING[0], 1, 1])
            if all(np.linalg.norm((centre_mm - t)[1:]) > 14 for t in taken):
                break
        taken.append(centre_mm)
        cy_px, cx_px = centre[1] / SPACING[1], centre[2] / SPACING[2]
        density = rng.uniform(110, 160)
        in_plane = (y - centre[1]) ** 2 + (x - centre[2]) ** 2
        if kind == "lesion":
            hu[in_plane + (z - centre_mm[0]) ** 2 <= radius**2] += density
        elif kind == "tube":
            hu[in_plane <= radius**2] += density
        depth = 2 * radius / SPACING[0] + rng.uniform(-1, 1)
        s_g = rng.uniform(0.35, 1.0) if kind == "lesion" else rng.uniform(0.15, 0.9)
        proposals.append(_proposal(rng, (centre[0], cy_px, cx_px), radius, depth, s_g))
        labels.append(int(kind == "lesion"))
    volume = CTVolume.from_array(f"phantom-{seed:03d}", np.round(hu), SPACING)
    return ProposalSet(volume, proposals, np.array(labels), True)


def phantom_sets(seeds) -> list[ProposalSet]:
    """One :func:`phantom_volume` per seed."""
    return [phantom_volume(int(seed)) for seed in seeds]


def project_phantom_set(seed: int, *, size: int = 128) -> ProposalSet:
    """Proposals on the project's synthetic CT phantom (:mod:`napari_lesion_harvest.synthetic`).

    Positives: every lesion's true extent (boxes jittered by up to 1 px).
    Negatives: the phantom's lesion-like distractors (small normal nodes and
    calcifications, one proposal per connected component of their labels).
    s_g is drawn at random, mildly higher for lesions.
    """
    from scipy import ndimage

    from napari_lesion_harvest.synthetic.canvas import Tissue
    from napari_lesion_harvest.synthetic.phantom import (
        PhantomConfig,
        SeriesIdentity,
        generate_volume,
    )

    rng = np.random.default_rng(1000 + seed)
    identity = SeriesIdentity(seed + 1, 1, 1, 1, "M", 50)
    phantom = generate_volume(
        np.random.default_rng(seed), identity, config=PhantomConfig(size=size, slices=(16, 20))
    )
    proposals, labels = [], []
    for lesion in phantom.lesions:
        extent = lesion.extent
        boxes = extent.boxes + rng.uniform(-1, 1, extent.boxes.shape)
        s_g = np.full(len(extent.slices), rng.uniform(0.3, 1.0))
        proposals.append(Proposal3D(extent.slices, boxes, s_g))
        labels.append(1)
    distractors, _ = ndimage.label(np.isin(phantom.labels, [Tissue.NODE, Tissue.CALCIFICATION]))
    for zs, ys, xs in ndimage.find_objects(distractors):
        slices = np.arange(zs.start, zs.stop)
        box = np.array([xs.start - 2, ys.start - 2, xs.stop + 1, ys.stop + 1], dtype=float)
        boxes = box + rng.uniform(-1, 1, (len(slices), 4))
        proposals.append(Proposal3D(slices, boxes, np.full(len(slices), rng.uniform(0.15, 0.9))))
        labels.append(0)
    return ProposalSet(phantom.volume, proposals, np.array(labels), True)
