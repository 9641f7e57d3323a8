"""HarvestProject: volumes, marks, verdict-free overlays, audit log, opening rules."""

from __future__ import annotations

import csv
import json
import sqlite3

import numpy as np
import pytest

from napari_lesion_harvest.geometry import RecistMark, key_slice_to_index
from napari_lesion_harvest.store import (
    DamagedProjectError,
    InvalidValueError,
    NotAProjectError,
    NotFoundError,
    SchemaTooNewError,
    StoreError,
    VolumeRecord,
)
from napari_lesion_harvest.store.project import HarvestProject
from napari_lesion_harvest.store.schema import SCHEMA_VERSION, migrate
from tests.builders import new_project, recist_mark, synthetic_volume


@pytest.fixture
def project(tmp_path):
    volumes = [
        VolumeRecord("vol_a", "synthetic", "a.nii", "V_H", shape=(20, 64, 64)),
        VolumeRecord("vol_b", "synthetic", "b.nii", "V_H"),
        VolumeRecord("vol_t", "synthetic", "t.nii", "V_H_test"),
    ]
    with new_project(tmp_path / "proj", volumes) as opened:
        yield opened


def test_create_makes_folders_and_reopens(tmp_path):
    folder = tmp_path / "new"
    HarvestProject.open(folder, create=True).close()
    assert (folder / "project.sqlite").is_file()
    assert (folder / "models").is_dir() and (folder / "exports").is_dir()
    with HarvestProject.open(folder) as project:
        assert project.volumes() == []
        assert project.migrated_from is None


def test_open_missing_project_without_create_is_refused(tmp_path):
    with pytest.raises(NotAProjectError, match="not a harvest project folder"):
        HarvestProject.open(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotAProjectError, match="does not exist"):
        HarvestProject.open(tmp_path / "empty")


def test_real_dl_info_marks_round_trip(tmp_path, dl_info_rows_csv):
    """Marks from the real DL_info rows are stored and read back exactly."""
    with open(dl_info_rows_csv, newline="") as handle:
        lesion_rows = list(csv.DictReader(handle))
    with HarvestProject.open(tmp_path / "p", create=True) as project:
        items = []
        for row in lesion_rows:
            folder, _ = row["File_name"].rsplit("_", 1)
            first, last = (int(v) for v in row["Slice_range"].split(","))
            volume_id = f"{folder}_{first:03d}-{last:03d}"
            if volume_id not in {v.volume_id for v in project.volumes()}:
                project.add_volumes(
                    [VolumeRecord(volume_id, "deeplesion_png", folder, "V_H")], author="dl"
                )
            coords = [float(v) for v in row["Measurement_coordinates"].split(",")]
            z = key_slice_to_index(int(row["Key_slice_index"]), first)
            items.append((volume_id, RecistMark.from_measurement_coordinates(coords, z=z)))
        ids = project.add_marks(items, author="DeepLesion", origin="original")
        assert len(ids) == len(lesion_rows) == 6
        for mark_id, (volume_id, mark) in zip(ids, items, strict=True):
            stored = project.mark(mark_id)
            assert stored.volume_id == volume_id and stored.origin == "original"
            assert stored.mark.z == mark.z
            np.testing.assert_array_equal(
                stored.mark.measurement_coordinates(), mark.measurement_coordinates()
            )
            np.testing.assert_allclose(stored.mark.box(), mark.box())


def test_add_edit_delete_restore(project):
    added = project.add_mark("vol_a", recist_mark(z=3), author="rad")
    assert added.origin == "expert" and added.author == "rad" and not added.deleted
    edited = project.edit_mark(added.id, recist_mark(z=5, x=12), author="rad")
    assert edited.mark.z == 5 and edited.mark.long_axis[0, 0] == 12
    project.delete_mark(added.id, author="rad")
    assert project.marks("vol_a") == []
    assert [m.id for m in project.marks("vol_a", include_deleted=True)] == [added.id]
    restored = project.restore_mark(added.id, author="rad")
    assert not restored.deleted and [m.id for m in project.marks("vol_a")] == [added.id]
    assert restored.mark.z == 5 and restored.mark.long_axis[0, 0] == 12  # the edit kept
    edit = project.audit_log(author="rad")[2]
    assert edit.action == "mark.edit" and edit.target_id == added.id
    assert edit.details["before"][0] == 3 and edit.details["after"][0] == 5


def test_mark_errors_are_typed(project):
    with pytest.raises(NotFoundError, match="no volume 'nope'"):
        project.add_mark("nope", recist_mark(), author="rad")
    with pytest.raises(InvalidValueError, match="origin"):
        project.add_mark("vol_a", recist_mark(), author="rad", origin="robot")
    with pytest.raises(InvalidValueError, match="author"):
        project.add_mark("vol_a", recist_mark(), author="")
    with pytest.raises(NotFoundError, match="no mark with id 999"):
        project.edit_mark(999, recist_mark(), author="rad")
    with pytest.raises(InvalidValueError, match="RecistMark"):
        project.add_mark("vol_a", [1, 2, 3], author="rad")
    # nothing half-written by the failures
    assert project.marks() == []


def test_volume_id_with_other_data_adds_nothing(project):
    with pytest.raises(InvalidValueError, match="vol_a"):
        project.add_volumes(
            [VolumeRecord("vol_new", "x", "-", "V_H"), VolumeRecord("vol_a", "x", "-", "V_H")],
            author="importer",
        )
    assert [v.volume_id for v in project.volumes()] == ["vol_a", "vol_b", "vol_t"]
    same = VolumeRecord("vol_a", "synthetic", "a.nii", "V_H", shape=(20, 64, 64))
    assert project.add_volumes([same], author="importer") == 0  # already there: kept as is
    with pytest.raises(InvalidValueError, match="split"):
        project.add_volumes([VolumeRecord("v9", "x", "-", "V_X")], author="importer")


def test_complete_moves_volume_to_v_m_and_back(project):
    record = project.set_volume_complete("vol_b", author="rad")
    assert record.split == "V_M" and record.complete and record.completed_by == "rad"
    assert [v.volume_id for v in project.volumes(split="V_M")] == ["vol_b"]
    record = project.set_volume_complete("vol_b", author="rad", complete=False)
    assert record.split == "V_H" and not record.complete and record.completed_by is None


def test_complete_flags_a_held_out_volume_without_moving_it(project):
    record = project.set_volume_complete("vol_t", author="rad")
    assert (record.split, record.complete, record.completed_by) == ("V_H_test", True, "rad")
    assert [v.volume_id for v in project.volumes(split="V_M")] == []
    record = project.set_volume_complete("vol_t", author="rad", complete=False)
    assert (record.split, record.complete, record.completed_by) == ("V_H_test", False, None)


def test_summaries_count_live_marks_by_origin(project):
    project.add_marks([("vol_a", recist_mark()), ("vol_a", recist_mark(z=4))], author="DL")
    gone = project.add_mark("vol_a", recist_mark(z=6), author="rad")
    project.add_mark("vol_b", recist_mark(z=1), author="rad")
    project.delete_mark(gone.id, author="rad")
    summary = {s.volume_id: s for s in project.volume_summaries()}
    assert (summary["vol_a"].n_marks, summary["vol_a"].n_expert_marks) == (2, 0)
    assert (summary["vol_b"].n_marks, summary["vol_b"].n_expert_marks) == (1, 1)
    assert summary["vol_t"].n_marks == 0 and summary["vol_t"].n_proposals == 0


def test_display_window_and_overlays(project):
    project.set_display_window("vol_a", -160, 240, author="rad")
    project.add_mark("vol_a", recist_mark(), author="rad")
    overlays = project.volume_overlays("vol_a")
    assert overlays.volume.display_window == (-160.0, 240.0)
    assert overlays.volume.shape == (20, 64, 64)
    assert [m.mark.z for m in overlays.marks] == [3]
    assert overlays.proposals == [] and overlays.round_number is None
    with pytest.raises(InvalidValueError):
        project.set_display_window("vol_a", 10, 10, author="rad")


def test_audit_log_records_actions_and_is_append_only(project):
    mark = project.add_mark("vol_a", recist_mark(), author="rad")
    project.delete_mark(mark.id, author="rad")
    actions = [entry.action for entry in project.audit_log(author="rad")]
    assert actions == ["mark.delete", "mark.add"]
    conn = sqlite3.connect(project.database_path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET author = 'x'")
    conn.close()


# ------------------------------------------------------------------ opening rules


def test_text_file_as_project_is_refused(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "project.sqlite").write_text("volume,split\nv1,V_H\n")
    with pytest.raises(NotAProjectError, match="not an SQLite database"):
        HarvestProject.open(folder)


def test_foreign_sqlite_database_is_refused(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    conn = sqlite3.connect(folder / "project.sqlite")
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(NotAProjectError, match="another application"):
        HarvestProject.open(folder)


def test_corrupt_project_file_is_refused(tmp_path):
    folder = tmp_path / "p"
    new_project(folder, [synthetic_volume("v")], author="me").close()
    data = bytearray((folder / "project.sqlite").read_bytes())
    data[16:100] = b"\xff" * 84  # smash the page size and header fields
    (folder / "project.sqlite").write_bytes(bytes(data))
    with pytest.raises(NotAProjectError):
        HarvestProject.open(folder)


def test_empty_project_file_is_refused_unless_a_creation_was_interrupted(tmp_path):
    emptied = tmp_path / "emptied"
    new_project(emptied, [synthetic_volume("v")], author="me").close()
    (emptied / "project.sqlite").write_bytes(b"")
    for create in (False, True):  # never silently re-created as an empty project
        with pytest.raises(
            DamagedProjectError, match=r"empty \(0 bytes\).*lesion-harvest restore"
        ):
            HarvestProject.open(emptied, create=create)
    assert (emptied / "project.sqlite").stat().st_size == 0

    interrupted = tmp_path / "interrupted"  # killed before the first write: the file alone
    interrupted.mkdir()
    (interrupted / "project.sqlite").write_bytes(b"")
    with pytest.raises(DamagedProjectError):
        HarvestProject.open(interrupted)
    with HarvestProject.open(interrupted, create=True) as project:
        assert project.volumes() == []


def test_newer_schema_is_refused(tmp_path):
    folder = tmp_path / "p"
    HarvestProject.open(folder, create=True).close()
    conn = sqlite3.connect(folder / "project.sqlite")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNewError, match="newer release"):
        HarvestProject.open(folder)


def test_version_1_project_migrates_and_keeps_its_marks(tmp_path):
    """A file exactly as release 1 wrote it (schema v1) opens, migrates and keeps its data."""
    folder = tmp_path / "p"
    folder.mkdir()
    conn = sqlite3.connect(folder / "project.sqlite", isolation_level=None)
    migrate(conn, target=1)
    conn.execute(
        "INSERT INTO volumes (name, reader, path, split, imported_split) "
        "VALUES ('old', 'deeplesion_png', 'x', 'V_H', 'V_H')"
    )
    conn.execute(
        "INSERT INTO marks (volume_id, z, long_x1, long_y1, long_x2, long_y2, short_x1, "
        "short_y1, short_x2, short_y2, origin, author, created_at, edited_at) "
        "VALUES (1, 2, 10, 10, 30, 10, 20, 5, 20, 15, 'original', 'DL', 0, 0)"
    )
    conn.close()
    with HarvestProject.open(folder) as project:
        assert project.migrated_from == 1
        assert [m.mark.z for m in project.marks("old")] == [2]
        assert project.rounds.list() == []  # version-2 tables exist
        assert project.integrity_check() == []
    [backup] = (folder / "backups").glob("project-v1-*.sqlite")
    copy = sqlite3.connect(backup)
    assert copy.execute("PRAGMA user_version").fetchone() == (1,)  # the file before migrating
    assert copy.execute("SELECT z FROM marks").fetchall() == [(2,)]
    copy.close()
    with HarvestProject.open(folder) as project:
        assert project.migrated_from is None
    assert len(list((folder / "backups").iterdir())) == 1  # no second migration, no backup


def test_store_errors_share_one_base(project):
    with pytest.raises(StoreError):
        project.volume("missing")
    assert json.loads(json.dumps(project.volume("vol_a").attributes)) == {}
