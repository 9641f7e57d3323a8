"""What a finished round shows: Table I rows, curves and headline numbers from its metrics.

The stage metrics are nested by stage (``harvest``, ``evaluation``, ...);
:func:`summary_metrics` adds the flat keys that the napari results panel and
the ``status`` / ``demo`` commands read. They show the **cumulative** rows, as
the paper's Table I does: after round i, the label set ``R + P_H,1..i`` (the
original marks, every lesion harvested by rounds 1 to i, and round i's
proposals ranked by lesion score; :mod:`napari_lesion_harvest.evaluation.harvest`
defines the ranking).

``threshold``, ``n_harvested``, ``new_lesions``, ``expected_false_positives``
    the harvest threshold on s_gc, the size of P_pos_H, how many are new, and how
    many of them V_M lets one expect to be false positives
    (:func:`~napari_lesion_harvest.harvest.threshold.expected_false_positives`);
``table_i``
    rows ``{"label", "R@80", "R@85", "R@90", "R@95", "AP"}`` on V_H_test, after a
    baseline row for the original marks ``{"label", "recall", "precision"}``: the
    cumulative row ``R + P_H,1..i``;
``table_i_per_round``
    the same row for this round's proposals alone, ``R + P_H,i``;
``pr``, ``froc``
    ``{"recall", "precision"}`` and ``{"fp_per_volume", "sensitivity"}`` of the
    cumulative row on V_H_test;
``harvested_on_test``
    recall and precision of the cumulative label set at the harvest threshold;
``evaluation_note``
    why the round has no evaluation (no V_H_test volume flagged fully annotated).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from napari_lesion_harvest.vocabulary import Role

BASELINE_LABEL = "R (original marks)"
#: Label of the per-round row of round ``i`` (its proposals alone).
PER_ROUND_LABEL = "R + P_H,{i} alone"


def cumulative_label(number: int) -> str:
    """``R + P_H,1`` after round 1, ``R + P_H,1..i`` after round i (the shown row)."""
    return "R + P_H,1" if number == 1 else f"R + P_H,1..{number}"


def summary_metrics(number: int, metrics: dict) -> dict:
    """The flat summary keys of a round from its stage metrics (see module notes)."""
    harvest = metrics.get("harvest") or {}
    summary = {
        "threshold": harvest.get("threshold"),
        "n_harvested": harvest.get(Role.P_pos_H),
        "new_lesions": harvest.get("new_lesions"),
        "expected_false_positives": harvest.get("expected_false_positives"),
    }
    evaluation = metrics.get("evaluation")
    if not evaluation:
        if metrics.get("evaluation_note"):
            summary["evaluation_note"] = metrics["evaluation_note"]
        return summary
    cumulative = evaluation["cumulative"]
    baseline = {"label": BASELINE_LABEL, **evaluation["baseline"]}
    summary["table_i"] = [baseline, table_row(cumulative_label(number), cumulative)]
    summary["table_i_per_round"] = table_row(
        PER_ROUND_LABEL.format(i=number), evaluation["per_round"]
    )
    summary["pr"] = {k: cumulative["pr_curve"][k] for k in ("recall", "precision")}
    summary["froc"] = {
        "fp_per_volume": [p["fp_per_image"] for p in cumulative["p3d"]["froc"]],
        "sensitivity": [p["sensitivity"] for p in cumulative["p3d"]["froc"]],
    }
    summary["harvested_on_test"] = cumulative["harvested"]
    return summary


def about(expected: float) -> str:
    """An expected count as said: ``about 12``, or ``under 1``."""
    return "under 1" if expected < 0.5 else f"about {expected:.0f}"


def harvest_counts(metrics: dict) -> str:
    """``harvested N lesions (M new; about E expected false positives), threshold T``.

    Parameters
    ----------
    metrics : dict
        A round's summary keys (``n_harvested``, ``new_lesions``, ``threshold``,
        ``expected_false_positives``; the last is absent from rounds stored before
        the estimate existed, and then left out).
    """
    expected = metrics.get("expected_false_positives")
    risk = "" if expected is None else f"; {about(expected)} expected false positives"
    threshold = metrics.get("threshold")
    return (
        f"harvested {metrics.get('n_harvested')} lesions ({metrics.get('new_lesions')} new"
        f"{risk}), threshold {'none' if threshold is None else f'{threshold:.3f}'}"
    )


def table_row(label: str, row: dict) -> dict:
    """``{"label", "R@80", ..., "R@95", "AP"}`` of one evaluated row."""
    p3d = row["p3d"]
    table = {"label": label}
    for point in p3d["recall_at_precision"]:
        table[f"R@{100 * point['precision_target']:g}"] = point["recall"]
    table["AP"] = p3d["ap"]
    return table


def format_round_table(rounds: Sequence) -> str:
    """The paper's Table I over finished rounds (V_H_test), as fixed-width text: the
    original marks, each round's cumulative row ``R + P_H,1..i``, then each round's
    per-round row ``R + P_H,i alone``.

    Parameters
    ----------
    rounds : sequence of RoundRecord
        Finished rounds; those without an evaluation are left out (the latest one's
        ``evaluation_note`` says why when none has one).
    """
    evaluated = [r.metrics for r in rounds if r.metrics.get("table_i")]
    if not evaluated:
        notes = [r.metrics["evaluation_note"] for r in rounds if r.metrics.get("evaluation_note")]
        return "no V_H_test evaluation: " + (
            notes[-1] if notes else "no round has finished its evaluation"
        )
    baseline = evaluated[0]["table_i"][0]
    precision = baseline.get("precision")
    shown = "--" if precision is None else f"{100 * precision:.0f}"
    rows = [m["table_i"][1] for m in evaluated]
    rows += [m["table_i_per_round"] for m in evaluated if m.get("table_i_per_round")]
    keys = [k for k in rows[0] if k != "label"]
    lines = [
        f"{BASELINE_LABEL}: R {baseline['recall']:.3f}@{shown}P",
        f"{'label set':<18}" + "".join(f"{k:>8}" for k in keys),
    ]
    for row in rows:
        lines.append(
            f"{row['label']:<18}"
            + "".join(f"{row[k]:>8.3f}" if row[k] is not None else f"{'--':>8}" for k in keys)
        )
    return "\n".join(lines)


def save_round_curves(rounds: Sequence, path: str | Path) -> Path:
    """Save the PR and FROC curves of the finished rounds' cumulative rows
    (``R + P_H,1..i``) on V_H_test to a PNG.

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
        (line,) = pr.plot(
            m["pr"]["recall"], m["pr"]["precision"], label=cumulative_label(record.number)
        )
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
    pr.set_title("R + lesions harvested by round i, V_H_test (dots: threshold)")
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
