"""The round panel's "Pretrain" row: self-supervised pretraining of the chosen
configuration's LPG on the project's own CT (``lesion-harvest pretrain``) for at most
the minutes given, its progress line and time left, how it ended, and the project's
pretrained weights.

The round panel starts it with the runner it shares with rounds, so pretraining and a
round never run at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_harvest.ui.command_output import failure_message, log_tail
from napari_lesion_harvest.ui.round_plan import PRETRAIN_JOB
from napari_lesion_harvest.ui.round_runner import pretrain_command

#: Minutes of pretraining the row offers first.
DEFAULT_PRETRAIN_MINUTES = 15


class PretrainRow(QWidget):
    """The Pretrain button, its time budget, and the project's pretrained LPG weights.

    Parameters
    ----------
    project : callable
        Returns the open :class:`HarvestProject` (``None`` when none is open).
    command_for : callable, optional
        ``command_for(folder, config=..., minutes=..., device=...) -> list[str]``;
        default :func:`~napari_lesion_harvest.ui.round_runner.pretrain_command`.
    """

    def __init__(
        self,
        *,
        project: Callable[[], object],
        command_for: Callable[..., list[str]] = pretrain_command,
        parent=None,
    ):
        super().__init__(parent)
        self._project = project
        self._command_for = command_for
        self.clock = None  # PretrainClock of the running pretraining
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
        # a long description must not widen the dock (that re-lays out every tab)
        self.pretrained_label.setSizePolicy(
            QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred
        )
        row = QHBoxLayout()
        row.addWidget(self.pretrain_button)
        row.addWidget(QLabel("for at most"))
        row.addWidget(self.minutes_box)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.pretrained_label)

    def start(self, folder: str | Path, *, config: str, device: str) -> list[str]:
        """The command of a pretraining of the project in ``folder`` that starts now, for
        at most the minutes given; its time left is counted from now."""
        from napari_lesion_harvest.ui.pretrain_clock import PretrainClock

        minutes = self.minutes_box.value()
        self.clock = PretrainClock(minutes)
        return self._command_for(folder, config=config, minutes=minutes, device=device)

    def follow(self, event: dict) -> tuple[str, int, int] | None:
        """The dock's stage line, step and total of one progress event of the running
        pretraining (None: nothing to show)."""
        if self.clock is None or event["stage"] == "done":
            return None
        self.clock.event(event)
        step, total = int(event["step"]), int(event["total"])
        return f"Pretraining the LPG: step {step} of {total}", step, total

    def seconds_left(self) -> float | None:
        """Expected seconds to the end of the running pretraining (None: none runs)."""
        return None if self.clock is None else self.clock.seconds_left()

    def finish(
        self, status: int, log_path: str, *, last_event: dict | None, stopping: bool
    ) -> tuple[str, bool]:
        """Say how pretraining ended (in napari's notifications) and return the panel's
        sentence and whether it is a problem. Its weights are saved when it exits 0,
        stopped or not."""
        from napari.utils.notifications import show_error, show_info

        last = last_event or {}
        if status == 0:
            done = last.get("stage") == "done" and last.get("message")
            message, problem = f"Pretraining {done}." if done else "Pretraining finished.", False
            if stopping:
                message += " Pretrain continues it."
            show_info(message)
        elif stopping:
            message, problem = f"Pretraining stopped (exit status {status}).", True
            show_info(message)
        else:
            message, problem = failure_message(PRETRAIN_JOB, status, log_path), True
            show_error(f"{message}\n{log_tail(log_path)}")
        self.clock = None
        return message, problem

    def show_pretrained(self) -> None:
        """Say whether the open project holds pretrained LPG weights, and its pretrained
        LPC trunks where it has them."""
        project = self._project()
        if project is None:
            self.pretrained_label.setText("")
            return
        weights, trunks = (project.pretrained.current(n) for n in ("lpg", "lpc"))
        if weights is None:
            text = "Pretrained LPG weights: none in this project."
        else:
            text = f"Pretrained LPG weights: {weights.describe()}; round 1 starts from them."
        if trunks is not None:
            text += (
                f"\nPretrained LPC trunks: {trunks.describe()}; every round's LPC starts "
                "from them where they fit its settings."
            )
        self.pretrained_label.setText(text)
