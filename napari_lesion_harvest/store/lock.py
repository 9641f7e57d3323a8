"""The round lock: at most one round runs on a project, and a crash does not keep it.

The lock is one row of ``round_lock`` holding the owner's pid, the pid's
start time (from ``/proc``, so a recycled pid is not mistaken for the owner),
host name, a random token and a heartbeat time. It is *stale* (and taken over
by the next round) when

* the owner ran on this host and its process is gone (or the pid now belongs
  to another process), or
* the owner ran on another host and its heartbeat is older than
  ``stale_after_s`` (the owner calls :meth:`RoundLock.heartbeat`; every
  ``write_stage`` does it too).

Taking over a stale lock marks the round it was running as ``failed`` (it
can then be resumed after its last committed stage).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

from napari_lesion_harvest.store import rows
from napari_lesion_harvest.store.database import Database
from napari_lesion_harvest.store.errors import RoundLockedError

#: Seconds without heartbeat after which another host's lock counts as abandoned.
STALE_AFTER_S = 900.0
#: The ``round_number`` of the lock that self-supervised pretraining holds (no round).
PRETRAINING = None


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) the round lock."""

    round_number: int | None
    pid: int
    pid_start: str | None
    host: str
    token: str
    acquired_at: float
    heartbeat_at: float

    def describe(self) -> str:
        """Human-readable owner, e.g. ``round 2 (pid 4242 on gpu1, since 2026-05-09 10:00)``
        (``pretraining (...)`` for the holder of :data:`PRETRAINING`)."""
        import time

        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.acquired_at))
        return f"{job_name(self.round_number)} (pid {self.pid} on {self.host}, since {since})"


def job_name(round_number: int | None) -> str:
    """``round N``, or ``pretraining`` for :data:`PRETRAINING`."""
    return "pretraining" if round_number is PRETRAINING else f"round {round_number}"


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """``(state, start time in clock ticks)`` of ``pid`` from ``/proc``; None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def process_start_time(pid: int) -> str | None:
    """Start time of process ``pid`` (clock ticks since boot); None where ``/proc`` is absent."""
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def process_alive(pid: int, start: str | None) -> bool:
    """Whether ``pid`` runs and is the process that started at ``start`` (when known).

    A zombie (killed, not yet reaped) counts as dead; so does a recycled pid.
    """
    stat = _proc_stat(pid)
    if stat is not None:
        state, started = stat
        return state not in ("Z", "X") and (start is None or started == start)
    if os.path.isdir("/proc/self"):
        return False  # Linux without /proc/<pid>: gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(holder: LockHolder, *, now: float, stale_after_s: float = STALE_AFTER_S) -> bool:
    """Whether the lock of ``holder`` may be taken over (see the module docstring)."""
    if holder.host == socket.gethostname():
        return not process_alive(holder.pid, holder.pid_start)
    return now - holder.heartbeat_at > stale_after_s


def read_holder(conn) -> LockHolder | None:
    """The current lock row, or None when nobody holds the lock."""
    row = conn.execute(
        "SELECT round_number, pid, pid_start, host, token, acquired_at, heartbeat_at "
        "FROM round_lock WHERE slot = 1"
    ).fetchone()
    return LockHolder(*row) if row else None


class RoundLock:
    """Exclusive right to run a round on one project (a context manager).

    Parameters
    ----------
    db : Database
    round_number : int or None
        The round to run, or :data:`PRETRAINING`.
    stale_after_s : float, optional
        See the module docstring.

    Raises
    ------
    RoundLockedError
        On entering, when a live process holds the lock.
    """

    def __init__(
        self, db: Database, round_number: int | None, *, stale_after_s: float = STALE_AFTER_S
    ):
        self._db = db
        self.round_number = None if round_number is PRETRAINING else int(round_number)
        self.stale_after_s = stale_after_s
        self.token = uuid.uuid4().hex
        self.taken_over: LockHolder | None = None

    def acquire(self) -> RoundLock:
        """Take the lock (taking over a stale one and failing its round)."""
        with self._db.write(f"locking the project for {job_name(self.round_number)}") as conn:
            holder = read_holder(conn)
            at = rows.now()
            if holder is not None:
                if not is_stale(holder, now=at, stale_after_s=self.stale_after_s):
                    busy = "another round" if holder.round_number is not None else "a job"
                    raise RoundLockedError(
                        f"{self._db.path}: {busy} is running: {holder.describe()}. "
                        "Wait for it to finish or stop it first."
                    )
                fail_interrupted_round(conn, holder)
                self.taken_over = holder
            conn.execute(
                "INSERT OR REPLACE INTO round_lock (slot, round_number, pid, pid_start, host, "
                "token, acquired_at, heartbeat_at) VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.round_number,
                    os.getpid(),
                    process_start_time(os.getpid()),
                    socket.gethostname(),
                    self.token,
                    at,
                    at,
                ),
            )
        return self

    def check(self, conn) -> None:
        """Raise :class:`RoundLockedError` unless this lock is held; renews the heartbeat."""
        cursor = conn.execute(
            "UPDATE round_lock SET heartbeat_at = ? WHERE slot = 1 AND token = ?",
            (rows.now(), self.token),
        )
        if cursor.rowcount != 1:
            holder = read_holder(conn)
            owner = holder.describe() if holder else "nobody"
            raise RoundLockedError(
                f"{self._db.path}: {job_name(self.round_number)} lost its lock (now held by "
                f"{owner}); "
                "its results were not written"
            )

    def heartbeat(self) -> None:
        """Tell other hosts this lock is alive (call at least every ``stale_after_s``)."""
        with self._db.write("renewing the round lock") as conn:
            self.check(conn)

    def release(self) -> None:
        """Give the lock back (no-op when it was already taken over)."""
        with self._db.write("releasing the round lock") as conn:
            conn.execute("DELETE FROM round_lock WHERE slot = 1 AND token = ?", (self.token,))

    def __enter__(self) -> RoundLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def fail_interrupted_round(conn, holder: LockHolder) -> bool:
    """Mark the round of a dead lock holder ``failed`` (resumable), inside a transaction.

    Returns whether a running round was failed.
    """
    if holder.round_number is None:
        return False
    cursor = conn.execute(
        "UPDATE rounds SET status = 'failed', finished_at = ?, error = ? "
        "WHERE number = ? AND status = 'running'",
        (
            rows.now(),
            f"interrupted: process {holder.pid} on {holder.host} stopped before finishing",
            holder.round_number,
        ),
    )
    return cursor.rowcount == 1
