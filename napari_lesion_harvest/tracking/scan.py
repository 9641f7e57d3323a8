"""Scanning one volume: the LPG's 2D boxes on every slice, stacked into 3D proposals.

:func:`scan_volume` runs the lesion proposal generator
(:func:`~napari_lesion_harvest.lpg.infer.detect_volume`) over every slice, stacks
the boxes with the Kalman box tracker (:func:`~.stacking.stack_proposals`) and
drops duplicates of one lesion (:func:`~.suppression.suppress_duplicates`).
It imports torch when called.
"""

from __future__ import annotations

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.tracking.stacking import stack_proposals
from napari_lesion_harvest.tracking.suppression import suppress_duplicates


def scan_volume(
    model,
    volume: CTVolume,
    *,
    score_threshold: float,
    link_iou: float,
    fuse_iou: float,
    duplicate_iou: float,
    batch_size: int,
    precision: str,
    device: str | None = None,
) -> tuple[list[Proposal3D], int]:
    """The 3D proposals of one volume.

    Parameters
    ----------
    model : MultiSliceCenterNet
        The trained LPG.
    volume : CTVolume
        Shape ``(Z, Y, X)``; every slice is a target.
    score_threshold : float
        The paper's t_G: 2D boxes scoring below it are dropped.
    link_iou, fuse_iou : float
        As :func:`~.stacking.stack_proposals`.
    duplicate_iou : float
        As ``iou_threshold`` of :func:`~.suppression.suppress_duplicates`.
    batch_size : int
        Target slices per forward pass.
    precision : {"auto", "float32", "bfloat16"}
        As :func:`~napari_lesion_harvest.lpg.infer.detect_volume`.
    device : str, optional
        ``"cpu"`` or ``"cuda"`` (default: the model's).

    Returns
    -------
    proposals : list of Proposal3D
    boxes_2d : int
        2D boxes the LPG gave (before tracking).
    """
    from napari_lesion_harvest.lpg.infer import detect_volume

    detections = detect_volume(
        model,
        volume,
        min_score=score_threshold,
        batch_size=batch_size,
        precision=precision,
        device=device,
    )
    proposals = suppress_duplicates(
        stack_proposals(
            {d.z: _proper_boxes(d) for d in detections},
            score_threshold=score_threshold,
            link_iou=link_iou,
            fuse_iou=fuse_iou,
        ),
        iou_threshold=duplicate_iou,
    )
    return proposals, int(sum(len(d.scores) for d in detections))


def _proper_boxes(detections) -> tuple[np.ndarray, np.ndarray]:
    """A slice's boxes ``(K, 4)`` and scores ``(K,)`` without the degenerate ones (zero
    width or height after clipping to the image), which cannot be tracked."""
    boxes = detections.boxes
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], detections.scores[keep]
