"""HU windowing shared by the lesion proposal generator and classifier (MULAN convention)."""

from __future__ import annotations

import numpy as np

#: HU window mapped to [0, 255]: the full 12-bit CT range, as in MULAN and the paper.
HU_WINDOW = (-1024.0, 3071.0)
#: Mean subtracted after scaling to [0, 255].
PIXEL_MEAN = 50.0
#: HU of air: the value used for padding outside the volume.
AIR_HU = -1024.0


def window_hu(hu, *, window: tuple[float, float] = HU_WINDOW, mean: float = PIXEL_MEAN):
    """Clip HU to ``window``, scale it linearly to [0, 255] and subtract ``mean``.

    Parameters
    ----------
    hu : ndarray or torch.Tensor, any shape
        Hounsfield units.
    window : (float, float), optional
        ``(low, high)`` HU mapped to 0 and 255.
    mean : float, optional
        Subtracted after scaling.

    Returns
    -------
    ndarray (float32) or torch.Tensor (float), same shape as ``hu``
        Values in ``[-mean, 255 - mean]``.
    """
    low, high = window
    if high <= low:
        raise ValueError(f"HU window must have high > low, got {window}")
    scale = 255.0 / (high - low)
    if isinstance(hu, np.ndarray) or not hasattr(hu, "clamp"):
        arr = np.asarray(hu, dtype=np.float32)
        return (np.clip(arr, low, high) - low) * np.float32(scale) - np.float32(mean)
    return (hu.float().clamp(low, high) - low) * scale - mean
