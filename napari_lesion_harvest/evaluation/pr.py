"""Precision-recall over the lesion score: AP, recall at fixed precision, the paper's Table I.

Precision and recall come from :class:`~.curve.DetectionCurve` with the
released evaluation's AP convention: a second hit on an already-found
lesion is a false positive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.evaluation.curve import DetectionCurve

#: Precisions at which the paper's Table I reports recall.
TABLE_I_PRECISIONS = (0.80, 0.85, 0.90, 0.95)


def average_precision(curve: DetectionCurve) -> float:
    """VOC all-point AP: area under the precision envelope, over recall.

    The precision-recall points get the sentinels ``(0, 0)`` and ``(1, 0)``,
    precision is replaced by its running maximum from the right, and the
    area is summed where recall changes (py-faster-rcnn's ``voc_ap``, which
    the released evaluation uses). ``nan`` when the test set has no lesions.
    """
    if curve.n_lesions == 0:
        return float("nan")
    recall = np.r_[0.0, curve.recall, 1.0]
    envelope = np.r_[0.0, curve.precision, 0.0]
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


@dataclass(frozen=True)
class RecallAtPrecision:
    """The operating point with the highest recall whose precision reaches a target.

    Attributes
    ----------
    target : float
        Required precision.
    recall : float
        0 when no operating point reaches ``target``.
    precision : float
        Precision actually reached there (``nan`` when none reaches the target).
    threshold : float
        Score threshold of that operating point (``inf``: select nothing).
    """

    target: float
    recall: float
    precision: float
    threshold: float


def recall_at_precision(
    curve: DetectionCurve, targets=TABLE_I_PRECISIONS
) -> list[RecallAtPrecision]:
    """Highest recall over the operating points with precision ``>= target``.

    Only real operating points count (no interpolated precision), so the
    returned threshold really gives the stated precision and recall.

    Parameters
    ----------
    curve : DetectionCurve
    targets : sequence of float
        Precisions in (0, 1].

    Returns
    -------
    list of RecallAtPrecision, one per target
    """
    recall, precision = curve.recall, curve.precision
    result = []
    for target in targets:
        if not 0 < target <= 1:
            raise ValueError(f"precision targets must be in (0, 1], got {target}")
        ok = np.flatnonzero(precision >= target)
        if ok.size == 0 or curve.n_lesions == 0:
            result.append(RecallAtPrecision(float(target), 0.0, float("nan"), float("inf")))
            continue
        best = ok[np.argmax(recall[ok])]  # first of equal recalls: the highest threshold
        result.append(
            RecallAtPrecision(
                float(target),
                float(recall[best]),
                float(precision[best]),
                float(curve.thresholds[best]),
            )
        )
    return result


def final_point(curve: DetectionCurve) -> tuple[float, float]:
    """``(recall, precision)`` with every detection selected (the Table I baseline row).

    For the original marks treated as detections this is the paper's
    "R 0.364@100P" (recall of the marks against the full annotation, at the
    precision the marks have).
    """
    if len(curve.thresholds) == 0:
        return 0.0, float("nan")
    return float(curve.recall[-1]), float(curve.precision[-1])


def format_baseline(label: str, curve: DetectionCurve) -> str:
    """The baseline row text, e.g. ``"R 0.364@100P"``."""
    recall, precision = final_point(curve)
    shown = "--" if np.isnan(precision) else f"{100 * precision:.0f}"
    return f"{label} {recall:.3f}@{shown}P"


def format_table_i(
    rows: Mapping[str, DetectionCurve],
    *,
    baseline: tuple[str, DetectionCurve] | None = None,
    targets=TABLE_I_PRECISIONS,
) -> str:
    """The paper's Table I: recall at each precision target, one row per label set.

    Parameters
    ----------
    rows : mapping of str to DetectionCurve
        Row label (e.g. ``"R + P+_H,1"``) to the curve of that label set.
    baseline : (label, DetectionCurve), optional
        The original marks as detections; printed first as one line
        ``"R 0.364@100P"``.
    targets : sequence of float

    Returns
    -------
    str
        A fixed-width text table.
    """
    headers = ["Label set", *(f"R@{100 * t:g}P" for t in targets)]
    body = [
        [label, *(f"{p.recall:.3f}" for p in recall_at_precision(curve, targets))]
        for label, curve in rows.items()
    ]
    widths = [max(len(r[i]) for r in [headers, *body]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    lines = [line(headers)]
    if baseline is not None:
        lines.append(format_baseline(*baseline))
    lines += [line(row) for row in body]
    return "\n".join(lines)
