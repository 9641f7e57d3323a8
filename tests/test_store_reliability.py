"""Crash and failure behaviour of the store, with real processes and real files.

* writers killed with SIGKILL while adding marks lose no acknowledged mark;
* a round killed in the middle of a stage leaves no half stage and can resume;
* a full disk (a file-size limit that makes the kernel refuse writes) gives a
  clear error and loses nothing already saved.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.store import (
    HarvestProject,
    ProposalRow,
    StageResult,
)
from tests.builders import new_project, synthetic_volume

MARK_WRITER = textwrap.dedent(
    """
    import random, sys
    from napari_lesion_harvest.geometry import RecistMark
    from napari_lesion_harvest.store import HarvestProject

    project = HarvestProject.open(sys.argv[1])
    rng = random.Random(int(sys.argv[2]))
    print("ready", flush=True)
    while True:
        z = rng.randrange(0, 60)
        coords = [rng.uniform(0.0, 511.0) for _ in range(8)]
        mark = RecistMark.from_measurement_coordinates(coords, z=z)
        stored = project.add_mark("vol", mark, author="writer-" + sys.argv[2])
        # the acknowledgement: printed only after add_mark returned (committed)
        print(stored.id, z, *map(repr, coords), flush=True)
    """
)


def _new_project(folder):
    new_project(folder, [synthetic_volume("vol"), synthetic_volume("vol2")]).close()


def _kill_mark_writers(folder, kills: int, seed: int) -> dict[int, tuple]:
    """Start a mark writer ``kills`` times, SIGKILL it at a random moment; return the acks."""
    rng = random.Random(seed)
    acknowledged: dict[int, tuple] = {}
    for attempt in range(kills):
        writer = subprocess.Popen(
            [sys.executable, "-c", MARK_WRITER, str(folder), str(seed * 1000 + attempt)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.12))
        writer.send_signal(signal.SIGKILL)
        # Read through the same buffered pipe as the readline above: communicate()
        # with a timeout reads the raw descriptor and would drop what readline had
        # already buffered (the head of the first acknowledgement).
        output = writer.stdout.read()
        writer.stdout.close()
        assert writer.wait(timeout=60) == -signal.SIGKILL
        for line in output.splitlines(keepends=True):
            if not line.endswith("\n"):
                continue  # cut off by the kill: not acknowledged
            mark_id, z, *coords = line.split()
            acknowledged[int(mark_id)] = (int(z), *map(float, coords))
    return acknowledged


def _check_marks_survived(folder, acknowledged: dict[int, tuple]) -> None:
    with HarvestProject.open(folder) as project:
        assert project.integrity_check() == []
        stored = {m.id: m for m in project.marks("vol")}
        for mark_id, (z, *coords) in acknowledged.items():
            assert mark_id in stored, f"acknowledged mark {mark_id} was lost"
            mark = stored[mark_id].mark
            assert mark.z == z
            assert mark.measurement_coordinates().tolist() == coords
        # nothing half-written: every saved mark has its audit entry (same transaction)
        added = {e.target_id for e in project.audit_log() if e.action == "mark.add"}
        assert added == set(stored)


def test_sigkilled_mark_writers_lose_no_acknowledged_mark(tmp_path):
    folder = tmp_path / "proj"
    _new_project(folder)
    acknowledged = _kill_mark_writers(folder, kills=20, seed=1)
    assert len(acknowledged) > 20  # the writers really wrote between the kills
    _check_marks_survived(folder, acknowledged)


@pytest.mark.slow
def test_200_sigkilled_mark_writers_lose_no_acknowledged_mark(tmp_path):
    folder = tmp_path / "proj"
    _new_project(folder)
    start = time.perf_counter()
    acknowledged = _kill_mark_writers(folder, kills=200, seed=2)
    _check_marks_survived(folder, acknowledged)
    print(
        f"\n200 SIGKILLs, {len(acknowledged)} acknowledged marks, all present, "
        f"integrity ok, {time.perf_counter() - start:.1f} s"
    )


ROUND_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from napari_lesion_harvest.geometry import Proposal3D
    from napari_lesion_harvest.store import HarvestProject, ProposalRow, StageResult

    project = HarvestProject.open(sys.argv[1])
    number = int(sys.argv[2])
    lock = project.rounds.lock(number).acquire()
    project.rounds.start(number, lock=lock)

    def rows(n, *, pause_at=None):
        for i in range(n):
            if i == pause_at:
                print("halfway", flush=True)
                time.sleep(120)  # killed here, inside the stage's transaction
            box = np.array([[10.0, 10.0, 30.0, 28.0]] * 3) + i % 7
            yield ProposalRow("vol", Proposal3D([4, 5, 6], box, [0.2, 0.9, 0.4]))

    project.rounds.write_stage(number, "detect", StageResult(proposals=rows(50)), lock=lock)
    print("detect written", flush=True)
    project.rounds.write_stage(
        number, "score", StageResult(proposals=rows(4000, pause_at=2000), metrics={"s": 1}),
        lock=lock,
    )
    print("score written", flush=True)
    """
)


def test_round_killed_mid_stage_leaves_no_half_stage_and_resumes(tmp_path):
    folder = tmp_path / "proj"
    _new_project(folder)
    with HarvestProject.open(folder) as project:
        number = project.rounds.create({"stages": ["detect", "score"]}).number
        writer = subprocess.Popen(
            [sys.executable, "-c", ROUND_WRITER, str(folder), str(number)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert writer.stdout.readline().strip() == "detect written"
            assert writer.stdout.readline().strip() == "halfway"
            # 2000 rows of the stage are inside the writer's open transaction:
            # a reader (the GUI) sees only the committed stage
            assert len(list(project.proposals(number))) == 50
            assert project.rounds.get(number).stage == "detect"
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.communicate(timeout=60)

    with HarvestProject.open(folder) as project:
        assert project.integrity_check() == []
        assert len(list(project.proposals(number))) == 50
        assert project.rounds.recover_interrupted() == [number]
        record = project.rounds.get(number)
        assert record.status == "failed" and record.resumable
        assert record.completed_stages == ("detect",) and "s" not in record.metrics
        with project.rounds.lock(number) as lock:
            snapshot = project.rounds.start(number, lock=lock)
            assert snapshot.completed_stages == ("detect",)
            box = [[1.0, 1.0, 9.0, 9.0]]
            project.rounds.write_stage(
                number,
                "score",
                StageResult(proposals=[ProposalRow("vol2", Proposal3D([0], box, [0.5]))]),
                lock=lock,
            )
            project.rounds.finish(number, lock=lock)
        assert len(list(project.proposals(number))) == 51
        assert project.rounds.get(number).status == "done"


FULL_DISK_WRITER = textwrap.dedent(
    """
    import os, resource, signal, sys
    from napari_lesion_harvest.geometry import RecistMark
    from napari_lesion_harvest.store import HarvestProject, StoreWriteError

    folder = sys.argv[1]
    project = HarvestProject.open(folder)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel then fails writes with EFBIG
    sizes = [os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)
             if name.startswith("project.sqlite")]
    limit = max(sizes) + 96 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    coords = [10.0, 10.0, 30.0, 10.0, 20.0, 5.0, 20.0, 15.0]
    saved = 0
    try:
        for z in range(100000):
            project.add_mark("vol", RecistMark.from_measurement_coordinates(coords, z=z),
                             author="rad")
            saved += 1
    except StoreWriteError as error:
        print("saved", saved, flush=True)
        print("error", error, flush=True)
        print("readable", len(project.marks("vol")), flush=True)
    """
)


def test_full_disk_gives_a_clear_error_and_loses_nothing(tmp_path):
    folder = tmp_path / "proj"
    _new_project(folder)
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK_WRITER, str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert result.returncode == 0, result.stderr
    saved = int(lines["saved"])
    assert saved > 0
    assert "was not saved" in lines["error"] and "intact" in lines["error"]
    assert str(folder / "project.sqlite") in lines["error"]
    assert int(lines["readable"]) == saved  # the failed write left the open project usable
    with HarvestProject.open(folder) as project:
        assert project.integrity_check() == []
        assert sorted(m.mark.z for m in project.marks("vol")) == list(range(saved))


CHECKPOINT_FULL_DISK = textwrap.dedent(
    """
    import os, resource, signal, sys
    import torch
    from napari_lesion_harvest.store import HarvestProject, StoreWriteError

    project = HarvestProject.open(sys.argv[1])
    number = int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    try:
        project.rounds.save_checkpoint(number, "lpg", {"w": torch.zeros(100_000)})
    except StoreWriteError as error:
        print("error", error, flush=True)
    """
)


def test_checkpoint_write_on_full_disk_keeps_the_previous_file(tmp_path):
    torch = pytest.importorskip("torch")
    folder = tmp_path / "proj"
    _new_project(folder)
    with HarvestProject.open(folder) as project:
        number = project.rounds.create().number
        ref = project.rounds.save_checkpoint(number, "lpg", {"w": torch.ones(4)})
    before = (folder / ref.path).read_bytes()
    result = subprocess.run(
        [sys.executable, "-c", CHECKPOINT_FULL_DISK, str(folder), str(number)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("error could not write checkpoint")
    assert "unchanged" in result.stdout
    assert (folder / ref.path).read_bytes() == before
    assert sorted(p.name for p in (folder / ref.path).parent.iterdir()) == ["lpg.pt"]
