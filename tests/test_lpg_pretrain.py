"""Self-supervised pretraining of the LPG trunk (``lesion-harvest pretrain``) on a real
blob project on disk: the restoration loss falls, a stopped run resumes at its step, a
damaged weights file is refused by name, the evaluation volumes are never read, and
round 1 starts its LPG from the pretrained trunk."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_lesion_harvest.harvest.blob_project import make_blob_project
from napari_lesion_harvest.harvest.config import load_config
from napari_lesion_harvest.harvest.errors import HarvestInputError
from napari_lesion_harvest.harvest.pretraining import pretraining_volumes, run_pretraining
from napari_lesion_harvest.harvest.round import run_rounds
from napari_lesion_harvest.harvest.stages import lpg_architecture
from napari_lesion_harvest.io.sources import open_volume
from napari_lesion_harvest.lpg.checkpoint import load_checkpoint
from napari_lesion_harvest.lpg.corruption import Corruptions, corrupt, to_unit
from napari_lesion_harvest.lpg.data import LPGSample
from napari_lesion_harvest.lpg.model import HEAD_PREFIXES, trunk_state
from napari_lesion_harvest.lpg.pretrain import (
    DEFAULT_OPTIONS,
    PretrainSlices,
    pretrain_trunk,
    read_pretrained,
    restoration_batch,
    restoration_network,
)
from napari_lesion_harvest.lpg.train import LPGTrainOptions, train_lpg
from napari_lesion_harvest.progress import no_progress
from napari_lesion_harvest.store import HarvestProject
from napari_lesion_harvest.store.checkpoints import sha256_file
from napari_lesion_harvest.vocabulary import Split
from tests.round_command import ENV, lesion_harvest, write_config

#: Tiny optimisation for the blob volumes (64-pixel slices).
TINY = replace(DEFAULT_OPTIONS, canvas_size=64, warmup_steps=5, learning_rate=3e-3, seed=1)


def _tiny_lpg(blobs):
    """The LPG configuration of the blob project's tiny rounds."""
    return lpg_architecture(load_config(str(blobs[1] / "tiny.json")))


def _pretrain(project_dir, *more):
    return lesion_harvest("pretrain", project_dir, "--device", "cpu", *more)


def _weights(project_dir):
    with HarvestProject.open(project_dir) as project:
        return project.pretrained.current()


def _held_in_loss(path, slices, config) -> float:
    """Mean restoration loss of the weights in ``path`` on four fixed batches of ``slices``."""
    network = restoration_network(config)
    network.load_state_dict(read_pretrained(path, sha256=None)["model"])
    with torch.no_grad():
        losses = []
        for step in range(10**6, 10**6 + 4):  # steps the training never draws
            inputs, targets = restoration_batch(slices, config, TINY, step)
            losses.append(float(torch.nn.functional.mse_loss(network(inputs), targets)))
    return float(np.mean(losses))


def test_pretraining_lowers_the_restoration_loss_below_the_corrupted_input(blobs, tmp_path):
    with HarvestProject.open(blobs[0]) as project:
        slices = PretrainSlices([open_volume(r) for r in pretraining_volumes(project)])
    config, path = _tiny_lpg(blobs), tmp_path / "weights.pt"
    start = pretrain_trunk(
        slices, path, config=config, options=replace(TINY, steps=0), pretext="restoration"
    )
    assert (start.step, start.losses) == (0, [])
    before = _held_in_loss(path, slices, config)
    done = pretrain_trunk(
        slices, path, options=replace(TINY, steps=30), resume_from=(path, sha256_file(path))
    )
    assert done.step == 30 and len(done.losses) == 30 and not done.stopped
    # the resumed run kept its pretext (the default is another)
    assert read_pretrained(path, sha256=None)["pretext"] == "restoration"
    after = _held_in_loss(path, slices, config)
    corrupted = np.mean(  # restoring nothing: the corrupted centre slices themselves
        [
            float(torch.nn.functional.mse_loss(to_unit(inputs[:, 3:6], config), targets))
            for inputs, targets in (
                restoration_batch(slices, config, TINY, s) for s in range(10**6, 10**6 + 4)
            )
        ]
    )
    assert after < before / 2 and after < corrupted / 4, (before, after, corrupted)


def test_corruptions_change_the_stack_alike_on_every_slice_and_none_is_identity():
    rng = np.random.default_rng(0)
    stack = np.repeat(rng.uniform(size=(1, 32, 32)).astype(np.float32), 9, axis=0)
    corrupted = corrupt(stack, np.random.default_rng(3))
    assert corrupted.shape == stack.shape and corrupted.dtype == np.float32
    assert not np.allclose(corrupted, stack)
    assert np.array_equal(corrupted, np.repeat(corrupted[:1], 9, axis=0))  # 2.5D-consistent
    assert np.array_equal(corrupted, corrupt(stack, np.random.default_rng(3)))  # seeded
    nothing = Corruptions(shuffle_probability=0, intensity_probability=0, painting_probability=0)
    assert np.array_equal(corrupt(stack, rng, nothing), stack)


def test_the_evaluation_volumes_are_never_read(tmp_path):
    """The held-out volumes' files are gone: pretraining never opens them, and its
    sampler draws from every training volume and from nothing else."""
    project_dir = make_blob_project(tmp_path)  # its own image files, some of which go
    with HarvestProject.open(project_dir) as project:
        held_out = [
            r for split in (Split.V_H_test, Split.V_D_test) for r in project.volumes(split=split)
        ]
        training = {r.volume_id for r in project.volumes() if r not in held_out}
        assert held_out and training
        for record in held_out:
            shutil.move(record.path, record.path + ".away")
        assert {r.volume_id for r in pretraining_volumes(project)} == training
        slices = PretrainSlices([open_volume(r) for r in pretraining_volumes(project)])
        drawn = {slices.draw(np.random.default_rng([0, k]))[0].volume_id for k in range(500)}
        assert drawn == training
        result = run_pretraining(
            project,
            config="lite",
            steps=2,
            author="test",
            progress=no_progress,
            options=replace(TINY, batch_size=8),
        )
        assert result.step == 2
        assert project.pretrained.current().step == 2


def test_a_stopped_run_saves_and_the_next_one_continues_from_its_step(project_dir, blobs):
    tiny = blobs[1] / "tiny.json"
    command = ["pretrain", project_dir, "--config", tiny, "--device", "cpu", "--progress-json"]
    running = subprocess.Popen(
        [sys.executable, "-m", "napari_lesion_harvest", *map(str, [*command, "--steps", "9999"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    for line in running.stdout:
        event = json.loads(line)
        assert (event["stage"], event["total"]) == ("pretrain", 9999)
        assert event["message"].startswith("loss ")
        if event["step"] >= 3:
            running.send_signal(signal.SIGINT)
            break
    out, err = running.communicate(timeout=300)
    assert running.returncode == 0, err[-3000:]
    done = json.loads(out.splitlines()[-1])
    reached = done["step"]
    assert done["stage"] == "done" and done["metrics"]["stopped"] is True and reached >= 3
    weights = _weights(project_dir)
    assert (weights.step, weights.total_steps, weights.config["max_side"]) == (reached, 9999, 64)

    recorded = project_dir / weights.path
    unrecorded = recorded.with_name("lpg-9999999.pt")  # as a run killed before recording
    unrecorded.write_bytes(recorded.read_bytes()[:100])
    resumed = lesion_harvest(*command, "--steps", reached + 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert [e["step"] for e in events] == [reached + 1, reached + 2, reached + 2]
    assert events[-1]["metrics"]["stopped"] is False
    final = _weights(project_dir)
    assert final.step == reached + 2
    assert [p.name for p in recorded.parent.iterdir()] == [Path(final.path).name]


def test_a_time_budget_stops_and_saves(project_dir, blobs):
    done = _pretrain(
        project_dir, "--config", blobs[1] / "tiny.json", "--minutes", "0.02", "--steps", "99999"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stopped and saved" in done.stdout
    assert 0 < _weights(project_dir).step < 99999


def test_a_damaged_weights_file_is_refused_by_name_by_pretrain_and_by_the_round(
    project_dir, blobs
):
    tiny = blobs[1] / "tiny.json"
    assert _pretrain(project_dir, "--config", tiny, "--steps", "1").returncode == 0
    path = project_dir / _weights(project_dir).path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    refused = _pretrain(project_dir, "--steps", "2")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert str(path) in line and "sha256" in line
    round_1 = lesion_harvest("round", project_dir, "--config", tiny, "--device", "cpu")
    assert round_1.returncode == 2 and str(path) in round_1.stderr.strip().splitlines()[-1]


def test_the_lpg_starts_from_the_pretrained_trunk(project_dir, blobs):
    """Before its first step the LPG holds the pretrained trunk exactly (heads aside)."""
    with HarvestProject.open(project_dir) as project:
        run_pretraining(
            project,
            config=str(blobs[1] / "tiny.json"),
            steps=2,
            author="test",
            progress=no_progress,
            options=TINY,
        )
        weights = project.pretrained.current()
        volume = open_volume(project.volume("vol00"))
    path = project_dir / weights.path
    result = train_lpg(
        [LPGSample(volume, 5, np.zeros((0, 4)))],
        config=_tiny_lpg(blobs),
        options=LPGTrainOptions(steps=0),
        pretrained_trunk=(path, weights.sha256),
    )
    pretrained = read_pretrained(path, sha256=weights.sha256)["model"]
    loaded = trunk_state(result.model)
    trunk = {k.removeprefix("mscn.") for k in pretrained if k.startswith("mscn.")}
    assert set(loaded) == {k for k in trunk if not k.startswith(HEAD_PREFIXES)}
    for key, value in loaded.items():
        assert torch.equal(value, pretrained[f"mscn.{key}"]), key
    assert result.model.pretrained_note == f"self-supervised trunk from {path} (2 steps)"


@pytest.mark.slow
def test_round_1_records_the_pretrained_trunk_and_refuses_weights_of_another_lpg(
    project_dir, blobs, tmp_path
):
    tiny = blobs[1] / "tiny.json"
    assert _pretrain(project_dir, "--config", tiny, "--steps", "1").returncode == 0
    status = json.loads(lesion_harvest("status", project_dir, "--json").stdout)
    assert status["pretrained"] | {"minutes": 0} == {
        "steps": 1,
        "total_steps": 1,
        "minutes": 0,
        "config": "lite",
        "pretext": "blobs",
        "path": "models/pretrained/lpg-0000001.pt",
    }

    paper = write_config(tmp_path, "paper.json", preset="paper", **{"lpg.architecture": "paper"})
    refused = lesion_harvest("round", project_dir, "--config", paper, "--device", "cpu")
    assert refused.returncode == 2, refused.stderr[-3000:]
    message = refused.stderr.strip().splitlines()[-1]
    weights_file = project_dir / "models" / "pretrained" / "lpg-0000001.pt"
    assert str(weights_file) in message and "pretrained for LPG config 'lite'" in message

    short = load_config(str(write_config(tmp_path, "short.json", **{"lpg.train_steps": 2})))
    with HarvestProject.open(project_dir) as project:
        project.rounds.cancel(1, author="test")
        with pytest.raises(HarvestInputError):  # two LPG steps find no lesion for the LPC
            run_rounds(project, short, rounds=1, device="cpu")
        record = project.rounds.get(2)
        ref = project.rounds.checkpoint("lpg", round_number=2)
    note = f"self-supervised trunk from {weights_file} (1 steps)"
    assert record.metrics["lpg"]["initialisation"] == note
    assert load_checkpoint(project_dir / ref.path, sha256=ref.sha256)["pretrained_note"] == note

    discarded = _pretrain(project_dir, "--discard")
    assert discarded.returncode == 0 and not weights_file.exists()
    assert json.loads(lesion_harvest("status", project_dir, "--json").stdout)["pretrained"] is None


def test_pretraining_is_refused_while_a_round_holds_the_project(project_dir):
    with HarvestProject.open(project_dir) as project:
        with project.rounds.lock(1):
            refused = _pretrain(project_dir, "--steps", "1")
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "another round is running: round 1" in line
    assert _weights(project_dir) is None


def test_blob_pretraining_learns_its_pseudo_objects_and_the_lpg_takes_only_its_trunk(
    blobs, tmp_path
):
    with HarvestProject.open(blobs[0]) as project:
        slices = PretrainSlices([open_volume(r) for r in pretraining_volumes(project)])
        volume = open_volume(project.volume("vol00"))
    config, path = _tiny_lpg(blobs), tmp_path / "weights.pt"
    done = pretrain_trunk(
        slices, path, config=config, options=replace(TINY, steps=40), pretext="blobs"
    )
    assert np.mean(done.losses[-5:]) < 0.7 * np.mean(done.losses[:5]), done.losses
    again = pretrain_trunk(
        slices, path, options=replace(TINY, steps=41), resume_from=(path, sha256_file(path))
    )
    assert again.step == 41
    stored = read_pretrained(path, sha256=None)
    assert stored["pretext"] == "blobs" and stored["step"] == 41
    result = train_lpg(
        [LPGSample(volume, 5, np.zeros((0, 4)))],
        config=config,
        options=LPGTrainOptions(steps=0),
        pretrained_trunk=(path, sha256_file(path)),
    )
    for key, value in trunk_state(result.model).items():
        assert torch.equal(value, stored["model"][f"mscn.{key}"]), key
    heads = {
        k: v for k, v in result.model.state_dict().items() if k not in trunk_state(result.model)
    }
    assert heads and not any(
        torch.equal(v, stored["model"][f"mscn.{k}"]) for k, v in heads.items() if v.ndim
    )
    with pytest.raises(ValueError, match="restoration, blobs"):
        pretrain_trunk(slices, tmp_path / "other.pt", config=config, pretext="inpainting")


def test_the_project_records_the_pretext_and_its_weights_continue_only_with_it(project_dir, blobs):
    with HarvestProject.open(project_dir) as project:
        run_pretraining(
            project,
            pretext="blobs",
            config=str(blobs[1] / "tiny.json"),
            steps=1,
            author="test",
            progress=no_progress,
            options=TINY,
        )
        weights = project.pretrained.current()
        assert weights.pretext == "blobs" and "blobs pretext" in weights.describe()
        with pytest.raises(HarvestInputError, match="the LPC's trunks pretrain by restoration"):
            run_pretraining(
                project, network="lpc", pretext="blobs", author="test", progress=no_progress
            )
    refused = _pretrain(project_dir, "--pretext", "restoration", "--steps", "2")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert "blobs pretext" in line and "not restoration" in line
    assert _weights(project_dir) == weights  # nothing was trained
