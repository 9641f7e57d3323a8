"""One lesion, one proposal: suppress 3D proposals that repeat a stronger one.

CenterNet's 3x3 peak picking can leave two peaks on one lesion, and the
tracker then stacks two tracklets through it. For harvesting, the weaker copy
is no new lesion: counting it would lower the harvest's precision. This step
is not in the paper; ``duplicate_iou`` in the round configuration turns it off
(``1.0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D, iou_2d

#: Two proposals whose boxes on a shared slice overlap at least this much are one lesion.
DEFAULT_DUPLICATE_IOU = 0.5


def suppress_duplicates(
    proposals: Sequence[Proposal3D], *, iou_threshold: float = DEFAULT_DUPLICATE_IOU
) -> list[Proposal3D]:
    """Drop every proposal that overlaps a higher-``s_g`` kept proposal on a shared slice.

    Parameters
    ----------
    proposals : sequence of Proposal3D
        One volume's 3D proposals.
    iou_threshold : float
        2D IoU, on any slice both proposals have a box on, from which the
        weaker proposal is a duplicate. Values above 1 keep everything.

    Returns
    -------
    list of Proposal3D
        The kept proposals, by decreasing ``s_g`` (ties: input order).
    """
    order = sorted(range(len(proposals)), key=lambda i: -proposals[i].s_g)
    kept: list[Proposal3D] = []
    for index in order:
        candidate = proposals[index]
        if not any(_same_lesion(candidate, other, iou_threshold) for other in kept):
            kept.append(candidate)
    return kept


def _same_lesion(a: Proposal3D, b: Proposal3D, iou_threshold: float) -> bool:
    shared, in_a, in_b = np.intersect1d(a.slices, b.slices, return_indices=True)
    if shared.size == 0:
        return False
    overlap = iou_2d(a.boxes[in_a], b.boxes[in_b], elementwise=True)
    return bool((overlap >= iou_threshold).any())
