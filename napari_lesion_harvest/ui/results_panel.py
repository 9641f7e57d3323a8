"""Results of the latest rounds: Table I rows and PR / FROC curves, read from round metrics.

The panel draws what the rounds stored; it computes no metric. It reads these
keys of ``RoundRecord.metrics`` (each optional):

``table_i``
    list of rows ``{"label": str, "R@80": float, "R@85": float, "R@90": float,
    "R@95": float, "AP": float}`` (any other numeric keys are shown too): the
    original marks, then the round's cumulative row ``R + P_H,1..i``, the paper's
    Table I row (:mod:`napari_lesion_harvest.harvest.report`);
``pr``
    ``{"recall": [...], "precision": [...]}`` of that row on ``V_H^test``;
``evaluation_note``
    why the round has no evaluation (shown instead of the table);
``froc``
    ``{"fp_per_volume": [...], "sensitivity": [...]}``;
``threshold``, ``n_harvested``, ``expected_false_positives``
    the harvest threshold, the number of harvested lesions, and how many of them V_M
    lets one expect to be false positives.
"""

from __future__ import annotations

import re
from functools import cache

from qtpy.QtWidgets import QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from napari_lesion_harvest.harvest.report import about
from napari_lesion_harvest.vocabulary import RoundStatus

#: How many recent finished rounds are plotted.
MAX_ROUNDS_SHOWN = 4
#: What the Table I symbols mean (tooltips; the cells say it in plain words).
BASELINE_TOOLTIP = "R: the original marks alone, on the held-out volumes V_H_test (Table I)"
#: A cumulative row's label: ``R + P_H,1`` after round 1, ``R + P_H,1..i`` after round i.
ROUND_ROW = re.compile(r"^R \+ P_H,(?:1\.\.)?(\d+)$")


def plain_label(label: str) -> tuple[str, str]:
    """A Table I row label in plain words, and the paper's symbol with its meaning.

    ``"R + P_H,1..2"`` -> ``("round 2: marks + harvested", "R + P_H,1..2: ...")``.
    """
    match = ROUND_ROW.match(label)
    if match is None:
        return label, label
    number = match.group(1)
    return (
        f"round {number}: marks + harvested",
        f"{label}: the original marks R plus every lesion harvested by rounds 1 to {number}, "
        f"on the held-out volumes V_H_test (the paper's cumulative Table I row)",
    )


def table_rows(rounds) -> tuple[str, list[str], list[list[str]]]:
    """Table I over finished rounds (oldest first), as text.

    As in the paper's Table I: the original marks' recall and precision once (each
    round stores the same row first; the oldest round's is used), then each round's
    cumulative row ``R + P_H,1..i`` with its AP and recall at 80-95% precision.

    Parameters
    ----------
    rounds : list of RoundRecord

    Returns
    -------
    baseline : str
        ``"original marks only: recall 0.33 at 100% precision"``, or ``""`` before any
        evaluation.
    header : list of str
    rows : list of list of str
    """
    tables = [r.metrics.get("table_i") for r in rounds if r.status == RoundStatus.done]
    tables = [table for table in tables if table]
    if not tables:
        return "", ["set"], []
    entries = [row for table in tables for row in table[1:]]
    keys: list[str] = []
    for row in entries:
        keys += [k for k, v in row.items() if k != "label" and k not in keys and _is_number(v)]
    rows = [[str(row.get("label", "")), *(_fmt(row.get(key)) for key in keys)] for row in entries]
    return _baseline_text(tables[0][0]), ["set", *keys], rows


def _baseline_text(row: dict) -> str:
    """``original marks only: recall 0.33 at 100% precision`` (the parts that are known)."""
    text = "original marks only"
    recall, precision = row.get("recall"), row.get("precision")
    if _is_number(recall):
        text += f": recall {recall:.2f}"
        if _is_number(precision):
            text += f" at {100 * precision:.0f}% precision"
    return text


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value) -> str:
    return f"{value:.2f}" if _is_number(value) else ""  # 2 decimals: the table fits the dock


@cache
def _visible_only_canvas_class():
    """A matplotlib Qt canvas that draws only while it is visible.

    matplotlib redraws the whole figure after every resize, visible or not; the
    dock lays out its hidden tabs when a label elsewhere changes (a round
    starting, say), and a figure draw takes a tenth of a second or more: the GUI
    would stall for a panel nobody looks at. A hidden canvas only remembers
    that it is stale and draws once when it is shown.
    """
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg

    class VisibleOnlyCanvas(FigureCanvasQTAgg):
        stale_while_hidden = False

        def draw_idle(self):
            if self.isVisible():
                super().draw_idle()
            else:
                self.stale_while_hidden = True

        def showEvent(self, event):  # noqa: N802 - Qt API
            super().showEvent(event)
            if self.stale_while_hidden:
                self.stale_while_hidden = False
                super().draw_idle()

    return VisibleOnlyCanvas


class ResultsPanel(QWidget):
    """A Table I grid and a matplotlib figure with PR and FROC curves of recent rounds.

    The curves are drawn only while the panel is visible (a hidden panel draws
    them when it is shown): drawing the figure takes a few hundred
    milliseconds on a busy CPU, which must not stall the GUI when a round
    starts or finishes while the radiologist works on a volume.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        from matplotlib.figure import Figure

        self.summary = QLabel("No finished round yet.")
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, 0)
        self.table.verticalHeader().setVisible(False)
        self.figure = Figure(figsize=(4.0, 5.2))
        # fixed margins: a tight layout measures every tick label at each draw
        self.figure.subplots_adjust(left=0.16, right=0.94, top=0.95, bottom=0.09, hspace=0.42)
        self.canvas = _visible_only_canvas_class()(self.figure)
        self.pr_axes = self.figure.add_subplot(2, 1, 1)
        self.froc_axes = self.figure.add_subplot(2, 1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary)
        layout.addWidget(self.table)
        layout.addWidget(self.canvas, stretch=1)
        self.rounds_plotted: list[int] = []
        self._pending: list | None = None
        self.show_rounds([])

    def show_rounds(self, rounds) -> None:
        """Show the finished rounds among ``rounds`` (RoundRecord list, any order)."""
        done = sorted((r for r in rounds if r.status == RoundStatus.done), key=lambda r: r.number)
        baseline, header, rows = table_rows(done)
        self.table.setColumnCount(len(header))
        for column, name in enumerate(header):
            item = QTableWidgetItem(name)
            if name.startswith("R@"):
                item.setToolTip(f"recall at {name[2:]}% precision ({name})")
            elif name == "AP":
                item.setToolTip("average precision (AP)")
            self.table.setHorizontalHeaderItem(column, item)
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, text in enumerate(row):
                item = QTableWidgetItem(text)
                if j == 0:
                    text, tooltip = plain_label(text)
                    item = QTableWidgetItem(text)
                    item.setToolTip(tooltip)
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        self._fit_table_height()
        if done:
            last = done[-1]
            parts = [f"Round {last.number} finished"]
            if _is_number(last.metrics.get("n_harvested")):
                expected = last.metrics.get("expected_false_positives")
                risk = f" ({about(expected)} expected to be false)" if _is_number(expected) else ""
                parts.append(f"{last.metrics['n_harvested']} harvested lesions{risk}")
            if _is_number(last.metrics.get("threshold")):
                parts.append(f"threshold {last.metrics['threshold']:.3f}")
            lines = [", ".join(parts) + "."]
            if baseline:
                lines.append(baseline)
            if last.metrics.get("evaluation_note"):
                lines.append(f"Not evaluated: {last.metrics['evaluation_note']}")
            self.summary.setText("\n".join(lines))
            self.summary.setToolTip(BASELINE_TOOLTIP if baseline else "")
        else:
            self.summary.setText("No finished round yet.")
        self._pending = done[-MAX_ROUNDS_SHOWN:]
        if self.isVisible():
            self._plot_pending()

    def _fit_table_height(self) -> None:
        """Make the table as tall as its rows (the curves get the rest of the panel)."""
        table = self.table
        rows = sum(table.rowHeight(r) for r in range(table.rowCount()))
        scrollbar = table.horizontalScrollBar().sizeHint().height()
        table.setFixedHeight(table.horizontalHeader().height() + rows + scrollbar + 4)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        """Draw curves that arrived while the panel was hidden."""
        super().showEvent(event)
        self._plot_pending()

    def _plot_pending(self) -> None:
        if self._pending is not None:
            rounds, self._pending = self._pending, None
            self._plot(rounds)

    def _plot(self, rounds) -> None:
        pr, froc = self.pr_axes, self.froc_axes
        pr.clear()
        froc.clear()
        self.rounds_plotted = []
        for record in rounds:
            curves = record.metrics
            plotted = False
            if isinstance(curves.get("pr"), dict) and curves["pr"].get("recall"):
                pr.plot(
                    curves["pr"]["recall"],
                    curves["pr"]["precision"],
                    label=f"round {record.number}",
                )
                plotted = True
            if isinstance(curves.get("froc"), dict) and curves["froc"].get("fp_per_volume"):
                froc.plot(
                    curves["froc"]["fp_per_volume"],
                    curves["froc"]["sensitivity"],
                    marker="o",
                    markersize=3,
                    label=f"round {record.number}",
                )
                plotted = True
            if plotted:
                self.rounds_plotted.append(record.number)
        pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="PR")
        froc.set(xlabel="FPs per volume", ylabel="sensitivity", ylim=(0, 1.02), title="FROC")
        froc.set_xscale("log", base=2)
        for axes in (pr, froc):
            axes.grid(alpha=0.3)
            if self.rounds_plotted:
                axes.legend(fontsize=7, loc="lower right")
        self.canvas.draw_idle()
