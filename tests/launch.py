"""Run the package's modules under ``torchrun`` (CPU ranks, gloo) from a test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_module(module_args: list[str], cwd: Path, *, ranks: int = 2, timeout: int = 400) -> None:
    """``python -m MODULE ARGS`` in ``cwd``: under ``torchrun`` with ``ranks`` processes,
    or as one plain process when ``ranks`` is 0; fails the test unless it exits 0.

    One thread per process, and Python's fault handler on, so that a rank that
    dies of a signal leaves its Python stack in the failure message.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    launcher = [sys.executable]
    if ranks:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    command = [*launcher, "-m", *module_args]
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
