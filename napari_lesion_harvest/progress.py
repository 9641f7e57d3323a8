"""Progress reporting and cooperative cancellation for long jobs.

Compute functions take a ``progress`` callable and a ``cancelled`` callable
(micro-sam style), so the same code drives a tqdm bar on a terminal, JSON lines
for the napari widget and logs, or nothing at all in a script.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Protocol


class Progress(Protocol):
    """``progress(stage, step, total, message="", metrics=None)``."""

    def __call__(
        self, stage: str, step: int, total: int, message: str = "", metrics: dict | None = None
    ) -> None: ...


def no_progress(stage, step, total, message="", metrics=None) -> None:
    """A progress callback that reports nothing."""


class JsonLinesProgress:
    """Write one JSON object per progress event, flushed at once.

    Each line has ``stage``, ``step``, ``total``, ``message``, ``metrics`` and
    ``time`` (Unix seconds). The napari widget reads these from the round
    subprocess's standard output with :func:`parse_progress_line`.
    """

    def __init__(self, stream: IO[str] | None = None):
        self._stream = stream if stream is not None else sys.stdout
        self._lock = threading.Lock()

    def __call__(self, stage, step, total, message="", metrics=None) -> None:
        event = {
            "stage": stage,
            "step": int(step),
            "total": int(total),
            "message": message,
            "metrics": metrics or {},
            "time": time.time(),
        }
        with self._lock:
            self._stream.write(json.dumps(event) + "\n")
            self._stream.flush()


def parse_progress_line(line: str) -> dict | None:
    """The progress event of one output line, or ``None`` when it is not one.

    Returns
    -------
    dict or None
        ``stage`` (str), ``step`` and ``total`` (int), ``message`` (str) and
        ``metrics`` (dict); extra keys are kept.
    """
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(event, dict) or "stage" not in event:
        return None
    event.setdefault("step", 0)
    event.setdefault("total", 0)
    event.setdefault("message", "")
    event.setdefault("metrics", {})
    return event


class TqdmProgress:
    """Show one tqdm bar per stage on a terminal (standard error).

    Parameters
    ----------
    unit : str
        What a step counts, for the bar's rate (``"B"`` for bytes).
    unit_scale : bool
        Show counts with SI prefixes (``12.3MB``).
    """

    def __init__(self, unit: str = "it", unit_scale: bool = False):
        self._bar = None
        self._stage = None
        self._unit = unit
        self._unit_scale = unit_scale

    def __call__(self, stage, step, total, message="", metrics=None) -> None:
        from tqdm import tqdm

        if stage != self._stage or self._bar is None:
            self.close()
            self._bar = tqdm(
                total=total or None,
                desc=stage,
                file=sys.stderr,
                leave=True,
                unit=self._unit,
                unit_scale=self._unit_scale,
            )
            self._stage = stage
        self._bar.total = total or None
        self._bar.n = step
        if message or metrics:
            postfix = message or ", ".join(f"{k}={v}" for k, v in metrics.items())
            self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        """Finish the current bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class CancelToken:
    """A flag set by SIGINT / SIGTERM (or by code) and polled between steps.

    Use as a callable: ``cancelled()`` is True once a stop was requested.
    """

    def __init__(self):
        self._event = threading.Event()

    def __call__(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        """Request a stop at the next step."""
        self._event.set()

    def install_signal_handlers(self) -> Callable[[], None]:
        """Route SIGINT and SIGTERM to :meth:`cancel`; returns a function restoring the old ones.

        A second SIGINT while a stop is pending raises ``KeyboardInterrupt``.
        """
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handle(signum, frame):
            if signum == signal.SIGINT and self():
                raise KeyboardInterrupt
            self.cancel()

        for sig in previous:
            signal.signal(sig, handle)

        def restore():
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


class Cancelled(Exception):
    """Raised inside a job when its cancellation token was set."""


def check_cancelled(cancelled: Callable[[], bool] | None) -> None:
    """Raise :class:`Cancelled` when ``cancelled()`` is true."""
    if cancelled is not None and cancelled():
        raise Cancelled("stopped on request")
