"""GUI responsiveness figures (run under Xvfb).

Usage::

    QT_QPA_PLATFORM=xcb xvfb-run -a .venv/bin/python benchmarks/ui_bench.py [ROUND_COMMAND_JSON]
    QT_QPA_PLATFORM=xcb xvfb-run -a .venv/bin/python benchmarks/ui_bench.py --real-round [REPEATS]

Prints:
* the longest event-loop stall (gap between 5 ms QTimer ticks) while a round
  subprocess streams JSON-lines progress into the dock's round panel: the
  stand-in script ``tests/round_script_fixture.py`` (50 events, 20 ms apart) or,
  when given, a real round command as a JSON list;
* the time to load 15,000 volume summaries into the worklist and to filter them;
* with ``--real-round``: event-loop stalls during a real round started from the
  dock (tiny blob project of the tests, CPU, a volume open), with the round
  process at the GUI's CPU priority (nice +0) and at the runner's default
  (nice +:data:`ROUND_NICENESS`), alternating, each in a fresh napari process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Event-loop probe interval of the real-round figures (ms), as in tests/test_ui_real_round.py.
PROBE_MS = 10


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


def real_round_stalls(work: Path, niceness: int) -> dict:
    """Event-loop gaps during a real round from the dock, round process at ``niceness``.

    Builds the tests' tiny blob project in ``work``, opens volume ``vol04`` in a
    shown napari window, lets it paint, then starts the round as the Run button
    does and probes the event loop every :data:`PROBE_MS` ms until the dock has
    refreshed from the store.
    """
    import napari
    import numpy as np
    from qtpy.QtCore import QElapsedTimer, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_lesion_harvest.ui.dock import HarvestDock

    sys.path.insert(0, str(REPO))
    from tests.harvest_project import make_blob_project

    def run_until(condition) -> None:
        while not condition():
            QApplication.processEvents()
            time.sleep(0.002)

    project_dir = make_blob_project(work)
    viewer = napari.Viewer(show=True)
    dock = HarvestDock(viewer, author="bench")
    viewer.window.add_dock_widget(dock, name="Lesion Harvest", area="right")
    dock.open_project(project_dir)
    panel = dock.round_panel
    panel.set_config(str(work / "tiny.json"))
    panel.device_box.setCurrentText("cpu")
    panel.runner.niceness = niceness
    opened, refreshed = [], []
    dock.volume_opened.connect(opened.append)
    dock.refreshed.connect(lambda: refreshed.append(True))
    dock.open_volume("vol04")
    run_until(lambda: bool(opened))
    settle_end = time.monotonic() + 0.5
    run_until(lambda: time.monotonic() > settle_end)

    clock = QElapsedTimer()
    ticks = [0]
    timer = QTimer()
    timer.setInterval(PROBE_MS)
    timer.timeout.connect(lambda: ticks.append(clock.elapsed()))
    clock.start()
    timer.start()
    panel.start_round()
    run_until(lambda: bool(refreshed) and not panel.runner.running)
    timer.stop()
    gaps = np.diff(ticks)
    slow = [(int(t), int(g)) for t, g in zip(ticks, gaps, strict=False) if g > 50]
    result = {
        "niceness": niceness,
        "round_s": round(clock.elapsed() / 1000, 1),
        "events": panel.events_seen,
        "longest_stall_ms": int(gaps.max()),
        "p99_gap_ms": float(np.percentile(gaps, 99)),
        "gaps_over_50ms": slow,
        "status": panel.status_label.text(),
    }
    dock.close_project()
    viewer.close()
    return result


def real_round_comparison(repeats: int) -> list[dict]:
    """:func:`real_round_stalls` at nice +0 and at the default, alternating, fresh processes."""
    from napari_lesion_harvest.ui.round_runner import ROUND_NICENESS

    results = []
    for _ in range(repeats):
        for niceness in (0, ROUND_NICENESS):
            with tempfile.TemporaryDirectory() as work:
                child = [sys.executable, __file__, "--real-round-child", str(niceness), work]
                output = subprocess.run(child, check=True, capture_output=True, text=True)
                result = json.loads(output.stdout.strip().splitlines()[-1])
            print("real round:", result, flush=True)
            results.append(result)
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--real-round-child"]:
        print(json.dumps(real_round_stalls(Path(sys.argv[3]), int(sys.argv[2]))))
    elif sys.argv[1:2] == ["--real-round"]:
        real_round_comparison(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    else:
        command = json.loads(sys.argv[1]) if len(sys.argv) > 1 else None
        print("round stall:", stall_during_round(command))
        print("worklist:", worklist_15000())
