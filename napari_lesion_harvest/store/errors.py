"""Typed errors of the harvest project store.

Every error a user can meet names the project file and says what to do; none
of them leaves a half-written change behind (each write is one SQLite
transaction that either commits whole or not at all).
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error raised by :mod:`napari_lesion_harvest.store`."""


class NotAProjectError(StoreError):
    """The folder or ``project.sqlite`` is not a harvest project (foreign, corrupt, missing)."""


class DamagedProjectError(NotAProjectError):
    """``project.sqlite`` is damaged (empty, truncated, pages overwritten); restore a backup."""


class ProjectInUseError(StoreError):
    """A restore, which needs the project to itself, while a program has the project open."""


class SchemaTooNewError(StoreError):
    """The project was written by a newer version of napari-lesion-harvest."""


class StoreWriteError(StoreError):
    """A write failed (disk full, I/O error); nothing already saved was lost."""


class StoreBusyError(StoreError):
    """Another process held the project's write lock for longer than the busy timeout."""


class NotFoundError(StoreError, KeyError):
    """A volume, mark, proposal, round or checkpoint that the caller named does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidValueError(StoreError, ValueError):
    """A value outside its allowed set (split, origin, role, status, verdict, ...)."""


class RoundLockedError(StoreError):
    """Another live process is running a round on this project."""


class RoundStateError(StoreError):
    """A round operation that its current status does not allow (e.g. writing to a done round)."""


class ChecksumMismatchError(StoreError):
    """A checkpoint file's sha256 differs from the one recorded in the project."""
