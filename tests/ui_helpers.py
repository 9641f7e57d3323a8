"""Helpers for the GUI tests: real Qt mouse events on napari's canvas."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPoint, Qt
from qtpy.QtWidgets import QApplication


def canvas_point(viewer, pixel_xy, *, image=None) -> QPoint:
    """Canvas widget position of pixel ``(x, y)`` of ``image`` (default: the first layer).

    The slice is the viewer's (its world point); the layers have no rotation, so a
    pixel's in-plane world position does not depend on the slice.
    """
    image = viewer.layers[0] if image is None else image
    world = image.data_to_world([0.0, pixel_xy[1], pixel_xy[0]])
    canvas = viewer.window._qt_viewer.canvas
    transform = canvas.view.transform * canvas.view.scene.transform
    x, y = transform.map([world[-1], world[-2]])[:2]
    return QPoint(int(round(x)), int(round(y)))


def drag(qtbot, viewer, start_xy, end_xy, *, steps: int = 6, image=None) -> None:
    """Press at ``start_xy``, move in ``steps`` and release at ``end_xy`` (pixel coordinates
    of ``image``, default the first layer).

    The events are real Qt mouse events sent to napari's vispy canvas widget, so they
    travel vispy -> napari's mouse-event API -> the active layer's drag callbacks.
    """
    native = viewer.window._qt_viewer.canvas.native
    points = [
        canvas_point(
            viewer, np.asarray(start_xy) + (np.asarray(end_xy) - start_xy) * t, image=image
        )
        for t in np.linspace(0.0, 1.0, steps + 1)
    ]
    qtbot.mousePress(native, Qt.MouseButton.LeftButton, pos=points[0], delay=_press_delay())
    for point in points[1:]:
        qtbot.mouseMove(native, pos=point)
    qtbot.mouseRelease(native, Qt.MouseButton.LeftButton, pos=points[-1])


def click(qtbot, viewer, xy, *, image=None) -> None:
    """Press and release at pixel ``xy`` of ``image`` (default the first layer) without moving."""
    native = viewer.window._qt_viewer.canvas.native
    point = canvas_point(viewer, np.asarray(xy, dtype=float), image=image)
    qtbot.mousePress(native, Qt.MouseButton.LeftButton, pos=point, delay=_press_delay())
    qtbot.mouseRelease(native, Qt.MouseButton.LeftButton, pos=point)


def _press_delay() -> int:
    """Delay (ms) before a press: past the double-click interval, so two presses stay two.

    QTest advances its event timestamps by the delay and waits that long.
    """
    return QApplication.doubleClickInterval() + 50


def phantom_hu(shape=(12, 96, 96), seed: int = 0) -> np.ndarray:
    """A small CT-like volume in HU, shape ``(Z, Y, X)``: air, a soft-tissue body, two lesions."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    cy, cx = shape[1] / 2, shape[2] / 2
    hu = np.full(shape, -1000.0)
    body = ((y - cy) / (0.42 * shape[1])) ** 2 + ((x - cx) / (0.46 * shape[2])) ** 2 <= 1
    hu[body] = 40.0
    for lz, ly, lx, r in ((5, 40, 36, 7), (8, 60, 62, 5)):
        lesion = ((z - lz) * 2.0) ** 2 + (y - ly) ** 2 + (x - lx) ** 2 <= r**2
        hu[lesion] = 110.0
    return (hu + rng.normal(0, 8, shape)).astype(np.int16)


def make_project(folder, *, volume_ids=("vol_a", "vol_b"), spacing=(2.5, 0.8, 0.8)):
    """A real harvest project with phantom volumes stored as MHA files (reader ``simpleitk``).

    Returns the open :class:`HarvestProject`.
    """
    from napari_lesion_harvest.io.sitk_reader import write_sitk_volume
    from napari_lesion_harvest.io.volume import CTVolume
    from napari_lesion_harvest.store import VolumeRecord
    from tests.builders import new_project

    records = []
    for i, volume_id in enumerate(volume_ids):
        hu = phantom_hu(seed=i)
        path = folder.parent / f"{volume_id}.mha"
        write_sitk_volume(CTVolume.from_array(volume_id, hu, spacing), path)
        records.append(
            VolumeRecord(
                volume_id,
                "simpleitk",
                str(path),
                "V_H",
                shape=hu.shape,
                spacing=spacing,
                display_window=(-175.0, 275.0),
            )
        )
    return new_project(folder, records, author="test-import")


def when_dialog_shows(dialog_class, action, *, timeout_ms: int = 60_000) -> list:
    """Call ``action(dialog)`` on the next modal dialog of ``dialog_class`` once it shows
    (to fill it in and press its buttons); returns a list that gets the dialog."""
    from qtpy.QtCore import QElapsedTimer, QTimer

    seen: list = []
    clock = QElapsedTimer()
    clock.start()

    def poll():
        dialog = QApplication.activeModalWidget()
        if isinstance(dialog, dialog_class):
            seen.append(dialog)
            action(dialog)
            return
        if clock.elapsed() < timeout_ms:
            QTimer.singleShot(50, poll)

    QTimer.singleShot(50, poll)
    return seen


def answer_next_dialog(button_text: str, *, timeout_ms: int = 60_000) -> list[str]:
    """Click ``button_text`` on the next modal message box once it shows (a real
    ``QMessageBox``, answered as a person would); returns a list that gets the box's
    text and informative text when it was answered."""
    from qtpy.QtWidgets import QMessageBox

    answered: list[str] = []

    def click(box):
        (button,) = [b for b in box.buttons() if b.text().replace("&", "") == button_text]
        answered.extend([box.text(), box.informativeText()])
        button.click()

    when_dialog_shows(QMessageBox, click, timeout_ms=timeout_ms)
    return answered


def answer_next_file_dialog(path, *, timeout_ms: int = 60_000) -> list[str]:
    """In the next modal file dialog, go to the deepest existing folder of ``path``, type
    the rest in its name field and press its accept button, as a person would (the
    dialog's own checks apply); returns a list that gets the dialog's title."""
    from pathlib import Path

    from qtpy.QtWidgets import QDialogButtonBox, QFileDialog, QLineEdit

    path = Path(path)
    existing = next(parent for parent in path.parents if parent.is_dir())
    answered: list[str] = []

    def type_and_accept(dialog):
        answered.append(dialog.windowTitle())
        dialog.setDirectory(str(existing))
        dialog.findChild(QLineEdit, "fileNameEdit").setText(str(path.relative_to(existing)))
        box = dialog.findChild(QDialogButtonBox)
        box.button(QDialogButtonBox.StandardButton.Save).click()

    when_dialog_shows(QFileDialog, type_and_accept, timeout_ms=timeout_ms)
    return answered


def open_dock(
    make_napari_viewer, qtbot, folder, volume_id: str | None = None, *, docked: bool = False
):
    """A real viewer with the dock, the project at ``folder`` open (and ``volume_id``,
    when given, loaded); returns ``(viewer, dock)``.

    ``docked``: the dock is added to the viewer's window as a user sees it (right side),
    instead of standing alone.
    """
    from napari_lesion_harvest.ui.dock import HarvestDock

    viewer = make_napari_viewer(show=True)
    dock = HarvestDock(viewer, author="radiologist")
    if docked:
        viewer.window.add_dock_widget(dock, name="Lesion Harvest", area="right")
    else:
        qtbot.addWidget(dock)
    dock.open_project(folder)
    if volume_id is not None:
        with qtbot.waitSignal(dock.volume_opened, timeout=20_000):
            dock.open_volume(volume_id)
    return viewer, dock
