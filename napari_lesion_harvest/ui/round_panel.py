"""The "Run harvest round" controls: config, device, expected duration, Run / Stop, and the
running job's stage, progress and time left, all in the dock; with the "Pretrain" row
(:class:`~napari_lesion_harvest.ui.pretrain_row.PretrainRow`), whose pretraining runs
with the same runner, progress and Stop, and never beside a round.

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
import os
import time
from collections.abc import Callable
from pathlib import Path

from qtpy.QtCore import QEventLoop, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_harvest.ui.command_output import failure_message, log_tail
from napari_lesion_harvest.ui.device_check import DeviceCheck
from napari_lesion_harvest.ui.job_progress import JobProgress, prepare_napari_progress
from napari_lesion_harvest.ui.pretrain_row import PretrainRow
from napari_lesion_harvest.ui.round_plan import (
    PRETRAIN_JOB,
    ROUND_JOB,
    Job,
    RoundPlan,
    config_differences,
    round_plan,
)
from napari_lesion_harvest.ui.round_runner import RoundRunner, pretrain_command, round_command
from napari_lesion_harvest.vocabulary import RoundStatus

#: Log folder inside the project.
LOGS_DIR = "logs"
#: Colour of problems said in the panel.
PROBLEM_COLOUR = "#ff8080"


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
        self.author = author or getpass.getuser()
        self.rates_path = Path(rates_path) if rates_path else config_dir() / RATES_FILE
        self.runner = RoundRunner(self)
        self.runner.progressed.connect(self._on_progress)
        self.runner.finished.connect(self._on_finished_signal)
        self.device_check = DeviceCheck(self)
        self.device_check.checked.connect(self._on_device_checked)
        self.events_seen = 0
        self.job: Job | None = None  # what the runner's process runs
        self.timing = None  # RoundTiming of the running (or last) round
        self._pending_start: tuple[bool] | None = None

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
        self.pretrain_row = PretrainRow(project=project, command_for=pretrain_command_for)
        self.progress = JobProgress(seconds_left=self._seconds_left)
        self.status_label = QLabel("No round running.")
        self.status_label.setWordWrap(True)
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)
        self.log_label = QLabel("")
        self.log_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        for label in (self.status_label, self.log_label, self.estimate_label):
            # a long path in a label must not widen the dock (that re-lays out every tab)
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        form = QFormLayout()
        config_row = QHBoxLayout()
        config_row.addWidget(self.config_box, stretch=1)
        config_row.addWidget(self.config_button)
        form.addRow("Config", config_row)
        form.addRow("Device", self.device_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.estimate_label)
        layout.addLayout(buttons)
        layout.addWidget(self.pretrain_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.status_label)
        layout.addWidget(self.log_label)
        layout.addStretch(1)
        self.run_button.clicked.connect(self.start_round)
        self.stop_button.clicked.connect(self.stop_round)
        self.pretrain_row.pretrain_button.clicked.connect(self.start_pretrain)
        self.config_button.clicked.connect(self._choose_config)
        self.config_box.currentTextChanged.connect(self.show_estimate)
        self.device_box.currentTextChanged.connect(self.show_estimate)
        QTimer.singleShot(0, prepare_napari_progress)

    @property
    def clock(self):
        """The :class:`~napari_lesion_harvest.ui.round_estimate.StageClock` of the running
        (or last) round; None before a round or while pretraining runs."""
        return None if self.timing is None else self.timing.clock

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
        resolved = self.device_check.resolved(chosen)
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
        from napari_lesion_harvest.ui.round_timing import estimate_text

        project = self._project()
        if project is None or self.runner.running:
            return
        try:
            plan = round_plan(project, load_config(self.config_box.currentText()))
        except USER_ERRORS as error:
            self.estimate_label.setText(f"Configuration not usable: {one_line(error)}")
            return
        device, note = self._resolved_device()
        text, detail = estimate_text(plan, self.estimate_for(plan, device), device, note=note)
        self.estimate_label.setText(text)
        self.estimate_label.setToolTip(detail)

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
        resolved = self.device_check.resolved(device)
        if resolved is not None:
            return self._launch(folder, discard=discard, device=resolved)
        self._pending_start = (discard,)
        self._enable_starts(False)
        self._say(f"Checking the device ({device}) before the round starts...")
        command = self._command_for(folder, config=self.config_box.currentText(), device=device)
        self.device_check.start([*command, "--check"], device)
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

    def _on_device_checked(self, device: str, resolved, message: str) -> None:
        """A device check ended: start the round waiting for it, or say why it cannot
        start."""
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
        from napari_lesion_harvest.ui.round_estimate import RoundEstimate
        from napari_lesion_harvest.ui.round_timing import RoundTiming

        command = self._command_for(
            folder, config=self.config_box.currentText(), device=self.device_box.currentText()
        )
        if discard:
            command = [*command, "--discard", "--author", self.author]
        project = self._project()
        self.timing = RoundTiming(RoundEstimate({}))
        if project is not None:
            from napari_lesion_harvest.harvest.config import load_config
            from napari_lesion_harvest.ui.round_estimate import project_size

            plan = round_plan(project, load_config(self.config_box.currentText()), discard=discard)
            self.timing = RoundTiming(
                self.estimate_for(plan, device),
                measured=(plan, project_size(project.volumes()), device),
                rates_path=self.rates_path,
            )
        return self._start_process(ROUND_JOB, command, folder)

    def start_pretrain(self) -> bool:
        """Start pretraining the chosen configuration's LPG on the open project for at
        most the minutes given; False (said in the panel) when refused: no project, or a
        round or pretraining runs (or waits for its device check).

        The command refuses, in its one error line said in the panel, what only the
        project can tell (a round running in another process, a configuration it cannot
        pretrain).
        """
        folder = self._startable_folder()
        if folder is None:
            return False
        command = self.pretrain_row.start(
            folder, config=self.config_box.currentText(), device=self.device_box.currentText()
        )
        self.timing = None
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
        self.pretrain_row.pretrain_button.setEnabled(enabled)

    def _show_running(self, log_path: Path) -> None:
        self.events_seen = 0
        self.progress.start(self.job)
        self._enable_starts(False)
        self.stop_button.setEnabled(True)
        self._say(f"{self.job.title} started.")
        self.log_label.setText(f"Log: {LOGS_DIR}/{log_path.name}")
        self.log_label.setToolTip(str(log_path))

    def _show_idle(self, message: str, *, problem: bool = False) -> None:
        self.progress.stop()
        self._enable_starts(self._pending_start is None)
        self.stop_button.setEnabled(False)
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

    def _on_progress(self, event: dict) -> None:
        """Show one progress event: the dock's status, stage, bar and time left at once,
        then napari's progress bar."""
        self.events_seen += 1
        stage, step, total = str(event["stage"]), int(event["step"]), int(event["total"])
        text = f"{stage}: {step}/{total}" if total else stage
        if event.get("message"):
            text += f" - {event['message']}"
        self._say(text)
        if self.job is PRETRAIN_JOB:
            line = self.pretrain_row.follow(event)
            if line is not None:
                self.progress.show_stage(*line, bar_format="pretrain %v / %m")
        else:
            self._follow_stage(event)
        self.progress.show_on_bar(event, self.job)

    def _follow_stage(self, event: dict) -> None:
        """The dock's stage line and bar of a round; a stage that ended records its rate."""
        if self.timing is None:
            return
        self.timing.event(event)
        text = None
        if self.clock.stage is not None:
            n, of = self.clock.stage_number()
            text = f"Stage {n} of {of}: {self.clock.stage}"
        self.progress.show_stage(
            text, int(event["step"]), int(event["total"]), bar_format=f"{event['stage']} %v / %m"
        )

    def _seconds_left(self) -> float | None:
        """Expected seconds to the end of the running job (None: unknown)."""
        if self.job is PRETRAIN_JOB:
            return self.pretrain_row.seconds_left()
        if self.clock is None or not self.clock.estimate.seconds:
            return None
        return self.clock.seconds_left()

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
            message = failure_message(ROUND_JOB, status, log_path)
            show_error(f"{message}\n{log_tail(log_path)}")
        self._show_idle(message, problem=problem)
        self._on_finished(status)
        self.show_estimate()

    def _pretraining_finished(self, status: int, log_path: str) -> None:
        """Say how pretraining ended and show the project's weights."""
        message, problem = self.pretrain_row.finish(
            status, log_path, last_event=self.runner.last_event, stopping=self.runner.stopping
        )
        self._show_idle(message, problem=problem)
        self.pretrain_row.show_pretrained()
        self.show_estimate()

    def _outcome(self) -> tuple[str, bool]:
        """What the finished round did (said in the dock), and whether it harvested nothing."""
        from napari_lesion_harvest.ui.round_outcome import harvest_outcome

        project = self._project()
        number = None if project is None else project.latest_done_round()
        if number is None:
            return "Round finished.", False
        return harvest_outcome(project.rounds.get(number))
