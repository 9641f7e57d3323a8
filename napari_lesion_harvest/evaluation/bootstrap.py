"""Bootstrap over test volumes: intervals for recall at precision, AP and their gains.

A resample draws the test volumes with replacement; a volume drawn k times
counts k times, with its lesions and its detections. A lesion is found by the
first detection of its own volume that hits it, so what each detection adds to
the curve (lesions found, misses, repeated hits; :func:`~.curve.ranked_steps`)
does not depend on the other volumes: it is computed once, and each resample's
curve is a weighted cumulative sum over the same detection order. With every
volume drawn once, the figures equal :func:`~.report.evaluate`'s.

Two runs evaluated on the same volume list with the same resamples
(:func:`volume_resamples` with one seed) give paired draws: their difference,
resample by resample, is the paired bootstrap of the difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.evaluation.curve import RankedSteps, ranked_steps
from napari_lesion_harvest.evaluation.matching import match_p3d
from napari_lesion_harvest.evaluation.tables import ProposalTable, RecistTruth

#: Resamples drawn at once (memory: about 8 bytes x this x detections, per array).
CHUNK = 128


@dataclass(frozen=True)
class VolumeSteps:
    """The detections of a test set in curve order, with their volumes.

    Attributes
    ----------
    volume_ids : tuple of str, length V
    volume : ndarray of int64, shape (D,)
        Volume index of each detection, in curve order.
    steps : RankedSteps
        What each detection adds to the curve.
    lesions : ndarray of int64, shape (V,)
        Lesions of each volume.
    """

    volume_ids: tuple[str, ...]
    volume: np.ndarray
    steps: RankedSteps
    lesions: np.ndarray


def volume_steps(
    truth: RecistTruth, detections: ProposalTable, *, iou_threshold: float = 0.5
) -> VolumeSteps:
    """Match ``detections`` to ``truth`` under P3D once, for any number of resamples."""
    matches = match_p3d(truth, detections, iou_threshold=iou_threshold)
    steps = ranked_steps(matches)
    return VolumeSteps(
        volume_ids=truth.volume_ids,
        volume=detections.proposal_volume[steps.order],
        steps=steps,
        lesions=np.bincount(truth.volume, minlength=len(truth.volume_ids)),
    )


def volume_resamples(n_volumes: int, n_resamples: int, *, seed: int = 0) -> np.ndarray:
    """How often each volume is drawn in each resample, shape ``(n_resamples, n_volumes)``.

    Row ``b`` draws ``n_volumes`` volumes uniformly with replacement; the same
    ``seed`` and sizes give the same rows.
    """
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_volumes, size=(n_resamples, n_volumes))
    offsets = np.arange(n_resamples)[:, None] * n_volumes
    return np.bincount((drawn + offsets).ravel(), minlength=n_resamples * n_volumes).reshape(
        n_resamples, n_volumes
    )


def resampled_figures(
    volume_steps: VolumeSteps,
    counts: np.ndarray,
    *,
    precision_targets=(0.9,),
    first_score: float | None = None,
) -> dict[str, np.ndarray]:
    """Table I figures of every resample.

    Parameters
    ----------
    volume_steps : VolumeSteps
    counts : ndarray of int, shape (B, V)
        Times each volume is drawn in each resample (:func:`volume_resamples`;
        a row of ones is the test set itself).
    precision_targets : sequence of float
        Precisions at which the recall is read.
    first_score : float, optional
        Also give the recall of the detections scored at least this (e.g. the
        original marks, ranked first).

    Returns
    -------
    dict of str to ndarray, each shape (B,)
        ``"R@90"`` (one per target, ``f"R@{100 * target:g}"``), ``"AP"``,
        ``"ceiling"`` (recall of every detection) and, with ``first_score``,
        ``"first"``. A resample without lesions gives recall 0 and AP nan.
    """
    counts = np.asarray(counts)
    names = [f"R@{100 * t:g}" for t in precision_targets]
    out = {name: [] for name in [*names, "AP", "ceiling", "first"]}
    steps = volume_steps.steps
    points = steps.last_of_each_score()
    for start in range(0, len(counts), CHUNK):
        chunk = counts[start : start + CHUNK]
        weights = chunk[:, volume_steps.volume]
        n_lesions = (chunk @ volume_steps.lesions).astype(np.float64)
        found = np.cumsum(weights * steps.found, axis=1)[:, points]
        false = np.cumsum(weights * (steps.misses + steps.repeat_hits), axis=1)[:, points]
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = np.where(n_lesions[:, None] > 0, found / n_lesions[:, None], 0.0)
        precision = found / np.maximum(found + false, np.finfo(np.float64).eps)
        for name, target in zip(names, precision_targets, strict=True):
            reached = np.where(precision >= target, recall, 0.0)
            out[name].append(reached.max(axis=1, initial=0.0))
        out["AP"].append(np.where(n_lesions > 0, _average_precision(recall, precision), np.nan))
        out["ceiling"].append(recall[:, -1] if recall.shape[1] else np.zeros(len(chunk)))
        if first_score is not None:
            first = np.flatnonzero(steps.scores[points] >= first_score)
            out["first"].append(recall[:, first[-1]] if first.size else np.zeros(len(chunk)))
    if first_score is None:
        del out["first"]
    return {name: np.concatenate(parts) for name, parts in out.items()}


def resampled_froc(
    volume_steps: VolumeSteps, counts: np.ndarray, *, images: np.ndarray, fp_rates=(1.0,)
) -> np.ndarray:
    """FROC sensitivities of every resample.

    Parameters
    ----------
    volume_steps : VolumeSteps
    counts : ndarray of int, shape (B, V)
        As in :func:`resampled_figures`.
    images : ndarray of int, shape (V,)
        Units the false positives of each volume are counted per (1 per volume for
        P3D; its marked slices for the 2D rule).
    fp_rates : sequence of float
        False positives per unit at which to read the sensitivity.

    Returns
    -------
    ndarray, shape (B, F)
        As :func:`~.froc.sensitivity_at_fp` reads each resample's curve; nan for a
        resample without lesions.
    """
    from napari_lesion_harvest.evaluation.froc import sensitivity_at_fp

    counts = np.asarray(counts)
    steps = volume_steps.steps
    points = steps.last_of_each_score()
    out = np.full((len(counts), len(np.atleast_1d(fp_rates))), np.nan)
    for row, drawn in enumerate(counts):
        weights = drawn[volume_steps.volume]
        n_lesions, n_images = drawn @ volume_steps.lesions, drawn @ np.asarray(images)
        if n_lesions > 0:
            found = np.cumsum(weights * steps.found)[points] / n_lesions
            false = np.cumsum(weights * steps.misses)[points] / max(n_images, 1)
            out[row] = sensitivity_at_fp(false, found, fp_rates)
    return out


def _average_precision(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """VOC all-point AP of each row (:func:`~.pr.average_precision`), shape ``(B,)``."""
    rows = len(recall)
    recall = np.c_[np.zeros(rows), recall, np.ones(rows)]
    envelope = np.c_[np.zeros(rows), precision, np.zeros(rows)]
    envelope = np.maximum.accumulate(envelope[:, ::-1], axis=1)[:, ::-1]
    return np.sum(np.diff(recall, axis=1) * envelope[:, 1:], axis=1)


def percentile_interval(draws, *, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of ``draws`` (percentile bootstrap; nan ignored)."""
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(np.asarray(draws, dtype=np.float64), [tail, 100 - tail])
    return float(low), float(high)
