"""From a round stored in a real project: the V_M proposals the harvest threshold reads
(``harvest.threshold_lesions``), and the quality benchmark's count of a harvest's false
positives on V_H_test."""

from __future__ import annotations

from collections import defaultdict

import pytest

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.harvest.quality import false_positive_totals, harvest_false_positives
from napari_lesion_harvest.harvest.threshold import threshold_at_precision, threshold_sample
from napari_lesion_harvest.store import ProposalRow, StageResult
from tests.builders import new_project, recist_mark, synthetic_volume, writing_round

LESION = recist_mark(z=3)
LESION_BOX = LESION.box().tolist()  # xyxy


def _row(volume_id, box, role, s_gc):
    proposal = Proposal3D([3], [box], [0.9 if s_gc is None else s_gc])
    return ProposalRow(volume_id, proposal, role, None if s_gc is None else 1.0, s_gc)


def test_the_threshold_reads_v_m_with_or_without_its_originally_marked_lesions(tmp_path):
    rows = [
        _row("m", LESION_BOX, "P_RM", 0.9),  # hits the volume's original mark
        _row("m", [60, 60, 80, 80], "P_RM", 0.6),  # a lesion without an original mark
        _row("m", [30, 60, 50, 80], "P_neg_M", 0.7),
        _row("m", [80, 10, 99, 30], "P_neg_M", 0.2),
    ]
    with new_project(tmp_path / "project", [synthetic_volume("m", "V_M")]) as project:
        with writing_round(project, config={"preset": "test"}) as round_:
            round_.write("harvest", StageResult(rows))
        v_m = list(project.proposals(1))
    original = {"m": [LESION]}
    scores, lesion = threshold_sample(v_m, original)
    assert sorted(zip(scores, lesion, strict=True)) == [
        (0.2, False),
        (0.6, True),
        (0.7, False),
        (0.9, True),
    ]
    # all: 0.9 alone reaches 95% precision
    assert threshold_at_precision(scores, lesion) == (pytest.approx(0.9), 1.0)
    scores, lesion = threshold_sample(v_m, original, lesions="unmarked")
    assert sorted(zip(scores, lesion, strict=True)) == [(0.2, False), (0.6, True), (0.7, False)]
    # unmarked: the highest score is a non-lesion, so no threshold reaches 95%
    assert threshold_at_precision(scores, lesion)[0] == float("inf")
    assert threshold_sample(v_m, {}, lesions="unmarked")[0] == threshold_sample(v_m, {})[0]
    with pytest.raises(ValueError, match="lesions must be one of"):
        threshold_sample(v_m, original, lesions="some")


def test_a_harvest_counts_its_false_positives_against_the_truth(tmp_path):
    volumes = [synthetic_volume("m", "V_M"), synthetic_volume("t", "V_H_test")]
    rows = [
        _row("m", LESION_BOX, "P_RM", 0.9),
        _row("m", [60, 60, 70, 70], "P_RM", 0.8),
        _row("m", [40, 40, 50, 50], "P_neg_M", 0.5),
        _row("m", [80, 80, 90, 90], "P_neg_M", 0.3),
        _row("t", LESION_BOX, "P_pos_H", 0.85),  # hits the lesion
        _row("t", [60, 60, 75, 75], "P_pos_H", 0.7),  # hits nothing: a false positive
        _row("t", [x + 1 for x in LESION_BOX], "P_pos_H", 0.65),  # a second one on the lesion
        _row("t", [90, 20, 99, 30], "P_neg_H", 0.4),
        _row("t", [20, 90, 30, 99], "candidate", 0.2),
        _row("t", [40, 90, 50, 99], "P_RH", None),  # hit an original mark: not scored
    ]
    with new_project(tmp_path / "project", volumes) as project:
        with writing_round(project, config={"preset": "test"}) as round_:
            round_.write("harvest", StageResult(rows))
        stored = list(project.proposals(1))
    by_volume = defaultdict(list)
    for proposal in stored:
        by_volume[proposal.volume_id].append(proposal)
    v_m = by_volume.pop("m")
    truth = {"t": [LESION]}

    found = harvest_false_positives(by_volume, truth, v_m, threshold=0.6, match_iou=0.5)
    # 5 scored in V_H_test; no V_M non-lesion at or above 0.6: 5 * 1 / 3, under the 3 harvested
    assert found == {"harvested": 3, "observed": 1, "expected": pytest.approx(5 / 3)}
    nothing = harvest_false_positives(by_volume, truth, v_m, threshold=None, match_iou=0.5)
    assert nothing["expected"] == 0.0 and nothing["harvested"] == 3  # roles as stored
    # one V_M non-lesion (0.5) at or above 0.45: 5 * 2 / 3, capped at the 3 harvested
    assert harvest_false_positives(by_volume, truth, v_m, threshold=0.45, match_iou=0.5)[
        "expected"
    ] == pytest.approx(3.0)

    second = {"harvested": 2, "observed": 2, "expected": 0.5}
    seeds = {
        0: [{"false_positives": found}, {"false_positives": second}],
        1: [{"false_positives": found}],
    }
    totals = false_positive_totals(seeds, rounds=3)
    assert totals[0] == {
        "round": 1,
        "seeds": 2,
        "harvested": 6.0,
        "observed": 2.0,
        "expected": pytest.approx(10 / 3),
    }
    assert totals[1] == {
        "round": 2,
        "seeds": 1,
        "harvested": 2.0,
        "observed": 2.0,
        "expected": 0.5,
    }
    assert totals[2]["seeds"] == 0
