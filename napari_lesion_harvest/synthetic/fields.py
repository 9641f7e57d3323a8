"""Smooth random fields: computed on a coarse grid, interpolated to the volume's voxels."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _interpolation_matrix(positions: np.ndarray, size: int) -> np.ndarray:
    """Linear-interpolation weights, shape ``(len(positions), size)``, at fractional positions."""
    positions = np.clip(positions, 0, size - 1)
    lower = np.minimum(np.floor(positions).astype(np.intp), max(size - 2, 0))
    weight = positions - lower
    matrix = np.zeros((positions.size, size), dtype=np.float32)
    rows = np.arange(positions.size)
    matrix[rows, lower] = 1.0 - weight
    matrix[rows, np.minimum(lower + 1, size - 1)] += weight
    return matrix


def smooth_fields(
    rng: np.random.Generator,
    coords_zyx: tuple[np.ndarray, np.ndarray, np.ndarray],
    count: int,
    *,
    correlation_mm: float,
    grid_mm: float | None = None,
) -> list[np.ndarray]:
    """Gaussian random fields with unit standard deviation, sampled at the voxel centres.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    coords_zyx : tuple of ndarray
        Voxel-centre coordinates (mm) along z, y and x, shapes ``(Z,)``, ``(Y,)``, ``(X,)``.
    count : int
        Number of independent fields.
    correlation_mm : float
        Standard deviation of the Gaussian smoothing kernel in mm.
    grid_mm : float, optional
        Spacing of the coarse grid on which white noise is smoothed (default
        ``correlation_mm / 2``).

    Returns
    -------
    list of ndarray, each shape (Z, Y, X), float32
    """
    grid_mm = grid_mm or correlation_mm / 2.0
    margin = 2.0 * grid_mm
    lows = [float(c.min()) - margin for c in coords_zyx]
    coarse_shape = [
        int(np.ceil((float(c.max()) + margin - lo) / grid_mm)) + 2
        for c, lo in zip(coords_zyx, lows, strict=True)
    ]
    positions = [(c - lo) / grid_mm for c, lo in zip(coords_zyx, lows, strict=True)]
    sigma = correlation_mm / grid_mm
    matrices = [_interpolation_matrix(p, n) for p, n in zip(positions, coarse_shape, strict=True)]
    fields = []
    for _ in range(count):
        coarse = ndimage.gaussian_filter(
            rng.standard_normal(coarse_shape, dtype=np.float32), sigma, mode="wrap"
        )
        coarse /= max(float(coarse.std()), 1e-12)
        field = np.tensordot(matrices[0], coarse, axes=(1, 0))
        field = np.matmul(matrices[1], field)
        fields.append(np.ascontiguousarray(field @ matrices[2].T, dtype=np.float32))
    return fields
