"""SIGKILLs at random moments of real ``lesion-harvest import``, ``annotate --complete`` and
``export`` processes: a command that exited 0 left all of its data, a killed one all or
nothing, and running it again completes the rest with the right totals (no duplicates).

A kill lands either at a random moment of the command's run, or a random delay after the
command announced its write ("... writing in one transaction" on stderr), so that kills
also fall inside the write transaction and just after its commit.
"""

from __future__ import annotations

import csv
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from napari_lesion_harvest.geometry import RecistMark
from napari_lesion_harvest.io.annotations import MarkRecord, write_marks
from tests.data_entry import project_state

WRITING = "writing in one transaction"
KILLS = 8


def _command(*argv) -> list[str]:
    return [sys.executable, "-m", "napari_lesion_harvest", *map(str, argv)]


def _timed_run(argv) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(_command(*argv), capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done


def _run_and_kill(argv, rng: random.Random, *, run_s: float, write_window_s: float) -> int:
    """Run a command and SIGKILL it at a random moment; returns its exit status."""
    process = subprocess.Popen(
        _command(*argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if rng.random() < 0.5:
        time.sleep(rng.uniform(0.0, run_s))
    else:
        for line in process.stderr:
            if WRITING in line:
                break
        time.sleep(rng.uniform(0.0, write_window_s))
    process.send_signal(signal.SIGKILL)
    process.stderr.close()
    return process.wait(timeout=60)


def _kill_series(tmp_path, project, argv, *, seed: int, write_window_s: float) -> Counter:
    """Kill ``argv`` on ``project`` :data:`KILLS` times, checking all-or-nothing each time,
    then run it to the end; returns how the runs ended (and checks the final totals)."""
    pristine = tmp_path / "pristine"
    shutil.copytree(project, pristine)
    reference = tmp_path / "reference"
    shutil.copytree(project, reference)
    run_s, done = _timed_run([argv[0], reference, *argv[2:]])
    first_output = done.stdout
    before, full = project_state(project), project_state(reference)
    assert before != full

    rng = random.Random(seed)
    outcomes = Counter()
    for _ in range(KILLS):
        code = _run_and_kill(argv, rng, run_s=1.2 * run_s, write_window_s=write_window_s)
        state = project_state(project)
        if code == 0:
            assert state == full, "a command that exited 0 lost some of its data"
            outcomes["finished"] += 1
        else:
            assert code == -signal.SIGKILL
            assert state in (before, full), "a killed command left part of its data"
            outcomes["killed after commit" if state == full else "killed before commit"] += 1
        if state == full and rng.random() < 0.5:  # start again, to kill more first runs
            shutil.rmtree(project)
            shutil.copytree(pristine, project)

    was_full = project_state(project) == full
    final = subprocess.run(_command(*argv), capture_output=True, text=True, check=True)
    assert project_state(project) == full
    if not was_full:
        assert final.stdout == first_output
    return outcomes


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "proj"
    subprocess.run(_command("init", folder), check=True, capture_output=True)
    return folder


def test_killed_several_source_imports_leave_all_or_nothing(dataset, project, tmp_path):
    sources = [*sorted((dataset.root / "nifti").glob("*.nii.gz")), dataset.truth_marks]
    outcomes = _kill_series(
        tmp_path, project, ["import", project, *sources], seed=1, write_window_s=0.05
    )
    print(dict(outcomes))
    final = project_state(project)
    assert len(final["volumes"]) == len(dataset.volume_ids)
    assert final["audit"] == ["volume.import", "mark.import"]  # written once, in one go


def test_killed_deeplesion_imports_leave_all_or_nothing(dataset, project, tmp_path):
    outcomes = _kill_series(
        tmp_path, project, ["import", project, dataset.root], seed=2, write_window_s=0.05
    )
    print(dict(outcomes))
    final = project_state(project)
    assert sorted(final["volumes"]) == sorted(dataset.volume_ids)
    assert len(final["marks"]) == dataset.mark_count


def _many_marks(dataset, path, n: int, seed: int = 0) -> None:
    """``n`` expert marks at random places inside the dataset's volumes (marks CSV)."""
    rng = random.Random(seed)
    slices = {}
    with open(dataset.dl_info, newline="") as handle:
        for row in csv.DictReader(handle):
            first, last = (int(v) for v in row["Slice_range"].split(","))
            series = row["File_name"].rsplit("_", 1)[0]
            slices[f"{series}_{first:03d}-{last:03d}"] = last - first + 1
    volume_ids = sorted(slices)
    records = []
    for _ in range(n):
        volume_id = rng.choice(volume_ids)
        x, y = rng.uniform(8, 50), rng.uniform(8, 50)
        mark = RecistMark.from_measurement_coordinates(
            [x, y, x + 8, y, x + 4, y - 3, x + 4, y + 3], z=rng.randrange(slices[volume_id])
        )
        records.append(MarkRecord(volume_id, mark, "expert"))
    write_marks(path, records)


def test_killed_annotate_complete_leaves_all_or_nothing(dataset, project, tmp_path):
    subprocess.run(_command("import", project, dataset.root), check=True, capture_output=True)
    marks = tmp_path / "expert.csv"
    _many_marks(dataset, marks, 2000)
    argv = ["annotate", project, "--marks", marks, "--complete"]
    outcomes = _kill_series(tmp_path, project, argv, seed=3, write_window_s=0.25)
    print(dict(outcomes))
    final = project_state(project)
    assert sum(origin == "expert" for _, _, origin, *_ in final["marks"]) == 2000
    assert {split for split, _, _ in final["volumes"].values()} == {"V_M"}


def test_a_killed_export_never_leaves_a_half_file(dataset, project, tmp_path):
    subprocess.run(_command("import", project, dataset.root), check=True, capture_output=True)
    marks = tmp_path / "expert.csv"
    _many_marks(dataset, marks, 5000)
    subprocess.run(_command("annotate", project, "--marks", marks), check=True)
    reference = tmp_path / "reference"
    run_s, _ = _timed_run(["export", project, reference])
    expected = {path.name: path.read_bytes() for path in reference.iterdir()}
    assert sorted(expected) == sorted(
        ["marks.csv", "lesions.csv", "marks.json", "lesions.json", "MinedLesions.pkl"]
    )

    out = tmp_path / "out"
    rng = random.Random(4)
    for _ in range(KILLS):
        process = subprocess.Popen(_command("export", project, out), stdout=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 1.2 * run_s))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        if not out.exists():
            continue
        for path in out.iterdir():
            if path.name.startswith(".export-"):
                continue  # the staging folder of a killed export
            assert path.read_bytes() == expected[path.name], f"{path.name} is half written"
    subprocess.run(_command("export", project, out), check=True, capture_output=True)
    assert {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")} == (
        expected
    )
