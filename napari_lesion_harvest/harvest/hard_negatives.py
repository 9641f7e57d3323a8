"""Mining hard negatives P_neg_H among the proposals that were not harvested."""

from __future__ import annotations

import numpy as np

#: Objectness above which a non-harvested proposal is a hard negative (paper, Sec. III-D).
HARD_NEGATIVE_MIN_OBJECTNESS = 0.5
#: Up to this many highest-objectness non-harvested proposals per sub-volume are hard negatives.
HARD_NEGATIVES_PER_VOLUME = 5


def select_hard_negatives(
    volume_ids,
    s_g,
    eligible,
    *,
    min_objectness: float = HARD_NEGATIVE_MIN_OBJECTNESS,
    per_volume: int = HARD_NEGATIVES_PER_VOLUME,
) -> np.ndarray:
    """Select P_neg_H: eligible proposals with ``s_g >= min_objectness``, plus per
    volume the ``per_volume`` eligible ones with the highest ``s_g``.

    Parameters
    ----------
    volume_ids : array_like, shape (N,)
        Volume of each proposal.
    s_g : array_like, shape (N,)
        LPG objectness of each proposal.
    eligible : array_like of bool, shape (N,)
        Proposals that may become hard negatives: V_H proposals that were
        neither harvested (P_pos_H) nor verified (P_RH, expert-accepted).
    min_objectness, per_volume
        The paper's 0.5 and 5.

    Returns
    -------
    ndarray of bool, shape (N,)
        True for the selected hard negatives.
    """
    volume_ids = np.asarray(volume_ids).ravel()
    s_g = np.asarray(s_g, dtype=np.float64).ravel()
    eligible = np.asarray(eligible, dtype=bool).ravel()
    if not volume_ids.size == s_g.size == eligible.size:
        raise ValueError("volume_ids, s_g and eligible must have the same length")
    selected = eligible & (s_g >= min_objectness)
    candidates = np.flatnonzero(eligible)
    if candidates.size == 0 or per_volume <= 0:
        return selected
    # Sort eligible proposals by volume, then by decreasing objectness; keep each
    # volume's first `per_volume`.
    order = candidates[np.lexsort((-s_g[candidates], volume_ids[candidates]))]
    sorted_volumes = volume_ids[order]
    starts = np.r_[True, sorted_volumes[1:] != sorted_volumes[:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(order.size), 0))
    rank_in_volume = np.arange(order.size) - group_start
    selected[order[rank_in_volume < per_volume]] = True
    return selected
