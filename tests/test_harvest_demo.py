"""``lesion-harvest demo``: what it refuses before minutes of synthesis, and
``build_demo_project(complete_v_h=K)``, which benchmarks use to grow V_M."""

from __future__ import annotations

import json

import pytest

from napari_lesion_harvest.harvest.demo import build_demo_project
from napari_lesion_harvest.io.annotations import read_marks
from napari_lesion_harvest.store import HarvestProject
from tests.round_command import NO_GPU_ENV, lesion_harvest

#: 8 volumes at 64 px: V_M 1, V_H_test 1 (fractions 0.1, 0.1), so V_H holds 6.
SMALL_DEMO = dict(
    volumes=8,
    size=64,
    seed=0,
    split_fractions=(0.1, 0.1),
)


def demo(*options, cwd):
    return lesion_harvest("demo", *options, cwd=cwd, env=NO_GPU_ENV)


def test_a_missing_gpu_is_reported_before_anything_is_synthesised(tmp_path):
    done = demo("--device", "cuda", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2
    assert "no usable CUDA GPU" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_an_existing_demo_project_is_left_alone(tmp_path):
    project = tmp_path / "out" / "project"
    project.mkdir(parents=True)
    (project / "mine.txt").write_text("keep me")
    done = demo("--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2 and "exists" in done.stderr
    assert (project / "mine.txt").read_text() == "keep me"
    assert not (tmp_path / "out" / "dataset").exists()


def test_too_many_completed_v_h_volumes_are_refused_before_synthesis(tmp_path):
    with pytest.raises(ValueError, match=r"complete_v_h must be in \[0, 6\].*got 7"):
        build_demo_project(tmp_path, complete_v_h=7, **SMALL_DEMO)
    assert not (tmp_path / "dataset").exists()


def test_completed_v_h_volumes_join_v_m_and_v_h_test_is_the_evaluations_truth(tmp_path):
    project_dir = build_demo_project(tmp_path, complete_v_h=2, **SMALL_DEMO)
    split = json.loads((tmp_path / "dataset" / "split.json").read_text())
    truth, _ = read_marks(tmp_path / "dataset" / "truth" / "marks.csv")
    joined = split["V_H"][:2]
    with HarvestProject.open(project_dir) as project:
        v_m = {v.volume_id: v for v in project.volumes(split="V_M")}
        assert sorted(v_m) == sorted(split["V_M"] + joined)
        assert all(v.complete for v in v_m.values())
        assert {v.volume_id for v in project.volumes(split="V_H")} == set(split["V_H"][2:])
        # V_H_test: held out with its full marks, flagged complete (the evaluation's truth)
        test = project.volumes(split="V_H_test")
        assert [v.volume_id for v in test] == split["V_H_test"] and all(v.complete for v in test)
        for volume_id in joined:
            expert = [m.mark.z for m in project.marks(volume_id) if m.origin == "expert"]
            assert sorted(expert) == sorted(r.mark.z for r in truth if r.volume_id == volume_id)
            assert expert
