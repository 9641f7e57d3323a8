"""What a test process has open: file descriptors read from Linux's /proc."""

from __future__ import annotations

import os


def descriptors_of(path) -> int:
    """How many file descriptors of this process point at ``path``."""
    fds = os.listdir("/proc/self/fd")
    return sum(os.path.realpath(f"/proc/self/fd/{fd}") == os.path.realpath(path) for fd in fds)
