"""LPG under torchrun: 2 CPU processes (gloo) for DDP training and sharded detection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lpg_phantoms import TINY_JOB_CONFIG, ellipsoid_phantom, job_inputs

from napari_lesion_harvest.lpg.checkpoint import load_checkpoint, load_model
from napari_lesion_harvest.lpg.infer import detect_volume
from napari_lesion_harvest.lpg.job import run_job

torch.set_num_threads(1)


#: What the C++ runtime prints when a rank exits with a gloo thread still running.
GLOO_EXIT_RACE = "terminate called without an active exception"


def torchrun(job: Path, nproc: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "napari_lesion_harvest.lpg.job",
        str(job),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    if done.returncode != 0 and GLOO_EXIT_RACE in done.stderr:
        # A gloo worker thread can still be alive when a rank's interpreter exits, and the
        # C++ runtime aborts that rank (seen once in ~10 runs under heavy load). The job
        # itself is idempotent: run it once more and judge that run.
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    return done


@pytest.mark.slow  # two torchrun launches of 2 processes each: about a minute on 2 cores
def test_ddp_training_and_sharded_detection_with_two_processes(tmp_path):
    volumes, samples = job_inputs(tmp_path)
    config = TINY_JOB_CONFIG
    train_job = {
        "mode": "train",
        "volumes": volumes,
        "samples": samples,
        "config": config,
        "options": {"steps": 3, "batch_size": 1, "warmup_steps": 1},
        "checkpoint": "lpg.pt",
        "output": "train.json",
    }
    (tmp_path / "train.json.job").write_text(json.dumps(train_job))
    done = torchrun(tmp_path / "train.json.job", 2)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    assert summary["ranks_in_sync"] is True
    assert load_checkpoint(tmp_path / "lpg.pt")["step"] == 3

    detect_job = {
        "mode": "detect",
        "volumes": volumes,
        "checkpoint": "lpg.pt",
        "detect": {"batch_size": 3, "top_k": 5},
        "output": "detections.json",
    }
    (tmp_path / "detect.json.job").write_text(json.dumps(detect_job))
    done = torchrun(tmp_path / "detect.json.job", 2)
    assert done.returncode == 0, done.stderr[-3000:]
    sharded = json.loads((tmp_path / "detections.json").read_text())
    assert list(sharded) == [v["id"] for v in volumes]

    # The same detections in this process, without torchrun.
    model = load_model(tmp_path / "lpg.pt")
    single = run_job(tmp_path / "detect.json.job")
    for entry in volumes:
        volume, _ = ellipsoid_phantom(int(entry["path"][1]), shape=(8, 32, 32), lesions=1)
        reference = detect_volume(model, volume, batch_size=3, top_k=5)
        assert [d["z"] for d in sharded[entry["id"]]] == [d.z for d in reference]
        for got, want in zip(sharded[entry["id"]], reference, strict=True):
            np.testing.assert_allclose(got["boxes"], want.boxes, atol=1e-4)
            np.testing.assert_allclose(got["scores"], want.scores, atol=1e-5)
        assert single[entry["id"]] == sharded[entry["id"]]
