"""The "Run harvest round" controls: config, device, expected duration, Run / Stop, and the
running round's stage, progress and time left, all in the dock; and "Pretrain", which
runs self-supervised pretraining of the LPG (``lesion-harvest pretrain``) with the same
runner, progress and Stop, and never beside a round.

Before the round's process starts, the panel runs the engine's own checks
(:func:`~napari_lesion_harvest.harvest.round.check_inputs`, the configuration;
for ``cuda`` and ``auto`` the device, through ``lesion-harvest round --check``
in a short subprocess, since the napari process never imports torch) and says
in the dock why a round cannot start. A round stopped earlier is resumed with
its own configuration; when another configuration is chosen, the panel asks:
resume it, or discard it and start anew (``lesion-harvest round --discard``).
"""

from __future__ import annotations

import getpass
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qtpy.QtCore import QEventLoop, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_harvest.ui.round_runner import RoundRunner, pretrain_command, round_command
from napari_lesion_harvest.vocabulary import RoundStatus

#: Log folder inside the project.
LOGS_DIR = "logs"
#: Seconds a device check (``lesion-harvest round --check``) may take.
DEVICE_CHECK_TIMEOUT_S = 300
#: Colour of problems said in the panel.
PROBLEM_COLOUR = "#ff8080"
#: Minutes of pretraining the panel offers first.
DEFAULT_PRETRAIN_MINUTES = 15


@dataclass(frozen=True)
class Job:
    """What the panel's process runs: a round or pretraining.

    Attributes
    ----------
    command : str
        The ``lesion-harvest`` subcommand (names its log files and error lines).
    name : str
        In refusals: "... is already running".
    title : str
        Starts the panel's sentences about it.
    the : str
        Names it inside a sentence: "Stopping ... at its next step".
    """

    command: str
    name: str
    title: str
    the: str

    @property
    def error_prefix(self) -> str:
        """The prefix of the command's one-line errors."""
        return f"lesion-harvest {self.command}: error: "


ROUND_JOB = Job("round", "a harvest round", "Round", "the round")
PRETRAIN_JOB = Job("pretrain", "pretraining", "Pretraining", "pretraining")


@dataclass(frozen=True)
class RoundPlan:
    """The round that Run would run now.

    Attributes
    ----------
    config : RoundConfig
        Its configuration (a resumed round's own).
    number : int
    resume : RoundRecord or None
        The stopped round it resumes.
    first_round : bool
        No round finished before it.
    """

    config: object
    number: int
    resume: object = None
    first_round: bool = True

    @property
    def done_stages(self) -> tuple[str, ...]:
        """Stages the resumed round committed already."""
        return () if self.resume is None else tuple(self.resume.completed_stages)


def config_differences(config, stored: dict, *, shown: int = 4) -> str:
    """``"lpg.train_steps 600 -> 20000, ..."``: the stored fields ``config`` changes
    (``stored`` in sections or, stored by an earlier version, flat)."""
    from napari_lesion_harvest.harvest.config_migration import dotted_fields

    new, stored = dotted_fields(json.loads(config.to_json())), dotted_fields(stored)
    changed = [f"{k} {stored.get(k)} -> {v}" for k, v in sorted(new.items()) if stored.get(k) != v]
    more = f", and {len(changed) - shown} more" if len(changed) > shown else ""
    return ", ".join(changed[:shown]) + more


def round_plan(project, config, *, discard: bool = False) -> RoundPlan:
    """What Run would do on ``project``: resume its stopped round (unless ``discard``), or
    start the next one with ``config``."""
    from napari_lesion_harvest.harvest.config import stored_config

    records = project.rounds.list()
    stopped = [r for r in records if r.status in (RoundStatus.failed, RoundStatus.queued)]
    if stopped and not discard:
        record = stopped[0]
        earlier_done = any(
            r.status == RoundStatus.done and r.number < record.number for r in records
        )
        return RoundPlan(
            stored_config(record.number, record.config),
            record.number,
            resume=record,
            first_round=not earlier_done,
        )
    return RoundPlan(
        config,
        project.rounds.next_number(),
        first_round=not any(r.status == RoundStatus.done for r in records),
    )


class RoundPanel(QWidget):
    """Start and stop harvest rounds; show the expected duration, the stage, progress and
    time left in the dock (and in a napari progress bar).

    Parameters
    ----------
    project_folder : callable
        Returns the open project's folder (``None`` when none is open).
    project : callable, optional
        Returns the open :class:`HarvestProject` (checks, plans and estimates use
        it; ``None``: the command runs unchecked, as a stand-in round in tests).
    on_finished : callable
        ``on_finished(status)`` after a round ends (the dock refreshes from the store).
    command_for : callable, optional
        ``command_for(folder, config=..., device=...) -> list[str]``; default
        :func:`round_command`.
    pretrain_command_for : callable, optional
        ``pretrain_command_for(folder, config=..., minutes=..., device=...) -> list[str]``;
        default :func:`pretrain_command`.
    author : str, optional
        Recorded when a stopped round is discarded (default: the login name).
    rates_path : path, optional
        This machine's measured rates (default ``round_rates.json`` in the
        plugin's settings folder).

    Signals
    -------
    started()
        A round's (or pretraining's) process started.
    """

    started = Signal()
    _device_checked = Signal(str, object, str)

    def __init__(
        self,
        *,
        project_folder: Callable[[], Path | None],
        project: Callable[[], object] = lambda: None,
        on_finished: Callable[[int], None] = lambda status: None,
        command_for: Callable[..., list[str]] = round_command,
        pretrain_command_for: Callable[..., list[str]] = pretrain_command,
        author: str | None = None,
        rates_path: str | os.PathLike | None = None,
        parent=None,
    ):
        from napari_lesion_harvest.ui.project_panel import config_dir
        from napari_lesion_harvest.ui.round_estimate import RATES_FILE

        super().__init__(parent)
        self._project_folder = project_folder
        self._project = project
        self._on_finished = on_finished
        self._command_for = command_for
        self._pretrain_command_for = pretrain_command_for
        self.author = author or getpass.getuser()
        self.rates_path = Path(rates_path) if rates_path else config_dir() / RATES_FILE
        self.runner = RoundRunner(self)
        self.runner.progressed.connect(self._on_progress)
        self.runner.finished.connect(self._on_finished_signal)
        self._device_checked.connect(self._on_device_checked)
        self.progress_bar = None
        self.events_seen = 0
        self.job: Job | None = None  # what the runner's process runs
        self.clock = None  # StageClock of the running round
        self.pretrain_clock = None  # PretrainClock of the running pretraining
        self._measuring = None  # (plan, size, device) whose stage times are recorded
        self._first_stage_seen: str | None = None
        self._device_checks: dict[str, tuple[str | None, str]] = {}
        self._pending_start: tuple[bool] | None = None
        # _on_progress: the newest event, the one on the bar, and whether it is re-entered
        self._newest_event: dict | None = None
        self._bar_event: dict | None = None
        self._updating_bar = False

        self.config_box = QComboBox()
        self.config_box.addItems(["lite", "paper"])
        self.config_box.setEditable(True)  # or the path of a JSON config file
        self.config_box.setToolTip(
            "Round preset (lite: a small network that trains on a CPU; paper: the paper's, "
            "for a GPU) or a JSON config file"
        )
        self.config_button = QPushButton("File...")
        self.config_button.setToolTip("Choose a JSON round configuration file")
        self.device_box = QComboBox()
        self.device_box.addItems(["auto", "cpu", "cuda"])
        self.estimate_label = QLabel("")
        self.estimate_label.setWordWrap(True)
        self.run_button = QPushButton("Run harvest round")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip(
            "Stop at the round's next step; it keeps every finished stage and can be resumed"
        )
        self.pretrain_button = QPushButton("Pretrain")
        self.pretrain_button.setToolTip(
            "Pretrain the chosen configuration's LPG on this project's own CT, without "
            "labels, for at most the minutes given (Pretrain again continues it); round 1 "
            "starts from these weights"
        )
        self.minutes_box = QSpinBox()
        self.minutes_box.setRange(1, 24 * 60)
        self.minutes_box.setValue(DEFAULT_PRETRAIN_MINUTES)
        self.minutes_box.setSuffix(" min")
        self.minutes_box.setToolTip("Pretraining saves its weights and stops after this time")
        self.pretrained_label = QLabel("")
        self.pretrained_label.setWordWrap(True)
        self.pretrained_label.setTextFormat(Qt.TextFormat.PlainText)
        self.stage_label = QLabel("")
        self.stage_bar = QProgressBar()
        self.stage_bar.setVisible(False)
        self.eta_label = QLabel("")
        self.status_label = QLabel("No round running.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)
        self.log_label = QLabel("")
        self.log_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        for label in (
            self.status_label,
            self.log_label,
            self.estimate_label,
            self.stage_label,
            self.pretrained_label,
        ):
            # a long path in a label must not widen the dock (that re-lays out every tab)
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._eta_timer = QTimer(self)
        self._eta_timer.setInterval(1000)
        self._eta_timer.timeout.connect(self._show_time_left)

        form = QFormLayout()
        config_row = QHBoxLayout()
        config_row.addWidget(self.config_box, stretch=1)
        config_row.addWidget(self.config_button)
        form.addRow("Config", config_row)
        form.addRow("Device", self.device_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        pretraining = QHBoxLayout()
        pretraining.addWidget(self.pretrain_button)
        pretraining.addWidget(QLabel("for at most"))
        pretraining.addWidget(self.minutes_box)
        pretraining.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.estimate_label)
        layout.addLayout(buttons)
        layout.addLayout(pretraining)
        layout.addWidget(self.pretrained_label)
        layout.addWidget(self.stage_label)
        layout.addWidget(self.stage_bar)
        layout.addWidget(self.eta_label)
        layout.addWidget(self.status_label)
        layout.addWidget(self.log_label)
        layout.addStretch(1)
        self.run_button.clicked.connect(self.start_round)
        self.stop_button.clicked.connect(self.stop_round)
        self.pretrain_button.clicked.connect(self.start_pretrain)
        self.config_button.clicked.connect(self._choose_config)
        self.config_box.currentTextChanged.connect(self.show_estimate)
        self.device_box.currentTextChanged.connect(self.show_estimate)
        QTimer.singleShot(0, prepare_napari_progress)

    def set_config(self, config: str) -> None:
        """Use a preset name (``lite``, ``paper``) or a JSON config file for the next rounds."""
        index = self.config_box.findText(config)
        if index < 0:
            self.config_box.addItem(config)
            index = self.config_box.count() - 1
        self.config_box.setCurrentIndex(index)

    def _choose_config(self) -> None:
        path, _filter = QFileDialog.getOpenFileName(
            self, "Round configuration", "", "JSON config (*.json);;All files (*)"
        )
        if path:
            self.set_config(path)

    # ------------------------------------------------------------------ estimate

    def _resolved_device(self) -> tuple[str, str]:
        """The device a round would use (``cpu`` / ``cuda``) and a note on how it is known."""
        chosen = self.device_box.currentText()
        if chosen == "cpu":
            return "cpu", ""
        resolved, _message = self._device_checks.get(chosen, (None, ""))
        if resolved is not None:
            return resolved, ""
        if chosen == "auto":
            return "cpu", "; auto: a CPU until Run finds a GPU"
        return chosen, ""

    def estimate_for(self, plan: RoundPlan, device: str):
        """The :class:`~napari_lesion_harvest.ui.round_estimate.RoundEstimate` of ``plan``."""
        from napari_lesion_harvest.ui.round_estimate import (
            RateBook,
            estimate_round,
            project_size,
        )

        project = self._project()
        return estimate_round(
            plan.config,
            project_size(project.volumes()),
            RateBook(self.rates_path),
            device=device,
            first_round=plan.first_round,
            done_stages=plan.done_stages,
        )

    def show_estimate(self, *_args) -> None:
        """Show how long Run would take here (or why it cannot tell)."""
        from napari_lesion_harvest.harvest.config import load_config
        from napari_lesion_harvest.harvest.errors import USER_ERRORS, one_line
        from napari_lesion_harvest.ui.round_estimate import format_duration

        project = self._project()
        if project is None or self.runner.running:
            return
        try:
            plan = round_plan(project, load_config(self.config_box.currentText()))
        except USER_ERRORS as error:
            self.estimate_label.setText(f"Configuration not usable: {one_line(error)}")
            return
        device, note = self._resolved_device()
        estimate = self.estimate_for(plan, device)
        if len(estimate.measured) == len(estimate.seconds):
            basis = "measured on this machine"
        elif estimate.measured:
            basis = f"{len(estimate.measured)} of {len(estimate.seconds)} stages measured here"
        else:
            basis = "an estimate until a round has run here"
        what = f"Round {plan.number}"
        if plan.resume is not None:
            what += f" (resumes after {plan.resume.stage or 'its start'})"
        self.estimate_label.setText(
            f"{what}: about {format_duration(estimate.total)} on {device} ({basis}{note})."
        )
        self.estimate_label.setToolTip(
            "\n".join(f"{stage}: {format_duration(s)}" for stage, s in estimate.seconds.items())
        )

    def show_pretrained(self) -> None:
        """Say whether the open project holds pretrained LPG weights."""
        project = self._project()
        weights = None if project is None else project.pretrained.current()
        if project is None:
            self.pretrained_label.setText("")
        elif weights is None:
            self.pretrained_label.setText("Pretrained LPG weights: none in this project.")
        else:
            self.pretrained_label.setText(
                f"Pretrained LPG weights: {weights.describe()}; round 1 starts from them."
            )

    # ------------------------------------------------------------------ actions

    def _startable_folder(self) -> Path | None:
        """The open project's folder when a round or pretraining may start now; None when
        none is open or one runs (or waits for its device check), said in the panel."""
        folder = self._project_folder()
        if folder is None:
            self._refuse("Open a harvest project first.")
            return None
        refusal = self.runner.refusal()
        if refusal is None and self._pending_start is not None:
            refusal = "the device is being checked; the round starts when it passes"
        if refusal is not None:
            self._refuse(f"Not started: {refusal}.")
            return None
        return folder

    def start_round(self) -> bool:
        """Start a round on the open project; False (said in the panel) when refused.

        With a project, the engine's checks run first, in this process; a
        stopped round with another configuration than the chosen one asks
        whether to resume or discard it; ``cuda`` and ``auto`` are checked in a
        short subprocess first (True: the round starts when that check passes).
        The panel shows the round as running before its process starts: a
        round that ends at once is then reported as ended, not left looking alive.
        """
        folder = self._startable_folder()
        if folder is None:
            return False
        discard = False
        project = self._project()
        if project is not None:
            decided = self._checked_plan(project)
            if decided is None:
                return False
            discard = decided
        device = self.device_box.currentText()
        if project is None or device == "cpu":
            return self._launch(folder, discard=discard, device="cpu")
        if device in self._device_checks:
            return self._launch(folder, discard=discard, device=self._device_checks[device][0])
        self._pending_start = (discard,)
        self._enable_starts(False)
        self._say(f"Checking the device ({device}) before the round starts...")
        self._check_device(folder, device)
        return True

    def _checked_plan(self, project) -> bool | None:
        """The engine's refusals, then resume or discard: whether to discard the stopped
        round (None: refused or cancelled, said in the panel)."""
        from napari_lesion_harvest.harvest.config import load_config
        from napari_lesion_harvest.harvest.errors import USER_ERRORS, one_line
        from napari_lesion_harvest.harvest.round import check_inputs

        try:
            config = load_config(self.config_box.currentText())
            check_inputs(project)
            project.rounds.recover_interrupted()
            plan = round_plan(project, config)  # refuses a stopped round's stored config
        except USER_ERRORS as error:
            self._refuse(f"The round cannot start: {one_line(error)}")
            return None
        records = project.rounds.list()
        running = [r for r in records if r.status == RoundStatus.running]
        if running:
            holder = project.rounds.lock_holder()
            who = f"round {running[0].number}" if holder is None else holder.describe()
            self._refuse(f"Not started: {who} is running in another process.")
            return None
        if plan.resume is None or plan.config == config:
            return False
        choice = self.ask_resume_or_discard(plan.resume, config)
        if choice is None:
            self._say("Not started: neither resumed nor discarded.")
            return None
        return choice == "discard"

    def ask_resume_or_discard(self, record, config) -> str | None:
        """Ask what to do with the stopped round ``record`` when ``config`` differs from its
        own: ``"resume"``, ``"discard"``, or None (cancel)."""
        chosen = self.config_box.currentText()
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("A stopped round")
        box.setText(
            f"Round {record.number} stopped after {record.stage or 'its start'}, with another "
            f"configuration than {chosen!r}."
        )
        box.setInformativeText(
            f"Resume it with its own configuration, or discard it and start a new round with "
            f"{chosen!r}? A discarded round keeps what it wrote, unused.\n\n"
            f"Differences: {config_differences(config, record.config)}"
        )
        resume = box.addButton(f"Resume round {record.number}", QMessageBox.ButtonRole.AcceptRole)
        discard = box.addButton(
            f"Discard it, start with {Path(chosen).name}", QMessageBox.ButtonRole.DestructiveRole
        )
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(resume)
        box.exec()
        clicked = box.clickedButton()
        return "resume" if clicked is resume else "discard" if clicked is discard else None

    def _check_device(self, folder, device: str) -> None:
        """``lesion-harvest round --check --device DEVICE`` in a thread; the answer arrives
        in :meth:`_on_device_checked`."""
        command = self._command_for(folder, config=self.config_box.currentText(), device=device)
        command = [*command, "--check"]

        def check():
            import subprocess

            try:
                done = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    stdin=subprocess.DEVNULL,
                    timeout=DEVICE_CHECK_TIMEOUT_S,
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                self._device_checked.emit(device, None, f"The device check failed: {error}")
                return
            self._device_checked.emit(device, *_check_answer(done))

        threading.Thread(target=check, name="round-device-check", daemon=True).start()

    def _on_device_checked(self, device: str, resolved, message: str) -> None:
        """A device check ended: a passed one is kept for the session; start the round
        waiting for it, or say why it cannot start."""
        if resolved is not None:
            self._device_checks[device] = (resolved, message)
        pending, self._pending_start = self._pending_start, None
        self._enable_starts(not self.runner.running)
        folder = self._project_folder()
        if pending is None or folder is None:
            return
        if resolved is None:
            self._refuse(message)
            return
        self._launch(folder, discard=pending[0], device=resolved)

    def _launch(self, folder, *, discard: bool, device: str) -> bool:
        from napari_lesion_harvest.ui.round_estimate import RoundEstimate, StageClock

        command = self._command_for(
            folder, config=self.config_box.currentText(), device=self.device_box.currentText()
        )
        if discard:
            command = [*command, "--discard", "--author", self.author]
        project = self._project()
        estimate, self._measuring = RoundEstimate({}), None
        if project is not None:
            from napari_lesion_harvest.harvest.config import load_config
            from napari_lesion_harvest.ui.round_estimate import project_size

            plan = round_plan(project, load_config(self.config_box.currentText()), discard=discard)
            estimate = self.estimate_for(plan, device)
            self._measuring = (plan, project_size(project.volumes()), device)
        self.clock = StageClock(estimate)
        self._first_stage_seen = None
        return self._start_process(ROUND_JOB, command, folder)

    def start_pretrain(self) -> bool:
        """Start pretraining the chosen configuration's LPG on the open project for at
        most the minutes given; False (said in the panel) when refused: no project, or a
        round or pretraining runs (or waits for its device check).

        The command refuses, in its one error line said in the panel, what only the
        project can tell (a round running in another process, a configuration it cannot
        pretrain).
        """
        from napari_lesion_harvest.ui.pretrain_clock import PretrainClock

        folder = self._startable_folder()
        if folder is None:
            return False
        minutes = self.minutes_box.value()
        command = self._pretrain_command_for(
            folder,
            config=self.config_box.currentText(),
            minutes=minutes,
            device=self.device_box.currentText(),
        )
        self.clock, self._measuring = None, None
        self.pretrain_clock = PretrainClock(minutes)
        return self._start_process(PRETRAIN_JOB, command, folder)

    def _start_process(self, job: Job, command: list[str], folder) -> bool:
        """Show ``job`` as running and start its process, logged in the project's
        :data:`LOGS_DIR`; False (said in the panel) when it cannot start."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        log_path = Path(folder) / LOGS_DIR / f"{job.command}-{stamp}-{os.getpid()}.log"
        self.job = job
        self._show_running(log_path)
        try:
            self.runner.start(command, log_path=log_path, job=job.name)
        except OSError as error:  # no interpreter, or the log folder is not writable
            message = f"{job.title} could not start: {error}"
            self._show_idle(message, problem=True)
            from napari.utils.notifications import show_error

            show_error(message)
            return False
        self.started.emit()
        return True

    def _say(self, text: str, *, problem: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet(f"color: {PROBLEM_COLOUR}" if problem else "")

    def _refuse(self, text: str) -> bool:
        self._say(text, problem=True)
        return False

    def _enable_starts(self, enabled: bool) -> None:
        """Enable Run and Pretrain (each refuses, said in the panel, while the other runs)."""
        self.run_button.setEnabled(enabled)
        self.pretrain_button.setEnabled(enabled)

    def _show_running(self, log_path: Path) -> None:
        self.events_seen = 0
        self._open_progress_bar()
        self._enable_starts(False)
        self.stop_button.setEnabled(True)
        self._say(f"{self.job.title} started.")
        self.stage_label.setText(f"Starting {self.job.the}...")
        self.stage_bar.setRange(0, 0)
        self.stage_bar.setVisible(True)
        self._show_time_left()
        self._eta_timer.start()
        self.log_label.setText(f"Log: {LOGS_DIR}/{log_path.name}")
        self.log_label.setToolTip(str(log_path))

    def _show_idle(self, message: str, *, problem: bool = False) -> None:
        self._close_progress_bar()
        self._eta_timer.stop()
        self._enable_starts(self._pending_start is None)
        self.stop_button.setEnabled(False)
        self.stage_bar.setVisible(False)
        self.stage_label.setText("")
        self.eta_label.setText("")
        self._say(message, problem=problem)

    def stop_round(self) -> None:
        """Stop the running round or pretraining (its whole process tree)."""
        if self.runner.running:
            self._say(f"Stopping {self.job.the} at its next step...")
            self.runner.stop()

    def stop_and_wait(self, timeout_s: float) -> bool:
        """Stop the running round (or pretraining) and wait (processing events) until its
        process ended; True when none runs any more."""
        if not self.runner.running:
            return True
        loop = QEventLoop()
        self.runner.finished.connect(loop.quit)
        QTimer.singleShot(int(timeout_s * 1000), loop.quit)
        self.stop_round()
        if self.runner.running:
            loop.exec()
        self.runner.finished.disconnect(loop.quit)
        return not self.runner.running

    # ------------------------------------------------------------------ progress

    def _open_progress_bar(self) -> None:
        from napari.utils import progress

        self._close_progress_bar()
        self.progress_bar = progress(total=0, desc=self.job.title)

    def _close_progress_bar(self) -> None:
        if self.progress_bar is not None:
            self.progress_bar.close()
            self.progress_bar = None

    def _on_progress(self, event: dict) -> None:
        """Show one progress event: the dock's stage, bar and time left at once, then
        napari's progress bar.

        napari's progress-bar widget processes Qt events while it repaints, so
        this handler can be re-entered by the next progress event or by the
        round's end. A nested event only updates the dock and leaves the newest
        event for the outer call's loop; a bar closed by the round's end is
        left alone, and the status line then keeps the outcome.
        """
        self.events_seen += 1
        stage, step, total = str(event["stage"]), int(event["step"]), int(event["total"])
        text = f"{stage}: {step}/{total}" if total else stage
        if event.get("message"):
            text += f" - {event['message']}"
        self._say(text)
        self._follow_stage(event)
        self._newest_event = event
        if self._updating_bar:
            return
        self._updating_bar = True
        try:
            while self._bar_event is not self._newest_event:
                self._bar_event = self._newest_event
                if not self._show_on_bar(self._bar_event):
                    break
        finally:
            self._updating_bar = False

    def _follow_stage(self, event: dict) -> None:
        """The dock's stage line and bar; a stage that ended records its rate."""
        if self.job is PRETRAIN_JOB:
            self._follow_pretraining(event)
            return
        if self.clock is None:
            return
        ended = self.clock.event(event)
        if ended is not None:
            self._record_rate(*ended)
        if self._first_stage_seen is None and self.clock.stage is not None:
            self._first_stage_seen = self.clock.stage
        if self.clock.stage is not None:
            n, of = self.clock.stage_number()
            self.stage_label.setText(f"Stage {n} of {of}: {self.clock.stage}")
        total = int(event["total"])
        if total > 0:
            self.stage_bar.setRange(0, total)
            self.stage_bar.setValue(min(int(event["step"]), total))
            self.stage_bar.setFormat(f"{event['stage']} %v / %m")
        self._show_time_left()

    def _follow_pretraining(self, event: dict) -> None:
        """The dock's line and bar of pretraining: its steps of the planned ones."""
        if self.pretrain_clock is None or event["stage"] == "done":
            return
        self.pretrain_clock.event(event)
        step, total = int(event["step"]), int(event["total"])
        self.stage_label.setText(f"Pretraining the LPG: step {step} of {total}")
        if total > 0:
            self.stage_bar.setRange(0, total)
            self.stage_bar.setValue(min(step, total))
            self.stage_bar.setFormat("pretrain %v / %m")
        self._show_time_left()

    def _seconds_left(self) -> float | None:
        """Expected seconds to the end of the running job (None: unknown)."""
        if self.job is PRETRAIN_JOB and self.pretrain_clock is not None:
            return self.pretrain_clock.seconds_left()
        if self.clock is None or not self.clock.estimate.seconds:
            return None
        return self.clock.seconds_left()

    def _show_time_left(self) -> None:
        from napari_lesion_harvest.ui.round_estimate import format_duration

        left = self._seconds_left()
        if left is None:
            self.eta_label.setText("")
            return
        finish = time.strftime("%H:%M", time.localtime(time.time() + left))
        self.eta_label.setText(f"About {format_duration(left)} left (done at about {finish}).")

    def _record_rate(self, stage: str, seconds: float) -> None:
        """Keep this machine's rate of a stage that ran whole (not the first stage of a
        resumed round, which may have restarted from a checkpoint)."""
        from napari_lesion_harvest.ui.round_estimate import RateBook, rate_model, stage_work

        if self._measuring is None:
            return
        plan, size, device = self._measuring
        if plan.resume is not None and stage == self._first_stage_seen:
            return
        work = stage_work(stage, plan.config, size, first_round=plan.first_round)
        if work > 0 and seconds > 0:
            try:
                RateBook(self.rates_path).record(
                    device, stage, rate_model(stage, plan.config), seconds / work
                )
            except OSError:
                pass  # an unwritable settings folder only loses this measurement

    def _show_on_bar(self, event: dict) -> bool:
        """Move the progress bar to ``event``; False when the round's end closed it."""
        bar = self.progress_bar
        if bar is None:
            return False
        total = int(event["total"])
        if bar.total != total:
            bar.total = total
        bar.set_description(f"{self.job.command}: {event['stage']}")
        if self.progress_bar is not bar:
            return False
        bar.update(int(event["step"]) - bar.n)  # emits the bar's value event
        return self.progress_bar is bar

    def _on_finished_signal(self, status: int, log_path: str) -> None:
        if self.job is PRETRAIN_JOB:
            self._pretraining_finished(status, log_path)
            return
        from napari.utils.notifications import show_error, show_info

        problem = False
        if self.runner.stopping:
            stage = None if self.clock is None else self.clock.stage
            message = (
                f"Round stopped{f' in {stage}' if stage else ''}; it keeps every stage it "
                "finished. Run resumes it (with another configuration, Run asks first)."
            )
            show_info(message)
        elif status == 0:
            message, problem = self._outcome()
            show_info(message)
        else:
            problem = True
            message = _failure(ROUND_JOB, status, log_path)
            show_error(f"{message}\n{_log_tail(log_path)}")
        self._show_idle(message, problem=problem)
        self._on_finished(status)
        self.show_estimate()

    def _pretraining_finished(self, status: int, log_path: str) -> None:
        """Say how pretraining ended (its weights are saved when it exits 0, stopped or
        not) and show the project's weights."""
        from napari.utils.notifications import show_error, show_info

        last = self.runner.last_event or {}
        if status == 0:
            done = last.get("stage") == "done" and last.get("message")
            message, problem = f"Pretraining {done}." if done else "Pretraining finished.", False
            if self.runner.stopping:
                message += " Pretrain continues it."
            show_info(message)
        elif self.runner.stopping:
            message, problem = f"Pretraining stopped (exit status {status}).", True
            show_info(message)
        else:
            message, problem = _failure(PRETRAIN_JOB, status, log_path), True
            show_error(f"{message}\n{_log_tail(log_path)}")
        self.pretrain_clock = None
        self._show_idle(message, problem=problem)
        self.show_pretrained()
        self.show_estimate()

    def _outcome(self) -> tuple[str, bool]:
        """What the finished round did (said in the dock), and whether it harvested nothing."""
        from napari_lesion_harvest.ui.round_outcome import harvest_outcome

        project = self._project()
        number = None if project is None else project.latest_done_round()
        if number is None:
            return "Round finished.", False
        return harvest_outcome(project.rounds.get(number))


def _check_answer(done) -> tuple[str | None, str]:
    """``(device, message)`` of a finished ``round --check``; device None when refused."""
    from napari_lesion_harvest.ui.round_runner import parse_progress_line

    if done.returncode == 0:
        for line in done.stdout.splitlines():
            event = parse_progress_line(line)
            if event is not None and event["stage"] == "check":
                return str(event["metrics"].get("device", "cpu")), event["message"]
    errors = [line for line in done.stderr.splitlines() if line.startswith(ROUND_JOB.error_prefix)]
    if errors:
        return None, f"The round cannot start: {errors[-1].removeprefix(ROUND_JOB.error_prefix)}"
    tail = " ".join(done.stderr.strip().splitlines()[-2:])
    return None, f"The device check failed (exit status {done.returncode}): {tail}"


def prepare_napari_progress() -> None:
    """Build napari's progress-bar widgets once, when the dock opens, not at the first Run.

    The first napari progress bar of a session builds the activity panel's
    widgets and shows the status-bar spinner; that re-lays out the window and
    repaints the canvas twice inside napari's own ``processEvents``, several times
    what every later bar costs (docs/experiments/ui-event-loop-stall.md). A bar
    opened and closed right away pays that while the dock opens. Does nothing without
    a napari window.
    """
    import napari
    from napari.utils import progress

    if napari.current_viewer() is not None:
        progress(total=0, desc="Lesion Harvest").close()


def _failure(job: Job, status: int, log_path: str) -> str:
    """``"Round failed: REASON; log: PATH"``, the reason from the command's error line."""
    reason = _log_error(log_path, job.error_prefix)
    failed = (
        f"{job.title} failed: {reason}" if reason else f"{job.title} failed (exit status {status})"
    )
    return f"{failed}; log: {log_path}"


def _log_error(path: str, prefix: str) -> str:
    """The command's one-line error (after ``prefix``) in its log ('' when there is none)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith(prefix)]
    return errors[-1].removeprefix(prefix) if errors else ""


def _log_tail(path: str, lines: int = 8) -> str:
    try:
        return "\n".join(Path(path).read_text(encoding="utf-8").splitlines()[-lines:])
    except OSError as error:
        return f"(log unreadable: {error})"
