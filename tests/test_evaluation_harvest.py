"""A harvest round's Table I rows: the truth (V_H_test volumes flagged complete), and the
per-round and cumulative label sets built from a round's stored proposals and its pool."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesion_harvest.evaluation.harvest import (
    carried_lesions,
    evaluate_harvest,
    evaluation_truth,
    full_annotation,
    round_evaluation,
)
from napari_lesion_harvest.geometry import Proposal3D, RecistMark
from napari_lesion_harvest.store.records import (
    StoredMark,
    StoredProposal,
    StoredVerdict,
    VolumeRecord,
)

#: Three lesions of volume "v": (slice, centre x, centre y, half the long diameter).
LESIONS = {"A": (5, 60, 60, 10), "B": (10, 150, 80, 12), "C": (15, 90, 170, 8)}
FAR = (12, 220, 220, 9)  # no lesion there


def recist(z, cx, cy, r) -> RecistMark:
    return RecistMark(
        z, np.array([[cx - r, cy], [cx + r, cy]]), np.array([[cx, cy - r / 2], [cx, cy + r / 2]])
    )


def stored_mark(place, origin: str, mark_id: int) -> StoredMark:
    return StoredMark(mark_id, "v", recist(*place), origin, "rad", 0.0, 0.0)


def on(place) -> Proposal3D:
    """A proposal over three slices around ``place``, peaking on its slice, boxed as its mark."""
    z = place[0]
    box = recist(*place).box()
    return Proposal3D([z - 1, z, z + 1], [box, box, box], [0.4, 0.9, 0.4])


def stored(pid, place, role, *, s_gc=None, s_g=0.9, round_number=2, verdict=None):
    proposal = on(place)
    return StoredProposal(
        pid,
        round_number,
        "v",
        proposal,
        role,
        s_g,
        None if s_gc is None else s_gc / s_g,
        s_gc,
        "harvest",
        tuple(proposal.box_3d),
        None if verdict is None else StoredVerdict(pid, verdict, "rad", 0.0),
    )


@pytest.fixture
def marks():
    """Every lesion marked by the expert; lesion A also by an original mark."""
    return [
        stored_mark(LESIONS["A"], "original", 1),
        *(stored_mark(place, "expert", 2 + i) for i, place in enumerate(LESIONS.values())),
    ]


@pytest.fixture
def pool():
    """Round 1's pool: lesion B harvested twice (one lesion), lesion C harvested but
    rejected by the expert, and a hard negative."""
    return [
        stored(11, LESIONS["B"], "P_pos_H", s_gc=0.7, round_number=1),
        stored(12, LESIONS["B"], "P_pos_H", s_gc=0.6, round_number=1),
        stored(13, LESIONS["C"], "P_pos_H", s_gc=0.6, round_number=1, verdict="rejected"),
        stored(14, FAR, "P_neg_H", s_gc=0.2, round_number=1),
    ]


def evaluated(marks, round_proposals, pool, *, threshold=0.5, ranking="s_gc"):
    return evaluate_harvest(
        {"v": full_annotation(marks)},
        original={"v": [m.mark for m in marks if m.origin == "original"]},
        proposals={"v": round_proposals},
        carried=carried_lesions(pool, {"v"}),
        threshold=threshold,
        ranking=ranking,
    )


def recall_at(row, target: float) -> float:
    (point,) = [p for p in row["p3d"]["recall_at_precision"] if p["precision_target"] == target]
    return point["recall"]


def test_a_lesion_harvested_earlier_and_not_re_proposed_still_counts(marks, pool):
    round_two = [
        stored(21, LESIONS["A"], "P_RH"),  # the original mark's lesion: not a detection
        stored(22, FAR, "P_pos_H", s_gc=0.8),  # harvested, but no lesion there
        stored(23, LESIONS["C"], "candidate", s_gc=0.3),
    ]
    result = evaluated(marks, round_two, pool)
    assert result["n_lesions"] == 3  # the original mark on A repeats an expert mark
    assert result["baseline"] == {"recall": pytest.approx(1 / 3), "precision": 1.0}
    per_round, cumulative = result["per_round"], result["cumulative"]
    # per round: A (mark), FAR (0.8), C (0.3)
    assert per_round["p3d"]["n_detections"] == 3
    assert recall_at(per_round, 0.9) == pytest.approx(1 / 3)
    assert per_round["ceiling"] == pytest.approx(2 / 3)
    assert per_round["harvested"] == {"recall": pytest.approx(1 / 3), "precision": 0.5}
    # cumulative: A (mark), B (round 1, once; C was rejected), FAR (0.8), C (0.3)
    assert cumulative["carried"] == 1
    assert cumulative["p3d"]["n_detections"] == 4
    assert recall_at(cumulative, 0.9) == pytest.approx(2 / 3)
    assert recall_at(cumulative, 0.8) == pytest.approx(2 / 3)  # FAR: 2 of 3 correct
    assert cumulative["ceiling"] == 1.0
    assert cumulative["harvested"] == {
        "recall": pytest.approx(2 / 3),
        "precision": pytest.approx(2 / 3),
    }


def test_a_re_proposed_lesion_is_one_detection_of_the_cumulative_set(marks, pool):
    round_two = [
        stored(31, LESIONS["B"], "P_pos_H", s_gc=0.9),  # B again
        stored(32, FAR, "candidate", s_gc=0.4),
    ]
    result = evaluated(marks, round_two, pool)
    per_round, cumulative = result["per_round"], result["cumulative"]
    assert per_round["p3d"]["n_detections"] == 3  # A, B (0.9), FAR
    assert cumulative["p3d"]["n_detections"] == 3  # A, B (round 1), FAR: B not counted twice
    assert recall_at(per_round, 0.9) == recall_at(cumulative, 0.9) == pytest.approx(2 / 3)
    assert cumulative["p3d"]["ap"] == pytest.approx(per_round["p3d"]["ap"])


def test_the_s_g_ranking_orders_the_rounds_proposals_by_objectness(marks):
    round_one = [
        stored(41, FAR, "candidate", s_gc=0.8, s_g=0.3),
        stored(42, LESIONS["B"], "candidate", s_gc=0.2, s_g=0.95),
    ]
    by_s_gc = evaluated(marks, round_one, [], ranking="s_gc")["per_round"]
    by_s_g = evaluated(marks, round_one, [], ranking="s_g")["per_round"]
    assert recall_at(by_s_gc, 0.9) == pytest.approx(1 / 3)  # FAR comes before B
    assert recall_at(by_s_g, 0.9) == pytest.approx(2 / 3)  # B comes before FAR
    assert by_s_gc["ceiling"] == by_s_g["ceiling"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="ranking"):
        evaluated(marks, round_one, [], ranking="s_c")


def _volume(volume_id: str, *, complete: bool) -> VolumeRecord:
    return VolumeRecord(
        volume_id, "simpleitk", f"{volume_id}.nii.gz", "V_H_test", complete=complete
    )


def test_only_volumes_flagged_complete_are_the_truth(marks):
    volumes = [_volume("v", complete=True), _volume("w", complete=False)]
    partial = [StoredMark(9, "w", recist(*FAR), "original", "DL", 0.0, 0.0)]
    truth, note = evaluation_truth(volumes, {"v": marks, "w": partial})
    assert note is None and list(truth) == ["v"] and len(truth["v"]) == 3


@pytest.mark.parametrize(
    ("volumes", "expected"),
    [
        ([], "no volume is held out as V_H_test"),
        ([_volume("w", complete=False)], "none of the 1 V_H_test volumes is flagged fully"),
        ([_volume("v", complete=True)], "hold no lesion mark"),
    ],
)
def test_without_complete_test_volumes_there_is_nothing_to_evaluate(volumes, expected):
    original_only = {"w": [StoredMark(9, "w", recist(*FAR), "original", "DL", 0.0, 0.0)]}
    metrics = round_evaluation(volumes, marks=original_only, proposals={}, pool=[], threshold=None)
    assert metrics["evaluation"] is None
    assert expected in metrics["evaluation_note"]
    assert "nothing to evaluate against" in metrics["evaluation_note"]
