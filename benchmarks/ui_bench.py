"""GUI responsiveness figures (run under Xvfb).

Usage::

    QT_QPA_PLATFORM=xcb xvfb-run -a .venv/bin/python benchmarks/ui_bench.py [ROUND_COMMAND_JSON]

Prints:
* the longest event-loop stall (gap between 5 ms QTimer ticks) while a round
  subprocess streams JSON-lines progress into the dock's round panel: the
  stand-in script ``tests/round_script_fixture.py`` (50 events, 20 ms apart) or,
  when given, a real round command as a JSON list;
* the time to load 15,000 volume summaries into the worklist and to filter them.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stall_during_round(command: list[str] | None) -> dict:
    import napari
    from qtpy.QtCore import QElapsedTimer, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_lesion_harvest.ui.round_panel import RoundPanel

    viewer = napari.Viewer(show=False)
    folder = Path(tempfile.mkdtemp())
    script = REPO / "tests" / "round_script_fixture.py"

    def command_for(_folder, *, config, device):
        if command is not None:
            return command
        return [sys.executable, str(script), str(folder / "pid"), "50", "0.02"]

    finished = []
    panel = RoundPanel(
        project_folder=lambda: folder, on_finished=finished.append, command_for=command_for
    )
    clock = QElapsedTimer()
    ticks = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(clock.elapsed()))
    clock.start()
    timer.start()
    panel.start_round()
    while not finished:
        QApplication.processEvents()
        time.sleep(0.001)
    timer.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    viewer.close()
    return {
        "events": panel.events_seen,
        "exit_status": finished[0],
        "duration_s": clock.elapsed() / 1000,
        "longest_stall_ms": max(gaps) if gaps else None,
        "ticks": len(ticks),
    }


def worklist_15000() -> dict:
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    from napari_lesion_harvest.store.records import VolumeSummary
    from napari_lesion_harvest.ui.worklist import WorklistPanel

    QApplication.instance() or QApplication([])
    summaries = [
        VolumeSummary(
            f"{i // 3:06d}_01_01_{i:03d}-{i + 30:03d}",
            "V_H" if i % 20 else "V_M",
            i % 20 == 0,
            i % 4,
            i % 3,
            i % 50,
            i % 7,
            i % 5,
        )
        for i in range(15_000)
    ]
    panel = WorklistPanel()
    panel.resize(500, 600)
    panel.show()
    start = time.perf_counter()
    panel.set_summaries(summaries)
    QApplication.processEvents()
    load = time.perf_counter() - start
    start = time.perf_counter()
    panel.search.setText("000123")
    QApplication.processEvents()
    search = time.perf_counter() - start
    start = time.perf_counter()
    panel.search.setText("")
    panel.table.sortByColumn(4, Qt.SortOrder.DescendingOrder)
    QApplication.processEvents()
    sort = time.perf_counter() - start
    return {"rows": len(summaries), "load_s": load, "search_s": search, "sort_s": sort}


if __name__ == "__main__":
    command = json.loads(sys.argv[1]) if len(sys.argv) > 1 else None
    print("round stall:", stall_during_round(command))
    print("worklist:", worklist_15000())
