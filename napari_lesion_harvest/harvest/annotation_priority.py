"""Which V_H volume to annotate fully next (a first step at the paper's "future work").

Rule: a volume helps most when many of its proposals are *uncertain*, i.e. their
lesion score ``s_gc`` lies near the harvest threshold ``t`` of the latest round:
fully annotating it settles those decisions and adds them to V_M as positives
or negatives. Each unreviewed proposal contributes
``max(0, 1 - |s_gc - t| / BAND)``; the volume's priority is the sum. Equal sums
(0 included, when no proposal lies within the band) go to the volume holding the
proposal nearest to ``t``. Volumes already complete, held out for testing, or
without unsettled proposals are not ranked; proposals with an expert verdict or
decided by a RECIST mark count no more (they are settled).
"""

from __future__ import annotations

from collections import defaultdict

from napari_lesion_harvest.vocabulary import Split

#: Half-width of the uncertainty band around the threshold (lesion-score units).
BAND = 0.25
#: Threshold used when the round stored none (it reached no threshold and harvested nothing).
DEFAULT_THRESHOLD = 0.5


def proposal_uncertainty(lesion_score: float, threshold: float, *, band: float = BAND) -> float:
    """``max(0, 1 - |lesion_score - threshold| / band)``, in [0, 1]."""
    return max(0.0, 1.0 - abs(float(lesion_score) - float(threshold)) / band)


def rank_volumes(proposals, candidate_ids, threshold: float) -> list[tuple[str, float]]:
    """Rank candidate volumes by summed proposal uncertainty.

    Parameters
    ----------
    proposals : iterable of StoredProposal
        The latest round's proposals.
    candidate_ids : set of str
        Volumes that may be proposed (V_H, not complete).
    threshold : float
        The round's harvest threshold on ``s_gc``.

    Returns
    -------
    list of (volume_id, priority)
        Highest priority first; equal priorities by the distance of the volume's
        nearest proposal to ``threshold``, then by volume id. Every candidate volume
        with an unsettled proposal is listed, priority 0 included.
    """
    from napari_lesion_harvest.store.project import MARK_DECIDED_ROLES

    totals: dict[str, float] = defaultdict(float)
    nearest: dict[str, float] = {}
    for stored in proposals:
        if (
            stored.volume_id not in candidate_ids
            or stored.verdict is not None
            or stored.role in MARK_DECIDED_ROLES
        ):
            continue
        score = stored.s_gc if stored.s_gc is not None else stored.s_g
        totals[stored.volume_id] += proposal_uncertainty(score, threshold)
        distance = abs(float(score) - float(threshold))
        nearest[stored.volume_id] = min(distance, nearest.get(stored.volume_id, distance))
    return sorted(totals.items(), key=lambda pair: (-pair[1], nearest[pair[0]], pair[0]))


def next_volume_to_annotate(project) -> str | None:
    """The top-ranked V_H volume of the latest finished round, or None."""
    number = project.latest_done_round()
    if number is None:
        return None
    threshold = project.rounds.get(number).metrics.get("threshold")
    if threshold is None:
        threshold = DEFAULT_THRESHOLD
    candidates = {v.volume_id for v in project.volumes(split=Split.V_H) if not v.complete}
    ranked = rank_volumes(project.proposals(number), candidates, float(threshold))
    return ranked[0][0] if ranked else None
