"""Overlay line widths given in screen pixels, whatever the zoom.

napari draws Shapes edges in data units (image pixels here), so a fixed width
is a hairline on a 512-pixel slice seen whole and a bar hiding the lesion's
edge once zoomed in on a small lesion. :class:`ScreenWidths` converts screen
pixels to image pixels at the current zoom and calls back once a zoom gesture
has settled, so the overlay redraws its edges once, not at every wheel step.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QTimer

#: How long the zoom must stay still before the overlay redraws (ms).
SETTLE_MS = 120


class ScreenWidths:
    """Screen-pixel widths in image pixels for one viewer and pixel spacing.

    Parameters
    ----------
    viewer : napari.Viewer
    pixel_spacing : float
        Size of an image pixel along x in world units (mm): the layers' scale.
    on_zoom : callable
        Called (no arguments) once the zoom has changed and settled.
    """

    def __init__(self, viewer, pixel_spacing: float, on_zoom: Callable[[], None]):
        self.viewer = viewer
        self.pixel_spacing = float(pixel_spacing)
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(SETTLE_MS)
        self._timer.timeout.connect(on_zoom)
        viewer.scene.camera.events.zoom.connect(self._on_zoom)

    def image_px(self, screen_px: float) -> float:
        """``screen_px`` screen pixels in image pixels at the current zoom."""
        zoom = float(self.viewer.scene.camera.zoom) or 1.0
        return float(screen_px) / (zoom * self.pixel_spacing)

    def close(self) -> None:
        """Stop following the zoom."""
        self._timer.stop()
        self.viewer.scene.camera.events.zoom.disconnect(self._on_zoom)

    def _on_zoom(self, event=None) -> None:
        self._timer.start()
