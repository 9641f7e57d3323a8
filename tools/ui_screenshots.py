"""Screenshots of the real napari window with the Lesion Harvest dock, before and after
real rounds.

Usage (under Xvfb)::

    OMP_NUM_THREADS=1 QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python tools/ui_screenshots.py WORK_DIR docs/images

Builds the engine tests' blob project in WORK_DIR
(:func:`napari_lesion_harvest.harvest.blob_project.make_blob_project`: 18 CT volumes of
12 x 64 x 64 voxels with bright ellipsoid lesions and vessel look-alikes; 4 volumes
fully marked and complete (V_M), 6 held out (V_H_test), the rest V_H with one original
mark each), runs two harvest rounds in subprocesses exactly as the dock's "Run harvest
round" does (CPU; the configuration of ``tests/test_harvest_end_to_end.py``, under which
the two rounds harvest lesions at precision 1.0; a few minutes), then saves:

``ui_first_launch.png``
    the dock as a new user first sees it, with napari's sample open: no
    project, and what to do (start a demo project, or create one);
``ui_review_filtered.png``
    a V_H volume on the best slice of a harvested lesion (preferring one seen
    on the slice of an original mark): the original mark, and the proposals of
    the review's default view (harvested lesions and those near the threshold)
    with few labels on dark plates; soft-tissue window;
``ui_results_panel.png``
    Table I rows of both rounds and their PR / FROC curves;
``ui_round_running.png``
    the Round tab while a third round runs: expected duration, stage, its
    progress bar and the time left (the round is then stopped).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

#: The engine test project's sizes and the overrides of tests/test_harvest_end_to_end.py.
N_VOLUMES = 18
N_TEST = 6
ROUNDS = 2
CONFIG_OVERRIDES = {"lpg.train_steps": 250, "lpc.epochs": 6}


def build_project(work: Path) -> Path:
    """Write the blob project and run :data:`ROUNDS` rounds; returns the project folder."""
    from napari_lesion_harvest.harvest.blob_project import TINY_CONFIG, make_blob_project
    from napari_lesion_harvest.ui.round_runner import round_command

    project_dir = make_blob_project(work, n_volumes=N_VOLUMES, n_test=N_TEST)
    config = work / "screenshots.json"
    config.write_text(json.dumps({**TINY_CONFIG, **CONFIG_OVERRIDES}))
    command = round_command(project_dir, config=str(config), device="cpu")
    for _ in range(ROUNDS):
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return project_dir


def mark_and_harvest_view(project_dir: Path) -> tuple[str, int]:
    """A V_H volume and a harvested lesion of the latest round seen on a marked slice.

    Prefers a harvested proposal spanning the slice of one of the volume's marks
    (both on screen), then the volume with the most harvested lesions.

    Returns
    -------
    volume_id : str
    proposal_id : int
        The harvested proposal to review first.
    """
    from napari_lesion_harvest.store import HarvestProject

    with HarvestProject.open(project_dir) as project:
        number = project.latest_done_round()
        vh = {v.volume_id for v in project.volumes(split="V_H")}
        harvested = [p for p in project.proposals(number, roles=("P_pos_H",)) if p.volume_id in vh]
        counts = {v: sum(p.volume_id == v for p in harvested) for v in vh}
        marked = {(m.volume_id, m.mark.z) for v in vh for m in project.marks(v)}

    def view_score(stored) -> tuple:
        on_mark = any((stored.volume_id, int(z)) in marked for z in stored.proposal.slices)
        return on_mark, counts[stored.volume_id], stored.s_gc or 0.0

    best = max(harvested, key=view_score)
    return best.volume_id, best.id


def take_screenshots(
    project_dir: Path, volume_id: str, proposal_id: int, out: Path, *, config: Path
) -> list[Path]:
    """Open a real napari window and save the four screenshots (see the module notes)."""
    import time

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_lesion_harvest.ui.dock import HarvestDock

    def settle(turns: int = 30) -> None:
        for _ in range(turns):
            QApplication.processEvents()

    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1560, 960)
    dock = HarvestDock(viewer, author="screenshots")
    viewer.window.add_dock_widget(dock, name="Lesion Harvest", area="right")
    saved = []

    def shoot(name: str) -> None:
        settle()
        path = out / name
        viewer.screenshot(str(path), canvas_only=False)
        saved.append(path)

    viewer.open_sample("napari-lesion-harvest", "synthetic_ct")  # a new user's first try
    shoot("ui_first_launch.png")
    viewer.layers.clear()

    dock.open_project(project_dir)
    opened = []
    dock.volume_opened.connect(opened.append)
    dock.open_volume(volume_id)
    while not opened:
        QApplication.processEvents()
    dock.set_window("soft tissue")
    ids = [item.proposal_id for item in dock.review.items]  # the default view
    dock.review.go_to(ids.index(proposal_id))  # its best slice, highlighted
    spanned = {int(z) for z in dock.review.current_item.proposal.slices}
    marked = [m.mark.z for m in dock.project.marks(volume_id) if m.mark.z in spanned]
    if marked:  # the slice where the original mark is drawn too
        image = dock.volume_view.image_layer
        viewer.dims.set_point(0, image.data_to_world([marked[0], 0, 0])[0])
    viewer.reset_view()  # the whole slice
    shoot("ui_review_filtered.png")
    dock.tabs.setCurrentWidget(dock.results)
    shoot("ui_results_panel.png")

    panel = dock.round_panel
    dock.tabs.setCurrentWidget(panel)
    panel.set_config(str(config))
    panel.device_box.setCurrentText("cpu")
    panel.start_round()
    started = time.monotonic()
    while not (panel.clock.stage == "train_lpg" and panel.clock.fraction >= 0.2):
        QApplication.processEvents()
        time.sleep(0.05)
        if not panel.runner.running or time.monotonic() - started > 900:
            raise RuntimeError(f"the third round did not train: {panel.status_label.text()}")
    shoot("ui_round_running.png")
    panel.stop_and_wait(120)
    dock.close_project()
    viewer.close()
    return saved


def main(work_dir: str, out_dir: str) -> None:
    import os

    work = Path(work_dir)
    os.environ.setdefault("LESION_HARVEST_CONFIG", str(work / "settings"))
    project_dir = work / "project"
    if not project_dir.exists():
        project_dir = build_project(work)
    volume_id, proposal_id = mark_and_harvest_view(project_dir)
    config = work / "screenshots.json"
    for path in take_screenshots(
        project_dir, volume_id, proposal_id, Path(out_dir), config=config
    ):
        print(f"saved {path} ({volume_id}, proposal {proposal_id})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", help="the blob project is built (or found) here")
    parser.add_argument("out_dir", help="the screenshots are saved here, e.g. docs/images")
    args = parser.parse_args()
    main(args.work_dir, args.out_dir)
