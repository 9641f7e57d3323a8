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
    kept_boxes: dict[int, np.ndarray] = {}  # slice -> (K, 4) boxes of the kept proposals there
    for index in order:
        candidate = proposals[index]
        if not _repeats_kept(candidate, kept_boxes, iou_threshold):
            kept.append(candidate)
            for z, box in zip(candidate.slices.tolist(), candidate.boxes, strict=True):
                there = kept_boxes.get(z)
                kept_boxes[z] = box[None] if there is None else np.vstack([there, box])
    return kept


def _repeats_kept(
    candidate: Proposal3D, kept_boxes: dict[int, np.ndarray], iou_threshold: float
) -> bool:
    """Whether a box of ``candidate`` overlaps a kept box on its slice by ``iou_threshold``."""
    shared = [(row, z) for row, z in enumerate(candidate.slices.tolist()) if z in kept_boxes]
    if not shared:
        return False
    theirs = [kept_boxes[z] for _, z in shared]
    ours = np.repeat(candidate.boxes[[row for row, _ in shared]], [len(b) for b in theirs], axis=0)
    return bool((iou_2d(ours, np.concatenate(theirs), elementwise=True) >= iou_threshold).any())
