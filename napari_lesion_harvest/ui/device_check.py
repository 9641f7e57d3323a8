"""The device check before a round on ``cuda`` or ``auto``: ``lesion-harvest round
--check`` in a short subprocess (the napari process never imports torch), run in a
thread; a passed check is kept for the session.
"""

from __future__ import annotations

import subprocess
import threading

from qtpy.QtCore import QObject, Signal

from napari_lesion_harvest.ui.command_output import check_answer

#: Seconds a device check (``lesion-harvest round --check``) may take.
DEVICE_CHECK_TIMEOUT_S = 300


class DeviceCheck(QObject):
    """Check devices for a round, one subprocess per check, and keep the passed ones.

    Signals
    -------
    checked(str, object, str)
        ``(device, resolved, message)`` when a check ended, on the GUI thread:
        ``resolved`` is the device the round would use (``cpu``, ``cuda``), or
        None when the round cannot start (``message`` says why).
    """

    checked = Signal(str, object, str)
    _answered = Signal(str, object, str)  # from the check's thread

    def __init__(self, parent=None):
        super().__init__(parent)
        self._passed: dict[str, str] = {}
        self._answered.connect(self._keep)

    def resolved(self, device: str) -> str | None:
        """The device a passed check of ``device`` resolved to (None: not checked yet)."""
        return self._passed.get(device)

    def start(self, command: list[str], device: str) -> None:
        """Run ``command`` (a ``round --check`` of ``device``) in a thread; its answer
        arrives in :attr:`checked`."""

        def check():
            try:
                done = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    stdin=subprocess.DEVNULL,
                    timeout=DEVICE_CHECK_TIMEOUT_S,
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                self._answered.emit(device, None, f"The device check failed: {error}")
                return
            self._answered.emit(device, *check_answer(done))

        threading.Thread(target=check, name="round-device-check", daemon=True).start()

    def _keep(self, device: str, resolved, message: str) -> None:
        if resolved is not None:
            self._passed[device] = resolved
        self.checked.emit(device, resolved, message)
