"""One call that evaluates detections under a chosen rule, and its text / JSON forms."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.evaluation.curve import DetectionCurve, detection_curve
from napari_lesion_harvest.evaluation.froc import FROC_FP_RATES, froc
from napari_lesion_harvest.evaluation.matching import (
    IOU_THRESHOLD_2D,
    IOU_THRESHOLD_3D,
    match_3d,
    match_p3d,
    match_recist_2d,
)
from napari_lesion_harvest.evaluation.pr import (
    TABLE_I_PRECISIONS,
    RecallAtPrecision,
    average_precision,
    recall_at_precision,
)
from napari_lesion_harvest.evaluation.tables import BoxTruth3D, ProposalTable, RecistTruth

#: Rule name -> (matching function, default IoU threshold, truth type).
METRICS = {
    "p3d": (match_p3d, IOU_THRESHOLD_2D, RecistTruth),
    "3d": (match_3d, IOU_THRESHOLD_3D, BoxTruth3D),
    "2d": (match_recist_2d, IOU_THRESHOLD_2D, RecistTruth),
}


@dataclass(frozen=True)
class EvaluationResult:
    """FROC, AP and recall at precision of one set of detections under one rule."""

    metric: str
    iou_threshold: float
    curve: DetectionCurve
    fp_rates: tuple[float, ...]
    sensitivities: np.ndarray
    ap: float
    recall_at_precision: list[RecallAtPrecision]

    def to_dict(self) -> dict:
        """JSON-ready summary (``nan`` / ``inf`` become ``None``)."""

        def number(value: float) -> float | None:
            return float(value) if np.isfinite(value) else None

        final_fp = self.curve.fp_per_image[-1] if len(self.curve.thresholds) else 0.0
        return {
            "metric": self.metric,
            "iou_threshold": self.iou_threshold,
            "n_images": self.curve.n_images,
            "n_lesions": self.curve.n_lesions,
            "n_detections": int(self.curve.n_selected[-1]) if len(self.curve.n_selected) else 0,
            "max_fp_per_image": number(final_fp),
            "froc": [
                {"fp_per_image": fp, "sensitivity": number(s)}
                for fp, s in zip(self.fp_rates, self.sensitivities, strict=True)
            ],
            "mean_sensitivity": number(float(np.mean(self.sensitivities))),
            "ap": number(self.ap),
            "recall_at_precision": [
                {
                    "precision_target": p.target,
                    "recall": number(p.recall),
                    "precision": number(p.precision),
                    "threshold": number(p.threshold),
                }
                for p in self.recall_at_precision
            ],
        }

    def format_text(self) -> str:
        """A short human-readable report."""
        unit = "marked slice" if self.metric == "2d" else "volume"
        lines = [
            f"metric {self.metric} (IoU >= {self.iou_threshold:g}): "
            f"{self.curve.n_lesions} lesions, {self.curve.n_images} {unit}s, "
            f"{self.to_dict()['n_detections']} detections",
            f"FROC sensitivity @ FPs per {unit}:",
            "  " + "  ".join(f"{fp:>6g}" for fp in self.fp_rates),
            "  " + "  ".join(f"{s:6.4f}" for s in self.sensitivities),
            f"  mean {np.mean(self.sensitivities):.4f}",
            f"AP {self.ap:.4f}",
            "Recall at precision: "
            + "  ".join(f"R@{100 * p.target:g}P {p.recall:.3f}" for p in self.recall_at_precision),
        ]
        return "\n".join(lines)


def evaluate(
    truth: RecistTruth | BoxTruth3D,
    detections: ProposalTable,
    *,
    metric: str = "p3d",
    iou_threshold: float | None = None,
    plus_one: bool = True,
    fp_rates=FROC_FP_RATES,
    precision_targets=TABLE_I_PRECISIONS,
    collapse_ties: bool = True,
) -> EvaluationResult:
    """Evaluate ``detections`` against ``truth`` under ``metric``.

    Parameters
    ----------
    truth : RecistTruth or BoxTruth3D
        RECIST boxes for ``"p3d"`` and ``"2d"``, 3D boxes for ``"3d"``.
    detections : ProposalTable
        Built over ``truth.volume_ids``.
    metric : {"p3d", "3d", "2d"}
    iou_threshold : float, optional
        Defaults to 0.5 (2D rules) or 0.33 (3D rule).
    plus_one : bool
        Released-evaluation pixel convention for IoU.
    fp_rates, precision_targets : sequence of float
    collapse_ties : bool
        See :func:`~.curve.detection_curve`.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)}")
    match, default_threshold, truth_type = METRICS[metric]
    if not isinstance(truth, truth_type):
        raise TypeError(f"metric {metric!r} needs {truth_type.__name__} truth")
    threshold = default_threshold if iou_threshold is None else float(iou_threshold)
    matches = match(truth, detections, iou_threshold=threshold, plus_one=plus_one)
    curve = detection_curve(matches, collapse_ties=collapse_ties)
    return EvaluationResult(
        metric=metric,
        iou_threshold=threshold,
        curve=curve,
        fp_rates=tuple(float(f) for f in fp_rates),
        sensitivities=froc(curve, fp_rates),
        ap=average_precision(curve),
        recall_at_precision=recall_at_precision(curve, precision_targets),
    )
