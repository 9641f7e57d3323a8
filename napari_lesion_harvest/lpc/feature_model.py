"""The small-data LPC: L2-regularised logistic regression on proposal features.

About a hundred positives are too few to train a ResNet-18 per view from random
weights; a linear model on the :mod:`~napari_lesion_harvest.lpc.features` of a
proposal has one weight per feature and an intercept (13 parameters). Features are
standardised with the training proposals' mean and standard deviation and clipped
to +-5 standard deviations (one odd proposal cannot dominate a score); both classes
weigh the same, as in the CNN's balanced sampling; the fit is Newton's method on the
convex loss, so it is deterministic and needs no learning rate.

Works on numpy alone (no torch): training and scoring take milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpc.features import FEATURE_NAMES, proposal_features

#: Default L2 penalty on the standardised weights (the loss is a class-balanced mean).
DEFAULT_L2 = 0.03
#: Standardised features are clipped to this many standard deviations.
FEATURE_CLIP = 5.0
_NEWTON_STEPS = 50


@dataclass(frozen=True)
class FeatureClassifier:
    """A fitted logistic regression on :data:`FEATURE_NAMES`.

    Attributes
    ----------
    mean, scale : ndarray, shape (F,)
        Standardisation of each feature (training mean and standard deviation).
    coef : ndarray, shape (F,)
        Weights of the standardised features.
    intercept : float
    feature_names : tuple of str
        The features in order (checked when a checkpoint is read).
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Logits of feature rows, shape ``(N, F) -> (N,)``."""
        return _standardised(features, self.mean, self.scale) @ self.coef + self.intercept

    def probabilities(self, volume: CTVolume, proposals: Sequence[Proposal3D]) -> np.ndarray:
        """s_c of the proposals of one volume, shape ``(N,)``, float64 in (0, 1)."""
        if not len(proposals):
            return np.zeros(0)
        return _sigmoid(self.logits(proposal_features(volume, proposals)))


def fit_feature_classifier(features, labels, *, l2: float = DEFAULT_L2) -> FeatureClassifier:
    """Fit the logistic regression.

    Parameters
    ----------
    features : array_like, shape (N, F)
        Rows of :func:`~napari_lesion_harvest.lpc.features.proposal_features`.
    labels : array_like of {0, 1}, shape (N,)
    l2 : float
        Penalty ``l2 / 2 * |coef|^2`` added to the class-balanced mean log-loss.

    Returns
    -------
    FeatureClassifier

    Raises
    ------
    ValueError
        Shapes disagree, or a class is missing.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64).ravel()
    if x.ndim != 2 or x.shape[0] != y.size:
        raise ValueError(f"{x.shape[0] if x.ndim else 0} feature rows but {y.size} labels")
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"need positives and negatives; got {n_pos} and {n_neg}")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    design = np.c_[_standardised(x, mean, scale), np.ones(len(y))]
    weights = np.where(y == 1, 0.5 / n_pos, 0.5 / n_neg)
    penalty = np.r_[np.full(x.shape[1], l2), 0.0]  # the intercept is not penalised

    def objective(theta):
        z = design @ theta
        log_loss = np.logaddexp(0.0, z) - y * z
        return float(weights @ log_loss + 0.5 * penalty @ theta**2)

    theta = np.zeros(design.shape[1])
    current = objective(theta)
    for _ in range(_NEWTON_STEPS):
        p = _sigmoid(design @ theta)
        gradient = design.T @ (weights * (p - y)) + penalty * theta
        hessian = (design * (weights * p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian + 1e-9 * np.eye(len(theta)), gradient)
        size = 1.0  # halve the Newton step until the loss goes down
        while size > 1e-6 and objective(theta - size * step) > current:
            size /= 2
        theta = theta - size * step
        previous, current = current, objective(theta)
        if previous - current < 1e-12:
            break
    return FeatureClassifier(mean, scale, theta[:-1], float(theta[-1]))


def _standardised(x, mean, scale) -> np.ndarray:
    return np.clip((np.asarray(x, dtype=np.float64) - mean) / scale, -FEATURE_CLIP, FEATURE_CLIP)


def _sigmoid(z) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))
