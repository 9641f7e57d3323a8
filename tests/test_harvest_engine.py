"""The harvest engine on a real (tiny) project: import, checks, a whole round, stop and resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from napari_lesion_harvest.geometry import iou_2d
from napari_lesion_harvest.harvest.blob_project import V_M, make_blob_project
from napari_lesion_harvest.harvest.config import load_config, with_changes
from napari_lesion_harvest.harvest.round import HarvestInputError, check_inputs, run_rounds
from napari_lesion_harvest.harvest.stages import STAGES, RoundState, train_lpg_stage
from napari_lesion_harvest.harvest.training_sets import (
    lpg_training_slices,
    on_regions,
    usable_marks,
)
from napari_lesion_harvest.lpc.checkpoint import load_checkpoint as load_classifier
from napari_lesion_harvest.store import HarvestProject, VolumeRecord
from napari_lesion_harvest.store.checkpoints import sha256_file
from tests.round_command import NO_GPU_ENV, lesion_harvest
from tests.round_runs import next_round_snapshot, round_stopped_when


@pytest.fixture(scope="module")
def blob_project(tmp_path_factory):
    return make_blob_project(tmp_path_factory.mktemp("blobs"))


#: LPC context of the finished round, not the default (64), to see it reach the LPC.
CONTEXT_PX = 48.0


@pytest.fixture(scope="module")
def finished_round(tmp_path_factory):
    """A project after one complete round, and the progress events it reported."""
    folder = tmp_path_factory.mktemp("round")
    project_dir = make_blob_project(folder)
    events = []
    with HarvestProject.open(project_dir) as project:
        run_rounds(
            project,
            load_config(str(folder / "tiny.json"), {"lpc.pad_px": CONTEXT_PX}),
            rounds=1,
            device="cpu",
            progress=lambda *event: events.append(event),
        )
    return project_dir, events


def test_import_brings_volumes_splits_and_marks(blob_project):
    with HarvestProject.open(blob_project) as project:
        summaries = {s.volume_id: s for s in project.volume_summaries()}
        volume = project.volume("vol05")
    assert len(summaries) == 8
    assert {v for v, s in summaries.items() if s.split == "V_M"} == set(V_M)
    assert summaries["vol07"].split == "V_H_test"
    assert summaries["vol05"].n_marks == 1  # original mark only
    assert summaries["vol00"].n_marks == 4 and summaries["vol00"].n_expert_marks == 3
    assert volume.reader == "simpleitk" and volume.shape == (12, 64, 64)
    np.testing.assert_allclose(volume.spacing, (2.0, 0.8, 0.8), rtol=1e-6)


def test_snapshot_hides_the_test_volumes_full_marks(blob_project, tmp_path):
    snapshot = next_round_snapshot(blob_project)
    marks = usable_marks(snapshot)
    assert len(marks["vol07"]) == 1  # original only; 3 expert marks hidden
    assert len(marks["vol00"]) == 4
    slices = lpg_training_slices(snapshot, use_pool=False)
    assert sum(len(s.positive_boxes) for s in slices) == sum(len(m) for m in marks.values())
    assert all(len(s.hard_negative_boxes) == 0 for s in slices)


def test_unready_projects_are_refused_before_any_work(tmp_path, blob_project):
    with HarvestProject.open(tmp_path / "empty", create=True) as project:
        with pytest.raises(HarvestInputError, match="no volumes"):
            check_inputs(project)
        project.add_volumes(
            [VolumeRecord("a", "simpleitk", "a.nii.gz", "V_H", shape=(2, 2, 2))], author="t"
        )
        with pytest.raises(HarvestInputError, match=r"no fully annotated volumes \(V_M\)"):
            check_inputs(project)
        project.set_volume_complete("a", author="t")
        with pytest.raises(HarvestInputError, match="have no marks"):
            check_inputs(project)
    done = lesion_harvest(
        "round", blob_project, "--device", "cuda", "--config", "lite", env=NO_GPU_ENV
    )
    assert done.returncode == 2
    assert "no usable CUDA GPU" in done.stderr and "Traceback" not in done.stderr


def test_a_round_runs_every_stage_and_leaves_a_consistent_project(finished_round):
    project_dir, events = finished_round
    with HarvestProject.open(project_dir) as project:
        (record,) = project.rounds.list()
        proposals = list(project.proposals(record.number))
        splits = {v.volume_id: v.split for v in project.volumes()}
        checkpoints = {name: project.rounds.checkpoint(name) for name in ("lpg", "lpc")}
    assert record.status == "done" and record.completed_stages == STAGES
    assert {e[0] for e in events} >= {"train_lpg", "scan", "harvest", "evaluate"}
    for ref in checkpoints.values():
        assert sha256_file(project_dir / ref.path) == ref.sha256
    classifier, _ = load_classifier(project_dir / checkpoints["lpc"].path)
    assert classifier.spec.pad_px == CONTEXT_PX  # the config's LPC context
    roles = {}
    for stored in proposals:
        roles.setdefault(splits[stored.volume_id], set()).add(stored.role)
    assert roles["V_M"] <= {"P_RM", "P_neg_M"} and "P_RM" in roles["V_M"]
    assert roles["V_H"] <= {"P_RH", "P_pos_H", "P_neg_H", "candidate"}
    for stored in proposals:
        if stored.role in ("P_RM", "P_neg_M", "P_pos_H", "P_neg_H", "candidate"):
            assert stored.s_c is not None and stored.s_gc == pytest.approx(stored.s_c * stored.s_g)
    metrics = record.metrics
    scanned = sum(1 for split in splits.values() if split != "V_D_test")
    assert metrics["scan"]["volumes"] == scanned == 8
    assert metrics["table_i"][0]["label"].startswith("R (original")
    assert metrics["table_i"][0]["recall"] == pytest.approx(1 / 3)  # 1 of 3 lesions marked
    threshold = metrics["threshold"]
    harvested = [s for s in proposals if s.role == "P_pos_H"]
    assert metrics["n_harvested"] == len(harvested)
    assert all(s.s_gc >= threshold for s in harvested)
    # the false positives V_M lets one expect, from the stored scores
    v_m = [s for s in proposals if s.role in ("P_RM", "P_neg_M")]
    scored = [s.s_gc for s in proposals if s.role in ("P_pos_H", "P_neg_H", "candidate")]
    non_lesions = [s.s_gc for s in v_m if s.role == "P_neg_M"]
    assert metrics["harvest"]["v_m_non_lesions"] == len(non_lesions) > 0
    above = sum(score >= threshold for score in non_lesions)
    assert metrics["expected_false_positives"] == pytest.approx(
        min(len(harvested), len(scored) * (above + 1) / (len(non_lesions) + 1))
    )


def positive_boxes_off_their_best_slice(snapshot, slices):
    """``(training slice, box)`` for each pooled positive proposal's box on every other
    training slice it crosses; ``slices`` by ``(volume_id, z)``."""
    for stored in snapshot.previous_pool:
        if stored.role not in ("P_RM", "P_RH", "P_pos_H"):
            continue
        for z, box in zip(stored.proposal.slices, stored.proposal.boxes, strict=True):
            training = slices.get((stored.volume_id, int(z)))
            if training is not None and z != stored.proposal.best_slice:
                yield training, box


def test_fine_tuning_adds_each_pooled_proposals_best_slice(finished_round, tmp_path):
    """Round 2's LPG slices (paper, Sec. III-E): the marks' slices, plus the
    highest-objectness slice of every pooled proposal, with its box there as a
    positive (P_RM, P_RH, P_pos_H) or a hard negative (P_neg_M, P_neg_H); a lesion is
    a positive only on its best slice."""
    snapshot = next_round_snapshot(shutil.copytree(finished_round[0], tmp_path / "project"))
    paper_slices = lpg_training_slices(snapshot, use_pool=True)
    slices = {(s.volume_id, s.z): s for s in paper_slices}
    assert len(slices) == len(paper_slices) > len(lpg_training_slices(snapshot, use_pool=False))
    roles = {p.role for p in snapshot.previous_pool}
    assert {"P_RM", "P_neg_M", "P_neg_H"} <= roles
    for stored in snapshot.previous_pool:
        training = slices[stored.volume_id, stored.proposal.best_slice]
        box = stored.proposal.best_box[None]
        if stored.role in ("P_RM", "P_RH", "P_pos_H"):
            assert iou_2d(box, training.positive_boxes).max() == 1.0
        elif not len(training.positive_boxes) or iou_2d(box, training.positive_boxes).max() <= 0.3:
            assert iou_2d(box, training.hard_negative_boxes).max() == 1.0
    positives_in_pool = sum(
        1 for p in snapshot.previous_pool if p.role in ("P_RM", "P_RH", "P_pos_H")
    )
    n_marks = sum(len(m) for m in usable_marks(snapshot).values())
    assert sum(len(s.positive_boxes) for s in paper_slices) == n_marks + positives_in_pool


def test_known_lesions_are_ignored_on_the_fine_tuning_slices_they_cross(finished_round, tmp_path):
    """With ``ignore_known_lesions``, a positive proposal's tracked box on every other
    training slice it crosses is an ignore box there, the positives are the paper's,
    and exactly the paper's hard negatives that lie on an ignore box are left out."""
    snapshot = next_round_snapshot(shutil.copytree(finished_round[0], tmp_path / "project"))
    paper = lpg_training_slices(snapshot, use_pool=True)
    ignoring = lpg_training_slices(snapshot, use_pool=True, ignore_known_lesions=True)
    assert [(s.volume_id, s.z) for s in ignoring] == [(s.volume_id, s.z) for s in paper]
    dropped = 0
    for with_paper, with_option in zip(paper, ignoring, strict=True):
        np.testing.assert_array_equal(with_option.positive_boxes, with_paper.positive_boxes)
        lying = on_regions(with_paper.hard_negative_boxes, with_option.ignore_boxes)
        np.testing.assert_array_equal(
            with_option.hard_negative_boxes, with_paper.hard_negative_boxes[~lying]
        )
        dropped += int(lying.sum())
    slices = {(s.volume_id, s.z): s for s in ignoring}
    crossed = 0
    for training, box in positive_boxes_off_their_best_slice(snapshot, slices):
        assert (training.ignore_boxes == box).all(axis=1).any()
        crossed += 1
    assert crossed and dropped
    assert sum(len(s.ignore_boxes) for s in ignoring) > crossed  # the marks' regions too


def test_fine_tuning_options_reach_the_lpg_training(finished_round, tmp_path):
    """A later round fine-tunes on every training slice once, ``lpg.crop_px`` sets its
    training canvas, and ``lpg.ignore_known_lesions`` gives it the ignore boxes."""
    project_dir = shutil.copytree(finished_round[0], tmp_path / "project")
    snapshot = next_round_snapshot(project_dir)
    base = load_config(str(finished_round[0].parent / "tiny.json"), {"lpg.finetune_steps": 2})
    slices = lpg_training_slices(snapshot, use_pool=True)
    runs = {}
    with HarvestProject.open(project_dir) as project:
        for changes in (
            {},
            {"lpg.crop_px": 32},
            {"lpg.ignore_known_lesions": True, "lpg.edge_stack_probability": 0.5},
        ):
            state = RoundState(
                project,
                snapshot.round_number,
                snapshot,
                with_changes(base, changes),
                "cpu",
                progress=lambda *event: None,
                cancelled=lambda: False,
            )
            metrics = train_lpg_stage(state).metrics["lpg"]
            assert metrics["steps"] == 2 and metrics["fine_tuned_from"] == 1
            assert metrics["training_slices"] == len(slices)
            runs[tuple(changes)] = metrics
    assert runs[()]["drawn_slices"] == len(slices)
    assert runs[()]["canvas_px"] == base.lpg.max_side and runs["lpg.crop_px",]["canvas_px"] == 32
    ignoring = lpg_training_slices(snapshot, use_pool=True, ignore_known_lesions=True)
    assert runs[()]["ignore_boxes"] == 0
    assert runs["lpg.ignore_known_lesions", "lpg.edge_stack_probability"]["ignore_boxes"] == sum(
        len(s.ignore_boxes) for s in ignoring
    )


def test_status_and_export_commands_read_the_round(finished_round, tmp_path):
    project_dir, _ = finished_round
    status = lesion_harvest("status", project_dir, "--json")
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert document["splits"] == {"V_M": 4, "V_H": 3, "V_H_test": 1}
    assert document["rounds"][0]["status"] == "done"
    first = document["rounds"][0]
    assert 0 <= first["expected_false_positives"] <= first["harvested"]
    text = lesion_harvest("status", project_dir).stdout
    assert f"expected false positives), threshold {first['threshold']:.3f}" in text
    exported = lesion_harvest("export", project_dir, tmp_path / "out", "--format", "paper")
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "out" / "MinedLesions.pkl").is_file()


def test_a_stopped_round_resumes_after_its_last_committed_stage(tmp_path):
    project_dir = make_blob_project(tmp_path)
    config = load_config(str(tmp_path / "tiny.json"))
    with HarvestProject.open(project_dir) as project:
        round_stopped_when(project, config, lambda events: any(e[0] == "verify" for e in events))
        (record,) = project.rounds.list()
        assert record.status == "failed" and record.completed_stages == STAGES[:3]
        lpg_sha = project.rounds.checkpoint("lpg", round_number=1).sha256
        seen = []
        run_rounds(project, config, rounds=1, device="cpu", progress=lambda s, *r: seen.append(s))
        (record,) = project.rounds.list()
        assert record.status == "done" and record.completed_stages == STAGES
        assert "train_lpg" not in seen and "scan" not in seen
        assert project.rounds.checkpoint("lpg").sha256 == lpg_sha
