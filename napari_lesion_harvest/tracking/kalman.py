"""The Kalman box model of the slice tracker, and its vectorised form.

A track's state is ``(cx, cy, area, aspect, vx, vy, v_area)``: box centre,
area and aspect ratio (width / height) in pixels, and the per-slice
velocities of centre and area (SORT's constant-velocity box model, which the
paper's tracker of Yang et al. uses). The model is written as a
``filterpy.kalman.KalmanFilter`` (:func:`make_box_filter`).

Every track starts from the same covariance and alternates predict and update,
so its covariance and Kalman gain after ``j`` updates are the same for every
track. :class:`BoxKalmanModel` runs one filterpy filter to tabulate those
gains, then predicts and updates any number of tracks in one array operation.
The filter's matrices keep the centre, area and aspect blocks uncoupled, so
each gain row has a single non-zero entry and the vectorised states equal a
filterpy filter per track exactly (``tests/test_tracking_kalman.py``).
"""

from __future__ import annotations

import numpy as np

#: State layout: centre x, centre y, area, aspect ratio, then the velocities
#: (per slice) of centre x, centre y and area.
STATE_DIM = 7
#: Measurement layout: centre x, centre y, area, aspect ratio (width / height).
MEASUREMENT_DIM = 4


def boxes_to_measurements(boxes) -> np.ndarray:
    """Convert ``xyxy`` boxes to Kalman measurements.

    Parameters
    ----------
    boxes : array_like, shape (N, 4)
        ``(x1, y1, x2, y2)`` with ``x2 > x1`` and ``y2 > y1``.

    Returns
    -------
    ndarray, shape (N, 4)
        ``(cx, cy, area, aspect)`` with ``aspect = width / height``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    return np.stack(
        [
            (boxes[:, 0] + boxes[:, 2]) / 2.0,
            (boxes[:, 1] + boxes[:, 3]) / 2.0,
            width * height,
            width / height,
        ],
        axis=1,
    )


def states_to_boxes(states) -> np.ndarray:
    """Convert Kalman states (or measurements) back to ``xyxy`` boxes.

    Parameters
    ----------
    states : array_like, shape (N, 4) or (N, 7)
        Rows starting ``(cx, cy, area, aspect)``.

    Returns
    -------
    ndarray, shape (N, 4)
        ``(x1, y1, x2, y2)``; NaN where area or aspect is not positive.
    """
    states = np.asarray(states, dtype=np.float64)
    states = states.reshape(-1, states.shape[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        half_w = np.sqrt(states[:, 2] * states[:, 3]) / 2.0
        half_h = states[:, 2] / (4.0 * half_w)
    cx, cy = states[:, 0], states[:, 1]
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)


def make_box_filter(measurement=None):
    """The Kalman box model as a ``filterpy.kalman.KalmanFilter``.

    Constant velocity on ``(cx, cy, area)``, constant aspect ratio, and
    SORT's noise settings (Bewley et al. 2016): measurement noise 1 on the
    centre and 10 on area and aspect; initial covariance 10 on the measured
    part and 10^4 on the unobserved velocities; process noise 1 on centre,
    area and aspect, 0.01 on the centre velocities and 10^-4 on the area
    velocity. Units are pixels and slices.

    Parameters
    ----------
    measurement : array_like, shape (4,), optional
        First measurement ``(cx, cy, area, aspect)``; velocities start at 0.

    Returns
    -------
    filterpy.kalman.KalmanFilter
        ``dim_x = 7``, ``dim_z = 4``; state layout as :data:`STATE_DIM` says.
    """
    from filterpy.kalman import KalmanFilter

    kf = KalmanFilter(dim_x=STATE_DIM, dim_z=MEASUREMENT_DIM)
    kf.F = np.eye(STATE_DIM)
    kf.F[0, 4] = kf.F[1, 5] = kf.F[2, 6] = 1.0
    kf.H = np.eye(MEASUREMENT_DIM, STATE_DIM)
    kf.R[2:, 2:] *= 10.0
    kf.P[4:, 4:] *= 1000.0
    kf.P *= 10.0
    kf.Q[-1, -1] *= 0.01
    kf.Q[4:, 4:] *= 0.01
    if measurement is not None:
        kf.x[:MEASUREMENT_DIM, 0] = np.asarray(measurement, dtype=np.float64).ravel()
    return kf


def clamp_area_velocity(states: np.ndarray) -> np.ndarray:
    """Zero the area velocity where the next predicted area would not be positive.

    SORT applies this before every predict so that a shrinking box never
    gets a negative area. Modifies ``states`` (shape ``(N, 7)``) in place and
    returns it.
    """
    states[states[:, 2] + states[:, 6] <= 0, 6] = 0.0
    return states


class BoxKalmanModel:
    """Predict and update the states of many box tracks at once.

    The gains of :func:`make_box_filter` after ``j`` updates are tabulated
    lazily by running one filterpy filter, as long tracks need them; a model
    can be reused across volumes to keep its table.

    Examples
    --------
    >>> model = BoxKalmanModel()
    >>> states = model.initial_states(boxes_to_measurements([[0, 0, 10, 10]]))
    >>> states = model.update(model.predict(states), [0], boxes_to_measurements([[2, 0, 12, 10]]))
    >>> bool(states[0, 4] > 0)  # the centre now moves right between slices
    True
    """

    def __init__(self):
        self._reference = make_box_filter()
        self._gain_table = np.zeros((0, STATE_DIM, MEASUREMENT_DIM))
        #: The state transition matrix F, shape (7, 7).
        self.transition = np.array(self._reference.F, dtype=np.float64)

    def gains(self, n_updates) -> np.ndarray:
        """Kalman gains of the update that follows ``n_updates`` earlier updates.

        Parameters
        ----------
        n_updates : array_like of int, shape (N,)

        Returns
        -------
        ndarray, shape (N, 7, 4)
        """
        n_updates = np.asarray(n_updates, dtype=np.int64)
        needed = int(n_updates.max()) + 1 if n_updates.size else 0
        if needed > len(self._gain_table):
            kf = self._reference
            zero = np.zeros(MEASUREMENT_DIM)
            gains = list(self._gain_table)
            while len(gains) < needed:
                kf.predict()
                kf.update(zero)
                gains.append(np.array(kf.K, dtype=np.float64))
            self._gain_table = np.stack(gains)
        return self._gain_table[n_updates]

    @staticmethod
    def initial_states(measurements) -> np.ndarray:
        """States of new tracks, shape ``(N, 7)``: the measurements with zero velocities."""
        measurements = np.asarray(measurements, dtype=np.float64).reshape(-1, MEASUREMENT_DIM)
        states = np.zeros((len(measurements), STATE_DIM))
        states[:, :MEASUREMENT_DIM] = measurements
        return states

    def predict(self, states) -> np.ndarray:
        """Predicted states on the next slice, shape ``(N, 7)`` (the input is not modified)."""
        states = clamp_area_velocity(np.array(states, dtype=np.float64).reshape(-1, STATE_DIM))
        return states @ self.transition.T

    def update(self, predicted, n_updates, measurements) -> np.ndarray:
        """Posterior states after one measurement each.

        Parameters
        ----------
        predicted : array_like, shape (N, 7)
            States returned by :meth:`predict`.
        n_updates : array_like of int, shape (N,)
            Updates each track has had so far (0 for a track started on the
            previous slice).
        measurements : array_like, shape (N, 4)
            ``(cx, cy, area, aspect)`` of the boxes assigned to the tracks.

        Returns
        -------
        ndarray, shape (N, 7)
        """
        predicted = np.asarray(predicted, dtype=np.float64).reshape(-1, STATE_DIM)
        measurements = np.asarray(measurements, dtype=np.float64).reshape(-1, MEASUREMENT_DIM)
        innovation = measurements - predicted[:, :MEASUREMENT_DIM]
        return predicted + np.einsum("nij,nj->ni", self.gains(n_updates), innovation)
