"""The running job's progress in the dock (its stage line, bar and time left) and in a
napari progress bar, for the round panel's round or pretraining.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QProgressBar, QSizePolicy, QVBoxLayout, QWidget

from napari_lesion_harvest.ui.round_plan import Job


class JobProgress(QWidget):
    """Stage line, bar and time left of the running job; its napari progress bar.

    Parameters
    ----------
    seconds_left : callable
        Returns the expected seconds to the running job's end (None: unknown);
        asked every second while the job runs.
    """

    def __init__(self, *, seconds_left: Callable[[], float | None], parent=None):
        super().__init__(parent)
        self._seconds_left = seconds_left
        self.progress_bar = None  # napari's, while a job runs
        # show_on_bar: the newest event, the one on the bar, and whether it is re-entered
        self._newest_event: dict | None = None
        self._bar_event: dict | None = None
        self._updating_bar = False
        self.stage_label = QLabel("")
        # a long stage name must not widen the dock (that re-lays out every tab)
        self.stage_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.stage_bar = QProgressBar()
        self.stage_bar.setVisible(False)
        self.eta_label = QLabel("")
        self._eta_timer = QTimer(self)
        self._eta_timer.setInterval(1000)
        self._eta_timer.timeout.connect(self.show_time_left)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.stage_label)
        layout.addWidget(self.stage_bar)
        layout.addWidget(self.eta_label)

    def start(self, job: Job) -> None:
        """Show ``job`` starting: a napari progress bar, a busy bar, the time left."""
        from napari.utils import progress

        self._close_progress_bar()
        self.progress_bar = progress(total=0, desc=job.title)
        self.stage_label.setText(f"Starting {job.the}...")
        self.stage_bar.setRange(0, 0)
        self.stage_bar.setVisible(True)
        self.show_time_left()
        self._eta_timer.start()

    def stop(self) -> None:
        """No job runs: close the napari bar, hide the dock's bar, clear the lines."""
        self._close_progress_bar()
        self._eta_timer.stop()
        self.stage_bar.setVisible(False)
        self.stage_label.setText("")
        self.eta_label.setText("")

    def show_stage(self, text: str | None, step: int, total: int, *, bar_format: str) -> None:
        """Show the stage line ``text`` (None: keep it), ``step`` of ``total`` on the
        dock's bar (``total`` 0: leave the bar), and the time left."""
        if text is not None:
            self.stage_label.setText(text)
        if total > 0:
            self.stage_bar.setRange(0, total)
            self.stage_bar.setValue(min(step, total))
            self.stage_bar.setFormat(bar_format)
        self.show_time_left()

    def show_time_left(self) -> None:
        """``"About 3 min left (done at about 14:05)."``, or nothing when unknown."""
        from napari_lesion_harvest.ui.round_estimate import format_duration

        left = self._seconds_left()
        if left is None:
            self.eta_label.setText("")
            return
        finish = time.strftime("%H:%M", time.localtime(time.time() + left))
        self.eta_label.setText(f"About {format_duration(left)} left (done at about {finish}).")

    def show_on_bar(self, event: dict, job: Job) -> None:
        """Move napari's progress bar to the progress event ``event`` of ``job``.

        napari's progress-bar widget processes Qt events while it repaints, so
        this can be re-entered by the next progress event or by the job's end. A
        nested call only records its event for the outer call's loop; a bar
        closed by the job's end is left alone.
        """
        self._newest_event = event
        if self._updating_bar:
            return
        self._updating_bar = True
        try:
            while self._bar_event is not self._newest_event:
                self._bar_event = self._newest_event
                if not self._move_bar(self._bar_event, job):
                    break
        finally:
            self._updating_bar = False

    def _move_bar(self, event: dict, job: Job) -> bool:
        """Move the progress bar to ``event``; False when the job's end closed it."""
        bar = self.progress_bar
        if bar is None:
            return False
        total = int(event["total"])
        if bar.total != total:
            bar.total = total
        bar.set_description(f"{job.command}: {event['stage']}")
        if self.progress_bar is not bar:
            return False
        bar.update(int(event["step"]) - bar.n)  # emits the bar's value event
        return self.progress_bar is bar

    def _close_progress_bar(self) -> None:
        if self.progress_bar is not None:
            self.progress_bar.close()
            self.progress_bar = None


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
