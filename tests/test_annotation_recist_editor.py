"""The RECIST editor without a viewer: drawing rules, edits, refusals and undo on a real
project file (presses and releases as the napari binding sends them)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesion_harvest.annotation.draw_assist import Suggestion
from napari_lesion_harvest.annotation.recist_editor import RecistEditor, StoreMarkSink
from napari_lesion_harvest.geometry import RecistMark
from napari_lesion_harvest.store import VolumeRecord
from tests.builders import new_project

SHAPE = (20, 64, 64)
#: Pick radius in image pixels (the binding converts 8 screen pixels at the zoom).
RADIUS = 2.0


@pytest.fixture
def project(tmp_path):
    volumes = [VolumeRecord("vol_a", "synthetic", "a.nii", "V_H", shape=SHAPE)]
    with new_project(tmp_path / "proj", volumes) as opened:
        yield opened


def _editor(project, messages, *, shape=SHAPE, **options) -> RecistEditor:
    sink = StoreMarkSink(project, "vol_a", author="rad")
    return RecistEditor(shape, sink=sink, volume_id="vol_a", notify=messages.append, **options)


def _drag(editor, z, start, end) -> None:
    editor.release(editor.press(z, start, radius=RADIUS), np.asarray(end, float), moved=True)


def _click(editor, z, point) -> None:
    editor.release(editor.press(z, point, radius=RADIUS), np.asarray(point, float), moved=False)


def _draw(editor, z=8) -> None:
    """A mark: long axis (20, 30)-(44, 30), short axis (32, 24)-(32, 36)."""
    _drag(editor, z, (20, 30), (44, 30))
    _drag(editor, z, (32, 24), (32, 36))


def test_long_then_short_axis_saves_one_mark_at_once(project):
    messages = []
    editor = _editor(project, messages)
    _drag(editor, 8, (20, 30), (44, 30))
    assert editor.pending_long is not None and project.marks("vol_a") == []
    (axis_z, axis), (guide_z, guide) = editor.guide_segments()
    np.testing.assert_allclose(axis, [[20, 30], [44, 30]])
    np.testing.assert_allclose(guide, [[32, 18], [32, 42]])  # perpendicular, through the middle
    assert axis_z == guide_z == 8

    _drag(editor, 8, (32, 24), (32, 36))
    (stored,) = project.marks("vol_a")
    assert stored.author == "rad" and stored.origin == "expert" and stored.mark.z == 8
    np.testing.assert_allclose(stored.mark.short_axis, [[32, 24], [32, 36]])
    assert editor.pending_long is None and editor.guide_segments() == []
    assert list(editor.marks) == [stored.id] and editor.selected == stored.id
    assert messages == []


def test_short_axes_that_break_recist_are_refused_and_the_long_axis_waits(project):
    messages = []
    editor = _editor(project, messages)
    _drag(editor, 8, (20, 30), (44, 30))
    _drag(editor, 8, (22, 22), (40, 36))  # about 38 degrees
    assert messages[-1].startswith("Short axis refused: axes meet at 38 degrees, need ")
    _drag(editor, 8, (32, 14), (32, 46))  # 32 px, longer than the 24 px long axis
    assert messages[-1].startswith("Short axis refused: short axis (32.0 px) longer than")
    assert project.marks("vol_a") == [] and editor.pending_long[0] == 8

    _drag(editor, 9, (32, 24), (32, 36))  # another slice: a new long axis there
    assert messages[-1] == "Short axis must be on the long axis's slice; starting a new mark."
    assert editor.pending_long[0] == 9 and project.marks("vol_a") == []


def test_axes_off_the_image_are_refused_with_the_stores_reason(project):
    messages = []
    editor = _editor(project, messages)
    _drag(editor, 8, (50, 30), (70, 30))  # x = 70 on a 64-pixel-wide slice
    assert messages[-1].startswith("Long axis refused: volume 'vol_a', field long_x2 = 70")
    assert messages[-1].endswith(". Draw it on the image.")
    assert editor.pending_long is None

    _drag(editor, 8, (20, 50), (44, 50))
    _drag(editor, 8, (32, 44), (32, 66))  # short axis leaves the image at the bottom
    assert messages[-1].startswith("Short axis refused: volume 'vol_a', field short_y2 = 66")
    assert editor.pending_long is not None and project.marks("vol_a") == []


def test_a_change_the_store_refuses_is_not_kept(project):
    """The store checks the mark against its own volume record (64 pixels wide) even when
    the editor was given a wider image."""
    messages = []
    editor = _editor(project, messages, shape=(20, 64, 128))
    _drag(editor, 8, (80, 30), (104, 30))
    _drag(editor, 8, (92, 24), (92, 36))
    assert messages[-1].startswith("Mark not saved: new mark: volume 'vol_a', field long_x1 = 80")
    assert editor.marks == {} and editor.pending_long is not None
    assert project.marks("vol_a", include_deleted=True) == []


def test_click_selects_and_an_endpoint_drag_edits_in_the_store(project):
    messages = []
    editor = _editor(project, messages)
    _draw(editor)
    (stored,) = project.marks("vol_a")
    _click(editor, 8, (5, 5))
    assert editor.selected is None
    _click(editor, 8, (38, 30.5))  # on the long axis
    assert editor.selected == stored.id
    _click(editor, 9, (38, 30))  # the mark's place on another slice: nothing there
    assert editor.selected is None

    press = editor.press(8, (44.5, 30), radius=RADIUS)  # the long axis's right end
    assert press.endpoint == (stored.id, 1)
    preview = editor.preview(press, np.array([50.0, 30.0]))
    np.testing.assert_allclose(preview[0], [[20, 30], [50, 30]])
    editor.release(press, np.array([50.0, 30.0]), moved=True)
    np.testing.assert_allclose(project.mark(stored.id).mark.long_axis[1], [50, 30])
    assert editor.selected == stored.id

    _drag(editor, 8, (50, 30), (70, 30))  # the end off the image: refused, nothing changes
    assert messages[-1].startswith("Edit refused: volume 'vol_a', field long_x2 = 70")
    np.testing.assert_allclose(project.mark(stored.id).mark.long_axis[1], [50, 30])
    _drag(editor, 8, (32, 24), (32, 4))  # short axis now longer than the long one
    assert messages[-1].startswith("Edit refused: short axis (32.0 px) longer than")
    np.testing.assert_allclose(project.mark(stored.id).mark.short_axis[0], [32, 24])


def test_undo_reverses_this_editors_changes_newest_first_in_the_store(project):
    messages = []
    editor = _editor(project, messages)
    _draw(editor)
    (stored,) = project.marks("vol_a")
    _drag(editor, 8, (44, 30), (48, 30))  # edit
    editor.delete_selected()
    assert project.marks("vol_a") == [] and project.mark(stored.id).deleted

    editor.undo()  # the delete
    assert [m.id for m in project.marks("vol_a")] == [stored.id]
    assert editor.selected == stored.id
    editor.undo()  # the edit
    np.testing.assert_allclose(project.mark(stored.id).mark.long_axis[1], [44, 30])
    _drag(editor, 3, (20, 30), (44, 30))  # a long axis waiting: undo drops it first
    editor.undo()
    assert editor.pending_long is None and project.marks("vol_a") != []
    editor.undo()  # the add
    assert project.marks("vol_a") == [] and editor.marks == {} and editor.selected is None
    editor.undo()  # nothing left
    assert project.marks("vol_a") == [] and messages == []


def test_marks_already_saved_are_edited_but_not_undone_past(project):
    """Undo covers this editor's changes only: a mark saved before it opened stays."""
    earlier = project.add_mark("vol_a", RecistMark.from_box((10, 10, 30, 30), z=4), author="rad")
    messages = []
    editor = _editor(project, messages, marks={earlier.id: earlier.mark})
    _click(editor, 4, earlier.mark.long_axis.mean(axis=0))
    assert editor.selected == earlier.id
    editor.delete_selected()
    editor.undo()
    editor.undo()
    assert [m.id for m in project.marks("vol_a")] == [earlier.id]


def test_without_a_store_marks_get_local_ids_and_undo_the_same_way():
    messages = []
    editor = RecistEditor(SHAPE, sink=None, notify=messages.append)
    _draw(editor)
    _draw(editor, z=9)
    assert sorted(editor.marks) == [-2, -1] and editor.selected == -2
    editor.delete_selected()
    assert list(editor.marks) == [-1]
    editor.undo()
    assert sorted(editor.marks) == [-2, -1]
    editor.undo()
    editor.undo()
    assert editor.marks == {} and messages == []


def test_a_click_on_no_mark_asks_for_a_suggestion_and_enter_saves_it(project):
    messages, shown = [], []
    suggested = RecistMark.from_box((28, 30, 46, 48), z=5)
    asked = []

    def suggest(z, point):
        asked.append((z, tuple(point)))
        return Suggestion(suggested, proposal_id=1, score=0.9) if z == 5 else None

    editor = _editor(project, messages, suggest=suggest, on_suggestion=shown.append)
    _click(editor, 4, (37, 40))
    assert editor.suggestion is None and shown == []  # nothing to suggest there
    _click(editor, 5, (37, 40))
    assert asked == [(4, (37.0, 40.0)), (5, (37.0, 40.0))]
    assert editor.suggestion.mark is suggested and shown == [editor.suggestion]
    assert [z for z, _segment in editor.guide_segments()] == [5, 5]  # its two axes
    assert project.marks("vol_a") == []

    editor.cancel_pending()  # Esc drops it
    assert editor.suggestion is None and shown[-1] is None
    _click(editor, 5, (37, 40))
    assert editor.accept_suggestion()
    (stored,) = project.marks("vol_a")
    np.testing.assert_allclose(stored.mark.box(), [28, 30, 46, 48])
    assert editor.selected == stored.id and editor.suggestion is None
    assert not editor.accept_suggestion()  # none left


def test_a_suggestion_off_the_image_is_refused(project):
    messages = []
    editor = _editor(
        project,
        messages,
        suggest=lambda z, point: Suggestion(RecistMark.from_box((50, 50, 70, 60), z=z), 1, 0.9),
    )
    _click(editor, 5, (60, 55))
    assert not editor.accept_suggestion()
    assert messages[-1].startswith("Suggested mark refused: volume 'vol_a', field ")
    assert messages[-1].endswith(". Draw the mark instead.")
    assert editor.suggestion is None and project.marks("vol_a") == []
