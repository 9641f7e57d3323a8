"""The loss-curve reading of ``benchmarks/lpg_budget_bench.py``: trailing means and the
first step at which a run reaches a target loss."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from benchmarks.loss_curve import steps_to_target, trailing_mean

losses_and_window = st.integers(1, 12).flatmap(
    lambda window: st.tuples(
        st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=0, max_size=40),
        st.just(window),
    )
)


@settings(max_examples=200, deadline=None)
@given(losses_and_window)
def test_trailing_mean_is_the_mean_of_each_window(case):
    losses, window = case
    expected = [np.mean(losses[i : i + window]) for i in range(len(losses) - window + 1)]
    np.testing.assert_allclose(trailing_mean(losses, window), expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(losses_and_window, st.floats(0.0, 10.0, allow_nan=False))
def test_steps_to_target_is_the_first_window_end_at_or_below_target(case, target):
    losses, window = case
    means = {end: np.mean(losses[end - window : end]) for end in range(window, len(losses) + 1)}
    assume(all(abs(mean - target) > 1e-9 for mean in means.values()))  # no rounding ties
    reached = [end for end, mean in means.items() if mean <= target]
    assert steps_to_target(losses, target, window=window) == (reached[0] if reached else None)


def test_a_run_reaches_its_own_last_window_mean():
    """The reference arm's target is its mean over its last steps; with the same window
    it reaches that target at its last step at the latest (no float mismatch)."""
    rng = np.random.default_rng(3)
    losses = 3.0 * np.exp(-np.arange(600) / 150) + rng.normal(0, 0.3, 600)
    target = trailing_mean(losses, 50)[-1]
    assert steps_to_target(losses, target, window=50) <= 600
    assert steps_to_target(losses, target - 1e-6, window=50) != 600


def test_one_low_step_does_not_reach_a_smoothed_target():
    losses = [3.0, 3.0, 0.5, 3.0, 3.0, 1.0, 1.0, 1.0]
    assert steps_to_target(losses, 1.5, window=1) == 3
    assert steps_to_target(losses, 1.5, window=3) == 8
    assert steps_to_target(losses, 0.9, window=3) is None


def test_window_shorter_than_one_step_is_refused():
    with pytest.raises(ValueError, match="window"):
        trailing_mean([1.0, 2.0], 0)
