"""FROC and precision-recall figures (matplotlib, Agg; no pyplot global state)."""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import numpy as np

from napari_lesion_harvest.evaluation.curve import DetectionCurve
from napari_lesion_harvest.evaluation.pr import final_point, format_baseline
from napari_lesion_harvest.evaluation.report import EvaluationResult

#: Left end of the FROC plot's log axis (FP per volume); points at 0 FP are drawn there.
_FROC_X_MIN = 1 / 16


def draw_froc(ax, results: Mapping[str, EvaluationResult]) -> None:
    """FROC curves on ``ax``: sensitivity over FPs per volume (log2 axis), readings marked.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    results : mapping of str to EvaluationResult
        Legend label to result; the FROC readings (``fp_rates``) get markers.
    """
    x_max = 16.0
    for label, result in results.items():
        curve = result.curve
        fp = np.r_[0.0, curve.fp_per_image]
        sens = np.r_[0.0, curve.recall]
        x_max = max(x_max, *result.fp_rates)
        # Linear between operating points, as the readings are; flat past the last one.
        visible = fp >= _FROC_X_MIN
        fp_drawn = np.r_[fp[visible], max(x_max, fp[-1])]
        sens_drawn = np.r_[sens[visible], sens[-1]]
        (line,) = ax.plot(fp_drawn, sens_drawn, label=label)
        ax.plot(result.fp_rates, result.sensitivities, "o", color=line.get_color(), ms=5)
    unit = "marked slice" if any(r.metric == "2d" for r in results.values()) else "volume"
    ax.set_xscale("log", base=2)
    ax.set_xlim(_FROC_X_MIN, x_max * 1.5)
    rates = sorted({fp for r in results.values() for fp in r.fp_rates})
    ax.set_xticks(rates, [f"{fp:g}" for fp in rates])
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"False positives per {unit}")
    ax.set_ylabel("Sensitivity (lesions found)")
    ax.set_title("FROC")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")


def draw_pr(
    ax,
    results: Mapping[str, EvaluationResult],
    *,
    baseline: tuple[str, DetectionCurve] | None = None,
) -> None:
    """Precision-recall curves on ``ax`` with the recall-at-precision points marked.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    results : mapping of str to EvaluationResult
    baseline : (label, DetectionCurve), optional
        The original marks, drawn as one red dot (the paper's Fig. 5a).
    """
    for label, result in results.items():
        curve = result.curve
        (line,) = ax.plot(curve.recall, curve.precision, label=label)
        points = [p for p in result.recall_at_precision if np.isfinite(p.precision)]
        ax.plot(
            [p.recall for p in points],
            [p.precision for p in points],
            "o",
            color=line.get_color(),
            ms=5,
        )
    if baseline is not None:
        recall, precision = final_point(baseline[1])
        text = format_baseline(*baseline)
        ax.plot([recall], [precision], "o", color="red", ms=8, label=f"original marks ({text})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    targets = sorted({p.target for r in results.values() for p in r.recall_at_precision})
    shown = "/".join(f"{100 * t:g}" for t in targets)
    ax.set_title(
        f"Precision-recall over the lesion score\n(dots: highest recall at {shown}% precision)"
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")


def evaluation_figure(
    results: Mapping[str, EvaluationResult],
    *,
    baseline: tuple[str, DetectionCurve] | None = None,
):
    """A two-panel figure: FROC (left) and precision-recall (right).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.8), layout="constrained")
    froc_ax, pr_ax = figure.subplots(1, 2)
    draw_froc(froc_ax, results)
    draw_pr(pr_ax, results, baseline=baseline)
    return figure


def save_evaluation_plot(
    path: str | PathLike,
    results: Mapping[str, EvaluationResult],
    *,
    baseline: tuple[str, DetectionCurve] | None = None,
    dpi: int = 120,
) -> Path:
    """Draw :func:`evaluation_figure` and save it (format from the suffix, e.g. PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    figure = evaluation_figure(results, baseline=baseline)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=dpi)
    return path
