"""Table I of a harvest round on V_H_test: the original marks, then the round's label sets.

The truth is the full annotation of the V_H_test volumes flagged complete
(:func:`evaluation_truth`); without one there is nothing to evaluate against,
and no figure is made up from the original marks alone.

Two rows per round, each a ranked list of detections evaluated under P3D
(:func:`evaluate_harvest`):

``per_round`` (``R + P_H,i``)
    the original marks R first (score :data:`ORIGINAL_MARK_SCORE`), then this
    round's proposals that match no original mark (role other than ``P_RH``),
    ranked by lesion score ``s_gc``;
``cumulative`` (``R + P_H,1..i``, the paper's Table I rows)
    R first, then every lesion harvested by an earlier round (``P_pos_H`` of
    the pool, not rejected by the expert; one per lesion: a carried proposal
    that hits the best-slice box of an earlier-kept one is left out), all at
    score :data:`CARRIED_SCORE`, so after R and before every proposal of this
    round; then this round's proposals as in ``per_round``, except those that
    hit a carried lesion's best-slice box (that lesion is already in the set).

Every row also gives its ``ceiling`` (the recall of its whole list, whatever the
precision) and ``harvested`` (recall and precision of the list cut at the
round's harvest threshold).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D, iou_2d
from napari_lesion_harvest.vocabulary import Origin, Role, Split

#: Score of the original marks in the ranked lists: above every lesion score.
ORIGINAL_MARK_SCORE = 2.0
#: Score of the lesions harvested by earlier rounds in the cumulative list: after
#: the original marks, before every proposal of the round (lesion scores are <= 1).
CARRIED_SCORE = 1.5
#: Points kept of each PR curve stored with a round (for plots).
CURVE_POINTS = 200
#: The splits whose complete volumes are the evaluation's truth.
EVALUATION_SPLIT = Split.V_H_test
#: Rankings of a round's proposals: ``s_gc`` (the method's) or ``s_g`` (the LPG alone).
RANKINGS = ("s_gc", "s_g")


def full_annotation(stored_marks, *, same_lesion_iou: float = 0.5) -> list:
    """The lesions of a fully annotated volume: its expert marks, plus any original
    mark that no expert mark repeats (same slice, box IoU >= ``same_lesion_iou``).

    A radiologist's full annotation usually re-marks the lesions the dataset
    already had; counting both would count one lesion twice.

    Parameters
    ----------
    stored_marks : sequence of StoredMark
        The live marks of one volume.

    Returns
    -------
    list of RecistMark
    """
    expert = [s.mark for s in stored_marks if s.origin == Origin.expert]
    original = [s.mark for s in stored_marks if s.origin != Origin.expert]
    kept = list(expert)
    for mark in original:
        same_slice = [e.box() for e in expert if e.z == mark.z]
        if not same_slice or iou_2d([mark.box()], same_slice).max() < same_lesion_iou:
            kept.append(mark)
    return kept


def evaluation_truth(test_volumes, marks: Mapping[str, Sequence]) -> tuple[dict, str | None]:
    """The truth of a round's evaluation: the full annotation of every V_H_test volume
    flagged complete.

    Parameters
    ----------
    test_volumes : sequence of VolumeRecord
        The V_H_test volumes (their ``complete`` flag says whether every lesion is marked).
    marks : mapping of str to sequence of StoredMark
        Live marks by volume id.

    Returns
    -------
    truth : dict of str to list of RecistMark
        Per complete V_H_test volume, its lesions (empty when there is none).
    note : str or None
        Why there is nothing to evaluate against (``truth`` is then empty).
    """
    complete = [r.volume_id for r in test_volumes if r.complete]
    if not test_volumes:
        return {}, "no volume is held out as V_H_test, so there is nothing to evaluate against"
    if not complete:
        return {}, (
            f"none of the {len(test_volumes)} V_H_test volumes is flagged fully annotated, so "
            "there is nothing to evaluate against (add every lesion's mark, then `lesion-harvest "
            "annotate PROJECT --marks FILE --complete` or 'Mark volume complete' in napari)"
        )
    truth = {v: full_annotation(marks.get(v, [])) for v in complete}
    if not any(truth.values()):
        return {}, (
            f"the {len(complete)} fully annotated V_H_test volume(s) hold no lesion mark, so "
            "there is nothing to evaluate against"
        )
    return truth, None


def round_evaluation(
    test_volumes, *, marks, proposals, pool, threshold, match_iou: float = 0.5
) -> dict:
    """The ``evaluation`` metrics of a round (see the module notes).

    Parameters
    ----------
    test_volumes : sequence of VolumeRecord
        The round's V_H_test volumes.
    marks : mapping of str to sequence of StoredMark
        Live marks by volume id.
    proposals : mapping of str to sequence of StoredProposal
        The round's proposals by volume id.
    pool : sequence of StoredProposal
        The previous round's pool (its ``P_pos_H`` are the earlier harvested lesions).
    threshold : float or None
        The round's harvest threshold on ``s_gc`` (None: nothing harvested).
    match_iou : float

    Returns
    -------
    dict
        ``{"evaluation": ..., "evaluation_note": ...}``: the result of
        :func:`evaluate_harvest` and None, or None and why nothing was evaluated.
    """
    truth, note = evaluation_truth(test_volumes, marks)
    if note is not None:
        return {"evaluation": None, "evaluation_note": note}
    evaluation = evaluate_harvest(
        truth,
        original={
            v: [s.mark for s in marks.get(v, []) if s.origin == Origin.original] for v in truth
        },
        proposals={v: stored for v, stored in proposals.items() if v in truth},
        carried=carried_lesions(pool, truth),
        threshold=threshold,
        match_iou=match_iou,
    )
    return {"evaluation": evaluation, "evaluation_note": None}


def carried_lesions(pool, volume_ids) -> dict[str, list]:
    """The lesions harvested by earlier rounds in ``volume_ids``: the pool's ``P_pos_H``
    that the expert has not rejected, by volume id."""
    carried: dict[str, list] = {}
    for stored in pool:
        if stored.volume_id in volume_ids and stored.role == Role.P_pos_H and stored.is_lesion:
            carried.setdefault(stored.volume_id, []).append(stored)
    return carried


@dataclass(frozen=True)
class LabelSet:
    """The detections of one Table I row, per test volume.

    Attributes
    ----------
    first : dict of str to list of Proposal3D
        What comes before the round's proposals: the original marks, then (in the
        cumulative row) the lesions of earlier rounds.
    proposals : dict of str to list of (Proposal3D, float)
        The round's proposals in the row, each with its confidence set to the
        ranking score, and its ``s_gc`` (what the harvest threshold cuts).
    """

    first: dict[str, list[Proposal3D]]
    proposals: dict[str, list[tuple[Proposal3D, float]]]

    def ranked(self) -> dict[str, list[Proposal3D]]:
        """Every detection of the row, by volume (the row's PR curve)."""
        return {v: [*first, *(d for d, _ in self.proposals[v])] for v, first in self.first.items()}

    def cut(self, threshold: float | None) -> dict[str, list[Proposal3D]]:
        """The row's label set at the harvest threshold (None: nothing of this round)."""
        return {
            v: [*first, *(d for d, s_gc in self.proposals[v] if _passes(s_gc, threshold))]
            for v, first in self.first.items()
        }


def label_sets(
    full, *, original, proposals, carried=None, ranking: str = "s_gc", match_iou: float = 0.5
) -> dict[str, LabelSet]:
    """The ``per_round`` and ``cumulative`` rows' detections (module notes).

    Parameters
    ----------
    full : mapping volume_id -> list of RecistMark
        The test volumes (their lesions; only the keys are used here).
    original : mapping volume_id -> list of RecistMark
        The original (incomplete) marks, counted as detections that come first.
    proposals : mapping volume_id -> list of StoredProposal
        The round's proposals; those with a lesion score and not matching an
        original mark (role other than ``P_RH``) join the detections.
    carried : mapping volume_id -> list of StoredProposal, optional
        Lesions harvested by earlier rounds (:func:`carried_lesions`).
    ranking : {"s_gc", "s_g"}
        The score that ranks this round's proposals (``s_g``: the LPG alone).
    match_iou : float
        P3D box IoU of a hit (also what makes a proposal repeat an earlier lesion).

    Returns
    -------
    dict of str to LabelSet
    """
    if ranking not in RANKINGS:
        raise ValueError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
    volume_ids = list(full)
    marks = {v: _as_detections(original.get(v, []), ORIGINAL_MARK_SCORE) for v in volume_ids}
    scored = {v: [] for v in volume_ids}
    for volume_id, stored in proposals.items():
        for s in stored:
            if s.role != Role.P_RH and s.s_gc is not None:
                score = s.s_gc if ranking == "s_gc" else s.s_g
                scored[volume_id].append((_with_score(s.proposal, score), s.s_gc))
    earlier = _one_per_lesion(carried or {}, volume_ids, match_iou)
    repeats = _hitting_carried(scored, earlier, match_iou)
    return {
        "per_round": LabelSet(marks, scored),
        "cumulative": LabelSet(
            {v: [*marks[v], *earlier.get(v, [])] for v in volume_ids},
            {v: [d for d, r in zip(scored[v], repeats[v], strict=True) if not r] for v in scored},
        ),
    }


def evaluate_harvest(
    full,
    *,
    original,
    proposals,
    threshold,
    carried=None,
    ranking: str = "s_gc",
    match_iou: float = 0.5,
) -> dict:
    """Evaluate a round's label sets against fully annotated volumes (module notes).

    Parameters
    ----------
    full, original, proposals, carried, ranking, match_iou
        As :func:`label_sets`; ``full`` is the truth.
    threshold : float or None
        The round's harvest threshold on ``s_gc`` (None: nothing harvested).

    Returns
    -------
    dict
        ``n_volumes``, ``n_lesions``, ``ranking``, ``baseline`` (recall / precision
        of the original marks), and the rows ``per_round`` and ``cumulative``, each
        ``{"p3d": EvaluationResult.to_dict(), "harvested": {recall, precision},
        "ceiling": float, "pr_curve": {recall, precision, threshold}}``; the
        cumulative row also gives ``carried`` (earlier lesions counted).
    """
    sets = label_sets(
        full,
        original=original,
        proposals=proposals,
        carried=carried,
        ranking=ranking,
        match_iou=match_iou,
    )
    marks_only = sets["per_round"].first  # the original marks alone
    baseline = _final_point(_evaluate(full, marks_only, match_iou).curve)
    rows = {name: _row(full, label_set, threshold, match_iou) for name, label_set in sets.items()}
    first = sets["cumulative"].first
    rows["cumulative"]["carried"] = sum(len(first[v]) - len(marks_only[v]) for v in first)
    return {
        "n_volumes": len(full),
        "n_lesions": sum(map(len, full.values())),
        "ranking": ranking,
        "baseline": {"recall": baseline[0], "precision": baseline[1]},
        **rows,
    }


def _row(full, label_set: LabelSet, threshold, match_iou) -> dict:
    """One row's figures: its PR curve, ceiling, and its cut at ``threshold``."""
    result = _evaluate(full, label_set.ranked(), match_iou)
    curve = result.curve
    keep = (
        np.unique(np.linspace(0, len(curve.thresholds) - 1, CURVE_POINTS).astype(int))
        if len(curve.thresholds)
        else []
    )
    recall, precision = _final_point(_evaluate(full, label_set.cut(threshold), match_iou).curve)
    return {
        "p3d": result.to_dict(),
        "harvested": {"recall": recall, "precision": precision},
        "ceiling": _final_point(curve)[0],
        "pr_curve": {
            "recall": [float(curve.recall[i]) for i in keep],
            "precision": [float(curve.precision[i]) for i in keep],
            "threshold": [min(float(curve.thresholds[i]), 1.0) for i in keep],
        },
    }


def _passes(s_gc: float, threshold: float | None) -> bool:
    return threshold is not None and s_gc >= threshold


def _evaluate(full, detections, match_iou):
    from napari_lesion_harvest.evaluation.report import evaluate
    from napari_lesion_harvest.evaluation.tables import ProposalTable, RecistTruth

    truth = RecistTruth.from_mapping(full)
    table = ProposalTable.from_proposals(detections, list(full))
    return evaluate(truth, table, metric="p3d", iou_threshold=match_iou)


def _final_point(curve) -> tuple[float, float | None]:
    """``(recall, precision)`` with every detection selected (None: no detection)."""
    from napari_lesion_harvest.evaluation.pr import final_point

    recall, precision = final_point(curve)
    return recall, (float(precision) if np.isfinite(precision) else None)


def _as_detections(marks, score: float) -> list[Proposal3D]:
    """RECIST marks as one-slice detections of confidence ``score``."""
    return [Proposal3D([m.z], [m.box()], [score]) for m in marks]


def _with_score(proposal: Proposal3D, score: float) -> Proposal3D:
    """``proposal`` with ``score`` on every slice (its confidence in the ranked list)."""
    return Proposal3D(proposal.slices, proposal.boxes, np.full(len(proposal.slices), score))


def _one_per_lesion(carried, volume_ids, match_iou) -> dict[str, list[Proposal3D]]:
    """Earlier harvested lesions as detections of score :data:`CARRIED_SCORE`, in id
    order, leaving out each one that hits the best-slice box of one kept before it."""
    from napari_lesion_harvest.tracking.marks import best_slice_boxes, proposals_hitting_marks

    kept: dict[str, list[Proposal3D]] = {}
    for volume_id in volume_ids:
        mine: list[Proposal3D] = []
        for stored in sorted(carried.get(volume_id, []), key=lambda s: s.id):
            proposal = stored.proposal
            if (
                mine
                and proposals_hitting_marks(
                    {volume_id: [proposal]},
                    {volume_id: best_slice_boxes(mine)},
                    iou_threshold=match_iou,
                )[volume_id].any()
            ):
                continue
            mine.append(proposal)
        if mine:
            kept[volume_id] = [_with_score(p, CARRIED_SCORE) for p in mine]
    return kept


def _hitting_carried(scored, earlier, match_iou) -> dict[str, np.ndarray]:
    """Per volume, which of this round's detections hit an earlier lesion's best-slice box."""
    from napari_lesion_harvest.tracking.marks import best_slice_boxes, proposals_hitting_marks

    hits = proposals_hitting_marks(
        {v: [d for d, _ in scored[v]] for v in scored},
        {v: best_slice_boxes(p) for v, p in earlier.items()},
        iou_threshold=match_iou,
    )
    return {v: hits[v] for v in scored}
