"""Data entry in one transaction (HarvestProject.add_batch) and marks checked against their
volume, on real project files."""

from __future__ import annotations

import re

import pytest

from napari_lesion_harvest.geometry import RecistMark
from napari_lesion_harvest.store import (
    DataBatch,
    InvalidValueError,
    MarkEntry,
    NotFoundError,
    VolumeRecord,
)
from tests.builders import new_project, recist_mark


def _volume(volume_id, path="a.nii", shape=(20, 64, 48), split="V_H"):
    return VolumeRecord(volume_id, "simpleitk", path, split, shape=shape, spacing=(2, 0.8, 0.8))


@pytest.fixture
def project(tmp_path):
    with new_project(tmp_path / "proj") as opened:
        yield opened


def _state(project):
    """Everything the data entry may change, for before/after comparisons."""
    return (
        project.volumes(),
        [_plain(m) for m in project.marks(include_deleted=True)],
        [(e.action, e.details) for e in project.audit_log()],
    )


def _plain(stored):
    """A stored mark as comparable values."""
    mark = stored.mark
    return (
        stored.id,
        stored.volume_id,
        mark.z,
        mark.measurement_coordinates().tolist(),
        stored.deleted,
    )


def _same(a, b):
    return (
        a.z == b.z and a.measurement_coordinates().tolist() == b.measurement_coordinates().tolist()
    )


def test_a_batch_re_run_adds_nothing_and_counts_what_is_there(project):
    batch = DataBatch(
        volumes=[_volume("v1"), _volume("v2", "b.nii")],
        marks=[
            MarkEntry("v1", recist_mark(3)),
            MarkEntry("v2", recist_mark(4)),
            MarkEntry("v1", recist_mark(3)),
        ],
    )
    first = project.add_batch(batch, author="importer")
    assert first.volumes_added == ["v1", "v2"] and first.volumes_present == []
    assert len(first.marks_added) == 2 and first.marks_present == 1  # repeated in the batch
    before = _state(project)

    again = project.add_batch(batch, author="importer")
    assert again.volumes_added == [] and again.volumes_present == ["v1", "v2"]
    assert again.marks_added == [] and again.marks_present == 3
    assert _state(project) == before  # not even an audit entry


def test_equal_marks_are_matched_within_float_round_off_per_origin(project):
    project.add_batch(
        DataBatch(volumes=[_volume("v1")], marks=[MarkEntry("v1", recist_mark(3))]), author="a"
    )
    nearly = RecistMark.from_measurement_coordinates(
        recist_mark(3).measurement_coordinates() + 1e-9, z=3
    )
    moved = RecistMark.from_measurement_coordinates(
        recist_mark(3).measurement_coordinates() + 0.01, z=3
    )
    result = project.add_batch(
        DataBatch(
            marks=[
                MarkEntry("v1", nearly),
                MarkEntry("v1", moved),
                MarkEntry("v1", recist_mark(4)),
            ]
        ),
        author="a",
    )
    assert result.marks_present == 1 and len(result.marks_added) == 2
    # the same mark drawn by an expert is another mark
    expert = project.add_batch(
        DataBatch(marks=[MarkEntry("v1", recist_mark(3))], mark_origin="expert"), author="rad"
    )
    assert len(expert.marks_added) == 1
    assert len(project.marks("v1")) == 4


def test_a_soft_deleted_mark_stays_deleted_when_a_batch_repeats_it(project):
    first = project.add_batch(
        DataBatch(volumes=[_volume("v1")], marks=[MarkEntry("v1", recist_mark(3))]), author="a"
    )
    (mark_id,) = first.marks_added
    project.delete_mark(mark_id, author="rad")
    again = project.add_batch(
        DataBatch(marks=[MarkEntry("v1", recist_mark(3)), MarkEntry("v1", recist_mark(3))]),
        author="a",
    )
    assert again.marks_added == [] and again.marks_kept_deleted == [mark_id]
    assert project.marks("v1") == [] and project.mark(mark_id).deleted
    project.restore_marks([mark_id], author="rad")
    assert (
        project.add_batch(
            DataBatch(marks=[MarkEntry("v1", recist_mark(3))]), author="a"
        ).marks_present
        == 1
    )


def test_a_volume_id_with_other_data_is_refused_and_nothing_is_written(project):
    project.add_batch(DataBatch(volumes=[_volume("v1")]), author="a")
    before = _state(project)
    for other in (
        _volume("v1", path="elsewhere.nii"),
        _volume("v1", shape=(21, 64, 48)),
        VolumeRecord("v1", "deeplesion_png", "a.nii", "V_H", (20, 64, 48), (2, 0.8, 0.8)),
        VolumeRecord("v1", "simpleitk", "a.nii", "V_H", (20, 64, 48), (2.5, 0.8, 0.8)),
    ):
        batch = DataBatch(
            volumes=[_volume("v0", "zero.nii"), other], marks=[MarkEntry("v1", recist_mark())]
        )
        with pytest.raises(InvalidValueError, match=r"volume 'v1' is already in the project"):
            project.add_batch(batch, author="a")
        assert _state(project) == before
    with pytest.raises(InvalidValueError, match=r"'v2' is already twice in this batch.*path"):
        project.add_batch(
            DataBatch(volumes=[_volume("v2", "x.nii"), _volume("v2", "y.nii")]), author="a"
        )
    assert _state(project) == before
    # the split is not part of the volume's data: importing it again as V_H_test is "present"
    result = project.add_batch(DataBatch(volumes=[_volume("v1", split="V_H_test")]), author="a")
    assert result.volumes_present == ["v1"] and project.volume("v1").split == "V_H"


@pytest.mark.parametrize(
    ("mark", "field", "text"),
    [
        (recist_mark(z=20), "z = 20", "its 20 slices (0 to 19)"),
        (recist_mark(z=9999), "z = 9999", "its 20 slices"),
        (recist_mark(x=1e12), "long_x1 = 1e+12", "the image (x from -0.5 to 47.5)"),
        (recist_mark(x=30), "long_x2 = 50", "the image (x from -0.5 to 47.5)"),
        (recist_mark(y=-0.6), "long_y1 = -0.6", "(y from -0.5 to 63.5)"),
    ],
)
def test_marks_outside_their_volume_are_refused_naming_the_field(project, mark, field, text):
    project.add_batch(DataBatch(volumes=[_volume("v1")]), author="a")
    entries = [MarkEntry("v1", recist_mark(3)), MarkEntry("v1", mark, "marks.csv, line 7")]
    with pytest.raises(InvalidValueError) as refused:
        project.add_batch(DataBatch(marks=entries), author="a")
    message = str(refused.value)
    assert message.startswith("marks.csv, line 7: volume 'v1',") and field in message
    assert text in message
    with pytest.raises(
        InvalidValueError, match=re.escape(f"new mark: volume 'v1', field {field}")
    ):
        project.add_mark("v1", mark, author="rad")
    with pytest.raises(InvalidValueError, match=re.escape(f"item 2: volume 'v1', field {field}")):
        project.add_marks([("v1", recist_mark(3)), ("v1", mark)], author="a")
    stored = project.add_mark("v1", recist_mark(3), author="rad")
    with pytest.raises(
        InvalidValueError, match=re.escape(f"mark {stored.id}: volume 'v1', field {field}")
    ):
        project.edit_mark(stored.id, mark, author="rad")
    assert _same(project.mark(stored.id).mark, recist_mark(3))
    project.delete_mark(stored.id, author="rad")
    assert [m.id for m in project.marks(include_deleted=True)] == [stored.id]


def test_the_image_edge_is_allowed_and_unknown_shapes_get_a_sane_bound(project):
    project.add_batch(
        DataBatch(volumes=[_volume("v1"), VolumeRecord("nos", "synthetic", "-", "V_H")]),
        author="a",
    )
    edge = RecistMark(z=19, long_axis=[[-0.5, 0], [47.5, 0]], short_axis=[[20, -0.5], [20, 63.5]])
    assert _same(project.add_mark("v1", edge, author="rad").mark, edge)
    far = RecistMark(z=60_000, long_axis=[[0, 0], [4000, 0]], short_axis=[[9, 1], [9, 9]])
    assert _same(project.add_mark("nos", far, author="rad").mark, far)
    with pytest.raises(
        InvalidValueError, match="field z = 70000 is outside 0 to 65536 .*not known"
    ):
        project.add_mark("nos", RecistMark(70_000, far.long_axis, far.short_axis), author="rad")
    with pytest.raises(InvalidValueError, match="long_x2 = 1e\\+12 is outside 0 to 65536"):
        project.add_mark("nos", RecistMark(0, [[0, 0], [1e12, 0]], far.short_axis), author="rad")


def test_marks_of_unknown_volumes_name_the_source(project):
    with pytest.raises(NotFoundError, match="marks.csv, line 3: the project has no volume 'nope'"):
        project.add_batch(
            DataBatch(marks=[MarkEntry("nope", recist_mark(), "marks.csv, line 3")]), author="a"
        )
    assert _state(project) == ([], [], [])


def test_splits_and_completion_in_one_batch_are_safe_to_re_run(project):
    project.add_batch(
        DataBatch(
            volumes=[_volume("v1"), _volume("v2", "b"), _volume("t1", "t", split="V_H_test")]
        ),
        author="a",
    )
    batch = DataBatch(
        marks=[MarkEntry("v1", recist_mark()), MarkEntry("t1", recist_mark())],
        mark_origin="expert",
        splits={"v2": "V_D_test"},
        complete=["v1", "t1", "v1"],
    )
    first = project.add_batch(batch, author="rad")
    assert (first.completed, first.held_out, first.split_changed) == (["v1"], ["t1"], ["v2"])
    assert {v.volume_id: (v.split, v.complete) for v in project.volumes()} == {
        "v1": ("V_M", True),
        "v2": ("V_D_test", False),
        "t1": ("V_H_test", True),  # held out: flagged complete, never moved to V_M
    }
    before = _state(project)
    again = project.add_batch(batch, author="rad")
    assert (again.completed, again.held_out, again.split_unchanged) == ([], [], ["v2"])
    assert again.already_complete == ["v1", "t1"]
    assert again.marks_present == 2 and _state(project) == before
    # a failure late in the batch (an unknown volume to complete) takes back every part
    with pytest.raises(NotFoundError, match="'gone'"):
        project.add_batch(
            DataBatch(
                volumes=[_volume("v3", "c")],
                marks=[MarkEntry("v2", recist_mark(5))],
                splits={"v1": "V_H"},
                complete=["gone"],
            ),
            author="rad",
        )
    assert _state(project) == before


def test_deleting_and_restoring_several_marks_is_one_transaction(project):
    project.add_batch(DataBatch(volumes=[_volume("v1")]), author="a")
    ids = [project.add_mark("v1", recist_mark(z), author="rad").id for z in (1, 2, 3)]
    with pytest.raises(NotFoundError, match="no mark with id 999"):
        project.delete_marks([ids[0], 999], author="rad")
    assert [m.id for m in project.marks("v1")] == ids
    assert project.delete_marks([ids[0], ids[1], ids[0]], author="rad") == ids[:2]
    assert project.delete_marks(ids[:2], author="rad") == []  # already deleted: no change
    assert [m.id for m in project.marks("v1")] == [ids[2]]
    assert project.restore_marks(ids, author="rad") == ids[:2]  # the deleted ones only
    assert [m.id for m in project.marks("v1")] == ids
