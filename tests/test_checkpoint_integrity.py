"""Checkpoint files are written durably by one writer, and a round loads none that
differs from what the project recorded: tampered, truncated or swapped files are
refused at fine-tuning, at resuming an LPG training and at LPC scoring."""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from napari_lesion_harvest.harvest.blob_project import make_blob_project
from napari_lesion_harvest.harvest.config import load_config
from napari_lesion_harvest.harvest.round import run_round, run_rounds
from napari_lesion_harvest.lpc import checkpoint as lpc_checkpoint
from napari_lesion_harvest.lpg import checkpoint as lpg_checkpoint
from napari_lesion_harvest.store import ChecksumMismatchError, HarvestProject
from napari_lesion_harvest.store.checkpoints import (
    CHECKPOINT_MODE,
    load_checkpoint,
    sha256_file,
    write_checkpoint,
)
from tests.round_runs import round_stopped_when

PACKAGE = Path(__file__).resolve().parents[1] / "napari_lesion_harvest"
#: Environment of the writer subprocesses: one thread, the worktree importable.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------ the writer


def test_every_torch_load_of_the_package_is_weights_only():
    calls = []
    for source in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                keywords = {k.arg: k.value for k in node.keywords}
                safe = isinstance(keywords.get("weights_only"), ast.Constant) and (
                    keywords["weights_only"].value is True
                )
                calls.append((f"{source.relative_to(PACKAGE)}:{node.lineno}", safe))
    assert calls and all(safe for _, safe in calls), calls


def test_every_checkpoint_writer_leaves_one_mode_and_no_temporary_file(tmp_path):
    from napari_lesion_harvest.lpc.models import build_classifier
    from napari_lesion_harvest.lpg.config import get_config
    from napari_lesion_harvest.lpg.model import build_model

    previous = os.umask(0o077)  # a private umask does not change the mode
    try:
        write_checkpoint({"w": torch.ones(3)}, tmp_path / "store.pt")
        lpg_checkpoint.save_checkpoint(
            tmp_path / "lpg.pt", build_model(get_config("lite", max_side=32), pretrained=False)
        )
        lpc_checkpoint.save_checkpoint(
            build_classifier("axial", width="lite", patch_size=32, pretrained=False),
            tmp_path / "lpc.pt",
        )
    finally:
        os.umask(previous)
    for name in ("store.pt", "lpg.pt", "lpc.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == CHECKPOINT_MODE == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lpc.pt", "lpg.pt", "store.pt"]


WRITE_ONCE = textwrap.dedent(
    """
    import sys, torch
    from napari_lesion_harvest.store.checkpoints import write_checkpoint

    write_checkpoint({"fill": torch.full((1000,), 2.0)}, sys.argv[1])
    """
)


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_the_writer_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path):
    final = tmp_path / "models" / "lpg.pt"
    write_checkpoint({"fill": torch.zeros(1000)}, final)
    trace = tmp_path / "trace.txt"
    subprocess.run(
        ["strace", "-f", "-o", str(trace), "-e", "trace=openat,fchmod,fsync,rename,renameat2"]
        + [sys.executable, "-c", WRITE_ONCE, str(final)],
        check=True,
        env=CHILD_ENV,
        timeout=300,
    )
    folder = re.escape(str(final.parent))
    events = []  # (what, detail) in syscall order, for the files in the folder
    fds = {}
    for line in trace.read_text().splitlines():
        if m := re.search(rf'openat\(AT_FDCWD, "({folder}[^"]*)", [^)]*\) = (\d+)', line):
            fds[m[2]] = m[1]
        elif m := re.search(r"(fsync|fchmod)\((\d+)(?:, (\d+))?\)\s+= 0", line):
            if m[2] in fds:
                events.append((m[1], fds[m[2]], m[3]))
        elif m := re.search(rf'rename(?:at2)?\(.*?"({folder}/[^"]+)".*?"({folder}/[^"]+)"', line):
            events.append(("rename", m[1], m[2]))
    renames = [i for i, e in enumerate(events) if e[0] == "rename"]
    assert len(renames) == 1, events
    (at,) = renames
    temporary = events[at][1]
    assert Path(temporary).name.startswith(".lpg.pt.") and events[at][2] == str(final)
    assert ("fchmod", temporary, "0644") in events[:at]
    assert ("fsync", temporary, None) in events[:at]
    assert ("fsync", str(final.parent), None) in events[at:]
    assert load_checkpoint(final, sha256=None)["fill"][0] == 2.0


CRASH_AT_RENAME = textwrap.dedent(
    """
    import os, signal, sys, torch
    from napari_lesion_harvest.store import checkpoints

    os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # crash right there
    checkpoints.write_checkpoint({"fill": torch.full((1000,), 2.0)}, sys.argv[1])
    """
)


def test_a_writer_killed_between_write_and_rename_leaves_the_old_file(tmp_path):
    final = tmp_path / "lpg.pt"
    digest, _ = write_checkpoint({"fill": torch.ones(1000)}, final)
    before = final.read_bytes()
    done = subprocess.run(
        [sys.executable, "-c", CRASH_AT_RENAME, str(final)], env=CHILD_ENV, timeout=300
    )
    assert done.returncode == -signal.SIGKILL
    assert final.read_bytes() == before and sha256_file(final) == digest
    (left,) = [p for p in tmp_path.iterdir() if p != final]
    assert left.name.startswith(".lpg.pt.") and left.suffix == ".tmp"
    assert load_checkpoint(left, sha256=None)["fill"][0] == 2.0  # complete before the rename


WRITE_FOREVER = textwrap.dedent(
    """
    import itertools, sys, torch
    from napari_lesion_harvest.store.checkpoints import write_checkpoint

    for i in itertools.count(1):
        print(i, flush=True)
        write_checkpoint({"fill": torch.full((2_000_000,), float(i))}, sys.argv[1])
    """
)


@pytest.mark.parametrize("kill_after", [1, 3])
def test_a_writer_killed_at_any_moment_leaves_a_whole_checkpoint(tmp_path, kill_after):
    final = tmp_path / "lpg.pt"
    write_checkpoint({"fill": torch.full((2_000_000,), 0.0)}, final)
    child = subprocess.Popen(
        [sys.executable, "-c", WRITE_FOREVER, str(final)],
        stdout=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
    )
    try:
        for _ in range(kill_after):  # the kill lands while write number kill_after runs
            started = int(child.stdout.readline())
    finally:
        child.kill()
        child.wait(timeout=60)
    fill = load_checkpoint(final, sha256=None)["fill"]
    assert fill.shape == (2_000_000,)
    assert started - 1 <= float(fill[0]) <= started + 1 and bool((fill == fill[0]).all())


# ------------------------------------------------------------ refusal in rounds


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _swap(path: Path) -> None:
    """Replace the file with another valid checkpoint of the same model kind (other
    weights), written by the package's own writer."""
    if path.name.startswith("lpc"):
        model, meta = lpc_checkpoint.load_checkpoint(path)
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        lpc_checkpoint.save_checkpoint(model, path, meta=meta)
    else:
        model = lpg_checkpoint.load_model(path)
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        lpg_checkpoint.save_checkpoint(path, model)


CHANGES = {"tampered": _tamper, "truncated": _truncate, "swapped": _swap}


def _lpg_stepped(events) -> bool:
    """The LPG's training has reported a step."""
    return any(e[0] == "train_lpg" and e[1] > 0 for e in events)


@pytest.fixture(scope="module")
def lpg_interrupted(tmp_path_factory):
    """A project whose round 1 was stopped at step 5 of its LPG training (the
    training checkpoint on disk and recorded), and the round's config."""
    folder = tmp_path_factory.mktemp("lpg_interrupted")
    project_dir = make_blob_project(folder)
    config = load_config(str(folder / "tiny.json"))
    with HarvestProject.open(project_dir) as project:
        round_stopped_when(
            project, config, lambda events: any(e[0] == "train_lpg" and e[1] >= 5 for e in events)
        )
    return project_dir, config


@pytest.fixture(scope="module")
def lpc_trained(tmp_path_factory):
    """A project whose round 1 was stopped after committing ``train_lpc`` (before
    scoring), and the round's config."""
    folder = tmp_path_factory.mktemp("lpc_trained")
    project_dir = make_blob_project(folder)
    config = load_config(str(folder / "tiny.json"))
    with HarvestProject.open(project_dir) as project:
        round_stopped_when(project, config, lambda events: any(e[0] == "harvest" for e in events))
        assert project.rounds.get(1).completed_stages[-1] == "train_lpc"
    return project_dir, config


@pytest.fixture(scope="module")
def round_done(lpc_trained, tmp_path_factory):
    """A project with round 1 done, and the config."""
    project_dir = shutil.copytree(lpc_trained[0], tmp_path_factory.mktemp("done") / "project")
    with HarvestProject.open(project_dir) as project:
        run_rounds(project, lpc_trained[1], rounds=1, device="cpu")
        assert project.rounds.get(1).status == "done"
    return project_dir, lpc_trained[1]


def _refused(project_dir: Path, number: int, path: Path, run):
    """``run(project)`` a round and check that ``path`` is refused with the typed error,
    round ``number`` left failed (resumable) with that message, and the file untouched."""
    changed = path.read_bytes()
    with HarvestProject.open(project_dir) as project:
        with pytest.raises(ChecksumMismatchError) as raised:
            run(project)
        record = project.rounds.get(number)
    message = str(raised.value)
    assert str(path) in message and "was not loaded" in message
    assert record.status == "failed" and record.resumable and record.error == message
    assert path.read_bytes() == changed
    return message


def _resume(config):
    return lambda project: run_rounds(project, config, rounds=1, device="cpu")


@pytest.mark.parametrize("change", CHANGES)
def test_fine_tuning_refuses_a_changed_previous_lpg(round_done, tmp_path, change):
    project_dir = shutil.copytree(round_done[0], tmp_path / "project")
    previous = project_dir / "models" / "round_001" / "lpg.pt"
    CHANGES[change](previous)
    events = []

    def second_round(project):
        number = project.rounds.next_number()
        run_round(
            project,
            number,
            config=round_done[1],
            device="cpu",
            progress=lambda *event: events.append(event),
        )

    _refused(project_dir, 2, previous, second_round)
    assert [e[0] for e in events] == ["train_lpg"]  # refused before the first step


@pytest.mark.parametrize("change", CHANGES)
def test_resuming_does_not_load_a_changed_training_checkpoint(lpg_interrupted, tmp_path, change):
    """A training checkpoint whose content is not the recorded one (damaged, or written
    by a process killed before it recorded it) is not loaded: the LPG trains again from
    its first step, says why, and the round goes on."""
    project_dir = shutil.copytree(lpg_interrupted[0], tmp_path / "project")
    working = project_dir / "models" / "round_001" / "lpg.pt"
    CHANGES[change](working)
    with HarvestProject.open(project_dir) as project:
        events = round_stopped_when(project, lpg_interrupted[1], _lpg_stepped)
        assert project.rounds.get(1).resumable
    (refusal,) = [e for e in events if e[0] == "train_lpg" and "first step" in e[3]]
    assert str(working) in refusal[3] and "was not loaded" in refusal[3]
    assert [e[1] for e in events if e[0] == "train_lpg" and e[1] > 0][0] == 1


def test_resuming_continues_from_the_recorded_training_checkpoint(lpg_interrupted, tmp_path):
    """The positive control of the refusals: an intact training checkpoint is resumed
    at its step; once deleted, the stage trains again from its first step."""
    project_dir = shutil.copytree(lpg_interrupted[0], tmp_path / "project")
    with HarvestProject.open(project_dir) as project:
        (ref,) = project.rounds.get(1).checkpoints
    working = project_dir / ref.path
    assert sha256_file(working) == ref.sha256
    assert lpg_checkpoint.load_checkpoint(working, sha256=ref.sha256)["step"] == 5
    for first_step in (6, 1):
        with HarvestProject.open(project_dir) as project:
            events = round_stopped_when(project, lpg_interrupted[1], _lpg_stepped)
        assert [e[1] for e in events if e[0] == "train_lpg" and e[1] > 0][0] == first_step
        working.unlink()


@pytest.mark.parametrize("change", CHANGES)
def test_scoring_refuses_a_changed_classifier(lpc_trained, tmp_path, change):
    project_dir = shutil.copytree(lpc_trained[0], tmp_path / "project")
    classifier = project_dir / "models" / "round_001" / "lpc.pt"
    original = classifier.read_bytes()
    CHANGES[change](classifier)
    _refused(project_dir, 1, classifier, _resume(lpc_trained[1]))
    if change != "tampered":
        return
    classifier.write_bytes(original)  # restored from a backup: the round resumes and ends
    (project_dir / "models" / "round_001" / ".lpc.pt.left.tmp").write_bytes(b"half a write")
    with HarvestProject.open(project_dir) as project:
        (record,) = run_rounds(project, lpc_trained[1], rounds=1, device="cpu")
    assert record.number == 1 and record.status == "done"
    assert not list((project_dir / "models").rglob("*.tmp"))
