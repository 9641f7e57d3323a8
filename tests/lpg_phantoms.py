"""Tiny CT volumes with bright ellipsoidal lesions for the LPG tests."""

from __future__ import annotations

import numpy as np

from napari_lesion_harvest.io.volume import CTVolume


def ellipsoid_phantom(
    seed: int, *, shape=(16, 64, 64), spacing=(2.0, 0.8, 0.8), lesions: int = 3
) -> tuple[CTVolume, dict[int, np.ndarray]]:
    """A body disc (40 HU) with ``lesions`` bright ellipsoids (140 HU) and noise.

    Returns
    -------
    volume : CTVolume
    boxes : dict
        ``{z: ndarray (N, 4)}`` ``xyxy`` lesion boxes (pixel coordinates) per slice.
    """
    rng = np.random.default_rng(seed)
    size_z, size_y, size_x = shape
    z, y, x = np.mgrid[:size_z, :size_y, :size_x]
    hu = np.full(shape, -1000.0)
    body = ((y - size_y / 2) / (size_y * 0.45)) ** 2 + ((x - size_x / 2) / (size_x * 0.45)) ** 2
    hu[body < 1] = 40.0
    boxes: dict[int, list] = {}
    for _ in range(lesions):
        radius = rng.uniform(3, 7)
        radius_z = radius * spacing[1] / spacing[0] * rng.uniform(0.8, 1.5)
        cz = rng.uniform(0.25 * size_z, 0.75 * size_z)
        cy, cx = rng.uniform(0.3, 0.7, 2) * (size_y, size_x)
        inside = ((z - cz) / radius_z) ** 2 + ((y - cy) / radius) ** 2 + ((x - cx) / radius) ** 2
        hu[inside < 1] = 140.0
        for slice_z in range(size_z):
            d = (slice_z - cz) / radius_z
            if abs(d) < 0.9:
                r = radius * np.sqrt(1 - d * d)
                boxes.setdefault(slice_z, []).append([cx - r, cy - r, cx + r, cy + r])
    hu += rng.normal(0, 20, shape)
    volume = CTVolume.from_array(f"phantom{seed}", hu, spacing)
    return volume, {k: np.array(v) for k, v in boxes.items()}
