"""Damaged project files, ``check``, online backups and restores, with real files and processes.

Damage is made the way disks and copies make it: a truncated file, a page
overwritten with zeros, bytes flipped in a b-tree page, an empty file. The
damaged project must be refused with a typed error naming the file and saying
to restore a backup, ``check`` must report it, and ``restore`` must bring back
a backup while keeping the damaged file aside. Backups run beside a process
that keeps writing; restores are killed (SIGKILL) at each step.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.store import (
    DamagedProjectError,
    HarvestProject,
    InvalidValueError,
    NotAProjectError,
    ProjectInUseError,
    ProposalRow,
    RoundLockedError,
    SchemaTooNewError,
    StageResult,
)
from napari_lesion_harvest.store.backup import check_project, restore_project
from napari_lesion_harvest.store.schema import SCHEMA_VERSION
from tests.builders import new_project, recist_mark, synthetic_volume, writing_round
from tests.open_files import descriptors_of
from tests.round_command import lesion_harvest


def _make_project(folder, *, n_marks: int = 300, n_proposals: int = 400):
    """Volumes, a round of proposals, then ``n_marks`` expert marks (their pages come last)."""
    volumes = [synthetic_volume(f"vol{i}") for i in range(20)]
    with new_project(folder, volumes, author="imp") as project:
        rng = np.random.default_rng(0)
        rows = [
            ProposalRow(
                f"vol{i % 20}",
                Proposal3D(
                    np.arange(3) + i % 50, rng.uniform(0, 50, (3, 4)) + [0, 0, 60, 60], [0.5] * 3
                ),
            )
            for i in range(n_proposals)
        ]
        with writing_round(project) as round_:
            round_.write("tracking", StageResult(proposals=rows))
        project.add_marks(
            [(f"vol{i % 20}", recist_mark(i % 40)) for i in range(n_marks)],
            author="rad",
            origin="expert",
        )


def _mark_ids(folder) -> set[int]:
    with HarvestProject.open(folder) as project:
        return {m.id for m in project.marks()}


def _pages_of(database, table: str) -> list[int]:
    """Page numbers (1-based) of a table's b-tree, from the intact file (dbstat-free).

    The root page from ``sqlite_schema``, and the pages its interior cells point to.
    """
    conn = sqlite3.connect(database)
    root, page_size = (
        conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = ?", (table,)).fetchone()[0],
        conn.execute("PRAGMA page_size").fetchone()[0],
    )
    conn.close()
    data = database.read_bytes()
    pages, todo = [], [root]
    while todo:
        page = todo.pop()
        pages.append(page)
        start = (page - 1) * page_size
        header = start + (100 if page == 1 else 0)
        if data[header] == 0x05:  # interior table page: 4-byte child numbers, then right child
            n_cells = int.from_bytes(data[header + 3 : header + 5], "big")
            pointers = data[header + 12 : header + 12 + 2 * n_cells]
            for k in range(n_cells):
                cell = start + int.from_bytes(pointers[2 * k : 2 * k + 2], "big")
                todo.append(int.from_bytes(data[cell : cell + 4], "big"))
            todo.append(int.from_bytes(data[header + 8 : header + 12], "big"))
    return pages


def _overwrite(database, offset: int, data: bytes) -> None:
    with open(database, "r+b") as handle:  # the test process holds no connection to it
        handle.seek(offset)
        handle.write(data)


def _damage(database, how: str) -> None:
    page_size = 4096
    if how == "empty":
        database.write_bytes(b"")
    elif how == "truncated":
        with open(database, "r+b") as handle:
            handle.truncate(database.stat().st_size - 3 * page_size)
    elif how == "zeroed_page":
        page = _pages_of(database, "marks")[-1]
        _overwrite(database, (page - 1) * page_size, bytes(page_size))
    elif how == "flipped_btree_bytes":
        page = _pages_of(database, "marks")[0]
        start = (page - 1) * page_size
        original = database.read_bytes()[start : start + 24]
        _overwrite(database, start, bytes(b ^ 0x5A for b in original))
    elif how == "smashed_header":
        _overwrite(database, 16, b"\xff" * 84)
    else:
        raise AssertionError(how)


DAMAGE = ["empty", "truncated", "zeroed_page", "flipped_btree_bytes", "smashed_header"]


@pytest.fixture
def project_with_backup(tmp_path):
    """A project, a backup of it, then 25 more marks saved after the backup."""
    folder = tmp_path / "proj"
    _make_project(folder)
    with HarvestProject.open(folder) as project:
        backup = project.backup()
        backed_up = {m.id for m in project.marks()}
        for z in range(25):
            project.add_mark("vol1", recist_mark(z), author="rad")
    return folder, backup, backed_up


# ------------------------------------------------------------------ damaged files


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_project_is_refused_by_name_and_restored_from_a_backup(project_with_backup, how):
    folder, backup, backed_up = project_with_backup
    database = folder / "project.sqlite"
    _damage(database, how)
    damaged_bytes = database.read_bytes()

    with pytest.raises(DamagedProjectError) as refused:
        HarvestProject.open(folder)
    message = str(refused.value)
    assert str(database) in message and "lesion-harvest restore" in message
    if how in ("zeroed_page", "flipped_btree_bytes"):
        assert "table marks" in message  # the damaged table is named
    assert database.read_bytes() == damaged_bytes  # refusing wrote nothing

    if how == "empty":
        with pytest.raises(DamagedProjectError, match="empty"):
            check_project(folder)
    else:
        problems = check_project(folder)  # the full check lists the damage
        assert problems != []
        if how in ("zeroed_page", "flipped_btree_bytes"):
            assert any(line.startswith("table marks") for line in problems), problems

    result = restore_project(folder, backup)
    # kept aside: every page as it was (only the header's journal-mode flag and
    # change counter may differ: the restore folds the WAL into the old file)
    assert result.kept_aside.read_bytes()[100:] == damaged_bytes[100:]
    assert _mark_ids(folder) == backed_up
    assert check_project(folder) == []


def test_damage_in_the_round_tables_is_met_as_a_typed_error(tmp_path):
    """Pages of the round tables are not checked at open; reading them raises typed errors."""
    folder = tmp_path / "proj"
    _make_project(folder, n_marks=10, n_proposals=3000)
    database = folder / "project.sqlite"
    page = _pages_of(database, "proposals")[1]
    _overwrite(database, (page - 1) * 4096, bytes(4096))
    with HarvestProject.open(folder) as project:  # the annotation tables are intact
        assert len(project.marks()) == 10
        with pytest.raises(DamagedProjectError, match="malformed") as raised:
            list(project.proposals(1))
        assert str(database) in str(raised.value)
        assert project.integrity_check() != []  # the full check finds it


def test_cli_refuses_a_damaged_project_in_one_line_and_check_reports_it(tmp_path):
    folder = tmp_path / "proj"
    _make_project(folder, n_marks=200, n_proposals=50)
    marks_file = tmp_path / "marks.csv"
    marks_file.write_text(
        "volume_id,z,long_x1,long_y1,long_x2,long_y2,short_x1,short_y1,short_x2,short_y2\n"
        "vol1,3,10,10,30,10,20,5,20,15\n"
    )
    checked = lesion_harvest("check", str(folder))
    assert (checked.returncode, checked.stdout.strip()) == (
        0,
        f"{folder}/project.sqlite: ok (integrity check and foreign keys)",
    )
    _damage(folder / "project.sqlite", "zeroed_page")
    damaged_bytes = (folder / "project.sqlite").read_bytes()
    for args in (["status", str(folder)], ["annotate", str(folder), "--marks", str(marks_file)]):
        done = lesion_harvest(*args)
        assert done.returncode != 0
        assert "Traceback" not in done.stderr
        assert "damaged" in done.stderr and "lesion-harvest restore" in done.stderr
    assert (folder / "project.sqlite").read_bytes() == damaged_bytes  # annotate wrote nothing
    checked = lesion_harvest("check", str(folder))
    assert checked.returncode == 1
    assert "is damaged" in checked.stderr and "lesion-harvest restore" in checked.stderr


# ------------------------------------------------------------------------ backup

WRITER = textwrap.dedent(
    """
    import sys
    from napari_lesion_harvest.geometry import RecistMark
    from napari_lesion_harvest.store import HarvestProject

    project = HarvestProject.open(sys.argv[1])
    print("ready", flush=True)
    z = 0
    while True:
        mark = RecistMark.from_measurement_coordinates([10, 10, 30, 10, 20, 5, 20, 15], z=z % 40)
        print(project.add_mark("vol1", mark, author="writer").id, flush=True)
        z += 1
    """
)


def _backup_contents(backup) -> tuple[list[str], list[int], set[int]]:
    """Integrity problems, mark ids, and ids of marks with a ``mark.add`` audit entry."""
    conn = sqlite3.connect(backup)
    problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    ids = [row[0] for row in conn.execute("SELECT id FROM marks ORDER BY id")]
    audited = {
        row[0] for row in conn.execute("SELECT target_id FROM audit WHERE action = 'mark.add'")
    }
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert journal == "delete"  # self-contained: no -wal belongs to a backup
    return problems, ids, audited


def test_backups_taken_while_another_process_writes_are_consistent(tmp_path):
    folder = tmp_path / "proj"
    _make_project(folder, n_marks=0, n_proposals=20)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    backups, acknowledged_before = [], []
    try:
        assert writer.stdout.readline().strip() == "ready"
        with HarvestProject.open(folder) as project:
            for _ in range(6):
                acknowledged_before.append(int(writer.stdout.readline()))
                backups.append(project.backup())
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.communicate(timeout=60)
    sizes = []
    for backup, acknowledged in zip(backups, acknowledged_before, strict=True):
        problems, ids, audited = _backup_contents(backup)
        assert problems == ["ok"]
        assert ids == list(range(1, len(ids) + 1))  # whole transactions, none half
        assert set(ids) == audited
        assert len(ids) >= acknowledged  # everything saved before the backup began
        sizes.append(len(ids))
    assert sizes[-1] > sizes[0]  # the writer really wrote between the backups
    assert not list((folder / "backups").glob(".*partial"))


ROUND_IN_A_TRANSACTION = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from napari_lesion_harvest.geometry import Proposal3D
    from napari_lesion_harvest.store import HarvestProject, ProposalRow, StageResult

    project = HarvestProject.open(sys.argv[1])
    number = project.rounds.create({}).number
    lock = project.rounds.lock(number).acquire()
    project.rounds.start(number, lock=lock)

    def rows():
        for i in range(2000):
            if i == 1000:
                print("halfway", flush=True)
                time.sleep(300)  # killed here, inside the stage's transaction
            box = np.array([[10.0, 10.0, 30.0, 28.0]] * 2) + i % 7
            yield ProposalRow("vol1", Proposal3D([4, 5], box, [0.2, 0.9]))

    project.rounds.write_stage(number, "tracking", StageResult(proposals=rows()), lock=lock)
    """
)


def test_backup_does_not_wait_for_a_round_and_leaves_its_open_stage_out(tmp_path):
    folder = tmp_path / "proj"
    _make_project(folder, n_marks=5, n_proposals=20)
    round_process = subprocess.Popen(
        [sys.executable, "-c", ROUND_IN_A_TRANSACTION, str(folder)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert round_process.stdout.readline().strip() == "halfway"
        done = lesion_harvest("backup", str(folder), str(tmp_path / "during_round.sqlite"))
        assert done.returncode == 0, done.stderr
    finally:
        round_process.send_signal(signal.SIGKILL)
        round_process.communicate(timeout=60)
    conn = sqlite3.connect(tmp_path / "during_round.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("SELECT count(*) FROM proposals").fetchone() == (20,)  # round 1 only
    assert conn.execute("SELECT status FROM rounds ORDER BY number").fetchall() == [
        ("done",),
        ("running",),
    ]
    conn.close()


def test_backup_never_overwrites_and_names_do_not_collide(tmp_path):
    folder = tmp_path / "proj"
    _make_project(folder, n_marks=3, n_proposals=5)
    with HarvestProject.open(folder) as project:
        first, second = project.backup(), project.backup()
        assert first != second and first.parent == second.parent == folder / "backups"
        assert first.name.startswith("project-") and first.suffix == ".sqlite"
        with pytest.raises(InvalidValueError, match="never overwritten"):
            project.backup(first)


# ----------------------------------------------------------------------- restore


def test_restore_is_refused_while_the_project_is_open(project_with_backup):
    folder, backup, _ = project_with_backup
    before = _mark_ids(folder)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from napari_lesion_harvest.store import HarvestProject\n"
            "p = HarvestProject.open(sys.argv[1]); p.marks(); print('open', flush=True)\n"
            "sys.stdin.read()",
            str(folder),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(ProjectInUseError, match="open in another program"):
            restore_project(folder, backup)
        done = lesion_harvest("restore", str(folder), str(backup))
        assert done.returncode == 2 and "open in another program" in done.stderr
    finally:
        holder.communicate("", timeout=60)
    with HarvestProject.open(folder):
        with pytest.raises(ProjectInUseError, match="open in this program"):
            restore_project(folder, backup)
    assert _mark_ids(folder) == before
    assert (
        not list(folder.glob("project-replaced-*"))
        and not (folder / "project.sqlite.restoring").exists()
    )


def _set_round_lock(folder, *, host: str, heartbeat_age_s: float) -> None:
    conn = sqlite3.connect(folder / "project.sqlite", isolation_level=None)
    now = time.time()
    conn.execute(
        "INSERT OR REPLACE INTO round_lock (slot, round_number, pid, pid_start, host, token, "
        "acquired_at, heartbeat_at) VALUES (1, 2, 4242, NULL, ?, 'token', ?, ?)",
        (host, now - heartbeat_age_s, now - heartbeat_age_s),
    )
    conn.close()


def test_restore_is_refused_while_a_round_on_another_host_holds_the_lock(project_with_backup):
    folder, backup, backed_up = project_with_backup
    before = _mark_ids(folder)
    _set_round_lock(folder, host="gpu-node-7", heartbeat_age_s=5)
    with pytest.raises(RoundLockedError, match="gpu-node-7"):
        restore_project(folder, backup)
    assert _mark_ids(folder) == before
    _set_round_lock(folder, host="gpu-node-7", heartbeat_age_s=3600)  # abandoned: stale
    restore_project(folder, backup)
    assert _mark_ids(folder) == backed_up


def test_restore_refuses_a_backup_that_is_not_a_usable_project(project_with_backup, tmp_path):
    folder, backup, _ = project_with_backup
    before = _mark_ids(folder)
    text = tmp_path / "notes.sqlite"
    text.write_text("not a database\n" * 100)
    foreign = tmp_path / "photos.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    newer = tmp_path / "newer.sqlite"
    newer.write_bytes(backup.read_bytes())
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(backup.read_bytes())
    _damage(damaged, "zeroed_page")
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    refused = {
        text: NotAProjectError,
        foreign: NotAProjectError,
        newer: SchemaTooNewError,
        damaged: DamagedProjectError,
        empty: DamagedProjectError,
        tmp_path / "absent.sqlite": NotAProjectError,
    }
    for bad, error in refused.items():
        with pytest.raises(error, match=str(bad.name)):
            restore_project(folder, bad)
    with pytest.raises(InvalidValueError, match="project file itself"):
        restore_project(folder, folder / "project.sqlite")
    assert _mark_ids(folder) == before
    assert not list(folder.glob("project-replaced-*"))


RESTORER = textwrap.dedent(
    """
    import os, signal, sys
    from napari_lesion_harvest.store.backup import restore_project

    folder, backup, function, nth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    real, calls = getattr(os, function), []

    def then_die(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(args)
        if len(calls) == nth:
            os.kill(os.getpid(), signal.SIGKILL)

    setattr(os, function, then_die)
    restore_project(folder, backup)
    print("finished", flush=True)
    """
)


@pytest.mark.parametrize(
    "function, nth, left",
    [("replace", 1, "old"), ("link", 1, "old"), ("replace", 2, "restored")],
    ids=["staged", "kept-aside", "swapped"],
)
def test_a_restore_killed_at_any_step_leaves_the_old_or_the_restored_project(
    project_with_backup, function, nth, left
):
    """SIGKILL right after each step: copy staged, old file linked aside, new file swapped in."""
    folder, backup, backed_up = project_with_backup
    before = _mark_ids(folder)
    killed = subprocess.run(
        [sys.executable, "-c", RESTORER, str(folder), str(backup), function, str(nth)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert check_project(folder) == []
    assert _mark_ids(folder) == {"old": before, "restored": backed_up}[left]
    restore_project(folder, backup)  # running it again finishes the job
    assert _mark_ids(folder) == backed_up
    for aside in folder.glob("project-replaced-*.sqlite"):
        conn = sqlite3.connect(aside)
        assert conn.execute("SELECT count(*) FROM marks").fetchone()[0] in (
            len(before),
            len(backed_up),
        )
        conn.close()


def test_restore_without_hard_links_renames_the_old_file_aside(project_with_backup, monkeypatch):
    """A file system that refuses hard links (some network shares)."""
    folder, backup, backed_up = project_with_backup
    before = _mark_ids(folder)

    def no_links(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    result = restore_project(folder, backup)
    assert _mark_ids(folder) == backed_up
    conn = sqlite3.connect(result.kept_aside)
    assert {row[0] for row in conn.execute("SELECT id FROM marks")} == before
    conn.close()


def test_restore_after_a_killed_writer_keeps_its_last_marks_in_the_replaced_file(
    project_with_backup,
):
    """The killed writer's marks are still in its -wal file: they go aside with the old file."""
    folder, backup, backed_up = project_with_backup
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline().strip() == "ready"
    acknowledged = {int(writer.stdout.readline()) for _ in range(10)}
    writer.send_signal(signal.SIGKILL)
    writer.communicate(timeout=60)
    assert (folder / "project.sqlite-wal").stat().st_size > 0  # not folded in by anyone yet

    result = restore_project(folder, backup)
    assert _mark_ids(folder) == backed_up
    conn = sqlite3.connect(result.kept_aside)
    kept = {row[0] for row in conn.execute("SELECT id FROM marks")}
    conn.close()
    assert (
        acknowledged <= kept
        and not result.kept_aside.with_name(result.kept_aside.name + "-wal").exists()
    )  # folded into the kept file, which stands alone


PAUSING_RESTORER = textwrap.dedent(
    """
    import os, sys
    from napari_lesion_harvest.store.backup import restore_project

    real_link = os.link

    def link_then_wait(*args, **kwargs):
        real_link(*args, **kwargs)
        print("holding", flush=True)  # the old file is kept aside, not yet swapped out
        sys.stdin.readline()

    os.link = link_then_wait
    restore_project(sys.argv[1], sys.argv[2])
    """
)


def test_a_project_opened_during_a_restore_opens_the_restored_file(project_with_backup):
    """An open that reached the old file while the restore held it reopens the new one."""
    folder, backup, backed_up = project_with_backup
    database = folder / "project.sqlite"
    restorer = subprocess.Popen(
        [sys.executable, "-c", PAUSING_RESTORER, str(folder), str(backup)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    seen = {}

    def open_and_read():
        try:
            seen["ids"] = _mark_ids(folder)
        except Exception as error:  # reported by the assertion below
            seen["error"] = error

    opener = threading.Thread(target=open_and_read)
    try:
        assert restorer.stdout.readline().strip() == "holding"
        aside = next(folder.glob("project-replaced-*.sqlite"))
        kept_bytes = aside.read_bytes()
        opener.start()
        deadline = time.monotonic() + 60
        while descriptors_of(database) == 0:  # the opener has the old file open, and waits
            assert time.monotonic() < deadline, "the opener never reached the project file"
            time.sleep(0.01)
        restorer.stdin.write("\n")
        restorer.stdin.flush()
        assert restorer.wait(timeout=60) == 0
    finally:
        if restorer.poll() is None:
            restorer.kill()
        opener.join(timeout=120)
    assert seen == {"ids": backed_up}  # the restored project, not the file set aside
    assert aside.read_bytes() == kept_bytes  # and the kept file was not written to
