"""2D lesion proposals -> 3D proposals: a Kalman box tracker across slices, then gap fusion.

:func:`stack_proposals` (one volume) and :func:`stack_proposals_batch` (many)
return :class:`~napari_lesion_harvest.geometry.Proposal3D` lists;
:func:`proposal_to_training_box` gives the 2D box the LPG is fine-tuned on;
:func:`~napari_lesion_harvest.tracking.scan.scan_volume` runs the LPG over every
slice of a volume and stacks its boxes (it imports torch when called).
"""

from napari_lesion_harvest.tracking.kalman import BoxKalmanModel, make_box_filter
from napari_lesion_harvest.tracking.marks import proposals_hitting_marks
from napari_lesion_harvest.tracking.stacking import (
    DEFAULT_EXTEND_SLICES,
    DEFAULT_FUSE_IOU,
    DEFAULT_LINK_IOU,
    DEFAULT_SCORE_THRESHOLD,
    DETECTION_INDEX_KEY,
    ProposalInputError,
    proposal_to_training_box,
    stack_proposals,
    stack_proposals_batch,
)

__all__ = [
    "DEFAULT_EXTEND_SLICES",
    "DEFAULT_FUSE_IOU",
    "DEFAULT_LINK_IOU",
    "DEFAULT_SCORE_THRESHOLD",
    "DETECTION_INDEX_KEY",
    "BoxKalmanModel",
    "ProposalInputError",
    "make_box_filter",
    "proposals_hitting_marks",
    "proposal_to_training_box",
    "stack_proposals",
    "stack_proposals_batch",
]
