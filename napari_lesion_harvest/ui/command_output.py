"""What a finished ``lesion-harvest`` command said, for the round panel: its one-line
error, the last lines of its log, and the answer of a device check (Qt-free).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from napari_lesion_harvest.progress import parse_progress_line
from napari_lesion_harvest.ui.round_plan import ROUND_JOB, Job


def failure_message(job: Job, status: int, log_path: str | Path) -> str:
    """``"Round failed: REASON; log: PATH"``, the reason from the command's error line.

    Parameters
    ----------
    job : Job
        What failed.
    status : int
        Its exit status (said when its log holds no error line).
    log_path : path
        Its log file.
    """
    reason = log_error(log_path, job.error_prefix)
    failed = (
        f"{job.title} failed: {reason}" if reason else f"{job.title} failed (exit status {status})"
    )
    return f"{failed}; log: {log_path}"


def log_error(path: str | Path, prefix: str) -> str:
    """The command's last one-line error (after ``prefix``) in its log ('' when there is
    none or the log cannot be read)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith(prefix)]
    return errors[-1].removeprefix(prefix) if errors else ""


def log_tail(path: str | Path, lines: int = 8) -> str:
    """The last ``lines`` lines of a log, or why it cannot be read."""
    try:
        return "\n".join(Path(path).read_text(encoding="utf-8").splitlines()[-lines:])
    except OSError as error:
        return f"(log unreadable: {error})"


def check_answer(done: subprocess.CompletedProcess) -> tuple[str | None, str]:
    """The answer of a finished ``lesion-harvest round --check``.

    Parameters
    ----------
    done : subprocess.CompletedProcess
        The check, run with text output captured.

    Returns
    -------
    device : str or None
        The device the round would use (``cpu``, ``cuda``); None when the round
        cannot start.
    message : str
        The check's message, or why the round cannot start.
    """
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
