"""``lesion-harvest demo``: what it refuses before minutes of synthesis."""

from __future__ import annotations

import subprocess
import sys


def demo(*options, cwd):
    return subprocess.run(
        [sys.executable, "-m", "napari_lesion_harvest", "demo", *options],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )


def test_a_missing_gpu_is_reported_before_anything_is_synthesised(tmp_path):
    done = demo("--device", "cuda", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2
    assert "no usable CUDA GPU" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_an_existing_demo_project_is_left_alone(tmp_path):
    project = tmp_path / "out" / "project"
    project.mkdir(parents=True)
    (project / "mine.txt").write_text("keep me")
    done = demo("--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2 and "exists" in done.stderr
    assert (project / "mine.txt").read_text() == "keep me"
    assert not (tmp_path / "out" / "dataset").exists()
