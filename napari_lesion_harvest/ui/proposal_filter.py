"""Which proposals the review shows: a view by role and a lowest lesion score.

A V_H volume may hold a hundred proposals, most of them low-score candidates.
The default view, :data:`DEFAULT_VIEW`, shows what a radiologist needs to
check: the harvested lesions (and those accepted), plus the proposals the
classifier was unsure about, those whose lesion score lies within
:data:`~napari_lesion_harvest.harvest.annotation_priority.BAND` of the round's
harvest threshold (whatever their verdict, so a verdict never hides the
proposal it was given on). Qt-free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from napari_lesion_harvest.harvest.annotation_priority import BAND, DEFAULT_THRESHOLD
from napari_lesion_harvest.ui.proposal_overlay import ProposalItem
from napari_lesion_harvest.vocabulary import Role, Verdict

#: Roles the classifier decides (the ones that take a verdict).
CLASSIFIER_ROLES = frozenset({Role.candidate, Role.P_pos_H, Role.P_neg_H})


def _harvested(item: ProposalItem, threshold: float) -> bool:
    return item.role == Role.P_pos_H or item.verdict == Verdict.accepted


def _near_threshold(item: ProposalItem, threshold: float) -> bool:
    return item.role in CLASSIFIER_ROLES and abs(item.lesion_score - threshold) <= BAND


#: View name -> (what it shows, rule ``(item, threshold) -> bool``), in menu order.
VIEWS: dict[str, tuple[str, Callable[[ProposalItem, float], bool]]] = {
    "harvested + near threshold": (
        "harvested lesions, accepted proposals, and proposals whose lesion score is within "
        f"{BAND:g} of the round's threshold",
        lambda item, t: _harvested(item, t) or _near_threshold(item, t),
    ),
    "harvested lesions": (
        "harvested lesions (P_pos_H) and accepted proposals",
        _harvested,
    ),
    "not reviewed": (
        "proposals the classifier decided that have no verdict yet",
        lambda item, t: item.role in CLASSIFIER_ROLES and item.verdict is None,
    ),
    "reviewed": ("proposals with a verdict", lambda item, t: item.verdict is not None),
    "marked lesions": (
        "proposals hitting a RECIST mark (P_RM, P_RH)",
        lambda item, t: item.role in (Role.P_RM, Role.P_RH),
    ),
    "hard negatives": (
        "hard negatives (P_neg_H, P_neg_M)",
        lambda item, t: item.role in (Role.P_neg_H, Role.P_neg_M),
    ),
    "all proposals": ("every proposal of the round", lambda item, t: True),
}
DEFAULT_VIEW = "harvested + near threshold"


def review_threshold(threshold: float | None) -> float:
    """The threshold the views use: the round's, or :data:`DEFAULT_THRESHOLD` when the
    round reached none (it harvested nothing)."""
    return DEFAULT_THRESHOLD if threshold is None else float(threshold)


def filter_items(
    items: Sequence[ProposalItem],
    view: str,
    *,
    threshold: float | None,
    min_score: float = 0.0,
) -> list[ProposalItem]:
    """The items of ``view`` whose lesion score is at least ``min_score``, in their order.

    Parameters
    ----------
    items : sequence of ProposalItem
    view : str
        A key of :data:`VIEWS`.
    threshold : float or None
        The round's harvest threshold on the lesion score (None: it reached none).
    min_score : float
        Lowest lesion score shown.

    Raises
    ------
    KeyError
        An unknown view (the message lists the views).
    """
    if view not in VIEWS:
        raise KeyError(f"unknown proposal view {view!r}; views: {', '.join(VIEWS)}")
    rule = VIEWS[view][1]
    t = review_threshold(threshold)
    return [item for item in items if item.lesion_score >= min_score and rule(item, t)]
