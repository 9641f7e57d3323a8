"""Draw assist: a RECIST mark suggested from the round's proposal box under a click.

Once a round has run, every proposal keeps its box on each slice it spans (the
LPG's detections, stacked in 3D). A click on a lesion suggests a mark for the
box under it on that slice: :meth:`~napari_lesion_harvest.geometry.RecistMark.from_box`,
a horizontal and a vertical axis through the box centre whose RECIST box
(:meth:`RecistMark.box`) is the proposal's box (a box of 10 pixels a side or
less keeps a quarter of its side as margin instead of DeepLesion's 5 pixels). The radiologist
accepts it as their mark or edits its ends. Nothing is computed beyond what the round stored
(the napari process never loads the networks). Qt-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.geometry import RECIST_BOX_PADDING, RecistMark


@dataclass(frozen=True)
class Suggestion:
    """A suggested mark and where it comes from.

    Attributes
    ----------
    mark : RecistMark
    proposal_id : int
        The proposal whose box it follows.
    score : float
        The proposal's LPG score on that slice (objectness).
    """

    mark: RecistMark
    proposal_id: int
    score: float


def suggest_mark(proposals, z: int, point_xy) -> Suggestion | None:
    """The mark for the best-scoring proposal box under ``point_xy`` on slice ``z``.

    Parameters
    ----------
    proposals : iterable of StoredProposal
        The shown round's proposals of the volume (any role).
    z : int
        Slice index.
    point_xy : array_like, shape (2,)
        The click, pixel coordinates ``(x, y)``.

    Returns
    -------
    Suggestion or None
        None when no proposal box on slice ``z`` holds the point. Ties of score
        go to the smaller box.
    """
    x, y = (float(v) for v in point_xy)
    best = None
    for stored in proposals:
        box = stored.proposal.box_on_slice(z)
        if box is None:
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        if not (x1 <= x <= x2 and y1 <= y <= y2):
            continue
        index = int(np.flatnonzero(np.asarray(stored.proposal.slices) == z)[0])
        score = float(stored.proposal.scores[index])
        key = (score, -(x2 - x1) * (y2 - y1))
        if best is None or key > best[0]:
            best = (key, stored.id, score, (x1, y1, x2, y2))
    if best is None:
        return None
    _key, proposal_id, score, (x1, y1, x2, y2) = best
    side = min(x2 - x1, y2 - y1)
    padding = RECIST_BOX_PADDING if side > 2 * RECIST_BOX_PADDING else 0.25 * side
    mark = RecistMark.from_box([x1, y1, x2, y2], z, padding=padding)
    return Suggestion(mark, proposal_id, score)
