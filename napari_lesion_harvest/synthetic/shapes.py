"""Implicit shapes (ellipsoids, capsules, lobulated blobs) in body millimetres.

Each constructor returns ``(inside, lo_zyx, hi_zyx)``: the implicit function
``inside(z, y, x) -> bool`` on broadcast grids and its bounding box, ready for
:meth:`~.canvas.Canvas.paint`.
"""

from __future__ import annotations

import numpy as np


def ellipsoid_radius(center_zyx, radii_zyx, z, y, x) -> np.ndarray:
    """Normalised radius ``|(p - c) / r|`` of an axis-aligned ellipsoid (1 on its surface)."""
    cz, cy, cx = center_zyx
    rz, ry, rx = radii_zyx
    return np.sqrt(((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)


def ellipsoid(center_zyx, radii_zyx, *, scale: float = 1.0):
    """Axis-aligned ellipsoid; ``scale`` shrinks or grows it (for walls and cores)."""
    center = np.asarray(center_zyx, dtype=np.float64)
    radii = np.asarray(radii_zyx, dtype=np.float64) * scale

    def inside(z, y, x):
        return ellipsoid_radius(center, radii, z, y, x) <= 1.0

    return inside, center - radii, center + radii


def segment_distance(p0_zyx, p1_zyx, z, y, x) -> np.ndarray:
    """Distance (mm) from grid points to the segment ``p0 - p1``."""
    p0 = np.asarray(p0_zyx, dtype=np.float64)
    direction = np.asarray(p1_zyx, dtype=np.float64) - p0
    length_sq = max(float(direction @ direction), 1e-12)
    dz, dy, dx = z - p0[0], y - p0[1], x - p0[2]
    t = np.clip((dz * direction[0] + dy * direction[1] + dx * direction[2]) / length_sq, 0, 1)
    return np.sqrt(
        (dz - t * direction[0]) ** 2 + (dy - t * direction[1]) ** 2 + (dx - t * direction[2]) ** 2
    )


def capsule(p0_zyx, p1_zyx, radius: float):
    """Tube of ``radius`` mm around the segment ``p0 - p1`` with rounded ends."""
    lo = np.minimum(p0_zyx, p1_zyx) - radius
    hi = np.maximum(p0_zyx, p1_zyx) + radius

    def inside(z, y, x):
        return segment_distance(p0_zyx, p1_zyx, z, y, x) <= radius

    return inside, lo, hi


def random_rotation(rng: np.random.Generator, *, max_tilt_deg: float = 90.0) -> np.ndarray:
    """A random rotation matrix (3, 3) acting on ``(z, y, x)`` vectors.

    The rotation turns freely in the axial plane and tilts out of it by at most
    ``max_tilt_deg``.
    """
    yaw = rng.uniform(0, 2 * np.pi)
    tilt = np.radians(rng.uniform(-max_tilt_deg, max_tilt_deg))
    cos_y, sin_y, cos_t, sin_t = np.cos(yaw), np.sin(yaw), np.cos(tilt), np.sin(tilt)
    in_plane = np.array([[1, 0, 0], [0, cos_y, -sin_y], [0, sin_y, cos_y]])
    out_of_plane = np.array([[cos_t, -sin_t, 0], [sin_t, cos_t, 0], [0, 0, 1]])
    return in_plane @ out_of_plane


def lobulated_radius(
    rotation: np.ndarray,
    radii_zyx,
    lobes: np.ndarray,
    dz: np.ndarray,
    dy: np.ndarray,
    dx: np.ndarray,
) -> np.ndarray:
    """Normalised radius of a rotated, lobulated ellipsoid centred at the origin (1 = surface).

    Parameters
    ----------
    rotation : ndarray, shape (3, 3)
        Rotation of the ellipsoid's axes (columns in ``(z, y, x)``).
    radii_zyx : sequence of float
        Semi-axes along the rotated axes (mm).
    lobes : ndarray, shape (L, 6)
        Lobulation terms ``(amplitude, frequency, phase, vz, vy, vx)``: the surface
        radius is multiplied by ``1 + sum(amplitude * sin(frequency * (d . v) + phase))``
        where ``d`` is the unit direction from the centre in the ellipsoid's frame.
    dz, dy, dx : ndarray
        Broadcast offsets (mm) from the centre.
    """
    local = [
        (dz * rotation[0, k] + dy * rotation[1, k] + dx * rotation[2, k]) / radii_zyx[k]
        for k in range(3)
    ]
    rho = np.sqrt(local[0] ** 2 + local[1] ** 2 + local[2] ** 2)
    if len(lobes) == 0:
        return rho
    inv = 1.0 / np.maximum(rho, 1e-6)
    modulation = 1.0
    for amplitude, frequency, phase, vz, vy, vx in lobes:
        along = (local[0] * vz + local[1] * vy + local[2] * vx) * inv
        modulation = modulation + amplitude * np.sin(frequency * along + phase)
    return rho / modulation
