"""RECIST editing of one volume without a viewer: long axis, then short axis; select,
edit, delete, undo.

:class:`RecistEditor` holds the marks of the open volume, the selected mark, the
long axis waiting for its short axis, a suggested mark (draw assist) and the undo
stack, and applies the rules of a RECIST measurement: the short axis is drawn on
the long axis's slice, meets it at :data:`~napari_lesion_harvest.geometry.RECIST_ANGLE_RANGE_DEG`
and is not longer; both axes lie on the image (the store's own check and message,
:func:`~napari_lesion_harvest.store.rows.checked_mark_values`). Every completed
change goes to a :class:`MarkSink` (the project store) at once; Undo reverses the
changes of this editor, newest first, and the store follows at once.

Coordinates: a slice index ``z`` and pixel coordinates ``(x, y)`` (see
:mod:`~napari_lesion_harvest.geometry`); lengths (pick radius) are image pixels.
The napari binding (:mod:`napari_lesion_harvest.ui.recist_tool`) turns mouse events
into :meth:`RecistEditor.press` / :meth:`RecistEditor.release` and draws the state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from napari_lesion_harvest.annotation.draw_assist import Suggestion
from napari_lesion_harvest.geometry import RECIST_ANGLE_RANGE_DEG, RecistMark
from napari_lesion_harvest.store.errors import InvalidValueError, StoreError
from napari_lesion_harvest.store.rows import checked_mark_values


class MarkSink(Protocol):
    """Where completed marks go (the project store); every call is saved at once."""

    def add(self, mark: RecistMark) -> int:
        """Save a new mark and return its id."""

    def replace(self, mark_id: int, mark: RecistMark) -> int:
        """Replace mark ``mark_id`` by ``mark`` (an edit); return the id now holding it."""

    def delete(self, mark_id: int) -> None:
        """Delete mark ``mark_id`` (soft: it can be restored)."""

    def restore(self, mark_id: int) -> None:
        """Bring back a mark removed by :meth:`delete`."""


class StoreMarkSink:
    """Saves an editor's changes to a :class:`HarvestProject` at once.

    Parameters
    ----------
    project : HarvestProject
    volume_id : str
    author : str
    """

    def __init__(self, project, volume_id: str, *, author: str):
        self.project = project
        self.volume_id = volume_id
        self.author = author

    def add(self, mark: RecistMark) -> int:
        """Save a new expert mark; returns its id."""
        return self.project.add_mark(self.volume_id, mark, author=self.author).id

    def replace(self, mark_id: int, mark: RecistMark) -> int:
        """Save an edit of mark ``mark_id`` (same id)."""
        return self.project.edit_mark(mark_id, mark, author=self.author).id

    def delete(self, mark_id: int) -> None:
        """Soft-delete a mark."""
        self.project.delete_mark(mark_id, author=self.author)

    def restore(self, mark_id: int) -> None:
        """Bring a soft-deleted mark back."""
        self.project.restore_mark(mark_id, author=self.author)


@dataclass(frozen=True)
class _Edit:
    """One undoable change: ``kind`` is ``add``, ``delete`` or ``replace``."""

    kind: str
    mark_id: int
    before: RecistMark | None
    after: RecistMark | None


@dataclass(frozen=True)
class Press:
    """What a mouse press on slice ``z`` at ``start`` ``(x, y)`` holds.

    Attributes
    ----------
    z : int
    start : ndarray, shape (2,)
        ``(x, y)`` in pixels.
    endpoint : tuple of int or None
        ``(mark_id, endpoint 0..3)`` under the press (none while a long axis waits).
    near : int or None
        Id of the mark whose axes pass under the press.
    """

    z: int
    start: np.ndarray
    endpoint: tuple[int, int] | None
    near: int | None


def segment_distance(point, segment) -> float:
    """Distance from ``point`` ``(x, y)`` to ``segment``, shape (2, 2): two ``(x, y)`` ends."""
    a, b = segment
    ab = b - a
    denom = float(ab @ ab)
    t = 0.0 if denom == 0 else float(np.clip((point - a) @ ab / denom, 0.0, 1.0))
    return float(np.linalg.norm(point - (a + t * ab)))


def recist_problem(mark: RecistMark) -> str:
    """Why ``mark`` is not a valid RECIST measurement ('' when it is)."""
    long_px, short_px = mark.diameters_px()
    if not mark.is_perpendicular():
        return (
            f"axes meet at {mark.axis_angle_deg():.0f} degrees, "
            f"need {RECIST_ANGLE_RANGE_DEG[0]:.0f} to 90"
        )
    if short_px > long_px:
        return f"short axis ({short_px:.1f} px) longer than long axis ({long_px:.1f} px)"
    return ""


class RecistEditor:
    """Draw and edit the RECIST marks of one volume.

    Parameters
    ----------
    volume_shape : tuple of int
        ``(Z, Y, X)`` of the volume.
    sink : MarkSink or None
        Receives every completed add / edit / delete at once (None: not saved; new
        marks get negative ids).
    marks : dict of int -> RecistMark, optional
        Marks already in the store, by id.
    volume_id : str, optional
        Named in refusals.
    notify : callable, optional
        ``notify(message)`` for user-facing refusals.
    suggest : callable, optional
        Draw assist: ``suggest(z, point_xy) -> Suggestion | None`` for a click that
        hits no mark (:func:`~napari_lesion_harvest.annotation.draw_assist.suggest_mark`); the
        suggestion's ``mark`` is saved by :meth:`accept_suggestion`. None: no assist.
    on_suggestion : callable, optional
        ``on_suggestion(suggestion_or_None)`` whenever the suggestion changes.
    on_marks : callable, optional
        Called (no arguments) when the marks or the selection may have changed.
    on_guide : callable, optional
        Called (no arguments) when the pending long axis or the suggestion changed.
    """

    def __init__(
        self,
        volume_shape,
        *,
        sink: MarkSink | None,
        marks=None,
        volume_id: str = "",
        notify: Callable[[str], None] = print,
        suggest=None,
        on_suggestion=lambda suggestion: None,
        on_marks: Callable[[], None] = lambda: None,
        on_guide: Callable[[], None] = lambda: None,
    ):
        self.volume_shape = tuple(volume_shape)
        self.sink = sink
        self.marks: dict[int, RecistMark] = dict(marks or {})
        self.volume_id = volume_id
        self.notify = notify
        self.suggest = suggest
        self.on_suggestion = on_suggestion
        self.on_marks = on_marks
        self.on_guide = on_guide
        self.selected: int | None = None
        self.pending_long: tuple[int, np.ndarray] | None = None
        self.suggestion: Suggestion | None = None
        self._undo: list[_Edit] = []

    # ------------------------------------------------------------------ rules

    def off_image(self, mark: RecistMark, refusal: str) -> str:
        """``"<refusal>: <the store's reason>"`` when ``mark`` is not on the image, else ''."""
        try:
            checked_mark_values(mark, self.volume_shape, volume_id=self.volume_id, where=refusal)
        except InvalidValueError as error:
            return str(error)
        return ""

    def endpoint_at(self, z: int, point, *, radius: float) -> tuple[int, int] | None:
        """``(mark_id, endpoint 0..3)`` within ``radius`` pixels of ``point`` on slice ``z``."""
        best, best_dist = None, radius
        for mark_id, mark in self.marks.items():
            if mark.z != z:
                continue
            dists = np.linalg.norm(mark.endpoints - point, axis=1)
            k = int(np.argmin(dists))
            if dists[k] <= best_dist:
                best, best_dist = (mark_id, k), float(dists[k])
        return best

    def mark_near(self, z: int, point, *, radius: float) -> int | None:
        """Id of the mark whose axes pass within ``radius`` pixels of ``point`` on slice ``z``."""
        for mark_id, mark in self.marks.items():
            if (
                mark.z == z
                and min(
                    segment_distance(point, mark.long_axis),
                    segment_distance(point, mark.short_axis),
                )
                <= radius
            ):
                return mark_id
        return None

    def moved(self, endpoint: tuple[int, int], point) -> RecistMark:
        """Mark ``endpoint[0]`` with its endpoint ``endpoint[1]`` moved to ``point``."""
        mark_id, k = endpoint
        points = self.marks[mark_id].endpoints.copy()
        points[k] = point
        return RecistMark(z=self.marks[mark_id].z, long_axis=points[:2], short_axis=points[2:])

    # ------------------------------------------------------------------ mouse

    def press(self, z: int, point, *, radius: float) -> Press:
        """A press at ``point`` ``(x, y)`` on slice ``z``; ``radius``: the pick radius (pixels)."""
        start = np.asarray(point, dtype=np.float64)
        endpoint = self.endpoint_at(z, start, radius=radius) if self.pending_long is None else None
        return Press(z, start, endpoint, self.mark_near(z, start, radius=radius))

    def preview(self, press: Press, end) -> list[np.ndarray]:
        """Segments ``(2, 2)`` in ``(x, y)`` to show while the press is dragged to ``end``."""
        if press.endpoint is not None:
            return list(self.moved(press.endpoint, end).endpoints.reshape(2, 2, 2))
        return [np.array([press.start, end])]

    def release(self, press: Press, end, *, moved: bool) -> None:
        """The press ends at ``end``: a drag (``moved``) edits the endpoint it held or draws
        an axis; a click selects the mark under it, or asks for a suggestion."""
        if press.endpoint is not None and moved:
            self.finish_edit(press.endpoint, end)
        elif moved:
            self.set_suggestion(None)
            self.axis_drawn(press.z, np.array([press.start, end]))
        else:
            target = press.endpoint[0] if press.endpoint is not None else press.near
            if target is None and self.pending_long is None and self.suggest is not None:
                self.set_suggestion(self.suggest(press.z, press.start))
            self.select(target)

    # ------------------------------------------------------------------ drawing logic

    def axis_drawn(self, z: int, axis: np.ndarray) -> None:
        """An axis ``(2, 2)`` in ``(x, y)`` on slice ``z``: the long axis, or the short
        axis of the pending mark."""
        if self.pending_long is None or self.pending_long[0] != z:
            if self.pending_long is not None:
                self.notify("Short axis must be on the long axis's slice; starting a new mark.")
                self.pending_long = None
            outside = self.off_image(RecistMark(z, axis, axis), "Long axis refused")
            if outside:
                self.notify(f"{outside}. Draw it on the image.")
                return
            self.pending_long = (z, axis)
            self.select(None)
            return
        mark = RecistMark(z=z, long_axis=self.pending_long[1], short_axis=axis)
        problem = recist_problem(mark)
        if problem:
            self.notify(f"Short axis refused: {problem}. Draw it again (Esc cancels the mark).")
            return
        outside = self.off_image(mark, "Short axis refused")
        if outside:
            self.notify(f"{outside}. Draw it again on the image (Esc cancels the mark).")
            return
        if self._add(mark):
            self.pending_long = None

    def finish_edit(self, endpoint: tuple[int, int], point) -> None:
        """Move endpoint ``endpoint[1]`` of mark ``endpoint[0]`` to ``point`` (undoable)."""
        mark_id = endpoint[0]
        before, after = self.marks[mark_id], self.moved(endpoint, point)
        problem = recist_problem(after)
        problem = f"Edit refused: {problem}." if problem else self.off_image(after, "Edit refused")
        if problem:
            self.notify(problem)
            self.on_marks()
            return
        self._replace(mark_id, after, record=True, before=before)

    def set_suggestion(self, suggestion: Suggestion | None) -> None:
        """Show ``suggestion`` (None: none)."""
        if suggestion is not self.suggestion:
            self.suggestion = suggestion
            self.on_suggestion(suggestion)
            self.on_guide()

    def accept_suggestion(self) -> bool:
        """Save the suggested mark as the expert's own (then its ends can be dragged);
        False when there is none or it is refused."""
        suggestion = self.suggestion
        if suggestion is None:
            return False
        outside = self.off_image(suggestion.mark, "Suggested mark refused")
        if outside:
            self.notify(f"{outside}. Draw the mark instead.")
            self.set_suggestion(None)
            return False
        self.set_suggestion(None)
        return self._add(suggestion.mark)

    def guide_segments(self) -> list[tuple[int, np.ndarray]]:
        """``(z, segment (2, 2) in (x, y))``: the pending long axis and the perpendicular
        guide through its midpoint, or the suggested mark's axes, or nothing."""
        if self.pending_long is None:
            if self.suggestion is None:
                return []
            mark = self.suggestion.mark
            return [(mark.z, mark.long_axis), (mark.z, mark.short_axis)]
        z, axis = self.pending_long
        mid = axis.mean(axis=0)
        half = (axis[1] - axis[0]) / 2.0
        normal = np.array([-half[1], half[0]])
        return [(z, axis), (z, np.array([mid - normal, mid + normal]))]

    # ------------------------------------------------------------------ saving

    def _saved(self, save, refusal: str):
        """``save()``'s result; a change the store refuses (a mark outside the image, a
        full disk) is shown with :attr:`notify` and gives None."""
        try:
            return save()
        except StoreError as error:
            self.notify(f"{refusal}: {error}")
            return None

    def _add(self, mark: RecistMark) -> bool:
        """Save a new mark (undoable) and select it; False when the store refused it."""
        if self.sink is None:
            mark_id = -1 - len([k for k in self.marks if k < 0])
        else:
            mark_id = self._saved(lambda: self.sink.add(mark), "Mark not saved")
            if mark_id is None:
                return False
        self.marks[mark_id] = mark
        self._undo.append(_Edit("add", mark_id, None, mark))
        self.selected = mark_id
        self.on_marks()
        return True

    def _replace(self, mark_id: int, mark: RecistMark, *, record: bool, before=None) -> int:
        new_id = mark_id
        if self.sink is not None:
            new_id = self._saved(lambda: self.sink.replace(mark_id, mark), "Edit not saved")
            if new_id is None:
                self.on_marks()
                return mark_id
        del self.marks[mark_id]
        self.marks[new_id] = mark
        if record:
            self._undo.append(_Edit("replace", new_id, before, mark))
        self.selected = new_id
        self.on_marks()
        return new_id

    # ------------------------------------------------------------------ commands

    def select(self, mark_id: int | None) -> None:
        """Select a mark (``None`` clears the selection)."""
        if mark_id != self.selected:
            self.selected = mark_id
            self.on_marks()

    def cancel_pending(self) -> None:
        """Drop a long axis that has no short axis yet, and a suggested mark."""
        self.pending_long = None
        self.set_suggestion(None)
        self.on_guide()

    def delete_selected(self) -> None:
        """Delete the selected mark (soft delete in the store; undoable)."""
        if self.selected is None or self.selected not in self.marks:
            return
        mark_id = self.selected
        if self.sink is not None:
            self.sink.delete(mark_id)
        self._undo.append(_Edit("delete", mark_id, self.marks.pop(mark_id), None))
        self.selected = None
        self.on_marks()

    def undo(self) -> None:
        """Undo the last add, edit or delete of this editor (the store follows at once);
        a pending long axis is dropped first."""
        if self.pending_long is not None:
            self.cancel_pending()
            return
        if not self._undo:
            return
        edit = self._undo.pop()
        if edit.kind == "add":
            if self.sink is not None:
                self.sink.delete(edit.mark_id)
            self.marks.pop(edit.mark_id, None)
            self.selected = None
        elif edit.kind == "delete":
            if self.sink is not None:
                self.sink.restore(edit.mark_id)
            self.marks[edit.mark_id] = edit.before
            self.selected = edit.mark_id
        else:
            self._replace(edit.mark_id, edit.before, record=False)
        self.on_marks()
