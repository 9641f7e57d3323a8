"""A whole round on a tiny project with the LPC chosen among candidates: the choice, the
candidates' out-of-fold figures and the fold models that score V_H are stored."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesion_harvest.harvest.blob_project import make_blob_project
from napari_lesion_harvest.harvest.config import load_config
from napari_lesion_harvest.harvest.round import run_rounds
from napari_lesion_harvest.io.sources import open_volume
from napari_lesion_harvest.lpc.checkpoint import load_any_classifier
from napari_lesion_harvest.lpc.fitting import FoldMean, probabilities
from napari_lesion_harvest.lpc.metrics import average_precision
from napari_lesion_harvest.store import HarvestProject


@pytest.fixture(scope="module")
def chosen_round(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chosen")
    project_dir = make_blob_project(folder)
    config = load_config(
        str(folder / "tiny.json"),
        {"lpc.candidates": ("s_g", "features"), "lpc.v_h_scoring": "fold_mean"},
    )
    with HarvestProject.open(project_dir) as project:
        (record,) = run_rounds(project, config, rounds=1, device="cpu")
    return project_dir, record.number


def test_the_round_stores_its_choice_and_every_candidates_out_of_fold_ap(chosen_round):
    project_dir, number = chosen_round
    with HarvestProject.open(project_dir) as project:
        lpc = project.rounds.get(number).metrics["lpc"]
        v_m = [s for s in project.proposals(number) if s.role in ("P_RM", "P_neg_M")]
    assert set(lpc["candidates"]) == {"s_g", "features"}
    ap = {name: figures["oof_ap"] for name, figures in lpc["candidates"].items()}
    assert lpc["classifier"] == max(("s_g", "features"), key=lambda name: ap[name])
    assert (lpc["threshold_mode"], lpc["v_h_scoring"], lpc["folds"]) == (
        "out_of_fold",
        "fold_mean",
        2,
    )
    # the stored V_M lesion scores are the chosen candidate's, and rank V_M as recorded
    labels = [s.role == "P_RM" for s in v_m]
    assert average_precision([s.s_gc for s in v_m], labels) == pytest.approx(ap[lpc["classifier"]])
    s_g_ap = average_precision([s.proposal.s_g for s in v_m], labels)
    assert ap["s_g"] == pytest.approx(s_g_ap)


def test_v_h_is_scored_by_the_mean_of_the_stored_fold_models(chosen_round):
    project_dir, number = chosen_round
    with HarvestProject.open(project_dir) as project:
        lpc = project.rounds.get(number).metrics["lpc"]
        records = {r.volume_id: r for r in project.volumes()}
        scored = [
            s
            for s in project.proposals(number)
            if s.role in ("P_pos_H", "P_neg_H", "candidate") and s.s_c is not None
        ]
        refs = [
            project.rounds.checkpoint(name, round_number=number)
            for name in lpc["scorer_checkpoints"]
        ]
    assert scored
    volume_id = scored[0].volume_id
    mine = [s for s in scored if s.volume_id == volume_id]
    if lpc["classifier"] == "s_g":
        assert refs == [] and all(s.s_c == 1.0 for s in scored)
        return
    assert [r.name for r in refs] == ["lpc_fold_1", "lpc_fold_2"]
    members = tuple(load_any_classifier(project_dir / r.path, sha256=r.sha256)[0] for r in refs)
    expected = probabilities(
        FoldMean(members), open_volume(records[volume_id]), [s.proposal for s in mine]
    )
    np.testing.assert_allclose([s.s_c for s in mine], expected, rtol=1e-9)
    np.testing.assert_allclose([s.s_gc for s in mine], expected * [s.s_g for s in mine])
