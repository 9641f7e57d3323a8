"""Harvest threshold at 95% precision and hard-negative mining, on hand-computed cases."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from napari_lesion_harvest.harvest.hard_negatives import select_hard_negatives
from napari_lesion_harvest.harvest.threshold import threshold_at_precision


def test_threshold_is_lowest_score_reaching_precision():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    labels = [1, 1, 0, 1, 1, 0]
    # precision by cut: 1, 1, 2/3, 3/4, 4/5, 4/6
    assert threshold_at_precision(scores, labels, target_precision=0.95) == (0.8, 1.0)
    assert threshold_at_precision(scores, labels, target_precision=0.8) == (0.5, 0.8)
    assert threshold_at_precision(scores, labels, target_precision=0.6)[0] == 0.4


def test_threshold_keeps_tied_scores_together_and_handles_no_solution():
    # The tie at 0.7 mixes a lesion and a false positive: cutting inside it is impossible.
    threshold, precision = threshold_at_precision([0.9, 0.7, 0.7], [1, 1, 0])
    assert (threshold, precision) == (0.9, 1.0)
    threshold, precision = threshold_at_precision([0.9, 0.8], [0, 1])
    assert threshold == float("inf") and np.isnan(precision)
    assert threshold_at_precision([], [])[0] == float("inf")
    with pytest.raises(ValueError, match="labels"):
        threshold_at_precision([0.1, 0.2], [1])


@given(
    st.lists(st.tuples(st.floats(0, 1, allow_nan=False), st.booleans()), min_size=1, max_size=40),
    st.floats(0.5, 1.0),
)
def test_threshold_selection_meets_target_and_is_lowest(pairs, target):
    scores = np.array([p[0] for p in pairs])
    labels = np.array([p[1] for p in pairs])
    threshold, precision = threshold_at_precision(scores, labels, target_precision=target)
    if np.isinf(threshold):
        for t in np.unique(scores):
            assert labels[scores >= t].mean() < target
        return
    chosen = scores >= threshold
    assert labels[chosen].mean() == pytest.approx(precision)
    assert precision >= target
    for t in np.unique(scores[scores < threshold]):
        assert labels[scores >= t].mean() < target


def test_hard_negatives_objectness_and_top_five_per_volume():
    volumes = np.array(["a"] * 7 + ["b"] * 3)
    s_g = np.array([0.9, 0.45, 0.4, 0.3, 0.2, 0.15, 0.1, 0.35, 0.3, 0.2])
    eligible = np.ones(10, bool)
    eligible[0] = False  # harvested: never a hard negative
    selected = select_hard_negatives(volumes, s_g, eligible)
    # volume a: top five eligible by s_g are 0.45, 0.4, 0.3, 0.2, 0.15; b: all three
    assert selected.tolist() == [False, True, True, True, True, True, False, True, True, True]


def test_hard_negatives_include_every_high_objectness_proposal():
    volumes = np.array(["a"] * 8)
    s_g = np.linspace(0.95, 0.6, 8)
    selected = select_hard_negatives(volumes, s_g, np.ones(8, bool))
    assert selected.all()
    none = select_hard_negatives(volumes, s_g, np.zeros(8, bool))
    assert not none.any()
