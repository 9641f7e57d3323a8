"""Import data from the dock: a real phantom DeepLesion dataset, imported in a worker thread."""

from __future__ import annotations

import csv

import pytest

from napari_lesion_harvest.synthetic.dataset import generate_dataset
from napari_lesion_harvest.synthetic.phantom import PhantomConfig
from napari_lesion_harvest.ui.data_import import MAX_SKIPPED_SHOWN, summary_message
from napari_lesion_harvest.ui.dock import HarvestDock

pytestmark = pytest.mark.gui


def _add_bad_rows(dl_info):
    """A row of a series with no images, and a row with broken coordinates."""
    with open(dl_info, newline="") as handle:
        rows = list(csv.reader(handle))
    header, first = rows[0], rows[1]
    missing = dict(zip(header, first, strict=True))
    missing.update(File_name="000099_01_01_113.png", Patient_index="99")
    broken = dict(zip(header, first, strict=True))
    broken.update(
        File_name="000001_01_01_116.png", Key_slice_index="116", Measurement_coordinates="x, y"
    )
    with open(dl_info, "a", newline="") as handle:
        writer = csv.writer(handle)
        for row in (missing, broken):
            writer.writerow([row[h] for h in header])


def test_import_a_deeplesion_folder_from_the_dock(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    dataset = generate_dataset(
        tmp_path / "data", volumes=3, seed=1, config=PhantomConfig(size=64, slices=(8, 10))
    )
    _add_bad_rows(dataset.dl_info)
    viewer = make_napari_viewer()
    dock = HarvestDock(viewer, author="radiologist")
    qtbot.addWidget(dock)
    assert dock.import_data([dataset.root]) is None  # no project open: refused
    dock.open_project(tmp_path / "proj", create=True)
    assert dock.worklist.visible_volume_ids() == []
    assert dock.project_panel.import_button.isEnabled()

    from napari.utils.notifications import notification_manager

    notification_manager.records.clear()
    with qtbot.waitSignal(dock.imported, timeout=60_000) as imported:
        worker = dock.import_data([dataset.root])
        assert worker is not None
        assert dock.import_data([dataset.root]) is None  # one import at a time
    summary = imported.args[0]

    assert sorted(summary.volumes) == sorted(dataset.volume_ids)
    assert summary.marks == dataset.mark_count
    assert any("000099_01_01" in line for line in summary.skipped)  # images missing
    assert any("line 6" in line and "Measurement_coordinates" in line for line in summary.skipped)
    # the worklist was refreshed from the store
    assert sorted(dock.worklist.visible_volume_ids()) == sorted(dataset.volume_ids)
    stored = {s.volume_id: s for s in dock.project.volume_summaries()}
    assert sum(s.n_marks for s in stored.values()) == dataset.mark_count
    assert all(s.split == "V_H" for s in stored.values())
    # a notification lists the skipped rows
    messages = [str(record.message) for record in notification_manager.records]
    assert any("Skipped 2" in m and "000099_01_01" in m for m in messages), messages
    assert dock.import_worker is None

    # a bad source: the error is reported and the project keeps what it had
    notification_manager.records.clear()
    with qtbot.waitSignal(dock.refreshed, timeout=60_000):
        dock.import_data([tmp_path / "no_such_folder"])
    messages = [str(record.message) for record in notification_manager.records]
    assert any("no_such_folder" in m and "Import stopped" in m for m in messages), messages
    assert len(dock.project.volume_summaries()) == 3

    # the volume opens from the refreshed worklist
    with qtbot.waitSignal(dock.volume_opened, timeout=20_000):
        dock.worklist.volume_requested.emit(dataset.volume_ids[0])
    assert viewer.layers[dataset.volume_ids[0]].data.shape[1:] == (64, 64)
    dock.close_project()


def test_summary_message_counts_and_caps_the_skipped_list():
    from napari_lesion_harvest.harvest.importing import ImportSummary

    summary = ImportSummary(volumes=["a", "b"], marks=5, skipped=[f"row {i}" for i in range(20)])
    text = summary_message(summary)
    assert text.startswith("Imported 2 volume(s) and 5 original mark(s).")
    assert "Skipped 20:" in text and f"- row {MAX_SKIPPED_SHOWN - 1}" in text
    assert f"- row {MAX_SKIPPED_SHOWN}\n" not in text and "and 8 more" in text
