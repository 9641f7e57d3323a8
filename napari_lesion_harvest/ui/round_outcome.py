"""What a finished round did, in one or two sentences for the dock (Qt-free).

Read from the round's stored metrics (``harvest``: ``threshold``,
``threshold_precision_v_m``, ``scored``, ``P_pos_H``, ``P_neg_H``,
``new_lesions``, ``expected_false_positives``, ``v_m_non_lesions``). A round that
harvested nothing says why; one that harvested says how many false positives V_M
lets one expect among them.
"""

from __future__ import annotations

from napari_lesion_harvest.harvest.config_migration import dotted_fields
from napari_lesion_harvest.harvest.report import about
from napari_lesion_harvest.harvest.threshold import HARVEST_PRECISION
from napari_lesion_harvest.vocabulary import Role


def harvest_outcome(record) -> tuple[str, bool]:
    """The dock's sentence about a finished round, and whether it harvested nothing.

    Parameters
    ----------
    record : RoundRecord
        A done round.

    Returns
    -------
    text : str
    nothing : bool
        True when the round harvested no new lesion (the text says why).
    """
    harvest = record.metrics.get("harvest") or {}
    number = record.number
    precision = dotted_fields(record.config).get("harvest.precision", HARVEST_PRECISION)
    harvested, new = harvest.get(Role.P_pos_H), harvest.get("new_lesions")
    threshold, scored = harvest.get("threshold"), harvest.get("scored")
    if not scored:
        return (
            f"Round {number} harvested nothing: no proposal was left to score in the volumes "
            "to harvest (V_H); every proposal hit a mark, or the detector proposed nothing "
            "there. Import more volumes, or train the detector longer.",
            True,
        )
    if threshold is None:
        return (
            f"Round {number} harvested nothing: no lesion-score threshold reached "
            f"{precision:.0%} precision on the fully marked volumes (V_M), so the classifier "
            f"cannot yet tell their lesions from the rest ({scored} proposals scored). Fully "
            "mark more volumes, or train longer (more LPG steps or LPC epochs).",
            True,
        )
    if not harvested:
        return (
            f"Round {number} harvested nothing: none of the {scored} scored proposals "
            f"reached the threshold {threshold:.2f} (the lesion score with {precision:.0%} "
            "precision on the fully marked volumes, V_M).",
            True,
        )
    if not new:
        return (
            f"Round {number} harvested {harvested} lesions, none new: earlier rounds found "
            "them all. Rounds stop here (as in the paper); mark more volumes to go on.",
            True,
        )
    return (
        f"Round {number} finished: {harvested} harvested lesions ({new} new) at threshold "
        f"{threshold:.2f}, {harvest.get(Role.P_neg_H, 0)} hard negatives. "
        + _false_positive_risk(harvest, harvested, precision)
        + "Review them in the Volume tab.",
        False,
    )


def _false_positive_risk(harvest: dict, harvested: int, target_precision: float) -> str:
    """How many harvested lesions V_M lets one expect to be false, and whether that
    misses the precision aimed at (nothing for a round stored before the estimate)."""
    expected, non_lesions = harvest.get("expected_false_positives"), harvest.get("v_m_non_lesions")
    if expected is None or non_lesions is None:
        return ""
    text = (
        f"The {non_lesions} non-lesion proposals of the fully marked volumes (V_M) let one "
        f"expect {about(expected)} of the {harvested} to be false positives"
    )
    if 1 - expected / harvested < target_precision:
        return (
            text + f", more than the {1 - target_precision:.0%} aimed at: V_M is too small to "
            "vouch for this harvest, so fully mark more volumes. "
        )
    return text + ". "
