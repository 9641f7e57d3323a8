"""Screenshots of the real napari window with the Lesion Harvest dock (run under Xvfb).

Usage::

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python benchmarks/ui_screenshots.py PROJECT VOLUME_ID docs/images

PROJECT is a harvest project with at least one finished round (e.g. the demo's);
the script opens VOLUME_ID, draws nothing new, and saves:
``volume_soft_tissue.png`` (marks and proposals, soft-tissue window, review list),
``results_panel.png`` (Table I and curves of the rounds).
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(project: str, volume_id: str, out_dir: str) -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_lesion_harvest.ui.dock import HarvestDock

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1560, 960)
    dock = HarvestDock(viewer, author="screenshots")
    viewer.window.add_dock_widget(dock, name="Lesion Harvest", area="right")
    dock.open_project(project)
    opened = []
    dock.volume_opened.connect(opened.append)
    dock.open_volume(volume_id)
    while not opened:
        QApplication.processEvents()
    viewer.reset_view()
    dock.review.next()  # jump to the best proposal
    for _ in range(20):
        QApplication.processEvents()
    viewer.screenshot(str(out / "volume_soft_tissue.png"), canvas_only=False)
    dock.tabs.setCurrentIndex(3)
    for _ in range(20):
        QApplication.processEvents()
    viewer.screenshot(str(out / "results_panel.png"), canvas_only=False)
    dock.close_project()
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
