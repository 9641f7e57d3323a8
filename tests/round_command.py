"""``lesion-harvest`` run in a subprocess from a test, mostly its ``round`` command:
the run, its configuration file, its progress lines, a stop, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping

from napari_lesion_harvest.harvest.blob_project import TINY_CONFIG
from napari_lesion_harvest.store import HarvestProject

#: One thread per process; the worktree importable by the subprocesses.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: :data:`ENV` on a machine without a CUDA GPU (every GPU hidden).
NO_GPU_ENV = {**ENV, "CUDA_VISIBLE_DEVICES": ""}


def lesion_harvest(*args, env: Mapping[str, str] = ENV, **popen) -> subprocess.CompletedProcess:
    """``lesion-harvest ARGS`` run to its end in ``env`` (``popen``: more
    ``subprocess.run`` options)."""
    return subprocess.run(
        [sys.executable, "-m", "napari_lesion_harvest", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        **popen,
    )


def round_command(project_dir, config_path, *more) -> list:
    """The arguments of ``lesion-harvest round`` on the CPU with ``config_path``."""
    return ["round", project_dir, "--config", config_path, "--device", "cpu", *more]


def assert_one_line_error(done, *fragments) -> str:
    """The command failed with status 2 and one error line (no traceback) holding
    ``fragments``; returns the message after ``error: ``."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("lesion-harvest round: error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0].removeprefix("lesion-harvest round: error: ")


def rounds_of(project_dir) -> list:
    """The round records of the project ``project_dir``."""
    with HarvestProject.open(project_dir) as project:
        return project.rounds.list()


def start_round(project_dir, config_path, *more) -> subprocess.Popen:
    """``lesion-harvest round --progress-json`` running in the background."""
    command = round_command(project_dir, config_path, "--progress-json", *more)
    return subprocess.Popen(
        [sys.executable, "-m", "napari_lesion_harvest", *map(str, command)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def wait_for_training(process: subprocess.Popen) -> None:
    """Read the progress lines of ``process`` until its LPG has trained a step."""
    for line in process.stdout:
        event = json.loads(line)
        if event["stage"] == "train_lpg" and event["step"] > 0:
            return
    raise AssertionError(f"the round ended before training: {process.stderr.read()[-3000:]}")


def stop(process: subprocess.Popen) -> int:
    """Stop ``process`` with SIGTERM (a clean stop at its next step); its exit status."""
    process.terminate()
    process.communicate(timeout=300)
    return process.returncode


def write_config(folder, name, **changes):
    """Write :data:`TINY_CONFIG` with ``changes`` to ``folder / name``; returns its path."""
    config = {**TINY_CONFIG, **changes}
    path = folder / name
    path.write_text(json.dumps(config))
    return path
