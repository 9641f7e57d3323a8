"""Tiny CT volumes with bright ellipsoidal lesions (and optional decoys) for the LPG tests."""

from __future__ import annotations

import numpy as np

from napari_lesion_harvest.io.volume import CTVolume

LESION_HU = 140.0
#: Decoys differ from lesions only in density (calcification-like), a learnable cue.
DECOY_HU = 450.0


def _paint_blobs(hu, rng, count, value, spacing) -> dict[int, list]:
    """Paint ``count`` ellipsoids of ``value`` HU; per-slice ``xyxy`` boxes ``{z: [box]}``."""
    size_z, size_y, size_x = hu.shape
    z, y, x = np.mgrid[:size_z, :size_y, :size_x]
    boxes: dict[int, list] = {}
    for _ in range(count):
        radius = rng.uniform(3, 7)
        radius_z = radius * spacing[1] / spacing[0] * rng.uniform(0.8, 1.5)
        cz = rng.uniform(0.25 * size_z, 0.75 * size_z)
        cy, cx = rng.uniform(0.3, 0.7, 2) * (size_y, size_x)
        inside = ((z - cz) / radius_z) ** 2 + ((y - cy) / radius) ** 2 + ((x - cx) / radius) ** 2
        hu[inside < 1] = value
        for slice_z in range(size_z):
            d = (slice_z - cz) / radius_z
            if abs(d) < 0.9:
                r = radius * np.sqrt(1 - d * d)
                boxes.setdefault(slice_z, []).append([cx - r, cy - r, cx + r, cy + r])
    return boxes


def decoy_phantom(
    seed: int,
    *,
    shape=(16, 64, 64),
    spacing=(2.0, 0.8, 0.8),
    lesions: int = 3,
    decoys: int = 0,
) -> tuple[CTVolume, dict[int, np.ndarray], dict[int, np.ndarray]]:
    """A body disc (40 HU) with bright lesions (140 HU), denser decoys (450 HU) and noise.

    Decoys are painted after lesions and may cover parts of them; a lesion or
    decoy is listed on the slices where its cross-section's radius is at least
    ~0.44 of its largest.

    Returns
    -------
    volume : CTVolume
    lesion_boxes, decoy_boxes : dict
        ``{z: ndarray (N, 4)}`` ``xyxy`` boxes (pixel coordinates) per slice.
    """
    rng = np.random.default_rng(seed)
    size_z, size_y, size_x = shape
    _, y, x = np.mgrid[:size_z, :size_y, :size_x]
    hu = np.full(shape, -1000.0)
    body = ((y - size_y / 2) / (size_y * 0.45)) ** 2 + ((x - size_x / 2) / (size_x * 0.45)) ** 2
    hu[body < 1] = 40.0
    lesion_boxes = _paint_blobs(hu, rng, lesions, LESION_HU, spacing)
    decoy_boxes = _paint_blobs(hu, rng, decoys, DECOY_HU, spacing)
    hu += rng.normal(0, 20, shape)
    volume = CTVolume.from_array(f"phantom{seed}", hu, spacing)

    def arrays(boxes):
        return {k: np.array(v) for k, v in boxes.items()}

    return volume, arrays(lesion_boxes), arrays(decoy_boxes)


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
    volume, boxes, _ = decoy_phantom(seed, shape=shape, spacing=spacing, lesions=lesions)
    return volume, boxes


#: A very small MSCN for torchrun jobs (as a job file's ``config``).
TINY_JOB_CONFIG = {"name": "lite", "growth_rate": 8, "num_init_features": 16, "bn_size": 2,
                   "block_config": [2, 2, 2], "feature_channels": 16, "head_channels": 16,
                   "max_side": 32}  # fmt: skip


def job_inputs(folder, *, count: int = 3) -> tuple[list[dict], list[dict]]:
    """Write ``count`` one-lesion ellipsoid volumes as ``.npy`` into ``folder`` and return
    the ``volumes`` and ``samples`` entries of an ``lpg.job`` file for them."""
    volumes, samples = [], []
    for seed in range(count):
        volume, boxes = ellipsoid_phantom(seed, shape=(8, 32, 32), lesions=1)
        np.save(folder / f"v{seed}.npy", volume.array())
        volumes.append({"id": volume.volume_id, "path": f"v{seed}.npy", "spacing": [2, 0.8, 0.8]})
        samples += [
            {"volume": volume.volume_id, "z": z, "positive_boxes": b.tolist()}
            for z, b in boxes.items()
        ]
    return volumes, samples
