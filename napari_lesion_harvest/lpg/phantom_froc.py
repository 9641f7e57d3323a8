"""How well an LPG finds the lesions of phantom volumes: training samples from the
synthetic CT phantom's truth, and the FROC of a model's detections.

Shared by the slow detection test (``tests/test_lpg_detection_slow.py``) and
``benchmarks/lpg_phantom_bench.py``, so that the benchmark measures what the test asserts.
"""

from __future__ import annotations

import numpy as np

from napari_lesion_harvest.evaluation.bootstrap import VolumeSteps
from napari_lesion_harvest.evaluation.curve import RankedSteps, ranked_steps
from napari_lesion_harvest.evaluation.matching import match_recist_2d
from napari_lesion_harvest.evaluation.report import evaluate
from napari_lesion_harvest.evaluation.tables import ProposalTable, RecistTruth
from napari_lesion_harvest.lpg.data import LPGSample
from napari_lesion_harvest.lpg.infer import detect_volume
from napari_lesion_harvest.synthetic.phantom import PhantomConfig, SeriesIdentity, generate_volume


def detection_froc(model, volumes, marks, fp_rates):
    """FROC sensitivities (2D rule, IoU >= 0.5, FPs per marked slice) of ``model``'s
    detections (:func:`detection_table`) against key-slice ``marks``."""
    detections = detection_table(model, volumes)
    report = evaluate(RecistTruth.from_mapping(marks), detections, metric="2d", fp_rates=fp_rates)
    print(report.format_text())
    return dict(zip(report.fp_rates, report.sensitivities, strict=True))


def detection_table(model, volumes) -> ProposalTable:
    """``model``'s 2D detections on every slice of ``volumes`` (top 20 per slice, score
    >= 0.01), one single-slice proposal each, over the volume ids of ``volumes``."""
    slice_z, slice_boxes, slice_scores, slice_volume = [], [], [], []
    for index, volume in enumerate(volumes):
        for found in detect_volume(model, volume, top_k=20, min_score=0.01):
            slice_z += [found.z] * len(found.scores)
            slice_boxes.append(found.boxes)
            slice_scores.append(found.scores)
            slice_volume += [index] * len(found.scores)
    return ProposalTable.from_slices(
        [v.volume_id for v in volumes],
        slice_volume,
        np.arange(len(slice_z)),
        slice_z,
        np.concatenate(slice_boxes),
        np.concatenate(slice_scores),
    )


def froc_steps(model, volumes, truth) -> tuple[VolumeSteps, np.ndarray]:
    """``model``'s 2D-rule detections (:func:`detection_table`) on ``volumes`` in curve
    order, for FROCs over resampled volumes
    (:func:`~napari_lesion_harvest.evaluation.bootstrap.resampled_froc`).

    Parameters
    ----------
    model : MultiSliceCenterNet
    volumes : sequence of CTVolume
    truth : mapping of str to marks
        Every lesion's key-slice mark, by volume id of ``volumes`` (any form
        :meth:`RecistTruth.from_mapping` takes).

    Returns
    -------
    steps : VolumeSteps
        The detections of all volumes ranked by score, with the volume of each.
    marked_slices : ndarray of int, shape (V,)
        Marked slices per volume (the FP rate's unit).
    """
    volume, scores, found, misses, lesions, images = [], [], [], [], [], []
    for index, ct in enumerate(volumes):
        ruler = RecistTruth.from_mapping({ct.volume_id: truth[ct.volume_id]})
        matches = match_recist_2d(ruler, detection_table(model, [ct]))
        steps = ranked_steps(matches)  # a lesion's first hit depends on its volume only
        volume.append(np.full(len(steps.scores), index))
        scores.append(steps.scores)
        found.append(steps.found)
        misses.append(steps.misses)
        lesions.append(matches.n_lesions)
        images.append(matches.n_images)
    scores = np.concatenate(scores)
    order = np.argsort(scores, kind="stable")[::-1]
    merged = RankedSteps(
        order=order,
        scores=scores[order],
        found=np.concatenate(found)[order],
        misses=np.concatenate(misses)[order],
        repeat_hits=np.zeros(len(order), dtype=np.int64),
    )
    ids = tuple(ct.volume_id for ct in volumes)
    steps = VolumeSteps(ids, np.concatenate(volume)[order], merged, np.array(lesions))
    return steps, np.array(images)


def synthetic_ct(index: int, size: int):
    """Volume ``index`` of the project's CT phantom (``synthetic.phantom``)."""
    identity = SeriesIdentity(index + 1, 1, 1, 10, "M", 50)
    rng = np.random.default_rng(1000 + index)
    return generate_volume(rng, identity, config=PhantomConfig(size=size))


def key_slice_samples(phantom, lesions) -> list[LPGSample]:
    """One sample per key slice of ``lesions`` (of ``phantom``), holding the boxes of
    every one of ``lesions`` on that slice."""
    boxes_by_slice: dict[int, list] = {}
    for lesion in lesions:
        for z, box in zip(lesion.extent.slices, lesion.extent.boxes, strict=True):
            boxes_by_slice.setdefault(int(z), []).append(box)
    return [
        LPGSample(phantom.volume, z, np.array(boxes_by_slice[z]))
        for z in sorted({lesion.recist.z for lesion in lesions})
    ]


def full_marks(phantoms) -> dict:
    """Every lesion's RECIST key slice and box, by volume id (for :func:`detection_froc`)."""
    return {
        p.volume_id: ([m.z for m in p.all_marks], np.array([m.box() for m in p.all_marks]))
        for p in phantoms
    }
