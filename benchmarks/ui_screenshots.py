"""Screenshots of the real napari window with the Lesion Harvest dock after a real round.

Usage (under Xvfb)::

    OMP_NUM_THREADS=1 QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python benchmarks/ui_screenshots.py WORK_DIR docs/images

Builds a phantom project in WORK_DIR (6 volumes of 128 x 128 px made by the
synthetic generator, imported as a DeepLesion folder; 2 volumes fully
annotated with their truth as expert marks and complete (V_M), 1 held out as
V_H_test), runs one harvest round in a subprocess exactly as the dock's
"Run harvest round" does (CPU, a small config), then opens the V_H volume with
the most proposals and saves:

``ui_volume_review_soft_tissue.png``
    marks and proposals on the proposal's best slice, soft-tissue window, with
    the review list;
``ui_results_panel.png``
    Table I rows and the PR / FROC curves of the round.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

#: A round that takes about a minute on one CPU core at 128 px.
SMALL_CONFIG = {
    "preset": "lite",
    "lpg_max_side": 128,
    "lpg_train_steps": 120,
    "lpg_finetune_steps": 20,
    "lpg_batch_size": 4,
    "lpg_learning_rate": 0.003,
    "lpc_epochs": 4,
    "lpc_patch_size": 32,
    "folds": 2,
    "max_rounds": 1,
}
N_VOLUMES = 6
N_COMPLETE = 2


def build_project(work: Path) -> Path:
    """Generate, import, annotate and run one round; returns the project folder."""
    from napari_lesion_harvest.harvest.importing import import_sources
    from napari_lesion_harvest.io.annotations import read_marks
    from napari_lesion_harvest.store import HarvestProject
    from napari_lesion_harvest.synthetic.dataset import generate_dataset
    from napari_lesion_harvest.synthetic.phantom import PhantomConfig
    from napari_lesion_harvest.ui.round_runner import round_command

    dataset = generate_dataset(
        work / "data", volumes=N_VOLUMES, seed=3, config=PhantomConfig(size=128)
    )
    truth, _report = read_marks(dataset.truth_marks)
    project_dir = work / "project"
    ids = list(dataset.volume_ids)
    complete, held_out = ids[:N_COMPLETE], ids[N_COMPLETE]
    with HarvestProject.open(project_dir, create=True) as project:
        import_sources(project, [dataset.root], author="import")
        project.set_split(held_out, "V_H_test", author="radiologist")
        expert = [(r.volume_id, r.mark) for r in truth if r.volume_id in {*complete, held_out}]
        project.add_marks(expert, author="radiologist", origin="expert")
        for volume_id in complete:
            project.set_volume_complete(volume_id, author="radiologist")
    config = work / "small.json"
    config.write_text(json.dumps(SMALL_CONFIG))
    command = round_command(project_dir, config=str(config), device="cpu")
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return project_dir


def busiest_vh_volume(project_dir: Path) -> str:
    """The V_H volume with the most proposals in the latest round."""
    from napari_lesion_harvest.store import HarvestProject

    with HarvestProject.open(project_dir) as project:
        summaries = [s for s in project.volume_summaries() if s.split == "V_H"]
    return max(summaries, key=lambda s: (s.n_proposals, s.n_marks)).volume_id


def take_screenshots(project_dir: Path, volume_id: str, out: Path) -> list[Path]:
    """Open the volume in a real napari window and save the two screenshots."""
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
    dock.open_project(project_dir)
    opened = []
    dock.volume_opened.connect(opened.append)
    dock.open_volume(volume_id)
    while not opened:
        QApplication.processEvents()
    dock.set_window("soft tissue")
    dock.review.next()  # jump to the best proposal
    viewer.scene.camera.zoom *= 1.6
    settle()
    saved = [out / "ui_volume_review_soft_tissue.png", out / "ui_results_panel.png"]
    viewer.screenshot(str(saved[0]), canvas_only=False)
    dock.tabs.setCurrentWidget(dock.results)
    settle()
    viewer.screenshot(str(saved[1]), canvas_only=False)
    dock.close_project()
    viewer.close()
    return saved


def main(work_dir: str, out_dir: str) -> None:
    work = Path(work_dir)
    project_dir = work / "project"
    if not project_dir.exists():
        project_dir = build_project(work)
    volume_id = busiest_vh_volume(project_dir)
    for path in take_screenshots(project_dir, volume_id, Path(out_dir)):
        print(f"saved {path} ({volume_id})")


if __name__ == "__main__":
    main(*sys.argv[1:3])
