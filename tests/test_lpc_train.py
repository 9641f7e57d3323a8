"""LPC augmentation, training, scoring and out-of-fold V_M scores on a tiny phantom."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpc.augment import augment_patches
from napari_lesion_harvest.lpc.checkpoint import load_checkpoint
from napari_lesion_harvest.lpc.fitting import fit_round_lpc, out_of_fold
from napari_lesion_harvest.lpc.metrics import average_precision, precision_recall, roc_auc
from napari_lesion_harvest.lpc.options import LPCPlan, LPCTrainOptions, PatchAugmentation
from napari_lesion_harvest.lpc.patches import PatchSpec, extract_patches
from napari_lesion_harvest.lpc.score import classify_proposals, fold_of_volumes, lesion_scores
from napari_lesion_harvest.lpc.train import (
    ProposalSet,
    proposal_sets,
    split_holdout,
    train_lpc,
)
from napari_lesion_harvest.progress import Cancelled
from tests.lpc_phantom import phantom_sets, phantom_volume

torch.set_num_threads(1)

TINY = LPCTrainOptions(
    variant="axial",
    width="lite",
    patch_size=16,
    pad_px=6,
    pretrained=False,
    epochs=2,
    batch_size=4,
    holdout_fraction=0.34,
    patience=1,
)


#: Rotation and shift only: what the patch border brings in shows.
JITTER_ONLY = PatchAugmentation(
    max_rotation_deg=30, max_shift=0.5, intensity_offset=0, intensity_gain=0
)


def _flipped_volume(hu, flips, swap):
    out = hu[:, ::-1] if "y" in flips else hu
    out = out[:, :, ::-1] if "x" in flips else out
    out = out[::-1] if "z" in flips else out
    out = out.transpose(0, 2, 1) if swap else out
    return CTVolume.from_array("t", np.ascontiguousarray(out), (2.0, 0.7, 0.7))


@pytest.mark.parametrize("kind", ["views", "cube"])
def test_flips_match_patches_of_the_flipped_volume(kind):
    # an asymmetric volume; the proposal sits at its exact centre, so volume flips keep it there
    rng = np.random.default_rng(0)
    hu = rng.integers(-200, 400, size=(9, 21, 21)).astype(np.int16)
    proposal = Proposal3D([3, 4, 5], [[7, 7, 13, 13]] * 3, [0.5] * 3)
    spec = PatchSpec(kind=kind, size=8, pad_px=3)
    candidates = []
    for r in range(4):
        for flips in itertools.combinations("zyx", r):
            for swap in (False, True):
                volume = _flipped_volume(hu, flips, swap)
                candidates.append(extract_patches(volume, [proposal], spec)[0])
    base = torch.from_numpy(extract_patches(_flipped_volume(hu, (), False), [proposal], spec))
    only_flips = PatchAugmentation(
        max_rotation_deg=0, max_shift=0, intensity_offset=0, intensity_gain=0
    )
    batch = base.repeat(32, *([1] * (base.ndim - 1)))
    out = augment_patches(
        batch, spec, augmentation=only_flips, generator=torch.Generator().manual_seed(1)
    ).numpy()
    matched = set()
    for sample in out:
        hits = [i for i, c in enumerate(candidates) if np.allclose(sample, c)]
        assert hits, "an augmented patch matches no flipped volume"
        matched.add(hits[0])
    assert len(matched) > 4  # several different transforms were drawn


def test_jitter_keeps_shape_and_pads_with_air():
    spec = PatchSpec(size=16)
    batch = torch.full((4, 3, 16, 16), 100.0)
    out = augment_patches(
        batch,
        spec,
        augmentation=JITTER_ONLY,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == batch.shape
    assert torch.isclose(out, torch.tensor(-50.0)).any()  # air (-1024 HU windowed) came in
    assert out.max() <= 100.0 + 1e-4


def test_jitter_pads_with_the_air_of_the_specs_window():
    # -1024 HU is 0 - 50 in both windows here, but 3 HU above the low end of [-1030, 3065] is not
    spec = PatchSpec(size=16, hu_window=(-1030.0, 3065.0))
    out = augment_patches(
        torch.full((4, 3, 16, 16), 100.0),
        spec,
        augmentation=JITTER_ONLY,
        generator=torch.Generator().manual_seed(0),
    )
    air = 6 * 255 / 4095 - 50
    assert torch.isclose(out, torch.tensor(air)).any()
    assert not torch.isclose(out, torch.tensor(-50.0)).any()


def test_jitter_of_mirrored_patches_brings_in_no_air():
    spec = PatchSpec(size=16, outside="mirror")
    batch = torch.linspace(0, 100, 16).repeat(4, 3, 16, 1)  # a ramp along each row
    out = augment_patches(
        batch,
        spec,
        augmentation=JITTER_ONLY,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.min() >= -1e-4 and out.max() <= 100.0 + 1e-4  # the patch's own values only
    assert not torch.allclose(out, batch)


def test_metrics_on_known_rankings():
    assert roc_auc([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.9, 0.8, 0.3, 0.1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([0.5, 0.5], [1, 0]) == 0.5
    assert np.isnan(roc_auc([0.2, 0.3], [1, 1]))
    precision, recall, thresholds = precision_recall([0.9, 0.7, 0.7, 0.2], [1, 0, 1, 0])
    np.testing.assert_allclose(thresholds, [0.9, 0.7, 0.2])
    np.testing.assert_allclose(precision, [1.0, 2 / 3, 0.5])
    np.testing.assert_allclose(recall, [0.5, 1.0, 1.0])
    assert average_precision([0.9, 0.7, 0.7, 0.2], [1, 0, 1, 0]) == pytest.approx(
        0.5 * 1.0 + 0.5 * 2 / 3
    )
    assert np.isnan(average_precision([0.3], [0]))


def test_proposal_sets_group_pools_by_volume():
    a, b = phantom_volume(1), phantom_volume(2)
    volumes = {a.volume.volume_id: a.volume, b.volume.volume_id: b.volume}
    p = a.proposals
    sets = proposal_sets(
        volumes,
        p_rm={a.volume.volume_id: p[:2]},
        p_neg_m={a.volume.volume_id: p[2:]},
        p_rh={b.volume.volume_id: b.proposals[:1]},
    )
    assert [s.fully_annotated for s in sets] == [True, False]
    assert sets[0].labels.tolist() == [1, 1, 0, 0, 0]
    assert sets[1].labels.tolist() == [1]
    with pytest.raises(KeyError, match="phantom-009"):
        proposal_sets(volumes, p_rm={"phantom-009": p}, p_neg_m={}, p_rh={})
    with pytest.raises(ValueError, match="both V_M"):
        proposal_sets(
            volumes, p_rm={a.volume.volume_id: p}, p_neg_m={}, p_rh={a.volume.volume_id: p}
        )


def test_holdout_takes_whole_v_m_volumes_only():
    sets = phantom_sets(range(5))
    sets[4].fully_annotated = False
    train, held = split_holdout(sets, 0.5, np.random.default_rng(0))
    assert len(held) == 2 and 4 in train
    assert sorted(train + held) == list(range(5))
    assert split_holdout(sets[:1], 0.5, np.random.default_rng(0)) == ([0], [])


def test_training_reports_progress_saves_the_best_epoch_and_scores(tmp_path):
    sets = phantom_sets(range(3))
    events = []
    result = train_lpc(
        sets,
        TINY,
        checkpoint=tmp_path / "lpc.pt",
        progress=lambda stage, step, total, message="", metrics=None: events.append(
            (stage, step, total, metrics)
        ),
    )
    assert result.counts["val_volumes"] == 1
    assert result.counts["train_pos"] == 4 and result.counts["train_neg"] == 6
    assert len(result.history) >= 1
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in result.history)
    train_steps = [e for e in events if e[0] == "lpc-train" and e[3] and "loss" in e[3]]
    assert train_steps and train_steps[-1][1] <= train_steps[-1][2]
    loaded, meta = load_checkpoint(tmp_path / "lpc.pt")
    assert meta["epoch"] == result.best_epoch
    s_c = classify_proposals(result.model, sets[0].volume, sets[0].proposals)
    assert s_c.shape == (5,) and np.all((s_c >= 0) & (s_c <= 1))
    np.testing.assert_allclose(
        classify_proposals(loaded, sets[0].volume, sets[0].proposals), s_c, rtol=1e-5
    )
    s_g = [p.s_g for p in sets[0].proposals]
    np.testing.assert_allclose(lesion_scores(s_g, s_c), np.array(s_g) * s_c)
    with pytest.raises(ValueError, match="5 objectness scores but 4 LPC scores"):
        lesion_scores(s_g, s_c[:4])


def test_training_stops_on_cancellation_and_needs_both_classes():
    sets = phantom_sets(range(2))
    with pytest.raises(Cancelled):
        train_lpc(sets, TINY, cancelled=lambda: True)
    positives_only = [ProposalSet(s.volume, s.proposals[:2], [1, 1]) for s in sets]
    with pytest.raises(ValueError, match="0 negatives"):
        train_lpc(positives_only, TINY)


def test_a_sets_patches_are_extracted_once_per_spec_and_reused_by_every_fold_model():
    (proposal_set,) = phantom_sets([7])
    spec = PatchSpec(views=("axial",), size=16, pad_px=6)
    patches = proposal_set.patches(spec)
    assert proposal_set.patches(spec) is patches
    fresh = extract_patches(proposal_set.volume, proposal_set.proposals, spec)
    np.testing.assert_array_equal(patches.numpy(), fresh.astype(np.float16))
    wider = PatchSpec(views=("axial",), size=16, pad_px=12)
    assert proposal_set.patches(wider).shape == patches.shape
    assert not torch.equal(proposal_set.patches(wider), patches)


def test_out_of_fold_scores_each_v_m_volume_with_a_model_that_did_not_see_it():
    sets = phantom_sets(range(4))
    sets[3] = ProposalSet(sets[3].volume, sets[3].proposals[:2], [1, 1], False)  # V_H
    folds = fold_of_volumes(sets, 3, seed=0)
    assert sorted(folds[:3].tolist()) == [0, 1, 2] and folds[3] == -1
    options = LPCTrainOptions(**{**TINY.__dict__, "epochs": 1, "holdout_fraction": 0.0})
    result = out_of_fold("axial", sets, options, folds=3)
    assert sorted(result.scores) == sorted(s.volume.volume_id for s in sets[:3])
    for k, proposal_set in enumerate(sets[:3]):
        # the model of the fold that held this volume out gives exactly its scores
        model = result.models[folds[k]]
        expected = classify_proposals(model, proposal_set.volume, proposal_set.proposals)
        np.testing.assert_allclose(result.scores[proposal_set.volume.volume_id], expected)
    # every fold model trained on the other two V_M volumes and the V_H positives
    assert [info["train_pos"] for info in result.infos] == [4 + 2] * 3
    with pytest.raises(ValueError, match="needs >= 5 V_M volumes"):
        out_of_fold("axial", sets, options, folds=5)


def test_in_sample_v_m_scores_come_from_the_final_model():
    sets = phantom_sets(range(3))
    options = LPCTrainOptions(**{**TINY.__dict__, "epochs": 1, "holdout_fraction": 0.0})
    fitted = fit_round_lpc(sets, LPCPlan(("axial",), options, threshold_mode="in_sample"))
    assert (fitted.threshold_mode, fitted.folds, fitted.selection) == ("in_sample", None, {})
    assert list(fitted.stored) == ["lpc"] and fitted.stored["lpc"] is fitted.scorer
    for proposal_set in sets:
        expected = classify_proposals(fitted.scorer, proposal_set.volume, proposal_set.proposals)
        np.testing.assert_allclose(fitted.v_m_scores[proposal_set.volume.volume_id], expected)
