"""Harvest rounds under torchrun (2 CPU processes, gloo) equal single-process rounds.

Two checks, because the two halves of a round agree in different ways:

* LPG training under DDP equals one process holding the global batch up to
  floating-point rounding (weights to ~1e-5 relative). Over tens of Adam steps
  such rounding can grow chaotically (as between any two machines), so a whole
  torchrun round is not expected to reproduce a one-process round's LPG.
* Given the same trained LPG, the rest of the round (sharded scan, rank-0
  verify / LPC / evaluate, sharded harvest scoring, rank-0 writes) gives the
  same proposals, roles and scores as one process.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from napari_lesion_harvest.harvest.blob_project import make_blob_project
from napari_lesion_harvest.harvest.config import load_config
from napari_lesion_harvest.harvest.stages import RoundState, train_lpg_stage
from napari_lesion_harvest.lpg.checkpoint import load_checkpoint
from napari_lesion_harvest.lpg.job import run_job
from napari_lesion_harvest.progress import no_progress
from napari_lesion_harvest.store import HarvestProject
from tests.launch import run_module
from tests.lpg_phantoms import TINY_JOB_CONFIG, job_inputs

#: s_g: LPG forwards of identical weights (batching differs by rank); s_c: an LPC
#: trained on rank 0 with the same seed and thread count as the single process.
SCORE_ATOL = 1e-5


@pytest.mark.slow  # one torchrun launch of 2 processes: about 30 s on 2 cores
def test_ddp_lpg_training_equals_one_process_with_the_global_batch(tmp_path, monkeypatch):
    volumes, samples = job_inputs(tmp_path)
    config = TINY_JOB_CONFIG
    for name, batch in (("ranked", 2), ("single", 4)):  # 2 ranks x 2 = one process x 4
        job = {"mode": "train", "volumes": volumes, "samples": samples, "config": config,
               "options": {"steps": 4, "batch_size": batch, "warmup_steps": 1},
               "checkpoint": f"{name}.pt", "output": f"{name}.json"}  # fmt: skip
        (tmp_path / f"{name}.job").write_text(json.dumps(job))
    run_module(["napari_lesion_harvest.lpg.job", "ranked.job"], tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_job(tmp_path / "single.job")
    ranked = load_checkpoint(tmp_path / "ranked.pt")["model"]
    single = load_checkpoint(tmp_path / "single.pt")["model"]
    assert ranked.keys() == single.keys()
    for key, weights in single.items():
        np.testing.assert_allclose(
            ranked[key].float().numpy(),
            weights.float().numpy(),
            rtol=1e-4,
            atol=1e-6 * max(float(weights.float().abs().max()), 1.0),
            err_msg=key,
        )
    losses = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("ranked", "single")]
    assert losses[0]["world_size"] == 2 and losses[0]["ranks_in_sync"]
    assert losses[0]["final_loss"] == pytest.approx(losses[1]["final_loss"], rel=1e-5)


def _stored(project: Path, number: int):
    with HarvestProject.open(project) as opened:
        record = opened.rounds.get(number)
        proposals = sorted(
            (s.volume_id, tuple(int(z) for z in s.proposal.slices), s.role, s.s_g, s.s_c)
            for s in opened.proposals(number)
        )
        return record, proposals


def _train_lpg_then_stop(project: Path, config_path: Path) -> int:
    """Round 1 with its LPG trained and committed, then left failed (resumable)."""
    config = load_config(str(config_path))
    with HarvestProject.open(project) as opened:
        rounds = opened.rounds
        number = rounds.create(asdict(config)).number
        with rounds.lock(number) as lock:
            snapshot = rounds.start(number, lock=lock)
            state = RoundState(opened, number, snapshot, config, "cpu", no_progress, lambda: False)
            rounds.write_stage(number, "train_lpg", train_lpg_stage(state), lock=lock)
        rounds.fail(number, "stopped after train_lpg by the test")
    return number


def _guard_the_database(monkeypatch) -> list[str]:
    """``python -m`` arguments that run the package's command with rank 1 forbidden to
    touch the project database (``tests/database_guard.py``)."""
    tests = str(Path(__file__).resolve().parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    return ["database_guard", "napari_lesion_harvest"]


@pytest.mark.slow  # resumes one round in one process and under torchrun: about 80 s on 2 cores
def test_torchrun_round_equals_the_single_process_round_from_the_same_lpg(tmp_path, monkeypatch):
    single = make_blob_project(tmp_path)
    number = _train_lpg_then_stop(single, tmp_path / "tiny.json")
    ranked = tmp_path / "ranked"
    shutil.copytree(single, ranked)
    resume = ["round", "--config", "tiny.json", "--device", "cpu", "--rounds", "1"]
    run_module(["napari_lesion_harvest", *resume, str(single)], tmp_path, ranks=0)
    # Rank 1 never opens the project's database (it may sit on a network file system).
    run_module([*_guard_the_database(monkeypatch), *resume, str(ranked)], tmp_path)
    one, one_proposals = _stored(single, number)
    two, two_proposals = _stored(ranked, number)
    assert one.status == two.status == "done"
    assert {"P_RM", "P_neg_M", "P_RH"} <= {row[2] for row in one_proposals}
    assert one.metrics["harvest"]["scored"] > 0
    # Same proposals (volume, slices) in the same roles; scores equal to rounding.
    assert [row[:3] for row in two_proposals] == [row[:3] for row in one_proposals]
    for name, column in (("s_g", 3), ("s_c", 4)):
        got = np.array([np.nan if r[column] is None else r[column] for r in two_proposals])
        want = np.array([np.nan if r[column] is None else r[column] for r in one_proposals])
        np.testing.assert_allclose(got, want, atol=SCORE_ATOL, equal_nan=True, err_msg=name)
    for stage in ("scan", "verify", "harvest"):
        kept = {k: v for k, v in one.metrics[stage].items() if "second" not in k}
        assert {k: two.metrics[stage][k] for k in kept} == pytest.approx(kept), stage
    for row in ("per_round", "cumulative"):
        assert two.metrics["evaluation"][row]["p3d"] == one.metrics["evaluation"][row]["p3d"]


@pytest.mark.slow  # one whole round under torchrun: about 60 s on 2 cores
def test_a_whole_torchrun_round_leaves_the_database_to_rank_0(tmp_path, monkeypatch):
    """Every stage, DDP training included, runs with rank 1 forbidden to touch the
    project's database; the round ends done with its checkpoints recorded."""
    project = make_blob_project(tmp_path)
    command = ["round", str(project), "--config", "tiny.json", "--device", "cpu", "--rounds", "1"]
    run_module([*_guard_the_database(monkeypatch), *command], tmp_path)
    with HarvestProject.open(project) as opened:
        (record,) = opened.rounds.list()
    assert record.status == "done" and record.metrics["lpg"]["processes"] == 2
    assert {ref.name for ref in record.checkpoints} == {"lpg", "lpc"}
