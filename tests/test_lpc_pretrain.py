"""Self-supervised pretraining of the LPC's view trunks (``lesion-harvest pretrain --network
lpc``) on a real blob project on disk: the restoration loss falls, a resumed run ends with
the weights of an uninterrupted one, the evaluation volumes are never read, an LPC starts
from the trunks exactly, a round uses them where they fit and says in one line where they
do not, and the LPG's weights recorded by the previous version still read as the LPG's."""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from torch.nn.functional import mse_loss

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.harvest.blob_project import make_blob_project
from napari_lesion_harvest.harvest.config import load_config
from napari_lesion_harvest.harvest.pretraining import (
    lpc_architecture,
    pretraining_volumes,
    run_pretraining,
)
from napari_lesion_harvest.harvest.round import run_rounds
from napari_lesion_harvest.harvest.stages import lpg_architecture
from napari_lesion_harvest.io.sources import open_volume
from napari_lesion_harvest.lpc.options import LPCTrainOptions
from napari_lesion_harvest.lpc.pretrain import (
    DEFAULT_OPTIONS,
    read_pretrained,
    restoration_batch,
    restoration_network,
    trunk_misfit,
)
from napari_lesion_harvest.lpc.pretrain import pretrain_trunks as pretrain_lpc
from napari_lesion_harvest.lpc.train import ProposalSet, train_lpc
from napari_lesion_harvest.lpg.model import build_model
from napari_lesion_harvest.lpg.pretrain import PretrainSlices, load_pretrained_trunk
from napari_lesion_harvest.lpg.pretrain import pretrain_trunk as pretrain_lpg
from napari_lesion_harvest.progress import no_progress
from napari_lesion_harvest.store import HarvestProject, rows
from napari_lesion_harvest.store.checkpoints import CheckpointError, sha256_file
from napari_lesion_harvest.store.pretrained import SAVED, PretrainedWeights
from napari_lesion_harvest.vocabulary import Split
from tests.round_command import lesion_harvest, write_config

#: Tiny optimisation for the blob volumes' 32-pixel LPC patches.
TINY = replace(DEFAULT_OPTIONS, warmup_steps=5, learning_rate=1e-2, seed=1)


@pytest.fixture(scope="module")
def slices(blobs):
    with HarvestProject.open(blobs[0]) as project:
        return PretrainSlices([open_volume(r) for r in pretraining_volumes(project)])


def _tiny_lpc(blobs, **changes):
    """The classifier configuration of the blob project's tiny rounds."""
    return lpc_architecture(load_config(str(blobs[1] / "tiny.json"), changes))


def _held_in_batches(slices, config) -> list:
    """Four fixed batches of ``slices`` that the training never draws."""
    return [restoration_batch(slices, config, TINY, step) for step in range(10**6, 10**6 + 4)]


def _held_in_loss(path, batches, config) -> float:
    """Mean restoration loss of the weights in ``path`` on ``batches``."""
    network = restoration_network(config)
    network.load_state_dict(read_pretrained(path, sha256=None)["model"])
    network.eval()
    with torch.no_grad():
        return float(np.mean([mse_loss(network(x), y) for x, y in batches]))


def test_pretraining_restores_better_than_the_corrupted_input_and_the_mean(
    blobs, slices, tmp_path
):
    config, path = _tiny_lpc(blobs), tmp_path / "weights.pt"
    assert config["variant"] == "multiview" and config["patch_size"] == 32
    done = pretrain_lpc(slices, path, config=config, options=replace(TINY, steps=60))
    assert done.step == 60 and len(done.losses) == 60 and not done.stopped
    batches = _held_in_batches(slices, config)
    after = _held_in_loss(path, batches, config)
    targets = torch.cat([y for _, y in batches])
    mean = float(mse_loss(torch.full_like(targets, float(targets.mean())), targets))
    corrupted = float(np.mean([mse_loss(x, y) for x, y in batches]))  # restoring nothing
    assert after < 0.8 * mean and after < corrupted / 4, (after, mean, corrupted)


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(blobs, slices, tmp_path):
    config = _tiny_lpc(blobs, **{"lpc.variant": "axial"})
    whole, parts = tmp_path / "whole.pt", tmp_path / "parts.pt"
    pretrain_lpc(slices, whole, config=config, options=replace(TINY, steps=6))
    done = []
    first = pretrain_lpc(
        slices,
        parts,
        config=config,
        options=replace(TINY, steps=6),
        progress=lambda step, total, parts: done.append(step),
        should_stop=lambda: len(done) >= 3,
    )
    assert first.stopped and first.step == 3
    resumed = pretrain_lpc(
        slices,
        parts,
        config={},  # a resumed run keeps the checkpoint's configuration
        options=replace(TINY, steps=6),
        resume_from=(parts, sha256_file(parts)),
    )
    assert (resumed.step, len(resumed.losses)) == (6, 3)
    one, two = (read_pretrained(p, sha256=None) for p in (whole, parts))
    assert one["config"] == two["config"] == config
    assert one["model"].keys() == two["model"].keys()
    for key, value in one["model"].items():
        assert torch.equal(value, two["model"][key]), key


def test_the_evaluation_volumes_are_never_read(tmp_path):
    """The held-out volumes' files are gone: the LPC's pretraining never opens them."""
    project_dir = make_blob_project(tmp_path)
    with HarvestProject.open(project_dir) as project:
        held_out = [
            r for split in (Split.V_H_test, Split.V_D_test) for r in project.volumes(split=split)
        ]
        assert held_out
        for record in held_out:
            shutil.move(record.path, record.path + ".away")
        result = run_pretraining(
            project,
            network="lpc",
            config=str(tmp_path / "tiny.json"),
            steps=2,
            author="test",
            progress=no_progress,
            options=replace(TINY, batch_size=16),
        )
        weights = project.pretrained.current("lpc")
        assert result.step == 2 and weights.step == 2 and weights.network == "lpc"
        assert project.pretrained.current("lpg") is None


def _training_sets(slices) -> list[ProposalSet]:
    """Two volumes with one positive and one negative box each (labels are arbitrary)."""
    box = Proposal3D([5, 6], [[20, 20, 30, 30]] * 2, [0.9, 0.9])
    other = Proposal3D([3], [[40, 40, 50, 50]], [0.5])
    return [ProposalSet(v, [box, other], [1, 0]) for v in slices.volumes[:2]]


def test_the_lpc_starts_from_the_pretrained_trunks_and_refuses_misfits_by_name(
    blobs, slices, tmp_path
):
    config, path = _tiny_lpc(blobs), tmp_path / "lpc.pt"
    pretrain_lpc(slices, path, config=config, options=replace(TINY, steps=2))
    sha256 = sha256_file(path)
    options = LPCTrainOptions(
        variant="multiview", width="lite", patch_size=32, epochs=0, holdout_fraction=0
    )
    result = train_lpc(_training_sets(slices), options, pretrained_trunks=(path, sha256))
    pretrained = read_pretrained(path, sha256=sha256)["model"]
    loaded = result.model.trunks.state_dict()
    assert set(loaded) == {k.removeprefix("trunks.") for k in pretrained if "trunks." in k}
    for key, value in loaded.items():
        assert torch.equal(value, pretrained[f"trunks.{key}"]), key
    assert result.model.pretrained_source == f"self-supervised trunks from {path} (2 steps)"

    wider = replace(options, patch_size=48)
    with pytest.raises(CheckpointError) as refused:
        train_lpc(_training_sets(slices), wider, pretrained_trunks=(path, sha256))
    (line,) = str(refused.value).splitlines()
    assert str(path) in line and "patch_size 48 is not the pretrained 32" in line
    assert trunk_misfit(config, {**config, "variant": "3d"}) == "it has no 2D trunk"


def test_a_round_starts_its_lpc_from_fitting_trunks_and_says_why_others_do_not(
    project_dir, blobs, tmp_path
):
    tiny = blobs[1] / "tiny.json"
    done = lesion_harvest(
        "pretrain", project_dir, "--network", "lpc", "--config", tiny, "--steps", "2"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LPC multiview, width lite, 32 px patches" in done.stdout
    config = load_config(str(tiny), {"lpc.candidates": ("multiview", "axial")})
    events = []
    with HarvestProject.open(project_dir) as project:
        weights = project.pretrained.current("lpc")
        (record,) = run_rounds(
            project, config, rounds=1, device="cpu", progress=lambda *e: events.append(e)
        )
    lpc = record.metrics["lpc"]
    reason = lpc["pretrained_trunks_unused"]
    (line,) = reason.splitlines()
    assert "the axial LPC: its variant axial is not the pretrained multiview" in line
    assert weights.path in line and "multiview LPC" not in line
    assert [e for e in events if e[0] == "train_lpc" and e[3:4] == (reason,)]
    expected = f"self-supervised trunks from {project_dir / weights.path} (2 steps)"
    initialisation = {"multiview": expected, "axial": "random"}[lpc["classifier"]]
    assert lpc["initialisation"] == initialisation


def test_trunkless_variants_are_refused_in_one_line_and_nothing_is_written(project_dir, tmp_path):
    cube = write_config(tmp_path, "cube.json", **{"lpc.variant": "3d"})
    refused = lesion_harvest("pretrain", project_dir, "--network", "both", "--config", cube)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert "lpc.variant 3d: the 3d LPC (r3d-18 on a cube) has no 2D trunk" in line
    assert not (project_dir / "models" / "pretrained").exists()


def test_both_networks_share_the_minutes_and_discard_takes_one_network(project_dir, blobs):
    tiny = blobs[1] / "tiny.json"
    both = ["pretrain", project_dir, "--network", "both", "--config", tiny, "--device", "cpu"]
    done = lesion_harvest(*both, "--minutes", "0.04", "--steps", "99999", "--progress-json")
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert {e["stage"] for e in events} == {"pretrain", "pretrain-lpc", "done"}
    summary = events[-1]["metrics"]
    assert summary["stopped"] is True
    for network in ("lpg", "lpc"):
        assert summary[network]["stopped"] and 0 < summary[network]["step"] < 99999
    status = json.loads(lesion_harvest("status", project_dir, "--json").stdout)
    assert status["pretrained"]["steps"] == summary["lpg"]["step"]
    assert status["pretrained_lpc"]["steps"] == summary["lpc"]["step"]
    assert status["pretrained_lpc"]["config"]["variant"] == "multiview"

    discarded = lesion_harvest("pretrain", project_dir, "--network", "lpc", "--discard")
    assert discarded.returncode == 0 and discarded.stdout.startswith("discarded ")
    status = json.loads(lesion_harvest("status", project_dir, "--json").stdout)
    assert status["pretrained_lpc"] is None
    assert status["pretrained"]["steps"] == summary["lpg"]["step"]
    files = sorted(p.name for p in (project_dir / "models" / "pretrained").iterdir())
    assert files == [f"lpg-{summary['lpg']['step']:07d}.pt"]


def test_lpg_weights_recorded_by_the_previous_version_still_read_as_the_lpgs(
    project_dir, blobs, slices
):
    """Earlier versions recorded the LPG's weights without ``network`` and ``pretext``:
    they stay the project's LPG weights, learnt by restoration, next to LPC weights
    pretrained since."""
    lpg_config = lpg_architecture(load_config(str(blobs[1] / "tiny.json")))
    path = project_dir / "models" / "pretrained" / "lpg-0000000.pt"
    pretrain_lpg(
        slices, path, config=lpg_config, options=replace(TINY, steps=0), pretext="restoration"
    )
    old = {  # asdict(PretrainedWeights) of the previous version
        "path": "models/pretrained/lpg-0000000.pt",
        "sha256": sha256_file(path),
        "size": path.stat().st_size,
        "step": 0,
        "total_steps": 0,
        "seconds": 1.5,
        "config": lpg_config.to_dict(),
    }
    with sqlite3.connect(project_dir / "project.sqlite") as conn:
        rows.append_audit(conn, author="previous", action=SAVED, details=old)
    with HarvestProject.open(project_dir) as project:
        assert project.pretrained.current("lpg") == PretrainedWeights(**old, network="lpg")
        assert project.pretrained.current("lpc") is None
        run_pretraining(
            project,
            network="lpc",
            config=str(blobs[1] / "tiny.json"),
            steps=1,
            author="test",
            progress=no_progress,
            options=TINY,
        )
        lpg = project.pretrained.current("lpg")
        assert asdict(lpg) == {**old, "network": "lpg", "pretext": "restoration"}
        assert project.pretrained.current("lpc").path == "models/pretrained/lpc-0000001.pt"
    assert path.exists()  # pruning kept the LPG's file
    model = build_model(lpg_config, pretrained=False)
    load_pretrained_trunk(model, path, sha256=lpg.sha256)
    assert model.pretrained_note == f"self-supervised trunk from {path} (0 steps)"
