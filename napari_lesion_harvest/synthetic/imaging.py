"""Scanner effects: partial-volume blur, correlated quantum noise, field of view, HU range."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: HU range stored by the phantom (DeepLesion's PNGs span -1024 .. 3071 in practice).
HU_MIN, HU_MAX = -1024, 3071


def acquire(
    hu: np.ndarray,
    rng: np.random.Generator,
    *,
    noise_std: float,
    blur_px: float = 0.6,
    blur_slices: float = 0.3,
    noise_grain_px: float = 0.7,
) -> np.ndarray:
    """Turn an ideal HU volume into a CT-like one.

    Parameters
    ----------
    hu : ndarray, shape (Z, Y, X), float32
        Ideal attenuation map; modified in place.
    rng : numpy.random.Generator
        Source of the noise.
    noise_std : float
        Standard deviation of the noise (HU) after its spatial correlation.
    blur_px : float
        In-plane Gaussian sigma (pixels) of the point-spread function.
    blur_slices : float
        Through-plane Gaussian sigma (slices) of the slice profile.
    noise_grain_px : float
        In-plane correlation (Gaussian sigma, pixels) of the noise: CT noise is
        not white because reconstruction kernels low-pass it.

    Returns
    -------
    ndarray, shape (Z, Y, X), int16
        HU clipped to ``[HU_MIN, HU_MAX]``; outside the circular field of view
        every voxel is ``HU_MIN`` (no data, as in clinical reconstructions).
    """
    blurred = ndimage.gaussian_filter(hu, (blur_slices, blur_px, blur_px), mode="nearest")
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, (0.0, noise_grain_px, noise_grain_px), mode="wrap")
    noise *= noise_std / max(float(noise.std()), 1e-12)
    blurred += noise
    nz, ny, nx = hu.shape
    yy = (np.arange(ny) - (ny - 1) / 2)[:, None]
    xx = (np.arange(nx) - (nx - 1) / 2)[None, :]
    outside = yy**2 + xx**2 > (min(ny, nx) / 2) ** 2
    blurred[:, outside] = HU_MIN
    np.clip(blurred, HU_MIN, HU_MAX, out=blurred)
    return np.rint(blurred).astype(np.int16)
