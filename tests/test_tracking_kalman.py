"""The vectorised Kalman box model against one filterpy KalmanFilter per track."""

from __future__ import annotations

import numpy as np

from napari_lesion_harvest.tracking.kalman import (
    BoxKalmanModel,
    boxes_to_measurements,
    make_box_filter,
    states_to_boxes,
)


def test_measurements_round_trip_to_boxes():
    boxes = np.array([[10.0, 20.0, 50.0, 30.0], [0.5, 0.5, 1.5, 4.5]])
    measurements = boxes_to_measurements(boxes)
    np.testing.assert_allclose(measurements[0], [30.0, 25.0, 400.0, 4.0])
    np.testing.assert_allclose(states_to_boxes(measurements), boxes)
    assert np.isnan(states_to_boxes([[0.0, 0.0, -1.0, 1.0]])).all(axis=1).tolist() == [True]


def test_vectorised_model_equals_a_filterpy_filter_per_track():
    """Tracks of different ages, growing and shrinking to nothing (area-velocity clamp)."""
    rng = np.random.default_rng(1)
    n_tracks, n_steps = 12, 40
    start = rng.integers(0, 10, n_tracks)  # tracks join at different slices
    centre = rng.uniform(50, 400, (n_tracks, 2))
    size = rng.uniform(10, 60, (n_tracks, 2))
    drift = rng.normal(0, 2, (n_tracks, 2))
    growth = rng.choice([-3.0, 0.5, 2.0], n_tracks)  # -3 px/slice shrinks to a speck

    def box(track: int, step: int) -> np.ndarray:
        c = centre[track] + drift[track] * step
        half = np.maximum(size[track] + growth[track] * step, 0.5) / 2 + rng.normal(0, 0.3, 2)
        return np.r_[c - half, c + half]

    model = BoxKalmanModel()
    filters: dict[int, object] = {}
    states = np.zeros((n_tracks, 7))
    n_updates = np.zeros(n_tracks, dtype=np.int64)
    clamped = 0
    for step in range(n_steps):
        for track in range(n_tracks):
            if step < start[track]:
                continue
            z = boxes_to_measurements(box(track, step))[0]
            if step == start[track]:
                filters[track] = make_box_filter(z)
                states[track] = model.initial_states(z[None])[0]
                continue
            kf = filters[track]
            if kf.x[2, 0] + kf.x[6, 0] <= 0:  # SORT's guard before predict
                kf.x[6, 0] = 0.0
                clamped += 1
            kf.predict()
            predicted = model.predict(states[track : track + 1])
            np.testing.assert_array_equal(predicted[0], kf.x[:, 0])
            kf.update(z)
            states[track] = model.update(predicted, n_updates[track : track + 1], z[None])[0]
            n_updates[track] += 1
            np.testing.assert_array_equal(states[track], kf.x[:, 0])
    assert clamped > 0  # the shrinking tracks exercised the clamp


def test_batched_update_equals_row_by_row_update():
    rng = np.random.default_rng(2)
    model = BoxKalmanModel()
    states = model.initial_states(
        boxes_to_measurements(
            rng.uniform(0, 100, (6, 2)) @ [[1, 0, 1, 0], [0, 1, 0, 1]] + [0, 0, 20, 30]
        )
    )
    n_updates = np.array([0, 3, 1, 7, 0, 2])
    measurements = states[:, :4] + rng.normal(0, 1, (6, 4))
    predicted = model.predict(states)
    together = model.update(predicted, n_updates, measurements)
    for i in range(6):
        alone = model.update(predicted[i : i + 1], n_updates[i : i + 1], measurements[i : i + 1])
        np.testing.assert_array_equal(together[i], alone[0])
    assert model.gains(np.array([], dtype=np.int64)).shape == (0, 7, 4)
