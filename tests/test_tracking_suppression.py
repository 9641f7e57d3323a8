"""Duplicate 3D proposals of one lesion are suppressed; neighbours are not."""

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.tracking.suppression import suppress_duplicates


def _proposal(slices, box, score):
    return Proposal3D(slices, [box] * len(slices), [score] * len(slices))


def test_weaker_copy_on_a_shared_slice_is_dropped():
    strong = _proposal([3, 4, 5], [10, 10, 30, 30], 0.9)
    copy = _proposal([4], [11, 11, 31, 31], 0.5)
    neighbour = _proposal([4], [40, 10, 60, 30], 0.4)  # another lesion, same slice
    other_slice = _proposal([8], [10, 10, 30, 30], 0.3)  # same place, no shared slice
    kept = suppress_duplicates([copy, neighbour, strong, other_slice])
    assert kept == [strong, neighbour, other_slice]


def test_threshold_above_one_keeps_everything_and_empty_input():
    a = _proposal([1], [0, 0, 10, 10], 0.5)
    b = _proposal([1], [0, 0, 10, 10], 0.4)
    assert suppress_duplicates([a, b], iou_threshold=1.01) == [a, b]
    assert suppress_duplicates([]) == []
