"""The small-data LPC: proposal features, the logistic model, fold-mean scoring of V_H,
and the choice among candidate classifiers by out-of-fold AP on V_M."""

from __future__ import annotations

import numpy as np
import pytest

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpc.checkpoint import load_any_classifier, save_checkpoint
from napari_lesion_harvest.lpc.feature_model import FeatureClassifier, fit_feature_classifier
from napari_lesion_harvest.lpc.features import FEATURE_NAMES, proposal_features
from napari_lesion_harvest.lpc.fitting import (
    FoldMean,
    chosen_candidate,
    fit_round_lpc,
    probabilities,
    v_m_ranking,
)
from napari_lesion_harvest.lpc.metrics import average_precision, roc_auc
from napari_lesion_harvest.lpc.options import LPCPlan, LPCTrainOptions
from napari_lesion_harvest.lpc.train import ProposalSet
from napari_lesion_harvest.store.checkpoints import CheckpointError
from tests.lpc_phantom import phantom_sets

SPACING = (2.0, 0.8, 0.8)
BACKGROUND_HU, LESION_HU = 40, 140


def _cuboid_volume(z_range, *, slices=16):
    """Soft tissue with a 16 x 16 pixel block of LESION_HU on slices ``z_range``."""
    hu = np.full((slices, 64, 64), BACKGROUND_HU, dtype=np.int16)
    hu[z_range[0] : z_range[1], 20:36, 20:36] = LESION_HU
    return CTVolume.from_array("cuboid", hu, SPACING)


def _hand_built_proposal(first=8):
    """Four slices over the block: smaller boxes at both ends, the last one shifted
    2 pixels along x, the full block on the best (second) slice."""
    boxes = [[24, 24, 31, 31], [20, 20, 35, 35], [21, 21, 34, 34], [26, 24, 33, 31]]
    return Proposal3D(np.arange(first, first + 4), boxes, [0.4, 0.8, 0.6, 0.2])


def test_features_of_a_hand_built_proposal():
    volume = _cuboid_volume((8, 12))
    (row,) = proposal_features(volume, [_hand_built_proposal()])
    features = dict(zip(FEATURE_NAMES, row, strict=True))
    size_mm = 15 * 0.8  # the best box: 15 pixels wide and high (x2 - x1)
    end_mm = 7 * 0.8
    expected = {
        "log_s_g": np.log(0.8),
        "track_score_ratio": 0.5 / 0.8,
        "log_extent_mm": np.log1p(4 * 2.0),
        "log_size_mm": np.log1p(size_mm),
        "elongation": np.log(8.0 / size_mm),
        "end_size_ratio": end_mm / size_mm,
        "centre_drift": 2 * 0.8 / size_mm,
        "aspect": 0.0,
        "hu_inside": LESION_HU / 100,
        "hu_contrast": (LESION_HU - BACKGROUND_HU) / 100,
        "hu_spread": 0.0,
        "continuation": 0.0,  # the block ends where the track ends
    }
    for name, value in expected.items():
        assert features[name] == pytest.approx(value, abs=1e-9), name


def test_a_structure_that_goes_on_beyond_the_track_continues_even_at_the_volume_end():
    tube = _cuboid_volume((0, 16))  # the block runs through every slice
    at_start = _hand_built_proposal(first=0)  # nothing beyond its first slice
    middle, start = proposal_features(tube, [_hand_built_proposal(), at_start])
    continuation = FEATURE_NAMES.index("continuation")
    assert middle[continuation] == pytest.approx(1.0)
    assert start[continuation] == pytest.approx(1.0)  # read on the side that exists
    ended = proposal_features(_cuboid_volume((0, 4)), [at_start])[0]
    assert ended[continuation] == pytest.approx(0.0)
    # the order of the proposals does not change a proposal's features
    np.testing.assert_array_equal(proposal_features(tube, [at_start])[0], start)


def test_the_feature_model_learns_a_separable_problem_with_few_positives():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=len(FEATURE_NAMES))

    def draw(n_pos, n_neg):
        x = rng.normal(size=(n_pos + n_neg, len(FEATURE_NAMES)))
        margin = x @ direction
        labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
        # move each row to its side of the plane, at least 1 unit clear of it
        target = np.where(labels == 1, 1.0, -1.0) * (1 + np.abs(margin))
        x += np.outer((target - margin) / (direction @ direction), direction)
        return x, labels

    x, y = draw(30, 600)  # few positives among many negatives
    model = fit_feature_classifier(x, y)
    x_test, y_test = draw(200, 200)
    p = 1 / (1 + np.exp(-model.logits(x_test)))
    assert roc_auc(p, y_test) >= 0.99
    assert np.mean((p > 0.5) == y_test) >= 0.95  # balanced: the rare class is not drowned
    with pytest.raises(ValueError, match="positives and negatives"):
        fit_feature_classifier(x[y == 0], y[y == 0])


def test_the_feature_model_tells_spheres_from_tubes_on_held_out_volumes(tmp_path):
    train, test = phantom_sets(range(12)), phantom_sets(range(100, 106))
    model = fit_feature_classifier(
        np.concatenate([s.features() for s in train]), np.concatenate([s.labels for s in train])
    )
    s_c = np.concatenate([model.probabilities(s.volume, s.proposals) for s in test])
    labels = np.concatenate([s.labels for s in test])
    assert roc_auc(s_c, labels) >= 0.9
    # the checkpoint holds the model exactly, and refuses another feature list
    path = save_checkpoint(model, tmp_path / "features.pt", meta={"classifier": "features"})
    loaded, meta = load_any_classifier(path)
    assert isinstance(loaded, FeatureClassifier) and meta == {"classifier": "features"}
    np.testing.assert_array_equal(loaded.probabilities(test[0].volume, test[0].proposals), s_c[:5])
    short = FeatureClassifier(model.mean[:-1], model.scale[:-1], model.coef[:-1], 0.0)
    object.__setattr__(short, "feature_names", FEATURE_NAMES[:-1])
    with pytest.raises(CheckpointError, match="not this version's"):
        load_any_classifier(save_checkpoint(short, tmp_path / "short.pt"))


def _sets_with_v_h(n_v_m=6):
    sets = phantom_sets(range(n_v_m + 1))
    v_h = sets[-1]
    sets[-1] = ProposalSet(v_h.volume, v_h.proposals, v_h.labels, False)  # its labels unused
    positives = [p for p, label in zip(v_h.proposals, v_h.labels, strict=True) if label]
    sets.append(ProposalSet(sets[0].volume, positives[:1], [1], False))  # a P_RH
    return sets[:-2] + [sets[-1]], sets[-2]


def test_fold_mean_scores_v_h_with_the_models_whose_v_m_scores_set_the_threshold():
    sets, v_h = _sets_with_v_h()
    plan = LPCPlan(("features",), LPCTrainOptions(seed=3), folds=3, v_h_scoring="fold_mean")
    fitted = fit_round_lpc(sets, plan)
    assert sorted(fitted.stored) == ["lpc_fold_1", "lpc_fold_2", "lpc_fold_3"]
    assert isinstance(fitted.scorer, FoldMean)
    members = [fitted.stored[f"lpc_fold_{k}"] for k in (1, 2, 3)]
    assert list(fitted.scorer.members) == members
    # each V_M volume's threshold scores come from exactly one of the stored members...
    for s in sets:
        if s.fully_annotated:
            member_scores = [probabilities(m, s.volume, s.proposals) for m in members]
            matches = [
                np.allclose(fitted.v_m_scores[s.volume.volume_id], m) for m in member_scores
            ]
            assert sum(matches) >= 1
    # ...and a V_H proposal gets the mean of the same members
    v_h_scores = probabilities(fitted.scorer, v_h.volume, v_h.proposals)
    each = np.array([probabilities(m, v_h.volume, v_h.proposals) for m in members])
    np.testing.assert_allclose(v_h_scores, each.mean(axis=0))
    assert (fitted.v_h_scoring, fitted.folds, fitted.note) == ("fold_mean", 3, None)


def test_the_candidate_with_the_best_out_of_fold_ap_is_chosen():
    sets, _ = _sets_with_v_h()
    plan = LPCPlan(("s_g", "features"), LPCTrainOptions(seed=0), folds=3)
    fitted = fit_round_lpc(sets, plan)
    assert set(fitted.selection) == {"s_g", "features"}
    ap = {name: figures["ap"] for name, figures in fitted.selection.items()}
    # s_g alone: the lesion score is the objectness, scored out of fold or not
    v_m = [s for s in sets if s.fully_annotated]
    s_g = np.concatenate([[p.s_g for p in s.proposals] for s in v_m])
    labels = np.concatenate([s.labels for s in v_m])
    assert ap["s_g"] == pytest.approx(average_precision(s_g, labels))
    assert ap["features"] > ap["s_g"]  # the tubes' objectness is as high as the lesions'
    assert fitted.chosen == "features" and list(fitted.stored) == ["lpc"]
    assert v_m_ranking(sets, fitted.v_m_scores)["ap"] == pytest.approx(ap["features"])
    # ties go to the earlier candidate; a missing figure ranks last
    figures = {"a": {"ap": 0.5}, "b": {"ap": 0.5}, "c": {"ap": float("nan")}}
    assert chosen_candidate(("c", "b", "a"), figures) == "b"
    assert chosen_candidate(("c", "d"), figures) == "c"


def test_s_g_alone_keeps_no_model_and_too_few_v_m_volumes_fall_back_to_in_sample():
    sets, _ = _sets_with_v_h()
    alone = fit_round_lpc(sets, LPCPlan(("s_g",), LPCTrainOptions(), folds=3))
    assert alone.stored == {}
    assert all(np.all(v == 1.0) for v in alone.v_m_scores.values())
    one_v_m = [s for s in sets if not s.fully_annotated] + [sets[0]]
    fitted = fit_round_lpc(
        one_v_m, LPCPlan(("features", "s_g"), LPCTrainOptions(), v_h_scoring="fold_mean")
    )
    assert (fitted.chosen, fitted.threshold_mode, fitted.v_h_scoring) == (
        "features",
        "in_sample",
        "final_model",
    )
    assert fitted.note == "only 1 V_M volume(s) with proposals" and fitted.selection == {}
