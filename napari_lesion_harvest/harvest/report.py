"""What a finished round shows: Table I rows, curves and headline numbers from its metrics.

The stage metrics are nested by stage (``harvest``, ``evaluation``, ...);
:func:`summary_metrics` adds the flat keys that the napari results panel and
the ``status`` / ``demo`` commands read:

``threshold``, ``n_harvested``, ``new_lesions``
    the harvest threshold on s_gc, the size of P_pos_H, and how many are new;
``table_i``
    rows ``{"label", "R@80", "R@85", "R@90", "R@95", "AP"}`` on V_H_test, after a
    baseline row for the original marks ``{"label", "recall", "precision"}``;
``pr``, ``froc``
    ``{"recall", "precision"}`` and ``{"fp_per_volume", "sensitivity"}`` on V_H_test.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

BASELINE_LABEL = "R (original marks)"


def summary_metrics(number: int, metrics: dict) -> dict:
    """The flat summary keys of a round from its stage metrics (see module notes)."""
    harvest = metrics.get("harvest") or {}
    summary = {
        "threshold": harvest.get("threshold"),
        "n_harvested": harvest.get("P_pos_H"),
        "new_lesions": harvest.get("new_lesions"),
    }
    evaluation = metrics.get("evaluation")
    if not evaluation:
        return summary
    p3d = evaluation["p3d"]
    row = {"label": f"R + P_H,{number}"}
    for point in p3d["recall_at_precision"]:
        row[f"R@{100 * point['precision_target']:g}"] = point["recall"]
    row["AP"] = p3d["ap"]
    baseline = {"label": BASELINE_LABEL, **evaluation["baseline"]}
    summary["table_i"] = [baseline, row]
    summary["pr"] = {k: evaluation["pr_curve"][k] for k in ("recall", "precision")}
    summary["froc"] = {
        "fp_per_volume": [p["fp_per_image"] for p in p3d["froc"]],
        "sensitivity": [p["sensitivity"] for p in p3d["froc"]],
    }
    summary["harvested_on_test"] = evaluation["harvested"]
    return summary


def format_round_table(rounds: Sequence) -> str:
    """The paper's Table I over finished rounds (V_H_test), as fixed-width text.

    Parameters
    ----------
    rounds : sequence of RoundRecord
        Finished rounds; those without an evaluation are left out.
    """
    rows = [r.metrics["table_i"] for r in rounds if r.metrics.get("table_i")]
    if not rows:
        return (
            "no V_H_test evaluation (hold out fully annotated volumes with `split --as V_H_test`)"
        )
    baseline = rows[0][0]
    precision = baseline.get("precision")
    shown = "--" if precision is None else f"{100 * precision:.0f}"
    lines = [f"{BASELINE_LABEL}: R {baseline['recall']:.3f}@{shown}P"]
    keys = [k for k in rows[0][1] if k != "label"]
    lines.append(f"{'label set':<14}" + "".join(f"{k:>8}" for k in keys))
    for _, row in rows:
        lines.append(
            f"{row['label']:<14}"
            + "".join(f"{row[k]:>8.3f}" if row[k] is not None else f"{'--':>8}" for k in keys)
        )
    return "\n".join(lines)


def save_round_curves(rounds: Sequence, path: str | Path) -> Path:
    """Save the PR and FROC curves of the finished rounds on V_H_test to a PNG.

    The original marks are drawn as one point (their recall at their precision);
    each round's harvest operating point is marked on its PR curve.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4.2), tight_layout=True)
    pr, froc = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    evaluated = [r for r in rounds if r.metrics.get("pr")]
    for record in evaluated:
        m = record.metrics
        (line,) = pr.plot(m["pr"]["recall"], m["pr"]["precision"], label=f"round {record.number}")
        point = m.get("harvested_on_test") or {}
        if point.get("precision") is not None:
            pr.plot(point["recall"], point["precision"], "o", color=line.get_color())
        froc.plot(
            m["froc"]["fp_per_volume"],
            m["froc"]["sensitivity"],
            marker="o",
            label=line.get_label(),
        )
    if evaluated:
        baseline = evaluated[0].metrics["table_i"][0]
        if baseline.get("precision") is not None:
            pr.plot(baseline["recall"], baseline["precision"], "k*", ms=12, label="original marks")
    pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    pr.set_title("R + harvested lesions on V_H_test (dots: harvest threshold)")
    froc.set(xlabel="false positives per volume", ylabel="sensitivity", ylim=(0, 1.02))
    froc.set_xscale("log", base=2)
    froc.set_title("FROC (P3D) on V_H_test")
    for axes in (pr, froc):
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
