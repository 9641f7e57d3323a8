"""HNSL fine-tuning suppresses hard negatives on held-out volumes and keeps lesion sensitivity.

A lite MSCN is first trained on phantoms with lesions only, so it fires on any
bright blob. It is then fine-tuned on phantoms that also hold denser decoys,
twice from the same weights with the same samples, order and augmentation:
once with the decoys as hard negatives (HNSL heatmap, Eq. 3) and once without
them (plain focal loss: the decoys are ordinary background). On held-out
phantoms the HNSL model must score the decoys clearly lower than both the
round-1 model and the plain fine-tune, while its lesion recall stays within a
small tolerance of the round-1 model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from napari_lesion_harvest.geometry import iou_2d
from napari_lesion_harvest.lpg.config import get_config
from napari_lesion_harvest.lpg.data import LPGSample
from napari_lesion_harvest.lpg.infer import detect_volume
from napari_lesion_harvest.lpg.train import LPGTrainOptions, train_lpg
from tests.lpg_phantoms import decoy_phantom

CONFIG = get_config("lite", max_side=64)
EMPTY = np.zeros((0, 4))
#: Detection score counted as a found lesion (the harvest's 2D proposal threshold t_G).
FOUND_SCORE = 0.1


def round_one_samples(seeds) -> list[LPGSample]:
    samples = []
    for seed in seeds:
        volume, lesions, _ = decoy_phantom(seed)
        samples += [LPGSample(volume, z, b) for z, b in lesions.items()]
        samples += [LPGSample(volume, z, EMPTY) for z in (0, 15) if z not in lesions]
    return samples


def fine_tune_samples(seeds, *, with_hard_negatives: bool) -> list[LPGSample]:
    """Every slice holding a lesion or a decoy; decoys as hard negatives or not at all."""
    samples = []
    for seed in seeds:
        volume, lesions, decoys = decoy_phantom(seed, decoys=3)
        for z in sorted(set(lesions) | set(decoys)):
            negatives = decoys.get(z, EMPTY) if with_hard_negatives else EMPTY
            samples.append(LPGSample(volume, z, lesions.get(z, EMPTY), negatives))
    return samples


def largest_cross_sections(boxes: dict[int, np.ndarray]) -> list[tuple[int, np.ndarray]]:
    """Each object once, on the slice where its box is widest (objects keep their centre)."""
    best: dict[tuple, tuple[int, np.ndarray]] = {}
    for z, slice_boxes in boxes.items():
        for box in slice_boxes:
            key = tuple(np.round((box[:2] + box[2:]) / 2, 6))
            if key not in best or box[2] - box[0] > best[key][1][2] - best[key][1][0]:
                best[key] = (z, box)
    return list(best.values())


@dataclass
class HeldOutScores:
    """Mean top score at the decoys, and lesion recall / mean score (IoU >= 0.5)."""

    decoy_score: float
    lesion_recall: float
    lesion_score: float


def held_out_scores(model, seeds) -> HeldOutScores:
    decoy_scores, lesion_scores = [], []
    for seed in seeds:
        volume, lesions, decoys = decoy_phantom(seed, decoys=3)
        found = {d.z: d for d in detect_volume(model, volume, top_k=20)}
        for z, box in largest_cross_sections(decoys):
            d = found[z]
            centres = (d.boxes[:, :2] + d.boxes[:, 2:]) / 2
            inside = ((centres >= box[:2]) & (centres <= box[2:])).all(1)
            decoy_scores.append(float(d.scores[inside].max(initial=0.0)))
        for z, box in largest_cross_sections(lesions):
            d = found[z]
            overlapping = iou_2d(box[None], d.boxes)[0] >= 0.5
            lesion_scores.append(float(d.scores[overlapping].max(initial=0.0)))
    lesion_scores = np.array(lesion_scores)
    return HeldOutScores(
        float(np.mean(decoy_scores)),
        float(np.mean(lesion_scores >= FOUND_SCORE)),
        float(lesion_scores.mean()),
    )


def run_hnsl_experiment(tmp_path, *, base_steps=150, tune_steps=80, tune_lr=5e-4):
    torch.set_num_threads(1)
    round_one = train_lpg(
        round_one_samples(range(10)),
        config=CONFIG,
        options=LPGTrainOptions(
            steps=base_steps, batch_size=6, learning_rate=2e-3, warmup_steps=15
        ),
        checkpoint_path=tmp_path / "round1.pt",
    )
    held_out = range(100, 110)
    results = {"round 1": held_out_scores(round_one.model, held_out)}
    tune = LPGTrainOptions(steps=tune_steps, batch_size=6, learning_rate=tune_lr, warmup_steps=5)
    for name, hard in (("HNSL", True), ("plain focal", False)):
        tuned = train_lpg(
            fine_tune_samples(range(20, 30), with_hard_negatives=hard),
            options=tune,
            init_checkpoint=tmp_path / "round1.pt",
            checkpoint_path=tmp_path / f"{name}.pt",
        )
        results[name] = held_out_scores(tuned.model, held_out)
    return results


@pytest.mark.slow
def test_hnsl_fine_tuning_suppresses_hard_negatives_and_keeps_sensitivity(tmp_path):
    results = run_hnsl_experiment(tmp_path)
    for name, scores in results.items():
        print(name, scores)
    base, hnsl, plain = results["round 1"], results["HNSL"], results["plain focal"]
    # Measured (1 thread, torch 2.14.1; 30 held-out lesions, 30 decoys): decoy score
    # 0.85 (round 1) -> 0.17 (HNSL) vs 0.26 (plain focal); lesion recall at IoU 0.5 and
    # score 0.1: 0.33 (round 1), 0.43 (HNSL), 0.37 (plain focal).
    assert base.decoy_score >= 0.5  # the round-1 model fires on the decoys
    assert hnsl.decoy_score <= 0.4 * base.decoy_score
    assert hnsl.decoy_score <= 0.8 * plain.decoy_score  # HNSL's own effect
    # Sensitivity kept: at most 0.1 (3 of 30 lesions) below round 1.
    assert hnsl.lesion_recall >= base.lesion_recall - 0.1
