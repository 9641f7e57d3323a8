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
* with ``--real-round``: event-loop stalls during two real rounds started one
  after the other from the dock (tiny blob project of the tests, CPU, a volume
  open), in REPEATS fresh napari processes, and how long preparing napari's
  progress bars takes when the dock opens.
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


def real_round_stalls(work: Path, *, rounds: int = 2) -> list[dict]:
    """Event-loop gaps during real rounds from the dock.

    Builds the tests' tiny blob project in ``work``, opens volume ``vol04`` in a
    shown napari window, lets it paint, then runs ``rounds`` rounds one after
    the other as the Run button does, probing the event loop every
    :data:`PROBE_MS` ms from each Start until the dock has refreshed from the
    store. The first round is the first napari progress bar of the session.

    Returns
    -------
    list of dict
        Per round: ``prepare_progress_ms`` (:func:`prepare_napari_progress` in
        the shown window, before the dock exists), ``round`` (1, 2, ...), ``round_s``, ``events``,
        ``start_stall_ms`` (longest gap in the first second), ``longest_stall_ms``,
        ``p99_gap_ms``, ``gaps_over_50ms`` (start ms, length ms) and ``status``.
    """
    import napari
    import numpy as np
    from qtpy.QtCore import QElapsedTimer, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_lesion_harvest.harvest.blob_project import make_blob_project
    from napari_lesion_harvest.ui.dock import HarvestDock
    from napari_lesion_harvest.ui.job_progress import prepare_napari_progress

    def run_until(condition) -> None:
        while not condition():
            QApplication.processEvents()
            time.sleep(0.002)

    def settle(seconds: float = 0.5) -> None:
        end = time.monotonic() + seconds
        run_until(lambda: time.monotonic() > end)

    project_dir = make_blob_project(work)
    viewer = napari.Viewer(show=True)
    settle()
    started = time.perf_counter()
    prepare_napari_progress()
    prepare_ms = round((time.perf_counter() - started) * 1000)
    dock = HarvestDock(viewer, author="bench")
    viewer.window.add_dock_widget(dock, name="Lesion Harvest", area="right")
    dock.open_project(project_dir)
    panel = dock.round_panel
    panel.set_config(str(work / "tiny.json"))
    panel.device_box.setCurrentText("cpu")
    opened, refreshed = [], []
    dock.volume_opened.connect(opened.append)
    dock.refreshed.connect(lambda: refreshed.append(True))
    dock.open_volume("vol04")
    run_until(lambda: bool(opened))
    settle()

    clock = QElapsedTimer()
    ticks: list[int] = []
    timer = QTimer()
    timer.setInterval(PROBE_MS)
    timer.timeout.connect(lambda: ticks.append(clock.elapsed()))
    results = []
    for number in range(1, rounds + 1):
        ticks[:] = [0]
        refreshed.clear()
        clock.start()
        timer.start()
        panel.start_round()
        run_until(lambda: bool(refreshed) and not panel.runner.running)
        timer.stop()
        gaps = np.diff(ticks)
        early = [g for t, g in zip(ticks, gaps, strict=False) if t < 1000]
        results.append(
            {
                "prepare_progress_ms": prepare_ms,
                "round": number,
                "round_s": round(clock.elapsed() / 1000, 1),
                "events": panel.events_seen,
                "start_stall_ms": int(max(early)),
                "longest_stall_ms": int(gaps.max()),
                "p99_gap_ms": float(np.percentile(gaps, 99)),
                "gaps_over_50ms": [
                    (int(t), int(g)) for t, g in zip(ticks, gaps, strict=False) if g > 50
                ],
                "status": panel.status_label.text(),
            }
        )
        settle()
    dock.close_project()
    viewer.close()
    return results


def real_round_repeats(repeats: int) -> list[dict]:
    """:func:`real_round_stalls` in ``repeats`` fresh napari processes."""
    results = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as work:
            child = [sys.executable, __file__, "--real-round-child", work]
            output = subprocess.run(child, check=True, capture_output=True, text=True)
            measured = json.loads(output.stdout.strip().splitlines()[-1])
        for result in measured:
            print("real round:", result, flush=True)
        results += measured
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--real-round-child"]:
        print(json.dumps(real_round_stalls(Path(sys.argv[2]))))
    elif sys.argv[1:2] == ["--real-round"]:
        real_round_repeats(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    else:
        command = json.loads(sys.argv[1]) if len(sys.argv) > 1 else None
        print("round stall:", stall_during_round(command))
        print("worklist:", worklist_15000())
