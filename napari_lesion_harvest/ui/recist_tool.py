"""RECIST drawing on axial slices: long axis, then short axis; select, edit, delete, undo.

The tool owns two napari Shapes layers over a CT image layer:

* ``RECIST marks``: every mark of the volume, drawn only on its own slice as
  the long axis (yellow), the short axis (cyan) and the box that training and
  evaluation use for it (thin, dim yellow: :meth:`RecistMark.box`, the axes'
  extent plus DeepLesion's 5-pixel margin), with the lengths in mm as text;
* ``RECIST guide``: the axis being drawn and, once the long axis is done, the
  perpendicular guide through its midpoint.

Every completed change goes to a :class:`MarkSink` (the project store) at once;
an axis with an end off the image is refused as it is drawn, with the store's
own message (:func:`~napari_lesion_harvest.store.rows.checked_mark_values`).
Coordinates: napari data coordinates of the image layer are ``(z, y, x)``; a
mark's endpoints are pixel coordinates ``(x, y)`` (see :mod:`geometry`). The
slice is the image layer's, read from the viewer's world point, so another
layer with another z scale does not shift it. Lengths on screen (line widths,
pick radius, the shortest drag that draws an axis) are screen pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from napari_lesion_harvest.geometry import RECIST_ANGLE_RANGE_DEG, RecistMark
from napari_lesion_harvest.ui.screen_units import ScreenWidths
from napari_lesion_harvest.ui.slices import shown_slice

LONG_AXIS_COLOUR = "#ffe600"
SHORT_AXIS_COLOUR = "#00e5ff"
BOX_COLOUR = "#ffe60080"
GUIDE_COLOUR = "#ffffff99"
SUGGESTION_COLOUR = "#7cfc00"
SELECTED_COLOUR = "#ff40ff"
#: Line widths on screen (pixels, at any zoom): axes, the selected mark's long axis,
#: the derived box.
AXIS_SCREEN_PX = 2.0
SELECTED_AXIS_SCREEN_PX = 3.0
BOX_SCREEN_PX = 1.0
#: Drags shorter than this on screen (pixels, at any zoom) are clicks, not axes.
MIN_AXIS_SCREEN_PX = 4.0
#: Pick radius for endpoints and lines, in screen pixels.
PICK_RADIUS_SCREEN_PX = 8.0


class MarkSink(Protocol):
    """Where completed marks go (the project store); every call is saved at once."""

    def add(self, mark: RecistMark) -> int:
        """Save a new mark and return its id."""

    def replace(self, mark_id: int, mark: RecistMark) -> int:
        """Replace mark ``mark_id`` by ``mark`` (an edit); return the id now holding it."""

    def delete(self, mark_id: int) -> None:
        """Delete mark ``mark_id`` (soft: it can be restored)."""

    def restore(self, mark_id: int) -> None:
        """Undo :meth:`delete`."""


@dataclass
class _Edit:
    """One undoable change: ``kind`` is ``add``, ``delete`` or ``replace``."""

    kind: str
    mark_id: int
    before: RecistMark | None
    after: RecistMark | None


def _segment_distance(point, segment) -> float:
    """Distance from ``point`` (x, y) to ``segment`` (2, 2)."""
    a, b = segment
    ab = b - a
    denom = float(ab @ ab)
    t = 0.0 if denom == 0 else float(np.clip((point - a) @ ab / denom, 0.0, 1.0))
    return float(np.linalg.norm(point - (a + t * ab)))


def mark_label(mark: RecistMark, pixel_spacing_yx) -> str:
    """Text shown next to a mark: ``"32.1 x 18.4 mm"`` (long x short)."""
    long_mm, short_mm = mark.diameters_mm(pixel_spacing_yx)
    return f"{long_mm:.1f} x {short_mm:.1f} mm"


class RecistTool:
    """Draw and edit RECIST marks on the axial slices of one volume.

    Parameters
    ----------
    viewer : napari.Viewer
    image_layer : napari.layers.Image
        The CT volume, data shape ``(Z, Y, X)``, scale = spacing ``(sz, sy, sx)`` mm.
    sink : MarkSink or None
        Receives every completed add / edit / delete at once (None: not saved).
    marks : dict of int -> RecistMark
        Marks already in the store, by id.
    notify : callable
        ``notify(message)`` for user-facing refusals (napari ``show_info``).
    suggest : callable, optional
        Draw assist: ``suggest(z, point_xy) -> Suggestion | None`` for a click
        that hits no mark (:func:`~napari_lesion_harvest.ui.draw_assist.suggest_mark`);
        Enter accepts the suggested mark, Esc drops it. None: no assist.
    on_suggestion : callable, optional
        ``on_suggestion(suggestion_or_None)`` whenever the suggestion changes.
    """

    def __init__(
        self,
        viewer,
        image_layer,
        *,
        sink: MarkSink | None,
        marks=None,
        notify=print,
        volume_id: str = "",
        suggest=None,
        on_suggestion=lambda suggestion: None,
    ):
        self.viewer = viewer
        self.image_layer = image_layer
        self.volume_id = volume_id
        self.sink = sink
        self.suggest = suggest
        self.on_suggestion = on_suggestion
        self.suggestion = None
        self.notify = notify
        self.marks: dict[int, RecistMark] = dict(marks or {})
        self.selected: int | None = None
        self.pending_long: tuple[int, np.ndarray] | None = None
        self._undo: list[_Edit] = []
        scale = tuple(image_layer.scale)
        self.pixel_spacing_yx = (float(scale[-2]), float(scale[-1]))
        self.guide_layer = viewer.add_shapes(
            ndim=3, scale=scale, name="RECIST guide", face_color="transparent"
        )
        self.marks_layer = viewer.add_shapes(
            ndim=3,
            scale=scale,
            name="RECIST marks",
            face_color="transparent",
            features={"label": np.array([], dtype=str)},
            text={
                "string": "{label}",
                "color": LONG_AXIS_COLOUR,
                "size": 10,
                "anchor": "upper_left",
            },
        )
        self.widths = ScreenWidths(viewer, self.pixel_spacing_yx[1], self.render)
        self.marks_layer.mouse_drag_callbacks.append(self._on_drag)
        self.marks_layer.events.mode.connect(self._keep_drawing_mode)
        for key, action in (
            ("Escape", self.cancel_pending),
            ("Enter", self.accept_suggestion),
            ("Delete", self.delete_selected),
            ("Backspace", self.delete_selected),
            ("Control-z", self.undo),
        ):
            self.marks_layer.bind_key(key, lambda _layer, a=action: a(), overwrite=True)
        self.activate()
        self.render()

    # ------------------------------------------------------------------ layer state

    def activate(self) -> None:
        """Make the marks layer active in drawing mode (no camera pan on drag)."""
        self.viewer.layers.selection.active = self.marks_layer
        self.marks_layer.mode = "pan_zoom"
        self.marks_layer.mouse_pan = False

    def _keep_drawing_mode(self, event=None) -> None:
        if self.marks_layer.mode == "pan_zoom":
            self.marks_layer.mouse_pan = False

    def remove_layers(self) -> None:
        """Take the tool's layers out of the viewer (when the volume closes)."""
        self.widths.close()
        for layer in (self.marks_layer, self.guide_layer):
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)

    # ------------------------------------------------------------------ coordinates

    def _event_point(self, event) -> tuple[int, np.ndarray]:
        """Slice index and pixel coordinate ``(x, y)`` of a mouse event."""
        data = np.asarray(self.image_layer.world_to_data(event.position), dtype=np.float64)
        if data.size < 3:
            return shown_slice(self.viewer, self.image_layer), np.array([data[-1], data[-2]])
        return int(np.round(data[-3])), np.array([data[-1], data[-2]])

    def off_image(self, mark: RecistMark, refusal: str) -> str:
        """``"<refusal>: <the store's reason>"`` when ``mark`` is not on the image, else ''."""
        from napari_lesion_harvest.store.errors import InvalidValueError
        from napari_lesion_harvest.store.rows import checked_mark_values

        try:
            checked_mark_values(
                mark, self.image_layer.data.shape, volume_id=self.volume_id, where=refusal
            )
        except InvalidValueError as error:
            return str(error)
        return ""

    def _pick_radius_px(self) -> float:
        zoom = float(self.viewer.scene.camera.zoom) or 1.0
        return PICK_RADIUS_SCREEN_PX / (zoom * self.pixel_spacing_yx[1])

    def _endpoint_at(self, z: int, point) -> tuple[int, int] | None:
        """``(mark_id, endpoint 0..3)`` within the pick radius on slice ``z``."""
        best, best_dist = None, self._pick_radius_px()
        for mark_id, mark in self.marks.items():
            if mark.z != z:
                continue
            dists = np.linalg.norm(mark.endpoints - point, axis=1)
            k = int(np.argmin(dists))
            if dists[k] <= best_dist:
                best, best_dist = (mark_id, k), float(dists[k])
        return best

    def _mark_near(self, z: int, point) -> int | None:
        """Id of the mark whose axes pass within the pick radius on slice ``z``."""
        radius = self._pick_radius_px()
        for mark_id, mark in self.marks.items():
            if (
                mark.z == z
                and min(
                    _segment_distance(point, mark.long_axis),
                    _segment_distance(point, mark.short_axis),
                )
                <= radius
            ):
                return mark_id
        return None

    # ------------------------------------------------------------------ mouse

    def _on_drag(self, layer, event):
        """napari drag callback: edit an endpoint, select a mark, or draw an axis."""
        if layer.mode != "pan_zoom":
            return
        z, start = self._event_point(event)
        endpoint = self._endpoint_at(z, start) if self.pending_long is None else None
        near = self._mark_near(z, start)
        yield
        while event.type == "mouse_move":
            _, end = self._event_point(event)
            if endpoint is not None:
                self._draw_preview(z, self._moved(endpoint, end).endpoints.reshape(2, 2, 2))
            else:
                self._draw_preview(z, [np.array([start, end])])
            yield
        _, end = self._event_point(event)  # the release position decides, not the moves seen
        moved = np.linalg.norm(end - start) >= self.widths.image_px(MIN_AXIS_SCREEN_PX)
        if endpoint is not None and moved:
            self._finish_edit(endpoint, end)
        elif moved:
            self._set_suggestion(None)
            self._axis_drawn(z, np.array([start, end]))
        else:
            target = endpoint[0] if endpoint is not None else near
            if target is None and self.pending_long is None and self.suggest is not None:
                self._set_suggestion(self.suggest(z, start))
            self.select(target)
        self._draw_guide()

    def _moved(self, endpoint: tuple[int, int], point) -> RecistMark:
        mark_id, k = endpoint
        points = self.marks[mark_id].endpoints.copy()
        points[k] = point
        return RecistMark(z=self.marks[mark_id].z, long_axis=points[:2], short_axis=points[2:])

    # ------------------------------------------------------------------ drawing logic

    def _axis_drawn(self, z: int, axis: np.ndarray) -> None:
        """A drag finished: it is the long axis, or the short axis of the pending mark."""
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
        problem = self._problem(mark)
        if problem:
            self.notify(f"Short axis refused: {problem}. Draw it again (Esc cancels the mark).")
            return
        outside = self.off_image(mark, "Short axis refused")
        if outside:
            self.notify(f"{outside}. Draw it again on the image (Esc cancels the mark).")
            return
        if self._add(mark):
            self.pending_long = None

    def _add(self, mark: RecistMark) -> bool:
        """Save a new mark (undoable) and select it; False when the store refused it."""
        if self.sink is None:
            mark_id = self._next_local_id()
        else:
            mark_id = self._saved(lambda: self.sink.add(mark), "Mark not saved")
            if mark_id is None:
                return False
        self.marks[mark_id] = mark
        self._undo.append(_Edit("add", mark_id, None, mark))
        self.selected = mark_id
        self.render()
        return True

    def _set_suggestion(self, suggestion) -> None:
        if suggestion is not self.suggestion:
            self.suggestion = suggestion
            self.on_suggestion(suggestion)
            self._draw_guide()

    def accept_suggestion(self) -> bool:
        """Save the suggested mark as the expert's own (then its ends can be dragged);
        False when there is none or it is refused."""
        suggestion = self.suggestion
        if suggestion is None:
            return False
        outside = self.off_image(suggestion.mark, "Suggested mark refused")
        if outside:
            self.notify(f"{outside}. Draw the mark instead.")
            self._set_suggestion(None)
            return False
        self._set_suggestion(None)
        return self._add(suggestion.mark)

    def _next_local_id(self) -> int:
        return -1 - len([k for k in self.marks if k < 0])

    @staticmethod
    def _problem(mark: RecistMark) -> str:
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

    def _finish_edit(self, endpoint: tuple[int, int], point) -> None:
        mark_id = endpoint[0]
        before, after = self.marks[mark_id], self._moved(endpoint, point)
        problem = self._problem(after)
        problem = f"Edit refused: {problem}." if problem else self.off_image(after, "Edit refused")
        if problem:
            self.notify(problem)
            self.render()
            return
        self._replace(mark_id, after, record=True, before=before)

    def _saved(self, save, refusal: str):
        """``save()``'s result; a change the store refuses (a mark outside the image, a
        full disk) is shown with :attr:`notify` and gives None."""
        from napari_lesion_harvest.store.errors import StoreError

        try:
            return save()
        except StoreError as error:
            self.notify(f"{refusal}: {error}")
            return None

    def _replace(self, mark_id: int, mark: RecistMark, *, record: bool, before=None) -> int:
        new_id = mark_id
        if self.sink is not None:
            new_id = self._saved(lambda: self.sink.replace(mark_id, mark), "Edit not saved")
            if new_id is None:
                self.render()
                return mark_id
        del self.marks[mark_id]
        self.marks[new_id] = mark
        if record:
            self._undo.append(_Edit("replace", new_id, before, mark))
        self.selected = new_id
        self.render()
        return new_id

    # ------------------------------------------------------------------ commands

    def select(self, mark_id: int | None) -> None:
        """Select a mark (``None`` clears the selection)."""
        if mark_id != self.selected:
            self.selected = mark_id
            self.render()

    def cancel_pending(self) -> None:
        """Drop a long axis that has no short axis yet, and a suggested mark."""
        self.pending_long = None
        self._set_suggestion(None)
        self._draw_guide()

    def delete_selected(self) -> None:
        """Delete the selected mark (soft delete in the store; undoable)."""
        if self.selected is None or self.selected not in self.marks:
            return
        mark_id = self.selected
        if self.sink is not None:
            self.sink.delete(mark_id)
        self._undo.append(_Edit("delete", mark_id, self.marks.pop(mark_id), None))
        self.selected = None
        self.render()

    def undo(self) -> None:
        """Undo the last add, edit or delete (the store follows at once)."""
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
        self.render()

    # ------------------------------------------------------------------ rendering

    def _draw_preview(self, z: int, segments) -> None:
        lines = [self._line(z, seg) for seg in segments]
        self._set_guide(lines + self._guide_lines())

    def _draw_guide(self) -> None:
        self._set_guide(self._guide_lines())

    def _guide_lines(self) -> list[np.ndarray]:
        """The pending long axis and the perpendicular guide through its midpoint, or the
        suggested mark's axes."""
        if self.pending_long is None:
            if self.suggestion is None:
                return []
            mark = self.suggestion.mark
            return [self._line(mark.z, mark.long_axis), self._line(mark.z, mark.short_axis)]
        z, axis = self.pending_long
        mid = axis.mean(axis=0)
        half = (axis[1] - axis[0]) / 2.0
        normal = np.array([-half[1], half[0]])
        return [self._line(z, axis), self._line(z, np.array([mid - normal, mid + normal]))]

    def _set_guide(self, lines: list[np.ndarray]) -> None:
        layer = self.guide_layer
        layer.data = []
        if lines:
            if self.pending_long is None and self.suggestion is not None:
                colours = [SUGGESTION_COLOUR] * len(lines)
            else:
                colours = [LONG_AXIS_COLOUR] + [GUIDE_COLOUR] * (len(lines) - 1)
            layer.add_lines(
                lines, edge_color=colours, edge_width=self.widths.image_px(AXIS_SCREEN_PX)
            )

    @staticmethod
    def _line(z: int, segment) -> np.ndarray:
        """napari line ``(2, 3)`` in ``(z, y, x)`` from an ``(x, y)`` segment."""
        seg = np.asarray(segment, dtype=np.float64)
        return np.column_stack([[z, z], seg[:, 1], seg[:, 0]])

    @staticmethod
    def _rectangle(z: int, box) -> np.ndarray:
        x1, y1, x2, y2 = box
        return np.array([[z, y1, x1], [z, y1, x2], [z, y2, x2], [z, y2, x1]], dtype=np.float64)

    def render(self) -> None:
        """Redraw every mark (line pairs, derived boxes, lengths) from :attr:`marks`."""
        data, types, colours, widths, labels = [], [], [], [], []
        axis, selected_axis, box = (
            self.widths.image_px(w)
            for w in (AXIS_SCREEN_PX, SELECTED_AXIS_SCREEN_PX, BOX_SCREEN_PX)
        )
        for mark_id, mark in self.marks.items():
            selected = mark_id == self.selected
            long_colour = SELECTED_COLOUR if selected else LONG_AXIS_COLOUR
            data += [
                self._line(mark.z, mark.long_axis),
                self._line(mark.z, mark.short_axis),
                self._rectangle(mark.z, mark.box()),
            ]
            types += ["line", "line", "rectangle"]
            colours += [long_colour, SHORT_AXIS_COLOUR, BOX_COLOUR]
            widths += [selected_axis if selected else axis, axis, box]
            labels += ["", "", mark_label(mark, self.pixel_spacing_yx)]  # above the box
        layer = self.marks_layer
        with layer.events.mode.blocker():
            layer.selected_data = set()
            layer.data = []
            if data:
                layer.add(data, shape_type=types, edge_color=colours, edge_width=widths)
            layer.features = {"label": np.array(labels, dtype=str)}
        layer.refresh_text()
