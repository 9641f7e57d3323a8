"""The dock's model of a round's duration and outcome (Qt-free): work per stage, this
machine's measured rates, the time left while a round runs, and why a round harvested
nothing."""

from __future__ import annotations

import json
import socket

import pytest

from napari_lesion_harvest.harvest.config import load_config
from napari_lesion_harvest.harvest.stages import STAGES
from napari_lesion_harvest.store import VolumeRecord
from napari_lesion_harvest.store.records import RoundRecord
from napari_lesion_harvest.ui.round_estimate import (
    DEFAULT_RATES,
    RateBook,
    StageClock,
    estimate_round,
    format_duration,
    project_size,
    stage_work,
)
from napari_lesion_harvest.ui.round_outcome import harvest_outcome


def _size():
    """4 V_M, 10 V_H, 2 V_H_test volumes of 30 slices of 512 x 512 at 0.8 mm; 3 V_D_test."""
    records = [
        VolumeRecord(f"{split}{k}", "x", "-", split, shape=(30, 512, 512), spacing=(2, 0.8, 0.8))
        for split, n in (("V_M", 4), ("V_H", 10), ("V_H_test", 2), ("V_D_test", 3))
        for k in range(n)
    ]
    return project_size(records)


def test_stage_work_follows_the_configuration_and_the_project():
    lite, size = load_config("lite"), _size()
    # lite: 256 px slices (512 px at 0.8 mm, capped), batch 8, 600 / 200 steps, 5 folds,
    # 12 epochs, 64 px patches
    assert stage_work("train_lpg", lite, size, first_round=True) == 600 * 8
    assert stage_work("train_lpg", lite, size, first_round=False) == 200 * 8
    assert stage_work("scan", lite, size, first_round=True) == 16 * 30  # V_D_test not scanned
    assert stage_work("verify", lite, size, first_round=True) == 16
    assert stage_work("train_lpc", lite, size, first_round=True) == 6 * 12 * 14
    assert stage_work("harvest", lite, size, first_round=True) == 12
    assert stage_work("evaluate", lite, size, first_round=True) == 2
    paper = load_config("paper")  # 512 px slices: 4 units each; 128 px patches: 4 units
    assert stage_work("scan", paper, size, first_round=True) == 16 * 30 * 4
    assert stage_work("harvest", paper, size, first_round=True) == 12 * 4
    coarse = project_size(
        [VolumeRecord("c", "x", "-", "V_H", shape=(10, 64, 64), spacing=(5, 3.2, 3.2))]
    )  # 64 px at 3.2 mm = 256 px at 0.8 mm
    assert stage_work("scan", lite, coarse, first_round=True) == 10


def test_the_estimate_uses_defaults_until_this_machine_measured_a_stage(tmp_path):
    lite, size = load_config("lite"), _size()
    book = RateBook(tmp_path / "rates.json")
    estimate = estimate_round(lite, size, book, device="cpu", first_round=True)
    assert list(estimate.seconds) == list(STAGES) and estimate.measured == frozenset()
    assert estimate.seconds["train_lpg"] == pytest.approx(
        DEFAULT_RATES[("cpu", "train_lpg", "lite")] * 4800
    )
    book.record("cpu", "train_lpg", "lite", 0.5)
    book.record("cpu", "train_lpg", "lite", 0.2)
    book.record("cpu", "train_lpg", "lite", 0.3)
    again = RateBook(tmp_path / "rates.json")  # read back from the file
    resumed = estimate_round(
        lite, size, again, device="cpu", first_round=True, done_stages=("train_lpg", "scan")
    )
    assert list(resumed.seconds) == list(STAGES[2:])  # a resume runs the rest only
    measured = estimate_round(lite, size, again, device="cpu", first_round=True)
    assert measured.measured == {"train_lpg"}
    assert measured.seconds["train_lpg"] == pytest.approx(0.3 * 4800)  # the median
    assert estimate_round(lite, size, again, device="cuda:0", first_round=True).measured == set()
    stored = json.loads((tmp_path / "rates.json").read_text())
    assert list(stored) == [f"{socket.gethostname()}|cpu|train_lpg|lite"]
    (tmp_path / "bad.json").write_text("{not json")
    assert RateBook(tmp_path / "bad.json").measured == {}


def test_the_stage_clock_times_stages_and_counts_down(tmp_path):
    lite, size = load_config("lite"), _size()
    estimate = estimate_round(
        lite, size, RateBook(tmp_path / "r.json"), device="cpu", first_round=True
    )
    clock = StageClock(estimate)
    assert clock.seconds_left(now=0.0) == pytest.approx(estimate.total)
    assert clock.event({"stage": "train_lpg", "step": 0, "total": 1, "time": 100.0}) is None
    assert clock.stage_number() == (1, 6)
    clock.event({"stage": "train_lpg", "step": 150, "total": 600, "time": 130.0})
    # a quarter done in 30 s: 90 s left of it, then the estimate of the later stages
    assert clock.seconds_left(now=130.0) == pytest.approx(90.0 + estimate.after("train_lpg"))
    assert clock.event({"stage": "train_lpg", "step": 600, "total": 600, "time": 210.0}) is None
    assert clock.event({"stage": "scan", "step": 0, "total": 1, "time": 220.0}) == (
        "train_lpg",
        120.0,
    )
    clock.event({"stage": "lpc-train", "step": 3, "total": 9, "time": 225.0})  # a sub-step
    assert clock.stage == "scan"
    for stage, at in (("verify", 300.0), ("train_lpc", 301.0), ("harvest", 400.0)):
        clock.event({"stage": stage, "step": 0, "total": 1, "time": at})
    clock.event({"stage": "evaluate", "step": 0, "total": 1, "time": 450.0})
    assert clock.event({"stage": "done", "step": 1, "total": 1, "time": 460.0}) == (
        "evaluate",
        10.0,
    )
    assert clock.finished == {
        "train_lpg": 120.0,
        "scan": 80.0,
        "verify": 1.0,
        "train_lpc": 99.0,
        "harvest": 50.0,
        "evaluate": 10.0,
    }


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.2, "1 s"), (45, "45 s"), (600, "10 min"), (12_000, "3 h 20 min"), (3600, "1 h 00 min")],
)
def test_durations_read_as_a_person_says_them(seconds, text):
    assert format_duration(seconds) == text


def _done(harvest: dict, number: int = 2) -> RoundRecord:
    metrics = {"harvest": harvest}
    return RoundRecord(number, "done", "evaluate", STAGES, {}, metrics, 0.0, 0.0, 1.0, None)


@pytest.mark.parametrize(
    ("harvest", "nothing", "reason"),
    [
        ({"scored": 0, "threshold": None}, True, "no proposal was left to score"),
        (
            {"scored": 40, "threshold": None, "P_pos_H": 0},
            True,
            "no lesion-score threshold reached 95% precision on the fully marked volumes (V_M)",
        ),
        (
            {"scored": 40, "threshold": 0.7, "P_pos_H": 0},
            True,
            "none of the 40 scored proposals reached the threshold 0.70",
        ),
        (
            {"scored": 40, "threshold": 0.7, "P_pos_H": 3, "new_lesions": 0},
            True,
            "harvested 3 lesions, none new",
        ),
        (
            {"scored": 40, "threshold": 0.7, "P_pos_H": 3, "new_lesions": 2, "P_neg_H": 9},
            False,
            "3 harvested lesions (2 new) at threshold 0.70, 9 hard negatives. Review them",
        ),
        (
            {
                **{"scored": 4000, "threshold": 0.7, "P_pos_H": 40, "new_lesions": 30},
                **{"expected_false_positives": 1.0, "v_m_non_lesions": 400},
            },
            False,
            "The 400 non-lesion proposals of the fully marked volumes (V_M) let one expect "
            "about 1 of the 40 to be false positives. Review them",
        ),
        (
            {
                **{"scored": 4000, "threshold": 0.7, "P_pos_H": 30, "new_lesions": 30},
                **{"expected_false_positives": 12.3, "v_m_non_lesions": 300},
            },
            False,
            "expect about 12 of the 30 to be false positives, more than the 5% aimed at: V_M "
            "is too small to vouch for this harvest, so fully mark more volumes. Review them",
        ),
    ],
)
def test_a_round_that_harvested_nothing_says_why(harvest, nothing, reason):
    text, empty = harvest_outcome(_done(harvest))
    assert empty is nothing and reason in text and text.startswith("Round 2 ")
