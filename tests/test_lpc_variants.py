"""Slow: LPC variants on held-out phantom volumes, the paper's Fig. 5b comparison.

Lesions are spheres; distractors are tubes along z with the same radius and
density, so they look like lesions on the axial slice. The multi-view LPC must
separate them on volumes it never saw; the axial-only LPC cannot. The PR plot of
s_g, s_c and s_gc per variant is written to the test's temporary folder and
printed with the AUCs (``pytest -s`` shows where).

All variants get the same small budget (10 epochs of 5 steps). The lite 3D
ResNet-18 is still near chance after it (it reaches AUC 1.0 here only after
about 12 epochs more), so the plot also shows how much faster the multi-view
classifier learns, as the paper found it simpler and better.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_lesion_harvest.lpc.metrics import roc_auc
from napari_lesion_harvest.lpc.options import LPCTrainOptions
from napari_lesion_harvest.lpc.report import plot_score_pr
from napari_lesion_harvest.lpc.score import classify_proposals, lesion_scores
from napari_lesion_harvest.lpc.train import train_lpc
from tests.lpc_phantom import phantom_sets, project_phantom_set


@pytest.mark.slow
def test_multiview_lpc_separates_lesions_from_look_alikes_on_held_out_volumes(tmp_path):
    torch.set_num_threads(1)
    train_sets = phantom_sets(range(16))
    test_sets = phantom_sets(range(100, 108))
    labels = np.concatenate([s.labels for s in test_sets])
    s_g = np.concatenate([[p.s_g for p in s.proposals] for s in test_sets])
    scores = {"s_g": s_g}
    auc = {}
    for variant in ("axial", "multiview", "3d"):
        options = LPCTrainOptions(
            variant=variant,
            width="lite",
            patch_size=24,
            pad_px=8,
            pretrained=False,
            epochs=10,
            batch_size=16,
            learning_rate=2e-3,
            holdout_fraction=0.2,
            patience=4,
        )
        model = train_lpc(train_sets, options).model
        s_c = np.concatenate([classify_proposals(model, s.volume, s.proposals) for s in test_sets])
        scores[f"s_c,{variant}"] = s_c
        scores[f"s_gc,{variant}"] = lesion_scores(s_g, s_c)
        auc[variant] = roc_auc(s_c, labels)
    figure = tmp_path / "lpc_variants_pr.png"
    plot_score_pr(scores, labels, figure, title="LPC variants, held-out phantom volumes")
    assert figure.stat().st_size > 0
    print(figure, {name: round(roc_auc(values, labels), 3) for name, values in scores.items()})
    # clearly better than chance, and better than the axial view that cannot see z
    assert auc["multiview"] >= 0.85
    assert auc["multiview"] > auc["axial"] + 0.1
    assert roc_auc(scores["s_gc,multiview"], labels) > roc_auc(s_g, labels)


@pytest.mark.slow
def test_multiview_lpc_beats_chance_on_the_project_phantom():
    """Lesions of the synthetic CT phantom against its normal nodes and calcifications."""
    torch.set_num_threads(1)
    train_sets = [project_phantom_set(seed) for seed in range(24)]
    test_sets = [project_phantom_set(seed) for seed in range(100, 110)]
    labels = np.concatenate([s.labels for s in test_sets])
    options = LPCTrainOptions(
        variant="multiview",
        width="lite",
        patch_size=32,
        pad_px=8,
        pretrained=False,
        epochs=12,
        batch_size=16,
        learning_rate=2e-3,
        patience=5,
    )
    model = train_lpc(train_sets, options).model
    s_c = np.concatenate([classify_proposals(model, s.volume, s.proposals) for s in test_sets])
    assert labels.sum() >= 10 and (labels == 0).sum() >= 10
    assert roc_auc(s_c, labels) >= 0.65
