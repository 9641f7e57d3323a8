"""Property tests: order never matters, and more hits never lower the FROC."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_lesion_harvest.evaluation.report import evaluate
from napari_lesion_harvest.evaluation.tables import ProposalTable, RecistTruth
from napari_lesion_harvest.geometry import Proposal3D

# Boxes on a coarse grid so that hits, near misses and duplicates are frequent.
corner = st.integers(0, 4).map(lambda c: 10.0 * c)
box = st.tuples(corner, corner, st.integers(1, 3), st.integers(1, 3)).map(
    lambda t: [t[0], t[1], t[0] + 10.0 * t[2] - 1, t[1] + 10.0 * t[3] - 1]
)
score = st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9])  # few values: ties are common
mark = st.tuples(st.integers(0, 3), box)
proposal = st.tuples(st.integers(0, 3), st.integers(1, 3), box, score).map(
    lambda t: Proposal3D(
        np.arange(t[0], t[0] + t[1]),
        [t[2]] * t[1],
        [t[3] * (0.5 + 0.5 * (k == 0)) for k in range(t[1])],
    )
)
volume = st.tuples(st.lists(mark, max_size=3), st.lists(proposal, max_size=5))
scene = st.lists(volume, min_size=1, max_size=4)


def build(volumes, order=None):
    """Truth and detections with volumes (and proposals) in the given order."""
    order = range(len(volumes)) if order is None else order
    marks = {
        f"v{i}": ([z for z, _ in volumes[i][0]], [b for _, b in volumes[i][0]]) for i in order
    }
    truth = RecistTruth.from_mapping(marks)
    detections = {f"v{i}": volumes[i][1] for i in order}
    return truth, ProposalTable.from_proposals(detections, truth.volume_ids)


def summary(truth, table):
    result = evaluate(truth, table)
    return (
        result.sensitivities.tolist(),
        result.ap,
        [(p.recall, p.threshold) for p in result.recall_at_precision],
    )


@settings(max_examples=60, deadline=None)
@given(scene, st.randoms(use_true_random=False))
def test_shuffling_volumes_and_detections_never_changes_results(volumes, rnd):
    baseline = summary(*build(volumes))
    shuffled = [(marks, rnd.sample(props, len(props))) for marks, props in volumes]
    order = rnd.sample(range(len(volumes)), len(volumes))
    np.testing.assert_equal(summary(*build(shuffled, order)), baseline)


@settings(max_examples=60, deadline=None)
@given(scene, st.integers(0, 3), st.data())
def test_adding_a_hit_never_lowers_recall_at_any_fp_rate(volumes, which, data):
    which = which % len(volumes)
    marks, props = volumes[which]
    before = evaluate(*build(volumes)).sensitivities
    if marks:  # a detection exactly on a mark: a new TP or a duplicate, never a FP
        z, b = data.draw(st.sampled_from(marks))
        extra = Proposal3D([z], [b], [data.draw(score)])
        grown = list(volumes)
        grown[which] = (marks, [*props, extra])
        after = evaluate(*build(grown)).sensitivities
        assert np.all(after >= before - 1e-12)


@settings(max_examples=60, deadline=None)
@given(scene, st.integers(0, 3), proposal)
def test_adding_any_detection_never_lowers_recall_at_a_fixed_threshold(volumes, which, extra):
    which = which % len(volumes)
    marks, props = volumes[which]
    grown = list(volumes)
    grown[which] = (marks, [*props, extra])
    before, after = evaluate(*build(volumes)).curve, evaluate(*build(grown)).curve
    for threshold, recall in zip(before.thresholds, before.recall, strict=True):
        at = np.flatnonzero(after.thresholds >= threshold)[-1]
        assert after.recall[at] >= recall or np.isnan(recall)
