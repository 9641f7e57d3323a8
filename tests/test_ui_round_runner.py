"""The round runner on a real subprocess: JSON-lines progress, a responsive GUI, Stop."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from napari_lesion_harvest.ui.round_panel import RoundPanel
from napari_lesion_harvest.ui.round_runner import RoundAlreadyRunning

pytestmark = pytest.mark.gui

SCRIPT = Path(__file__).with_name("round_script_fixture.py")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _panel(tmp_path, steps: int, pause: float, *, fail: bool = False):
    pid_file = tmp_path / "child.pid"
    finished = []

    def command_for(folder, *, config, device):
        args = [sys.executable, str(SCRIPT), str(pid_file), str(steps), str(pause)]
        return args + (["fail"] if fail else [])

    panel = RoundPanel(
        project_folder=lambda: tmp_path, on_finished=finished.append, command_for=command_for
    )
    return panel, pid_file, finished


def test_round_runs_in_background_and_reports_progress(make_napari_viewer, qtbot, tmp_path):
    make_napari_viewer()  # napari's progress bars need a viewer window
    panel, _pid_file, finished = _panel(tmp_path, steps=6, pause=0.15)
    qtbot.addWidget(panel)
    ticks, bar_steps = [], []
    from qtpy.QtCore import QElapsedTimer, QTimer

    clock = QElapsedTimer()
    clock.start()
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(clock.elapsed()))
    event_times = []
    panel.runner.progressed.connect(lambda event: event_times.append(clock.elapsed()))

    timer.start()
    assert panel.start_round()
    panel.progress.progress_bar.events.value.connect(lambda event: bar_steps.append(event.value))
    assert not panel.run_button.isEnabled()
    with pytest.raises(RoundAlreadyRunning):
        panel.runner.start(["true"], log_path=tmp_path / "second.log")
    assert not panel.start_round()  # refused while one runs
    qtbot.waitUntil(lambda: bool(finished), timeout=20_000)
    timer.stop()

    assert finished == [0]
    assert panel.events_seen == 6
    # napari's progress bar advanced with the round, step by step and never back; under
    # load a step may be folded into the next one, or the last into the round's end
    assert bar_steps[0] == 1 and len(bar_steps) >= 4
    assert bar_steps == sorted(set(bar_steps)) and bar_steps[-1] >= 5
    # the event loop kept ticking between every two progress events (GUI not blocked)
    for before, after in zip(event_times, event_times[1:], strict=False):
        assert any(before < tick < after for tick in ticks)
    log = Path(panel.runner.log_path).read_text()
    assert "starting (a plain log line)" in log and "exit status 0" in log
    assert panel.run_button.isEnabled() and panel.progress.progress_bar is None


def test_failed_round_reports_error_with_log(make_napari_viewer, qtbot, tmp_path):
    make_napari_viewer()
    panel, _pid_file, finished = _panel(tmp_path, steps=1, pause=0.01, fail=True)
    qtbot.addWidget(panel)
    assert panel.start_round()
    qtbot.waitUntil(lambda: bool(finished), timeout=20_000)
    assert finished == [3]
    assert "failed (exit status 3)" in panel.status_label.text()
    assert "boom: the stand-in round failed" in Path(panel.runner.log_path).read_text()
    # a round that ends at once leaves the panel idle, not looking alive
    assert panel.run_button.isEnabled() and not panel.stop_button.isEnabled()
    assert panel.progress.progress_bar is None and not panel.runner.running


def test_a_round_that_cannot_start_leaves_the_panel_idle(make_napari_viewer, qtbot, tmp_path):
    make_napari_viewer()
    panel = RoundPanel(
        project_folder=lambda: tmp_path,
        command_for=lambda folder, **_: [str(tmp_path / "no-such-python")],
    )
    qtbot.addWidget(panel)
    assert not panel.start_round()
    assert "could not start" in panel.status_label.text()
    assert "# could not start" in Path(panel.runner.log_path).read_text()
    assert panel.run_button.isEnabled() and not panel.stop_button.isEnabled()
    assert panel.progress.progress_bar is None and not panel.runner.running


def test_stop_kills_the_process_tree_and_a_new_round_can_start(
    make_napari_viewer, qtbot, tmp_path
):
    make_napari_viewer()
    panel, pid_file, finished = _panel(tmp_path, steps=200, pause=0.2)
    panel.runner.stop_grace_s = 1.0
    qtbot.addWidget(panel)
    assert panel.start_round()
    main_pid = panel.runner.pid
    qtbot.waitUntil(lambda: panel.events_seen >= 1, timeout=20_000)
    child_pid = int(pid_file.read_text())
    assert _alive(main_pid) and _alive(child_pid)

    panel.stop_round()
    qtbot.waitUntil(lambda: bool(finished), timeout=20_000)
    qtbot.waitUntil(lambda: not _alive(child_pid), timeout=5_000)
    assert not _alive(main_pid)
    assert finished[0] != 0 and "stopped" in panel.status_label.text()

    pid_file.unlink()
    assert panel.start_round()  # a new round starts after the stop
    qtbot.waitUntil(lambda: panel.events_seen >= 1, timeout=20_000)
    panel.stop_round()
    qtbot.waitUntil(lambda: len(finished) == 2, timeout=20_000)
    assert not panel.runner.running
    assert os.path.exists(panel.runner.log_path)
