"""LPG under torchrun: 2 CPU processes (gloo) for DDP training and sharded detection."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_lesion_harvest.lpg.checkpoint import load_checkpoint, load_model
from napari_lesion_harvest.lpg.infer import detect_volume
from napari_lesion_harvest.lpg.job import run_job
from tests.launch import run_module
from tests.lpg_phantoms import TINY_JOB_CONFIG, ellipsoid_phantom, job_inputs

torch.set_num_threads(1)


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
    run_module(["napari_lesion_harvest.lpg.job", "train.json.job"], tmp_path)
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
    run_module(["napari_lesion_harvest.lpg.job", "detect.json.job"], tmp_path)
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


def test_a_launched_rank_exits_with_its_status_and_its_output(monkeypatch):
    from napari_lesion_harvest.lpg.distributed import exit_launched_process

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert exit_launched_process(3) == 3  # one process: the status comes back
    script = (
        "from napari_lesion_harvest.lpg.distributed import exit_launched_process\n"
        "print('result written')\n"
        "exit_launched_process(3)\n"
        "print('never reached')\n"
    )
    env = dict(os.environ, WORLD_SIZE="2")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3
    assert done.stdout == "result written\n"  # buffered output to a pipe is flushed first


def test_a_job_sample_says_whether_its_background_is_known(tmp_path):
    from napari_lesion_harvest.lpg.job import JobError, _load_volumes, _samples

    volumes, samples = job_inputs(tmp_path)
    samples[0]["background_known"] = False
    job = {"mode": "train", "volumes": volumes, "samples": samples}
    job_path = tmp_path / "flags.job"
    loaded = _samples(job, _load_volumes(job, tmp_path, job_path), job_path)
    assert [s.background_known for s in loaded] == [False] + [True] * (len(samples) - 1)
    samples[1]["background_known"] = "no"
    job_path.write_text(json.dumps(job | {"config": TINY_JOB_CONFIG, "checkpoint": "x.pt"}))
    with pytest.raises(JobError, match=r"flags\.job: samples\[1\]: background_known"):
        run_job(job_path)
    assert not (tmp_path / "x.pt").exists()
