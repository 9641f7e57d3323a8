"""FROC: sensitivity at fixed false-positive rates per volume.

The released evaluation reads the FROC with ``scipy.interpolate.interp1d``
(linear, ``fill_value='extrapolate'``) over one point per detection. Inside
the range of operating points :func:`sensitivity_at_fp` computes exactly the
same numbers (same formula, same choice of segment: at an FP rate shared by
several points, the first of them, i.e. the lowest sensitivity reached at
that rate). Outside the range it differs only where scipy breaks down:

* past the last operating point the sensitivity is held at its final value.
  scipy extrapolates the last segment, which is flat when the lowest-scored
  detection is a false positive (then both agree) and has zero width when it
  is a hit, where scipy returns ``inf`` or ``nan``;
* below the first operating point the curve starts at the origin (nothing
  selected: 0 FP, sensitivity 0). scipy's value there is also 0 whenever it
  is finite.
"""

from __future__ import annotations

import numpy as np

from napari_lesion_harvest.evaluation.curve import DetectionCurve

#: False positives per volume at which the paper reads its FROC curves.
FROC_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def sensitivity_at_fp(fp_per_image, sensitivity, fp_rates) -> np.ndarray:
    """Piecewise-linear FROC reading, anchored at the origin and flat past the end.

    Parameters
    ----------
    fp_per_image : array_like, shape (T,)
        FP rate of each operating point, non-decreasing.
    sensitivity : array_like, shape (T,)
        Sensitivity of each operating point, non-decreasing.
    fp_rates : array_like, shape (F,)
        Rates to read at (> 0).

    Returns
    -------
    ndarray, shape (F,)
    """
    x = np.r_[0.0, np.asarray(fp_per_image, dtype=np.float64)]
    y = np.r_[0.0, np.asarray(sensitivity, dtype=np.float64)]
    query = np.asarray(fp_rates, dtype=np.float64)
    if np.any(query <= 0):
        raise ValueError(f"FP rates must be positive, got {query.tolist()}")
    hi = np.searchsorted(x, query, side="left")
    inside = hi < len(x)
    hi = np.minimum(hi, len(x) - 1)
    lo = hi - 1  # query > 0 = x[0], so hi >= 1
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (y[hi] - y[lo]) / (x[hi] - x[lo])
        inner = slope * (query - x[lo]) + y[lo]
    return np.where(inside, inner, y[-1])


def froc(curve: DetectionCurve, fp_rates=FROC_FP_RATES) -> np.ndarray:
    """Sensitivity at ``fp_rates`` false positives per volume, shape ``(F,)``.

    ``nan`` everywhere when the test set has no lesions.
    """
    if curve.n_lesions == 0:
        return np.full(len(np.atleast_1d(fp_rates)), np.nan)
    return sensitivity_at_fp(curve.fp_per_image, curve.recall, fp_rates)
