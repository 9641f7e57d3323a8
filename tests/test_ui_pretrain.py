"""The round panel's Pretrain button: ``lesion-harvest pretrain`` in a subprocess with the
round's runner (progress, time left, Stop), never beside a round; and what the panel says
about the project's pretrained weights."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from qtpy.QtCore import Qt

from napari_lesion_harvest.geometry import RecistMark
from napari_lesion_harvest.store.checkpoints import sha256_file
from napari_lesion_harvest.store.pretrained import PretrainedWeights
from napari_lesion_harvest.ui.pretrain_clock import PretrainClock
from napari_lesion_harvest.ui.round_panel import PROBLEM_COLOUR, RoundPanel
from napari_lesion_harvest.ui.round_plan import PRETRAIN_JOB, ROUND_JOB
from napari_lesion_harvest.ui.round_runner import pretrain_command
from tests.ui_helpers import make_project, open_dock

pytestmark = pytest.mark.gui

SCRIPT = Path(__file__).with_name("round_script_fixture.py")
MARK = RecistMark.from_measurement_coordinates([30, 40, 44, 40, 37, 34, 37, 46], z=5)


def _record_lpc_trunks(project) -> PretrainedWeights:
    """Record a version of LPC trunk weights in ``project`` (a file of the project's
    weights folder) as the LPC's pretraining does, and return its record."""
    path = project.pretrained.file_for(40, "lpc")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"lpc trunks")
    config = {"variant": "multiview", "width": "lite", "patch_size": 64}
    weights = PretrainedWeights(
        path.relative_to(project.folder).as_posix(),
        sha256_file(path),
        path.stat().st_size,
        40,
        2000,
        90.0,
        config,
        network="lpc",
    )
    with project.pretrained.lock() as lock:
        project.pretrained.record(weights, lock=lock, author="radiologist")
    return weights


def test_pretrain_command_names_the_project_configuration_minutes_and_device(tmp_path):
    assert pretrain_command(
        tmp_path, config="paper", minutes=20, device="cuda", python="/usr/bin/python3"
    ) == [
        "/usr/bin/python3", "-m", "napari_lesion_harvest", "pretrain", str(tmp_path),
        "--progress-json", "--config", "paper", "--minutes", "20", "--device", "cuda",
    ]  # fmt: skip


def test_time_left_is_the_budget_or_less_when_the_steps_end_sooner():
    clock = PretrainClock(10, started=1000.0)
    assert clock.seconds_left(now=1060.0) == 540.0  # no steps yet: the rest of 10 min
    clock.event({"stage": "pretrain", "step": 50, "total": 100})
    assert clock.seconds_left(now=1060.0) == 60.0  # half the steps in a minute
    clock.event({"stage": "pretrain", "step": 1, "total": 1000})
    assert clock.seconds_left(now=1060.0) == 540.0  # too slow to finish: the budget ends it
    assert clock.seconds_left(now=2000.0) == 0.0


def _stand_in(tmp_path, name: str, steps: int, pause: float, *options: str):
    """A command builder whose process is the stand-in script (see round_script_fixture)."""

    def command_for(folder, **_options):
        pid_file = tmp_path / f"{name}.pid"
        return [sys.executable, str(SCRIPT), str(pid_file), str(steps), str(pause), *options]

    return command_for


def test_pretraining_shows_progress_stops_saved_and_never_runs_beside_a_round(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    make_napari_viewer()  # napari's progress bars need a viewer window
    project = make_project(tmp_path / "proj")
    project.set_volume_complete("vol_b", author="radiologist")
    project.add_mark("vol_b", MARK, author="radiologist")  # a round can start
    panel = RoundPanel(
        project_folder=lambda: project.folder,
        project=lambda: project,
        command_for=_stand_in(tmp_path, "round", 400, 0.1),
        pretrain_command_for=_stand_in(
            tmp_path, "pretrain", 400, 0.1, "stage=pretrain", "saves-on-term"
        ),
    )
    qtbot.addWidget(panel)
    row, progress = panel.pretrain_row, panel.progress
    row.show_pretrained()
    assert row.pretrained_label.text() == "Pretrained LPG weights: none in this project."
    trunks = _record_lpc_trunks(project)
    row.show_pretrained()
    assert row.pretrained_label.text() == (
        "Pretrained LPG weights: none in this project.\nPretrained LPC trunks: "
        f"{trunks.describe()}; every round's LPC starts from them where they fit its settings."
    )
    panel.device_box.setCurrentText("cpu")
    row.minutes_box.setValue(3)

    qtbot.mouseClick(row.pretrain_button, Qt.MouseButton.LeftButton)
    assert panel.runner.running and panel.job is PRETRAIN_JOB
    assert Path(panel.runner.log_path).name.startswith("pretrain-")
    assert not panel.run_button.isEnabled() and not row.pretrain_button.isEnabled()
    assert panel.stop_button.isEnabled()
    qtbot.waitUntil(lambda: panel.events_seen >= 10, timeout=30_000)
    assert re.fullmatch(r"Pretraining the LPG: step \d+ of 400", progress.stage_label.text())
    assert progress.stage_bar.maximum() == 400 and progress.stage_bar.value() >= 10
    assert progress.progress_bar.total == 400
    assert re.fullmatch(r"About .+ left \(done at about \d\d:\d\d\)\.", progress.eta_label.text())
    assert not panel.start_round()  # a round is refused while pretraining runs
    assert panel.status_label.text() == (
        f"Not started: pretraining is already running (pid {panel.runner.pid}); stop it or wait."
    )

    panel.stop_button.click()
    assert panel.status_label.text() == "Stopping pretraining at its next step..."
    qtbot.waitUntil(lambda: not panel.runner.running, timeout=30_000)
    assert re.fullmatch(
        r"Pretraining stopped and saved: \d+ of 400 steps\. Pretrain continues it\.",
        panel.status_label.text(),
    )
    assert PROBLEM_COLOUR not in panel.status_label.styleSheet()
    assert panel.run_button.isEnabled() and row.pretrain_button.isEnabled()
    assert project.rounds.list() == []  # the refused round left nothing

    assert panel.start_round()  # the stand-in round
    assert panel.job is ROUND_JOB
    qtbot.waitUntil(lambda: panel.events_seen >= 1, timeout=30_000)
    assert not row.pretrain_button.isEnabled()
    assert not panel.start_pretrain()  # and pretraining is refused while a round runs
    assert panel.status_label.text() == (
        f"Not started: a harvest round is already running (pid {panel.runner.pid}); stop it "
        "or wait."
    )
    assert Path(panel.runner.log_path).name.startswith("round-")
    panel.stop_round()
    qtbot.waitUntil(lambda: not panel.runner.running, timeout=30_000)
    assert row.pretrain_button.isEnabled()
    project.close()


@pytest.mark.slow
def test_the_pretrain_button_runs_lesion_harvest_pretrain_on_the_open_project(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    folder = tmp_path / "proj"
    make_project(folder).close()
    _viewer, dock = open_dock(make_napari_viewer, qtbot, folder)
    panel = dock.round_panel
    row = panel.pretrain_row
    dock.tabs.setCurrentWidget(panel)
    qtbot.waitUntil(lambda: row.pretrained_label.text() != "", timeout=20_000)
    assert row.pretrained_label.text() == "Pretrained LPG weights: none in this project."
    panel.set_config("lite")
    panel.device_box.setCurrentText("cpu")
    row.minutes_box.setValue(1)

    row.pretrain_button.click()
    assert panel.runner.running and not panel.run_button.isEnabled()
    command = pretrain_command(folder, config="lite", minutes=1, device="cpu")
    log = Path(panel.runner.log_path)
    assert log.parent == folder / "logs"
    assert log.read_text(encoding="utf-8").splitlines()[0] == "$ " + " ".join(command)
    qtbot.waitUntil(lambda: not panel.runner.running, timeout=300_000)

    # A real pretraining of at most a minute: its weights are recorded and shown.
    assert re.match(r"Pretraining (stopped and )?saved: ", panel.status_label.text())
    weights = dock.project.pretrained.current()
    assert weights is not None and (folder / weights.path).is_file()
    assert row.pretrained_label.text() == (
        f"Pretrained LPG weights: {weights.describe()}; round 1 starts from them."
    )
    assert panel.run_button.isEnabled() and row.pretrain_button.isEnabled()
    dock.close_project()
