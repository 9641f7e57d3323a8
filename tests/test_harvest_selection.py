"""Harvest threshold at 95% precision, the false positives V_M lets one expect above it,
and hard-negative mining, on hand-computed cases."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from napari_lesion_harvest.harvest.hard_negatives import select_hard_negatives
from napari_lesion_harvest.harvest.threshold import (
    expected_false_positives,
    threshold_at_precision,
)


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


def test_expected_false_positives_on_hand_computed_cases():
    v_m = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    lesion = [1, 1, 0, 1, 0, 0]  # three non-lesions: 0.7, 0.5, 0.4
    scored = [0.95, 0.85, 0.75, 0.3] + [0.1] * 36  # 40 scored, three at or above 0.75
    # threshold above every non-lesion: 40 * (0 + 1) / (3 + 1) = 10, but only 3 harvested
    assert expected_false_positives(v_m, lesion, scored, 0.75) == 3.0
    # one non-lesion at or above 0.7 (k = 1), 400 scored: 400 * 2 / 4 = 200, capped at 30
    many = [0.8] * 30 + [0.1] * 370
    assert expected_false_positives(v_m, lesion, many, 0.7) == 30.0
    # 3 of 4000 harvested; 4000 * 1 / 4 = 1000, capped at 3
    assert expected_false_positives(v_m, lesion, [0.9] * 3 + [0.0] * 3997, 0.8) == 3.0
    wide = np.r_[[0.99] * 20, np.zeros(380)]
    non_lesions = np.r_[np.linspace(0.1, 0.5, 99), [0.95]]  # n = 100, k = 1 at 0.9
    assert expected_false_positives(non_lesions, np.zeros(100, bool), wide, 0.9) == pytest.approx(
        400 * 2 / 101
    )
    assert expected_false_positives(v_m, lesion, scored, float("inf")) == 0.0
    assert np.isnan(expected_false_positives([0.9], [1], [0.95], 0.9))
    with pytest.raises(ValueError, match="labels"):
        expected_false_positives([0.1, 0.2], [1], [0.3], 0.1)


def test_expected_false_positives_match_the_harvest_of_alike_non_lesions():
    """V_M's non-lesions and the scored ones drawn alike, 30 clear lesions among the scored:
    over many draws, the estimate at a threshold just above V_M's highest non-lesion is
    the mean number of non-lesions harvested, N / (n + 1)."""
    rng = np.random.default_rng(0)
    n_v_m, n_non_lesions = 150, 1800  # twelve times more scored proposals, as on the phantom
    false_positives, estimates = [], []
    for _ in range(2000):
        v_m_non_lesions = rng.normal(size=n_v_m)
        non_lesions = rng.normal(size=n_non_lesions)
        scored = np.r_[non_lesions, np.full(30, 10.0)]
        threshold = np.nextafter(v_m_non_lesions.max(), np.inf)
        false_positives.append(int((non_lesions >= threshold).sum()))
        estimates.append(
            expected_false_positives(v_m_non_lesions, np.zeros(n_v_m, bool), scored, threshold)
        )
    assert np.mean(estimates) == pytest.approx(np.mean(false_positives), rel=0.1)
    assert np.mean(estimates) == pytest.approx((n_non_lesions + 30) / (n_v_m + 1))


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
