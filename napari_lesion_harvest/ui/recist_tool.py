"""The napari binding of :class:`~napari_lesion_harvest.annotation.recist_editor.RecistEditor`:
RECIST marks drawn and edited with the mouse on axial slices.

The tool owns two napari Shapes layers over a CT image layer:

* ``RECIST marks``: every mark of the volume, drawn only on its own slice as
  the long axis (yellow), the short axis (cyan) and the box that training and
  evaluation use for it (thin, dim yellow: :meth:`RecistMark.box`, the axes'
  extent plus DeepLesion's 5-pixel margin), with the lengths in mm as text;
* ``RECIST guide``: the axis being drawn and, once the long axis is done, the
  perpendicular guide through its midpoint.

Mouse drags on the marks layer go to the editor (:meth:`RecistEditor.press`,
:meth:`RecistEditor.release`), which holds the marks, applies the rules and saves;
the tool draws the editor's state. Coordinates: napari data coordinates of the
image layer are ``(z, y, x)``; a mark's endpoints are pixel coordinates ``(x, y)``
(see :mod:`geometry`). The slice is the image layer's, read from the viewer's
world point, so another layer with another z scale does not shift it. Lengths on
screen (line widths, pick radius, the shortest drag that draws an axis) are
screen pixels.
"""

from __future__ import annotations

import numpy as np

from napari_lesion_harvest.annotation.recist_editor import RecistEditor
from napari_lesion_harvest.geometry import RecistMark
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


def mark_label(mark: RecistMark, pixel_spacing_yx) -> str:
    """Text shown next to a mark: ``"32.1 x 18.4 mm"`` (long x short)."""
    long_mm, short_mm = mark.diameters_mm(pixel_spacing_yx)
    return f"{long_mm:.1f} x {short_mm:.1f} mm"


class RecistTool:
    """Draw and edit RECIST marks on the axial slices of one volume in a napari viewer.

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
    volume_id : str
        Named in refusals.
    suggest, on_suggestion : callable, optional
        Draw assist, as :class:`RecistEditor`; Enter accepts the suggested mark, Esc
        drops it.

    Attributes
    ----------
    editor : RecistEditor
        The marks, selection, pending long axis, suggestion and undo stack.
    """

    def __init__(
        self,
        viewer,
        image_layer,
        *,
        sink,
        marks=None,
        notify=print,
        volume_id: str = "",
        suggest=None,
        on_suggestion=lambda suggestion: None,
    ):
        self.viewer = viewer
        self.image_layer = image_layer
        self.editor = RecistEditor(
            image_layer.data.shape,
            sink=sink,
            marks=marks,
            volume_id=volume_id,
            notify=notify,
            suggest=suggest,
            on_suggestion=on_suggestion,
            on_marks=self.render,
            on_guide=self._draw_guide,
        )
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
        editor = self.editor
        for key, action in (
            ("Escape", editor.cancel_pending),
            ("Enter", editor.accept_suggestion),
            ("Delete", editor.delete_selected),
            ("Backspace", editor.delete_selected),
            ("Control-z", editor.undo),
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

    # ------------------------------------------------------------------ mouse

    def _event_point(self, event) -> tuple[int, np.ndarray]:
        """Slice index and pixel coordinate ``(x, y)`` of a mouse event."""
        data = np.asarray(self.image_layer.world_to_data(event.position), dtype=np.float64)
        if data.size < 3:
            return shown_slice(self.viewer, self.image_layer), np.array([data[-1], data[-2]])
        return int(np.round(data[-3])), np.array([data[-1], data[-2]])

    def _on_drag(self, layer, event):
        """napari drag callback: edit an endpoint, select a mark, or draw an axis."""
        if layer.mode != "pan_zoom":
            return
        z, start = self._event_point(event)
        press = self.editor.press(z, start, radius=self.widths.image_px(PICK_RADIUS_SCREEN_PX))
        yield
        while event.type == "mouse_move":
            _, end = self._event_point(event)
            self._draw_preview(z, self.editor.preview(press, end))
            yield
        _, end = self._event_point(event)  # the release position decides, not the moves seen
        moved = np.linalg.norm(end - start) >= self.widths.image_px(MIN_AXIS_SCREEN_PX)
        self.editor.release(press, end, moved=moved)
        self._draw_guide()

    # ------------------------------------------------------------------ rendering

    def _draw_preview(self, z: int, segments) -> None:
        lines = [self._line(z, seg) for seg in segments]
        self._set_guide(lines + self._guide_lines())

    def _draw_guide(self) -> None:
        self._set_guide(self._guide_lines())

    def _guide_lines(self) -> list[np.ndarray]:
        return [self._line(z, segment) for z, segment in self.editor.guide_segments()]

    def _set_guide(self, lines: list[np.ndarray]) -> None:
        layer = self.guide_layer
        layer.data = []
        if lines:
            if self.editor.pending_long is None and self.editor.suggestion is not None:
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
        """Redraw every mark (line pairs, derived boxes, lengths) from the editor's marks."""
        data, types, colours, widths, labels = [], [], [], [], []
        axis, selected_axis, box = (
            self.widths.image_px(w)
            for w in (AXIS_SCREEN_PX, SELECTED_AXIS_SCREEN_PX, BOX_SCREEN_PX)
        )
        for mark_id, mark in self.editor.marks.items():
            selected = mark_id == self.editor.selected
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
