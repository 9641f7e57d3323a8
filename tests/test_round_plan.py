"""The round panel's Qt-free model: the round that Run would run (a stopped round resumed
with its own configuration, or the next one), what a finished ``lesion-harvest`` command
said (its device check's answer, its log's error line), and a round's time (the
expected-duration sentence, the stage rates recorded while it runs)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from napari_lesion_harvest.harvest.config import load_config
from napari_lesion_harvest.ui.command_output import (
    check_answer,
    failure_message,
    log_error,
    log_tail,
)
from napari_lesion_harvest.ui.round_estimate import (
    RateBook,
    estimate_round,
    project_size,
    rate_model,
    stage_work,
)
from napari_lesion_harvest.ui.round_plan import (
    PRETRAIN_JOB,
    ROUND_JOB,
    config_differences,
    round_plan,
)
from napari_lesion_harvest.ui.round_timing import RoundTiming, estimate_text
from tests.builders import new_project, recist_mark, stopped_round, synthetic_volume, writing_round
from tests.round_command import ENV

SHAPE = {"shape": (12, 64, 64), "spacing": (2.5, 0.8, 0.8)}


def _project(folder, *, marked: bool):
    """Two synthetic volumes: V_M (with a mark when ``marked``) and V_H."""
    project = new_project(
        folder, [synthetic_volume("vol_m", "V_M", **SHAPE), synthetic_volume("vol_h", **SHAPE)]
    )
    if marked:
        project.add_mark("vol_m", recist_mark(), author="radiologist")
    return project


def _stored(config) -> dict:
    """``config`` as a round record stores it."""
    return json.loads(config.to_json())


def test_run_resumes_a_stopped_round_with_its_own_configuration_unless_discarded(tmp_path):
    lite, paper = load_config("lite"), load_config("paper")
    with _project(tmp_path / "proj", marked=True) as project:
        plan = round_plan(project, lite)
        assert (plan.number, plan.config, plan.resume, plan.first_round) == (1, lite, None, True)
        assert plan.done_stages == ()

        with writing_round(project):
            pass  # round 1 finished
        stopped = stopped_round(project, _stored(paper))
        plan = round_plan(project, lite)
        assert plan.number == stopped == 2 and plan.resume.number == 2
        assert plan.config == paper  # its own, not the chosen one
        assert not plan.first_round and plan.done_stages == ()
        fresh = round_plan(project, lite, discard=True)
        assert (fresh.number, fresh.config, fresh.resume) == (3, lite, None)

        assert config_differences(lite, plan.resume.config) == (
            "lpc.epochs 30 -> 12, lpc.patch_size 128 -> 64, lpc.width paper -> lite, "
            "lpg.architecture paper -> lite, and 4 more"
        )
        assert config_differences(lite, _stored(lite)) == ""


def _lesion_harvest(*args, **run) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_lesion_harvest", *map(str, args)],
        text=True,
        env={**ENV, "CUDA_VISIBLE_DEVICES": ""},
        timeout=300,
        **run,
    )


def test_the_device_check_and_the_failure_are_read_from_the_real_command(tmp_path):
    _project(tmp_path / "ready", marked=True).close()
    check = ["round", "--progress-json", "--config", "lite", "--device", "cpu", "--check"]
    ready = _lesion_harvest(check[0], tmp_path / "ready", *check[1:], capture_output=True)
    assert check_answer(ready) == (
        "cpu",
        "ready on cpu: round 1 would start with config lite",
    )

    _project(tmp_path / "unmarked", marked=False).close()
    refused = _lesion_harvest(check[0], tmp_path / "unmarked", *check[1:], capture_output=True)
    reason = (
        "the 1 fully annotated volume(s) (V_M) have no marks; a round learns what a "
        "lesion is from them"
    )
    assert check_answer(refused) == (None, f"The round cannot start: {reason}")

    crashed = subprocess.run(
        [sys.executable, "-c", "import sys; sys.exit('no torch here')"],
        capture_output=True,
        text=True,
    )
    assert check_answer(crashed) == (
        None,
        "The device check failed (exit status 1): no torch here",
    )

    # the round itself, logged as the panel's runner logs it: its error line is the reason
    log = tmp_path / "round.log"
    with log.open("w", encoding="utf-8") as out:
        failed = _lesion_harvest(*check[:-1], stdout=out, stderr=subprocess.STDOUT)
    assert failed.returncode == 2
    assert (
        log_error(log, ROUND_JOB.error_prefix) == "the following arguments are required: project"
    )
    assert failure_message(ROUND_JOB, 2, log) == (
        f"Round failed: the following arguments are required: project; log: {log}"
    )
    assert log_tail(log, lines=1) == log.read_text(encoding="utf-8").splitlines()[-1]
    assert (
        failure_message(PRETRAIN_JOB, 2, log) == f"Pretraining failed (exit status 2); log: {log}"
    )
    missing = tmp_path / "missing.log"
    assert log_error(missing, ROUND_JOB.error_prefix) == ""
    assert log_tail(missing).startswith("(log unreadable: ")


def _events(stages_at):
    """A round's progress events: each stage (or ``done``) begins at its time."""
    return [{"stage": s, "step": 0, "total": 1, "time": t} for s, t in stages_at]


def test_a_round_records_the_rate_of_each_stage_it_ran_whole(tmp_path):
    lite = load_config("lite")
    rates = tmp_path / "rates.json"
    with _project(tmp_path / "proj", marked=True) as project:
        size = project_size(project.volumes())
        plan = round_plan(project, lite)
        estimate = estimate_round(lite, size, RateBook(rates), device="cpu", first_round=True)
        text, detail = estimate_text(
            plan, estimate, "cpu", note="; auto: a CPU until Run finds a GPU"
        )
        assert text.startswith("Round 1: about ")
        assert text.endswith(
            " on cpu (an estimate until a round has run here; auto: a CPU until Run finds a GPU)."
        )
        assert detail.splitlines()[0].startswith("train_lpg: ")

        timing = RoundTiming(estimate, measured=(plan, size, "cpu"), rates_path=rates)
        for event in _events([("train_lpg", 100.0), ("scan", 160.0), ("done", 170.0)]):
            timing.event(event)
        assert timing.clock.finished == {"train_lpg": 60.0, "scan": 10.0}
        book = RateBook(rates)
        for stage, seconds in timing.clock.finished.items():
            work = stage_work(stage, lite, size, first_round=True)
            assert book.rate("cpu", stage, rate_model(stage, lite)) == (
                pytest.approx(seconds / work),
                True,
            )
        measured = estimate_round(lite, size, book, device="cpu", first_round=True)
        assert estimate_text(plan, measured, "cpu")[0].endswith(
            " on cpu (2 of 6 stages measured here)."
        )

        # a resumed round's first stage may have restarted from a checkpoint: not recorded
        stopped_round(project, _stored(lite))
        resumed = round_plan(project, lite)
        assert estimate_text(resumed, measured, "cpu")[0].startswith(
            "Round 1 (resumes after its start): about "
        )
        before = json.loads(rates.read_text())
        timing = RoundTiming(estimate, measured=(resumed, size, "cpu"), rates_path=rates)
        for event in _events([("scan", 200.0), ("verify", 250.0), ("train_lpc", 251.0)]):
            timing.event(event)
        after = json.loads(rates.read_text())
        assert {k: len(v) for k, v in after.items() if "scan" in k} == {
            k: len(v) for k, v in before.items() if "scan" in k
        }
        assert any("verify" in key for key in after) and not any("verify" in k for k in before)
