"""The "Run harvest round" controls: config, device, Run / Stop, napari progress bar, log."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_harvest.ui.round_runner import RoundRunner, round_command

#: Log folder inside the project.
LOGS_DIR = "logs"


class RoundPanel(QWidget):
    """Start and stop harvest rounds; show their progress in a napari progress bar.

    Parameters
    ----------
    project_folder : callable
        Returns the open project's folder (``None`` when none is open).
    on_finished : callable
        ``on_finished(status)`` after a round ends (the dock refreshes from the store).
    command_for : callable, optional
        ``command_for(folder, config=..., device=...) -> list[str]``; default
        :func:`round_command`.
    """

    def __init__(
        self,
        *,
        project_folder: Callable[[], Path | None],
        on_finished: Callable[[int], None] = lambda status: None,
        command_for: Callable[..., list[str]] = round_command,
        parent=None,
    ):
        super().__init__(parent)
        self._project_folder = project_folder
        self._on_finished = on_finished
        self._command_for = command_for
        self.runner = RoundRunner(self)
        self.runner.progressed.connect(self._on_progress)
        self.runner.finished.connect(self._on_finished_signal)
        self.progress_bar = None
        self.events_seen = 0
        # _on_progress: the newest event, the one on the bar, and whether it is re-entered
        self._newest_event: dict | None = None
        self._bar_event: dict | None = None
        self._updating_bar = False

        self.config_box = QComboBox()
        self.config_box.addItems(["lite", "paper"])
        self.config_box.setEditable(True)  # or the path of a JSON config file
        self.config_box.setToolTip("Round preset (lite, paper) or a JSON config file")
        self.config_button = QPushButton("File...")
        self.config_button.setToolTip("Choose a JSON round configuration file")
        self.device_box = QComboBox()
        self.device_box.addItems(["auto", "cpu", "cuda"])
        self.run_button = QPushButton("Run harvest round")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.status_label = QLabel("No round running.")
        self.status_label.setWordWrap(True)
        self.log_label = QLabel("")
        self.log_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        for label in (self.status_label, self.log_label):
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
        layout.addLayout(buttons)
        layout.addWidget(self.status_label)
        layout.addWidget(self.log_label)
        self.run_button.clicked.connect(self.start_round)
        self.stop_button.clicked.connect(self.stop_round)
        self.config_button.clicked.connect(self._choose_config)
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

    # ------------------------------------------------------------------ actions

    def start_round(self) -> bool:
        """Start a round on the open project; False (with a notification) when refused.

        The panel shows the round as running before its process starts: a round
        that ends at once is then reported as ended, not left looking alive.
        """
        from napari.utils.notifications import show_error, show_warning

        folder = self._project_folder()
        if folder is None:
            show_warning("Open a harvest project first.")
            return False
        refusal = self.runner.refusal()
        if refusal is not None:
            show_warning(refusal)
            return False
        stamp = time.strftime("%Y%m%d-%H%M%S")
        log_path = Path(folder) / LOGS_DIR / f"round-{stamp}-{os.getpid()}.log"
        command = self._command_for(
            folder, config=self.config_box.currentText(), device=self.device_box.currentText()
        )
        self._show_running(log_path)
        try:
            self.runner.start(command, log_path=log_path)
        except OSError as error:  # no interpreter, or the log folder is not writable
            message = f"The round could not start: {error}"
            self._show_idle(message)
            show_error(message)
            return False
        return True

    def _show_running(self, log_path: Path) -> None:
        self.events_seen = 0
        self._open_progress_bar()
        self.run_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.status_label.setText("Round started.")
        self.log_label.setText(f"Log: {LOGS_DIR}/{log_path.name}")
        self.log_label.setToolTip(str(log_path))

    def _show_idle(self, message: str) -> None:
        self._close_progress_bar()
        self.run_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.status_label.setText(message)

    def stop_round(self) -> None:
        """Stop the running round (its whole process tree)."""
        if self.runner.running:
            self.status_label.setText("Stopping the round...")
            self.runner.stop()

    # ------------------------------------------------------------------ progress

    def _open_progress_bar(self) -> None:
        from napari.utils import progress

        self._close_progress_bar()
        self.progress_bar = progress(total=0, desc="harvest round")

    def _close_progress_bar(self) -> None:
        if self.progress_bar is not None:
            self.progress_bar.close()
            self.progress_bar = None

    def _on_progress(self, event: dict) -> None:
        """Show one progress event: the status line at once, then napari's progress bar.

        napari's progress-bar widget processes Qt events while it repaints, so
        this handler can be re-entered by the next progress event or by the
        round's end. A nested event only updates the status line and leaves the
        newest event for the outer call's loop; a bar closed by the round's end
        is left alone, and the status line then keeps the outcome.
        """
        self.events_seen += 1
        stage, step, total = str(event["stage"]), int(event["step"]), int(event["total"])
        text = f"{stage}: {step}/{total}" if total else stage
        if event.get("message"):
            text += f" - {event['message']}"
        self.status_label.setText(text)
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

    def _show_on_bar(self, event: dict) -> bool:
        """Move the progress bar to ``event``; False when the round's end closed it."""
        bar = self.progress_bar
        if bar is None:
            return False
        total = int(event["total"])
        if bar.total != total:
            bar.total = total
        bar.set_description(f"round: {event['stage']}")
        if self.progress_bar is not bar:
            return False
        bar.update(int(event["step"]) - bar.n)  # emits the bar's value event
        return self.progress_bar is bar

    def _on_finished_signal(self, status: int, log_path: str) -> None:
        from napari.utils.notifications import show_error, show_info

        if self.runner.stopping:
            message = "Round stopped; the project keeps every stage committed before the stop."
            show_info(message)
        elif status == 0:
            message = "Round finished."
            show_info(message)
        else:
            tail = _log_tail(log_path)
            message = f"Round failed (exit status {status}); log: {log_path}"
            show_error(f"{message}\n{tail}")
        self._show_idle(message)
        self._on_finished(status)


def prepare_napari_progress() -> None:
    """Build napari's progress-bar widgets once, when the dock opens, not at the first Run.

    The first napari progress bar of a session builds the activity panel's
    widgets and shows the status-bar spinner; that re-lays out the window and
    repaints the canvas twice inside napari's own ``processEvents`` (measured
    215-267 ms on 2 busy cores with software OpenGL, against 34-40 ms for every
    later bar: docs/performance.md, ``## ui``). A bar opened and closed right
    away pays that while the dock opens. Does nothing without a napari window.
    """
    import napari
    from napari.utils import progress

    if napari.current_viewer() is not None:
        progress(total=0, desc="Lesion Harvest").close()


def _log_tail(path: str, lines: int = 8) -> str:
    try:
        return "\n".join(Path(path).read_text(encoding="utf-8").splitlines()[-lines:])
    except OSError as error:
        return f"(log unreadable: {error})"
