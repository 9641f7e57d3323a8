"""Lesions: kinds, sizes, contrasts, placement in their host organ, partial-volume rendering.

A lesion is a rotated, lobulated ellipsoid (:func:`.shapes.lobulated_radius`)
rendered with its slab partial-volume effect: each slice is sampled at three
depths inside its thickness and the lesion's occupancy blends its HU with the
background. Voxels at least half occupied form the lesion's mask (the ground truth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.synthetic.anatomy import BodyFrame
from napari_lesion_harvest.synthetic.canvas import Canvas, Tissue
from napari_lesion_harvest.synthetic.shapes import lobulated_radius, random_rotation

#: DeepLesion ``Coarse_lesion_type`` codes.
COARSE_TYPES = {
    "bone": 1,
    "abdomen": 2,
    "mediastinum": 3,
    "liver": 4,
    "lung": 5,
    "kidney": 6,
    "soft_tissue": 7,
    "pelvis": 8,
}


@dataclass(frozen=True)
class LesionKind:
    """What a kind of lesion looks like and where it grows.

    Attributes
    ----------
    name : str
        Kind name (``"lung_nodule_solid"``, ...).
    hosts : tuple of Tissue
        Tissues the lesion grows in.
    coarse_type : str
        Key of :data:`COARSE_TYPES` (``"node"`` lesions take theirs from the body region).
    diameter_mm : tuple of float
        Range of the long diameter.
    weight : float
        Relative frequency among the kinds whose host is in the volume.
    relative : bool
        Whether the lesion's HU is set relative to its host (organ lesions) or absolute.
    hu : tuple of float
        HU range (absolute) or contrast range (relative; negative = hypodense).
    """

    name: str
    hosts: tuple[Tissue, ...]
    coarse_type: str
    diameter_mm: tuple[float, float]
    weight: float
    relative: bool
    hu: tuple[float, float]


_T = Tissue
LESION_KINDS = (
    LesionKind("lung_nodule_solid", (_T.LUNG,), "lung", (5, 45), 0.2, False, (10, 50)),
    LesionKind("lung_nodule_part_solid", (_T.LUNG,), "lung", (8, 30), 0.06, False, (-600, -420)),
    LesionKind("liver_hypodense", (_T.LIVER,), "liver", (6, 60), 0.3, True, (-75, -25)),
    LesionKind("liver_hyperdense", (_T.LIVER,), "liver", (8, 40), 0.08, True, (25, 60)),
    LesionKind("lymph_node", (_T.CAVITY_FAT,), "node", (10, 40), 0.15, False, (30, 60)),
    LesionKind("kidney_cyst", (_T.KIDNEY,), "kidney", (8, 45), 0.08, False, (0, 18)),
    LesionKind("kidney_mass", (_T.KIDNEY,), "kidney", (12, 50), 0.03, True, (-80, -40)),
    LesionKind("spleen_lesion", (_T.SPLEEN,), "abdomen", (8, 35), 0.04, True, (-60, -25)),
    LesionKind("bone_lytic", (_T.VERTEBRA,), "bone", (8, 22), 0.04, False, (30, 80)),
    LesionKind("bone_sclerotic", (_T.VERTEBRA,), "bone", (6, 18), 0.02, False, (650, 950)),
    LesionKind("subcutaneous_mass", (_T.SUBCUTANEOUS_FAT,), "soft_tissue", (10, 45), 0.04, False,
               (30, 55)),
    LesionKind("muscle_mass", (_T.MUSCLE,), "soft_tissue", (12, 50), 0.04, True, (-50, -25)),
)  # fmt: skip
#: Probability that an organ lesion is subtle (10-22 HU from its host).
SUBTLE_FRACTION = 0.2
#: Fraction of a lesion's voxels that must lie in its host tissues.
MIN_HOST_FRACTION = 0.7


@dataclass
class PlacedLesion:
    """A lesion drawn into a canvas.

    Attributes
    ----------
    kind : str
        :class:`LesionKind` name.
    coarse_type : int
        DeepLesion ``Coarse_lesion_type`` (1..8).
    diameter_mm : float
        Designed long diameter (the measured one comes from the mask).
    contrast_hu : float
        Lesion HU minus the median HU of its surroundings (before noise).
    window : tuple of slice
        Index window ``(z, y, x)`` of the canvas that holds the mask.
    mask : ndarray of bool, shape of the window
        Voxels at least half occupied by the lesion.
    """

    kind: str
    coarse_type: int
    diameter_mm: float
    contrast_hu: float
    window: tuple[slice, slice, slice]
    mask: np.ndarray

    @property
    def conspicuity(self) -> float:
        """How easily a reader notices the lesion: size times capped contrast (mm)."""
        return self.diameter_mm * (0.3 + min(abs(self.contrast_hu), 120.0) / 120.0)


def _sample_diameter(rng: np.random.Generator, kind: LesionKind, min_mm: float) -> float:
    """Long diameter (mm): log-normal around 18 mm, clipped to the kind's range."""
    low, high = max(kind.diameter_mm[0], min_mm), kind.diameter_mm[1]
    return float(np.clip(np.exp(rng.normal(np.log(18.0), 0.5)), low, max(low, high)))


def _coarse_type(kind: LesionKind, z_mm: float, frame: BodyFrame, y_mm: float, x_mm: float) -> int:
    if kind.coarse_type != "node":
        return COARSE_TYPES[kind.coarse_type]
    if z_mm < float(frame.diaphragm_z(np.float32(y_mm), np.float32(x_mm))):
        return COARSE_TYPES["mediastinum"]
    return COARSE_TYPES["pelvis"] if z_mm > 520.0 else COARSE_TYPES["abdomen"]


def _lesion_shape(rng: np.random.Generator, diameter_mm: float, kind: LesionKind):
    """Rotation, semi-axes (mm) and lobulation terms of a new lesion."""
    long_r = diameter_mm / 2.0
    flat = 0.55 if kind.name == "lymph_node" else 0.7
    radii = np.array([long_r * rng.uniform(0.6, 1.0), long_r * rng.uniform(flat, 0.95), long_r])
    n_lobes = int(rng.integers(0, 4)) if diameter_mm > 10 else 0
    lobes = np.zeros((n_lobes, 6))
    for row in lobes:
        direction = rng.normal(size=3)
        row[:] = (
            rng.uniform(0.04, 0.12),
            rng.uniform(2.0, 5.0),
            rng.uniform(0, 2 * np.pi),
            *(direction / np.linalg.norm(direction)),
        )
    return random_rotation(rng, max_tilt_deg=25.0), radii, lobes


def place_lesions(
    canvas: Canvas,
    frame: BodyFrame,
    rng: np.random.Generator,
    count: int,
    *,
    attempts: int = 20,
) -> list[PlacedLesion]:
    """Choose, place and draw up to ``count`` lesions (in place).

    Kinds are drawn among those whose host tissue is in the volume; each
    lesion is retried at new positions (smaller after a few misses) until
    :data:`MIN_HOST_FRACTION` of it lies in its host and it overlaps no other
    lesion. Lesions that cannot be placed are skipped.

    Returns
    -------
    list of PlacedLesion
    """
    sx = canvas.spacing[2]
    host_voxels: dict[Tissue, np.ndarray] = {}
    # keep lesions' centres away from the first and last slice
    inner = np.zeros(canvas.shape, dtype=bool)
    inner[1:-1] = True
    for kind in LESION_KINDS:
        for host in kind.hosts:
            if host not in host_voxels:
                host_voxels[host] = np.flatnonzero((canvas.labels == host) & inner)
    available = [k for k in LESION_KINDS if sum(host_voxels[h].size for h in k.hosts) > 200]
    if not available:
        return []
    weights = np.array([k.weight for k in available])
    min_mm = 3.0 * sx
    placed: list[PlacedLesion] = []
    for _ in range(count):
        kind = available[int(rng.choice(len(available), p=weights / weights.sum()))]
        diameter = _sample_diameter(rng, kind, min_mm)
        for attempt in range(attempts):
            if attempt >= 8:
                diameter = max(min_mm, diameter * 0.85)
            candidates = np.concatenate([host_voxels[h] for h in kind.hosts])
            center_index = np.unravel_index(
                candidates[rng.integers(candidates.size)], canvas.shape
            )
            lesion = _draw_lesion(canvas, frame, rng, kind, diameter, center_index)
            if lesion is not None:
                placed.append(lesion)
                break
    return placed


def _draw_lesion(canvas, frame, rng, kind, diameter, center_index) -> PlacedLesion | None:
    """Draw one lesion at ``center_index`` if it fits its host; ``None`` otherwise."""
    sz, sy, sx = canvas.spacing
    rotation, radii, lobes = _lesion_shape(rng, diameter, kind)
    reach = diameter / 2.0 * 1.3 + 2.0 * sx
    cz, cy, cx = (
        float(axis[i])
        for axis, i in zip((canvas.z, canvas.y, canvas.x), center_index, strict=True)
    )
    window = canvas.window(
        (cz - reach - sz, cy - reach, cx - reach), (cz + reach + sz, cy + reach, cx + reach)
    )
    if window is None:
        return None
    zz, yy, xx = canvas.grids(window)
    # three samples across each slice's thickness give the slab's partial-volume occupancy
    depths = np.array([-sz / 3.0, 0.0, sz / 3.0], dtype=np.float32)[:, None, None, None]
    rho = lobulated_radius(
        rotation, radii, lobes, zz[None] - cz + depths, yy[None] - cy, xx[None] - cx
    )
    occupancy = (rho <= 1.0).mean(axis=0)
    mask = occupancy >= 0.5
    if not mask.any():
        return None
    labels = canvas.labels[window]
    if np.any(labels[mask] == Tissue.LESION):
        return None
    in_host = np.isin(labels[mask], np.array(kind.hosts, dtype=np.uint8)).mean()
    if in_host < MIN_HOST_FRACTION:
        return None
    hu = canvas.hu[window]
    surroundings = float(np.median(hu[mask]))
    if kind.relative:
        contrast = rng.uniform(*kind.hu)
        if rng.uniform() < SUBTLE_FRACTION:
            contrast = np.sign(contrast) * rng.uniform(10.0, 22.0)
        value = surroundings + contrast
    else:
        value = rng.uniform(*kind.hu)
    centre_rho = rho[1]
    lesion_hu = np.full(centre_rho.shape, value, dtype=np.float32)
    if kind.name == "lung_nodule_part_solid":
        lesion_hu[centre_rho < rng.uniform(0.3, 0.6)] = rng.uniform(10, 40)
    elif diameter > 30 and rng.uniform() < 0.4:  # necrotic centre
        lesion_hu[centre_rho < 0.5] -= rng.uniform(15, 35)
    elif kind.name == "liver_hypodense" and rng.uniform() < 0.3:  # enhancing rim
        lesion_hu[centre_rho > 0.8] = surroundings + rng.uniform(5, 25)
    hu += occupancy * (lesion_hu - hu)
    labels[mask] = Tissue.LESION
    return PlacedLesion(
        kind=kind.name,
        coarse_type=_coarse_type(kind, cz, frame, cy, cx),
        diameter_mm=float(diameter),
        contrast_hu=float(value - surroundings),
        window=window,
        mask=mask,
    )
