"""Several processes on one project: no process may make another's saved marks vanish.

SQLite's locks are POSIX advisory locks, which a process loses on a file as soon
as it closes *any* descriptor of that file. A process that loses its shared
lock looks absent to the others: the next one that closes the project
checkpoints and deletes the ``-wal`` and ``-shm`` files that the first one
still writes to, and its later marks are invisible to everyone else and gone
when it dies. These tests run that scenario with real processes: a GUI-like
holder opens a second handle on its project, a ``lesion-harvest status`` opens
and closes the project beside it, and then every mark the holder saves must be
seen by fresh processes, before and after the holder exits or is killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from napari_lesion_harvest.geometry import RecistMark
from napari_lesion_harvest.store import (
    HarvestProject,
    InvalidValueError,
    StoreError,
)
from tests.builders import new_project, synthetic_volume
from tests.open_files import descriptors_of

#: Holds the project open like napari's dock, opens a second handle (as an import
#: does), then saves the number of marks read from each stdin line, acknowledging
#: each mark's id on stdout after ``add_mark`` returned.
HOLDER = textwrap.dedent(
    """
    import sys
    from napari_lesion_harvest.geometry import RecistMark
    from napari_lesion_harvest.store import HarvestProject

    folder, second = sys.argv[1], sys.argv[2]
    project = HarvestProject.open(folder)
    project.marks("vol")
    extra = HarvestProject.open(folder)
    extra.volumes()
    if second == "closed":
        extra.close()
    print("ready", flush=True)
    for line in sys.stdin:
        for i in range(int(line)):
            mark = RecistMark.from_measurement_coordinates(
                [10, 10, 30, 10, 20, 5, 20, 15], z=i % 20
            )
            print(project.add_mark("vol", mark, author="gui").id, flush=True)
        print("saved", flush=True)
    if second == "open":
        extra.close()
    project.close()
    """
)

#: Prints the ids of the live marks of ``vol`` as a JSON list, from a fresh process.
READER = textwrap.dedent(
    """
    import json, sys
    from napari_lesion_harvest.store import HarvestProject

    with HarvestProject.open(sys.argv[1]) as project:
        print(json.dumps([m.id for m in project.marks("vol")]))
    """
)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _marks_seen_by_a_fresh_process(folder) -> set[int]:
    return set(json.loads(_run(["-c", READER, str(folder)]).stdout))


def _save_marks(holder: subprocess.Popen, n: int) -> set[int]:
    holder.stdin.write(f"{n}\n")
    holder.stdin.flush()
    ids = set()
    while (line := holder.stdout.readline().strip()) != "saved":
        assert line, "the holder died while saving marks"
        ids.add(int(line))
    return ids


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "proj"
    new_project(folder, [synthetic_volume("vol")]).close()
    return folder


@pytest.mark.parametrize("second", ["closed", "open"])
@pytest.mark.parametrize("end", ["exit", "sigkill"])
def test_marks_of_a_process_survive_other_processes_opening_and_closing(folder, second, end):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), second],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        # Another process opens and closes the project: it must not think it is
        # the last user (it would checkpoint and delete the holder's -wal/-shm).
        _run(["-m", "napari_lesion_harvest", "status", str(folder)])
        saved = _save_marks(holder, 40)
        assert len(saved) == 40
        assert saved <= _marks_seen_by_a_fresh_process(folder)
        _run(["-m", "napari_lesion_harvest", "status", str(folder)])
        saved |= _save_marks(holder, 5)
        assert saved <= _marks_seen_by_a_fresh_process(folder)
        if end == "sigkill":
            holder.send_signal(signal.SIGKILL)
            assert holder.wait(timeout=60) == -signal.SIGKILL
        else:
            holder.stdin.close()
            assert holder.wait(timeout=60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=60)
    assert saved <= _marks_seen_by_a_fresh_process(folder)
    with HarvestProject.open(folder) as project:
        assert project.integrity_check() == []
        assert {m.id for m in project.marks("vol")} == saved


def test_a_second_open_in_one_process_shares_the_connection(folder):
    database = folder / "project.sqlite"
    mark = RecistMark.from_measurement_coordinates([10, 10, 30, 10, 20, 5, 20, 15], z=1)
    first = HarvestProject.open(folder)
    second = HarvestProject.open(folder.parent / ".." / folder.parent.name / folder.name)
    worker = first.share()
    assert descriptors_of(database) == 1  # one connection for the three handles
    with pytest.raises(InvalidValueError, match="synchronous=FULL"):
        HarvestProject.open(folder, synchronous="NORMAL")  # one connection, one policy
    saved = worker.add_mark("vol", mark, author="a").id
    second.close()
    worker.close()
    with pytest.raises(StoreError, match="closed"):
        second.marks("vol")
    assert [m.id for m in first.marks("vol")] == [saved]  # the first handle still works
    first.close()
    assert descriptors_of(database) == 0
    with pytest.raises(StoreError, match="closed"):
        first.marks("vol")
    with HarvestProject.open(folder) as reopened:
        assert [m.id for m in reopened.marks("vol")] == [saved]
