"""The bootstrap over test volumes against evaluating the resampled test set itself,
on the paper's real RECIST marks with seeded jittered detections."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesion_harvest.evaluation.bootstrap import (
    percentile_interval,
    resampled_figures,
    resampled_froc,
    volume_resamples,
    volume_steps,
)
from napari_lesion_harvest.evaluation.report import evaluate
from napari_lesion_harvest.evaluation.tables import ProposalTable, RecistTruth
from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.paper_pickles import read_recist_box_pickle
from tests.detections import jittered_tracklets

TARGETS = (0.6, 0.8)
#: Score of the marks put first in the ranked list (as the harvest's Table I does).
FIRST = 2.0


@pytest.fixture(scope="module")
def test_set(annotation_dir):
    """Real marks of 100 volumes; every third mark also a first-ranked detection (an
    'original mark'), jittered proposals (with ties) on the rest of the lesions."""
    marks = read_recist_box_pickle(annotation_dir / "Revised-Train100.pkl")
    rng = np.random.default_rng(7)
    detections = {}
    for number, (volume, boxes) in enumerate(marks.items()):
        centres = list(zip(boxes.slices, boxes.boxes, strict=True))
        found = [Proposal3D([z], [box], [FIRST]) for z, box in centres[::3]]
        proposals = jittered_tracklets(rng, centres) if number % 7 else []
        for proposal in proposals:  # coarse scores: ties inside and across volumes
            proposal.scores[:] = np.round(proposal.scores.max(), 1)
        detections[volume] = found + proposals
    return marks, detections


def figures_of(marks, detections) -> dict:
    truth = RecistTruth.from_mapping(marks)
    result = evaluate(
        truth,
        ProposalTable.from_proposals(detections, truth.volume_ids),
        metric="p3d",
        precision_targets=TARGETS,
    )
    first = {v: [p for p in ps if p.scores.max() >= FIRST] for v, ps in detections.items()}
    marks_only = evaluate(truth, ProposalTable.from_proposals(first, truth.volume_ids))
    figures = {f"R@{100 * p.target:g}": p.recall for p in result.recall_at_precision}
    figures.update(
        AP=result.ap, ceiling=result.curve.recall[-1], first=marks_only.curve.recall[-1]
    )
    return figures


def steps_of(marks, detections):
    truth = RecistTruth.from_mapping(marks)
    return volume_steps(truth, ProposalTable.from_proposals(detections, truth.volume_ids))


def test_every_volume_once_gives_the_evaluation_of_the_test_set(test_set):
    marks, detections = test_set
    expected = figures_of(marks, detections)
    assert 0 < expected["first"] < expected["R@80"] < expected["ceiling"] < 1  # a real mix
    drawn = resampled_figures(
        steps_of(marks, detections),
        np.ones((1, len(marks)), dtype=int),
        precision_targets=TARGETS,
        first_score=FIRST,
    )
    assert {name: pytest.approx(float(values[0])) for name, values in drawn.items()} == expected


def test_a_resample_is_the_test_set_with_volumes_repeated(test_set):
    marks, detections = test_set
    counts = volume_resamples(len(marks), 3, seed=11)
    drawn = resampled_figures(
        steps_of(marks, detections), counts, precision_targets=TARGETS, first_score=FIRST
    )
    for row in range(3):
        repeated_marks, repeated_detections = {}, {}
        for volume, times in zip(marks, counts[row], strict=True):
            for copy in range(times):
                repeated_marks[f"{volume}#{copy}"] = marks[volume]
                repeated_detections[f"{volume}#{copy}"] = detections[volume]
        expected = figures_of(repeated_marks, repeated_detections)
        assert {name: pytest.approx(float(v[row])) for name, v in drawn.items()} == expected


def test_resamples_draw_every_volume_count_and_repeat_with_the_seed():
    counts = volume_resamples(40, 500, seed=3)
    assert counts.shape == (500, 40) and (counts.sum(axis=1) == 40).all()
    np.testing.assert_array_equal(counts, volume_resamples(40, 500, seed=3))
    assert not np.array_equal(counts, volume_resamples(40, 500, seed=4))
    # each volume is drawn once per resample on average
    assert counts.mean() == 1.0 and 0.3 < (counts == 0).mean() < 0.45  # (1 - 1/40)^40 = 0.36


def test_interval_is_central_and_ignores_resamples_without_a_figure():
    draws = np.r_[np.arange(1000.0), np.nan]
    low, high = percentile_interval(draws)
    assert low == pytest.approx(24.975) and high == pytest.approx(974.025)


def test_resampled_froc_is_the_froc_of_the_test_set_with_volumes_repeated(test_set):
    marks, detections = test_set
    rates = (0.125, 1.0, 4.0)
    counts = np.r_[np.ones((1, len(marks)), dtype=int), volume_resamples(len(marks), 2, seed=5)]
    drawn = resampled_froc(
        steps_of(marks, detections), counts, images=np.ones(len(marks), int), fp_rates=rates
    )
    for row, times_of in enumerate(counts):
        repeated_marks, repeated_detections = {}, {}
        for volume, times in zip(marks, times_of, strict=True):
            for copy in range(times):
                repeated_marks[f"{volume}#{copy}"] = marks[volume]
                repeated_detections[f"{volume}#{copy}"] = detections[volume]
        truth = RecistTruth.from_mapping(repeated_marks)
        table = ProposalTable.from_proposals(repeated_detections, truth.volume_ids)
        expected = evaluate(truth, table, metric="p3d", fp_rates=rates).sensitivities
        np.testing.assert_allclose(drawn[row], expected)
    assert 0 < drawn[0, 0] < drawn[0, 2] < 1  # a real curve
