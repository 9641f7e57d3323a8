"""Rounds in the store: snapshot, stages in one transaction, lock, verdicts, pool, checkpoints."""

from __future__ import annotations

import pickle
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.store import (
    ChecksumMismatchError,
    InvalidValueError,
    NotFoundError,
    ProposalRow,
    ProposalUpdate,
    RoundLockedError,
    RoundStateError,
    StageResult,
)
from napari_lesion_harvest.store.checkpoints import CheckpointError, load_checkpoint, sha256_file
from tests.builders import new_project, recist_mark, synthetic_volume, writing_round


def _proposal(z0=2, k=3, x=10.0, score=0.9):
    rng = np.random.default_rng(z0 * 100 + k)
    boxes = np.array([[x, x, x + 20, x + 18]] * k) + rng.uniform(-1, 1, (k, 4))
    scores = np.linspace(0.3, score, k)
    return Proposal3D(np.arange(z0, z0 + k), boxes, scores)


@pytest.fixture
def project(tmp_path):
    volumes = [
        synthetic_volume("m1", "V_M"),
        synthetic_volume("h1"),
        synthetic_volume("h2"),
        synthetic_volume("t1", "V_H_test"),
    ]
    with new_project(tmp_path / "proj", volumes) as opened:
        opened.add_marks([("m1", recist_mark()), ("h1", recist_mark(5))], author="DL")
        yield opened


def _run_round(project, stages, *, config=None):
    with writing_round(project, config=config or {"lr": 1e-4}, metrics={"done": True}) as round_:
        ids = {stage: round_.write(stage, result) for stage, result in stages}
    return round_.number, round_.snapshot, ids


def test_round_lifecycle_proposals_roles_and_summaries(project):
    rows = [
        ProposalRow("h1", _proposal(4), role="candidate"),
        ProposalRow("h1", _proposal(8, x=40), role="candidate"),
        ProposalRow("m1", _proposal(2), role="P_RM"),
    ]
    number, snapshot, ids = _run_round(
        project,
        [
            ("tracking", StageResult(proposals=rows, metrics={"n_proposals": 3})),
            (
                "harvest",
                StageResult(
                    updates=[ProposalUpdate(1, "P_pos_H", s_c=0.8, s_gc=0.72)],
                    metrics={"threshold": 0.5},
                ),
            ),
        ],
    )
    assert list(ids["tracking"]) == [1, 2, 3]
    record = project.rounds.get(number)
    assert record.status == "done" and record.stage == "harvest"
    assert record.completed_stages == ("tracking", "harvest")
    assert record.metrics == {"n_proposals": 3, "threshold": 0.5, "done": True}
    assert record.config == {"lr": 1e-4}
    assert snapshot.previous_round is None and snapshot.previous_pool == []
    assert [v.volume_id for v in snapshot.volumes["V_H"]] == ["h1", "h2"]
    assert [m.mark.z for m in snapshot.marks["h1"]] == [5]

    overlays = project.volume_overlays("h1")
    assert overlays.round_number == number
    first = overlays.proposals[0]
    assert (first.role, first.s_c, first.s_gc, first.stage) == ("P_pos_H", 0.8, 0.72, "tracking")
    original = rows[0].proposal
    np.testing.assert_array_equal(first.proposal.slices, original.slices)
    np.testing.assert_allclose(first.proposal.boxes, original.boxes, rtol=1e-6)
    np.testing.assert_allclose(first.box_3d, original.box_3d)
    assert first.s_g == pytest.approx(original.s_g)

    summary = {s.volume_id: s for s in project.volume_summaries()}
    assert (summary["h1"].n_proposals, summary["h1"].n_harvested) == (2, 1)
    assert summary["m1"].n_proposals == 1 and summary["m1"].n_harvested == 0
    training = list(project.proposals(number, roles=["P_RM", "P_RH"]))
    assert [p.volume_id for p in training] == ["m1"]


def test_verdicts_outrank_the_classifier_and_undo(project):
    _, _, ids = _run_round(
        project,
        [
            (
                "harvest",
                StageResult(
                    proposals=[
                        ProposalRow("h1", _proposal(4), role="P_pos_H", s_c=0.9, s_gc=0.8),
                        ProposalRow("h1", _proposal(9, x=50), role="P_neg_H", s_c=0.1),
                    ]
                ),
            )
        ],
    )
    positive, negative = ids["harvest"]
    project.set_verdict(positive, "rejected", author="rad")
    project.set_verdict(negative, "accepted", author="rad")
    summary = {s.volume_id: s for s in project.volume_summaries()}["h1"]
    assert (summary.n_harvested, summary.n_verdicts) == (1, 2)
    lesions = project.rounds.harvested_lesions()
    assert [p.id for p in lesions] == [negative]
    assert project.proposal(negative).is_lesion and not project.proposal(positive).is_lesion

    project.set_verdict(negative, "rejected", author="rad")  # change of mind
    assert project.proposal(negative).verdict.verdict == "rejected"
    project.set_verdict(negative, None, author="rad")  # cleared
    assert project.proposal(negative).verdict is None
    with pytest.raises(InvalidValueError, match="verdict"):
        project.set_verdict(positive, "maybe", author="rad")

    # the next round receives the verdicts with their proposals' geometry
    number = project.rounds.create().number
    with project.rounds.lock(number) as lock:
        snapshot = project.rounds.start(number, lock=lock)
    assert [(p.id, p.verdict.verdict) for p in snapshot.verdicts] == [(positive, "rejected")]
    assert snapshot.previous_round == 1


def test_snapshot_is_frozen_and_reused_when_resuming(project):
    number = project.rounds.create().number
    with project.rounds.lock(number) as lock:
        snapshot = project.rounds.start(number, lock=lock)
        project.add_mark("h2", recist_mark(7), author="rad")  # the GUI keeps working
        project.rounds.write_stage(
            number, "detect", StageResult(proposals=[ProposalRow("h2", _proposal())]), lock=lock
        )
        project.rounds.fail(number, "CUDA out of memory")
    assert "h2" not in snapshot.marks
    record = project.rounds.get(number)
    assert record.status == "failed" and record.resumable and record.error == "CUDA out of memory"
    with project.rounds.lock(number) as lock:
        resumed = project.rounds.start(number, lock=lock)
        assert resumed.completed_stages == ("detect",)
        assert resumed.marks.keys() == snapshot.marks.keys()
        assert resumed.taken_at == snapshot.taken_at
        with pytest.raises(RoundStateError, match="already committed"):
            project.rounds.write_stage(number, "detect", StageResult(), lock=lock)
        project.rounds.finish(number, lock=lock)
    with pytest.raises(RoundStateError):
        project.rounds.fail(number, "too late")


def test_a_started_rounds_snapshot_reads_back_without_changing_the_round(project):
    number = project.rounds.create({"seed": 3}).number
    with pytest.raises(RoundStateError, match=f"round {number} is queued"):
        project.rounds.snapshot(number)
    with pytest.raises(NotFoundError, match="no round 99"):
        project.rounds.snapshot(99)
    with project.rounds.lock(number) as lock:
        taken = project.rounds.start(number, lock=lock)
        project.rounds.write_stage(number, "detect", StageResult(), lock=lock)
        project.add_mark("h2", recist_mark(7), author="rad")
        project.rounds.finish(number, lock=lock)
    read = project.rounds.snapshot(number)
    assert project.rounds.get(number).status == "done"
    assert read.config == {"seed": 3}
    assert read.taken_at == taken.taken_at and read.completed_stages == ("detect",)
    assert read.marks.keys() == taken.marks.keys() and "h2" not in read.marks
    assert {s: [v.volume_id for v in vs] for s, vs in read.volumes.items()} == {
        s: [v.volume_id for v in vs] for s, vs in taken.volumes.items()
    }


def test_bad_stage_writes_nothing(project):
    number = project.rounds.create().number
    rows = [ProposalRow("h1", _proposal()), ProposalRow("ghost", _proposal())]
    with project.rounds.lock(number) as lock:
        project.rounds.start(number, lock=lock)
        with pytest.raises(NotFoundError, match="ghost"):
            project.rounds.write_stage(
                number, "detect", StageResult(proposals=rows, metrics={"x": 1}), lock=lock
            )
        with pytest.raises(InvalidValueError, match="role"):
            project.rounds.write_stage(
                number,
                "detect",
                StageResult(proposals=[ProposalRow("h1", _proposal(), "P?")]),
                lock=lock,
            )
        with pytest.raises(NotFoundError, match="no proposal 77"):
            project.rounds.write_stage(
                number, "detect", StageResult(updates=[ProposalUpdate(77, "P_RH")]), lock=lock
            )
    record = project.rounds.get(number)
    assert record.completed_stages == () and record.metrics == {}
    assert list(project.proposals(number)) == []


def test_pool_accumulates_across_rounds(project):
    _, _, first = _run_round(
        project,
        [
            (
                "harvest",
                StageResult(
                    proposals=[
                        ProposalRow("h1", _proposal(), role="P_pos_H", in_pool=True),
                        ProposalRow("h1", _proposal(9), role="candidate"),
                    ]
                ),
            )
        ],
    )
    number = project.rounds.create().number
    with project.rounds.lock(number) as lock:
        snapshot = project.rounds.start(number, lock=lock)
        assert [p.id for p in snapshot.previous_pool] == [first["harvest"][0]]
        carried = [p.id for p in snapshot.previous_pool]
        new = project.rounds.write_stage(
            number,
            "harvest",
            StageResult(
                proposals=[ProposalRow("h2", _proposal(), role="P_neg_H", in_pool=True)],
                pool_carry=carried,
            ),
            lock=lock,
        )
        project.rounds.finish(number, lock=lock)
    assert [p.id for p in project.rounds.pool(number)] == [*carried, *new]
    # harvested lesions of round 2 include the P_pos_H carried in the pool
    assert [p.id for p in project.rounds.harvested_lesions()] == carried


def test_second_round_is_refused_while_a_live_process_holds_the_lock(project):
    number = project.rounds.create().number
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from napari_lesion_harvest.store import HarvestProject
                project = HarvestProject.open({str(project.folder)!r})
                lock = project.rounds.lock({number}).acquire()
                print("locked", flush=True)
                sys.stdin.readline()
                lock.release()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RoundLockedError, match=rf"round {number} \(pid {holder.pid}"):
            project.rounds.lock(number).acquire()
        assert project.rounds.recover_interrupted() == []
    finally:
        holder.communicate("\n", timeout=30)
    with project.rounds.lock(number):  # released: free again
        pass


def test_lock_of_a_killed_process_is_taken_over_and_its_round_failed(project):
    number = project.rounds.create().number
    script = textwrap.dedent(
        f"""
        import os, signal
        from napari_lesion_harvest.store import HarvestProject
        project = HarvestProject.open({str(project.folder)!r})
        lock = project.rounds.lock({number}).acquire()
        project.rounds.start({number}, lock=lock)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert result.returncode == -9
    assert project.rounds.get(number).status == "running"
    assert project.rounds.lock_holder().round_number == number
    assert project.rounds.recover_interrupted() == [number]
    record = project.rounds.get(number)
    assert record.status == "failed" and "interrupted" in record.error
    with project.rounds.lock(number) as lock:  # stale lock gone
        assert project.rounds.start(number, lock=lock).round_number == number


def test_a_new_round_is_created_only_under_its_lock(project):
    assert project.rounds.next_number() == 1
    with pytest.raises(NotFoundError, match="no round 2"):
        project.rounds.lock(2)  # neither a round nor the next one
    with project.rounds.lock(1) as lock:
        record = project.rounds.create({"seed": 1}, lock=lock)
        assert (record.number, record.status) == (1, "queued")
        assert project.rounds.start(1, lock=lock).round_number == 1
        project.rounds.fail(1, "the volume is unreadable")
    assert project.rounds.get(1).resumable
    with project.rounds.lock(2) as lock:
        project.rounds.create(lock=lock)
        with pytest.raises(RoundStateError, match="round 2 was created by another process"):
            project.rounds.create(lock=lock)  # the number the lock was taken for is gone
        project.rounds.start(2, lock=lock)
        record = project.rounds.fail(2, "no positives for the LPC", resumable=False)
    assert record.status == "cancelled" and not record.resumable
    assert record.error == "no positives for the LPC"
    other = project.rounds.lock(3)
    with pytest.raises(RoundLockedError):
        project.rounds.create(lock=other)  # not held
    assert [r.number for r in project.rounds.list()] == [1, 2]


def test_training_checkpoints_are_recorded_while_the_round_runs(project):
    torch = pytest.importorskip("torch")
    number = project.rounds.create().number
    with project.rounds.lock(number) as lock:
        ref = project.rounds.save_checkpoint(number, "lpg", {"w": torch.zeros(3)})
        with pytest.raises(RoundStateError, match="not running"):
            project.rounds.record_checkpoint(number, ref, lock=lock)
        project.rounds.start(number, lock=lock)
        project.rounds.record_checkpoint(number, ref, lock=lock)
        assert project.rounds.checkpoint("lpg", round_number=number) == ref
        final = project.rounds.save_checkpoint(number, "lpg", {"w": torch.ones(3)})
        assert final.path == ref.path and final.sha256 != ref.sha256
        project.rounds.write_stage(number, "train", StageResult(checkpoints=[final]), lock=lock)
    assert project.rounds.get(number).checkpoints == (final,)
    assert torch.equal(_recorded(project, "lpg", round_number=number)["w"], torch.ones(3))


def test_starting_a_round_removes_what_a_killed_checkpoint_write_left(project):
    number = project.rounds.create().number
    models = project.folder / "models" / f"round_{number:03d}"
    models.mkdir(parents=True)
    (models / ".lpg.pt.k3j2.tmp").write_bytes(b"half a checkpoint")
    (models / "notes.txt").write_text("kept")
    with project.rounds.lock(number) as lock:
        project.rounds.start(number, lock=lock)
    assert [p.name for p in models.iterdir()] == ["notes.txt"]


def test_a_zombie_writer_cannot_write_after_losing_its_lock(project):
    number = project.rounds.create().number
    lock = project.rounds.lock(number).acquire()
    project.rounds.start(number, lock=lock)
    other = sqlite3.connect(project.database_path)  # another host takes the lock over
    other.execute("UPDATE round_lock SET token = 'other', host = 'elsewhere'")
    other.commit()
    other.close()
    with pytest.raises(RoundLockedError, match="lost its lock"):
        project.rounds.write_stage(number, "detect", StageResult(), lock=lock)


def _recorded(project, name: str, **where):
    """Checkpoint ``name`` read as a stage reads it: the project's record, then the file
    checked against the sha256 recorded."""
    ref = project.rounds.checkpoint(name, **where)
    return load_checkpoint(project.folder / ref.path, sha256=ref.sha256)


def test_checkpoints_are_verified_and_loaded_weights_only(project, tmp_path):
    torch = pytest.importorskip("torch")
    number = project.rounds.create().number
    state = {"conv.weight": torch.arange(6.0).reshape(2, 3), "epoch": 3}
    with project.rounds.lock(number) as lock:
        project.rounds.start(number, lock=lock)
        ref = project.rounds.save_checkpoint(number, "lpg", state)
        project.rounds.write_stage(number, "lpg_train", StageResult(checkpoints=[ref]), lock=lock)
        project.rounds.finish(number, lock=lock)
    assert (project.folder / ref.path).is_file() and len(ref.sha256) == 64
    assert not list((project.folder / "models").rglob("*.tmp"))
    loaded = _recorded(project, "lpg")
    assert torch.equal(loaded["conv.weight"], state["conv.weight"]) and loaded["epoch"] == 3
    assert project.rounds.get(number).checkpoints == (ref,)

    # a replaced file is caught by its checksum
    path = project.folder / ref.path
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        _recorded(project, "lpg")

    # a pickle with code in it is refused even with a matching checksum
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="more than tensors"):
        load_checkpoint(path, sha256=sha256_file(path))
    with pytest.raises(NotFoundError):
        _recorded(project, "lpc")
