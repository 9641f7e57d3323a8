"""Run a harvest round (or pretraining) in a subprocess and turn its JSON-lines progress
into Qt signals.

The round is ``python -m napari_lesion_harvest round PROJECT --progress-json ...``
(:func:`round_command`; pretraining: :func:`pretrain_command`); each line it
prints on standard output is one JSON object
``{"stage", "step", "total", "message", "metrics"}``. A reader thread parses
the lines and emits :attr:`RoundRunner.progressed` (delivered on the GUI thread
by Qt's queued connections), so the GUI never blocks on the process. Standard
error and every non-JSON line go to a log file. The process runs in its own
session: :meth:`RoundRunner.stop` sends SIGTERM to the whole process group
(the round stops at its next step and leaves the project consistent), then
SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from qtpy.QtCore import QObject, QTimer, Signal

from napari_lesion_harvest.progress import parse_progress_line

#: Seconds between SIGTERM and SIGKILL when stopping a round.
STOP_GRACE_S = 10.0


class RoundAlreadyRunning(RuntimeError):
    """A round or pretraining was started while another one is still running."""


def round_command(
    project_folder: str | os.PathLike,
    *,
    config: str = "lite",
    device: str = "auto",
    python: str = sys.executable,
) -> list[str]:
    """The command line of one harvest round with JSON-lines progress.

    Parameters
    ----------
    project_folder : path
        The harvest project.
    config : str
        Round preset (``lite``, ``paper``) or a JSON config file.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    python : str
        Interpreter that runs the round (default: this one).
    """
    return [
        python,
        "-m",
        "napari_lesion_harvest",
        "round",
        str(project_folder),
        "--progress-json",
        "--rounds",
        "1",
        "--config",
        config,
        "--device",
        device,
    ]


def pretrain_command(
    project_folder: str | os.PathLike,
    *,
    config: str = "lite",
    minutes: float,
    device: str = "auto",
    python: str = sys.executable,
) -> list[str]:
    """The command line of self-supervised pretraining with JSON-lines progress.

    It pretrains the LPG of ``config`` on the project's own volumes for at most
    ``minutes`` (``lesion-harvest pretrain``; a later run continues it); on
    SIGTERM it saves its weights and exits 0.

    Parameters
    ----------
    project_folder : path
        The harvest project.
    config : str
        Round preset (``lite``, ``paper``) or a JSON config file: whose LPG to pretrain.
    minutes : float
        Training time after which it saves and exits.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    python : str
        Interpreter that runs it (default: this one).
    """
    return [
        python,
        "-m",
        "napari_lesion_harvest",
        "pretrain",
        str(project_folder),
        "--progress-json",
        "--config",
        config,
        "--minutes",
        f"{minutes:g}",
        "--device",
        device,
    ]


class RoundRunner(QObject):
    """One round (or pretraining) subprocess at a time, reported through Qt signals.

    Signals
    -------
    progressed(dict)
        One parsed progress event.
    finished(int, str)
        Exit status (negative: killed by that signal) and the log file path.
    """

    progressed = Signal(dict)
    finished = Signal(int, str)

    def __init__(self, parent=None, *, stop_grace_s: float = STOP_GRACE_S):
        super().__init__(parent)
        self.stop_grace_s = stop_grace_s
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self.log_path: Path | None = None
        self.stopping = False
        self.last_event: dict | None = None
        self.job = "a harvest round"

    @property
    def running(self) -> bool:
        """Whether a round process is alive (or its output is still being read)."""
        return self._process is not None

    @property
    def pid(self) -> int | None:
        """Process id of the running round (its process-group id too)."""
        return None if self._process is None else self._process.pid

    def refusal(self) -> str | None:
        """Why a process cannot start now (one is running), or ``None`` when it can."""
        if not self.running:
            return None
        return f"{self.job} is already running (pid {self.pid}); stop it or wait"

    def start(
        self,
        command: list[str],
        *,
        log_path: str | os.PathLike,
        env=None,
        job: str = "a harvest round",
    ) -> None:
        """Start ``command``; its stderr and non-JSON output go to ``log_path``.

        ``job`` names it in :meth:`refusal` (``"a harvest round"``, ``"pretraining"``).

        Raises
        ------
        RoundAlreadyRunning
            When a round is still running (one at a time).
        OSError
            When the command cannot be started (the log file says so too).
        """
        refusal = self.refusal()
        if refusal is not None:
            raise RoundAlreadyRunning(refusal)
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed by the reader
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        self.stopping = False
        self.last_event = None
        self.job = job
        try:
            self._process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        except OSError as error:
            log.write(f"# could not start: {error}\n")
            log.close()
            raise
        self._reader = threading.Thread(
            target=self._read, args=(self._process, log), name="round-output", daemon=True
        )
        self._reader.start()

    def _read(self, process: subprocess.Popen, log) -> None:
        """Reader thread: parse stdout until EOF, then report the exit status."""
        try:
            for line in process.stdout:
                event = parse_progress_line(line)
                if event is None:
                    log.write(line)
                    log.flush()
                else:
                    self.last_event = event
                    self.progressed.emit(event)
            status = process.wait()
        finally:
            log.write(f"# exit status {process.poll()} at {time.ctime()}\n")
            log.close()
        self._process = None
        self.finished.emit(int(status), str(self.log_path))

    def stop(self) -> None:
        """Stop the round's whole process tree: SIGTERM now, SIGKILL after the grace period."""
        process = self._process
        if process is None:
            return
        self.stopping = True
        _signal_group(process.pid, signal.SIGTERM)
        QTimer.singleShot(int(self.stop_grace_s * 1000), lambda: self._kill_if_alive(process))

    def _kill_if_alive(self, process: subprocess.Popen) -> None:
        if process.poll() is None or _group_alive(process.pid):
            _signal_group(process.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the reader finished (for shutdown and scripts); True when it did."""
        reader = self._reader
        if reader is not None:
            reader.join(timeout)
            return not reader.is_alive()
        return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
