"""Does self-supervised pretraining help the LPG find held-out lesions of the CT phantom?

For each training seed, two LPGs (``lite``, soft-tissue window, as
``benchmarks/lpg_phantom_bench.py`` trains them) learn from the same labelled
slices, the key slices of phantom volumes ``0..--train-1`` with every lesion:

* ``random``: from random initialisation;
* ``pretrained``: from a trunk pretrained (:mod:`napari_lesion_harvest.lpg.pretrain`)
  for ``--pretrain-minutes`` (or ``--pretrain-steps``) on the unlabelled volumes
  ``0..--train-1`` and ``--unlabelled`` more (indices from 200), never on a
  held-out one.

Both are scanned on the held-out volumes (indices from 500). Reported: the FROC
sensitivity at ``--fp-rate`` false positives per marked slice (2D rule, IoU >= 0.5,
as ``lpg_phantom_bench.py``), per arm and seed, and the paired difference
(pretrained - random) with a 95% bootstrap interval over held-out volumes and seeds
(the quality benchmark's two-level bootstrap, ``harvest.quality.seed_weights``).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pretrain_bench.py --seeds 0 1 2
--pretrain-minutes 10``. Prints one JSON object (and ``--out FILE`` keeps it).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from napari_lesion_harvest.evaluation.bootstrap import (
    VolumeSteps,
    percentile_interval,
    resampled_froc,
    volume_resamples,
)
from napari_lesion_harvest.evaluation.curve import RankedSteps, ranked_steps
from napari_lesion_harvest.evaluation.matching import match_recist_2d
from napari_lesion_harvest.evaluation.tables import RecistTruth
from napari_lesion_harvest.harvest.quality import combine, seed_weights
from napari_lesion_harvest.lpg.config import get_config
from napari_lesion_harvest.lpg.phantom_froc import (
    detection_table,
    full_marks,
    key_slice_samples,
    synthetic_ct,
)
from napari_lesion_harvest.lpg.pretrain import DEFAULT_OPTIONS, PretrainSlices, pretrain_trunk
from napari_lesion_harvest.lpg.train import LPGTrainOptions, train_lpg

#: First phantom index of the unlabelled-only and of the held-out volumes.
UNLABELLED_START, HELD_OUT_START = 200, 500


def froc_steps(model, phantoms) -> tuple[VolumeSteps, np.ndarray]:
    """The 2D-rule detections of ``model`` on ``phantoms`` in curve order, with their
    volumes, and the marked slices of each volume (the FP rate's unit)."""
    volume, scores, found, misses, lesions, images = [], [], [], [], [], []
    for index, phantom in enumerate(phantoms):
        truth = RecistTruth.from_mapping(full_marks([phantom]))
        matches = match_recist_2d(truth, detection_table(model, [phantom.volume]))
        steps = ranked_steps(matches)  # a lesion's first hit depends on its volume only
        volume.append(np.full(len(steps.scores), index))
        scores.append(steps.scores)
        found.append(steps.found)
        misses.append(steps.misses)
        lesions.append(matches.n_lesions)
        images.append(matches.n_images)
    scores = np.concatenate(scores)
    order = np.argsort(scores, kind="stable")[::-1]
    merged = RankedSteps(
        order=order,
        scores=scores[order],
        found=np.concatenate(found)[order],
        misses=np.concatenate(misses)[order],
        repeat_hits=np.zeros(len(order), dtype=np.int64),
    )
    ids = tuple(p.volume_id for p in phantoms)
    steps = VolumeSteps(ids, np.concatenate(volume)[order], merged, np.array(lesions))
    return steps, np.array(images)


def train_arm(samples, config, seed: int, steps: int, trunk: Path | None):
    """An LPG trained on ``samples`` from random weights or the trunk in ``trunk``."""
    result = train_lpg(
        samples,
        config=config,
        options=LPGTrainOptions(steps=steps, batch_size=8, learning_rate=1e-3, seed=seed),
        pretrained=False,
        pretrained_trunk=None if trunk is None else (trunk, None),
    )
    return result.model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train", type=int, default=24, help="labelled phantom volumes")
    parser.add_argument("--unlabelled", type=int, default=24, help="more unlabelled volumes")
    parser.add_argument("--held-out", type=int, default=8, help="held-out phantom volumes")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=800, help="LPG training steps")
    parser.add_argument("--pretrain-minutes", type=float, default=10.0)
    parser.add_argument("--pretrain-steps", type=int, default=DEFAULT_OPTIONS.steps)
    parser.add_argument("--fp-rate", type=float, default=1.0)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = get_config("lite", max_side=args.size, hu_window=(-200.0, 300.0))
    labelled = [synthetic_ct(i, args.size) for i in range(args.train)]
    unlabelled = [
        synthetic_ct(i, args.size)
        for i in range(UNLABELLED_START, UNLABELLED_START + args.unlabelled)
    ]
    held_out = [
        synthetic_ct(i, args.size) for i in range(HELD_OUT_START, HELD_OUT_START + args.held_out)
    ]
    samples = [s for p in labelled for s in key_slice_samples(p, p.lesions)]
    counts = volume_resamples(len(held_out), args.resamples, seed=0)
    weights = seed_weights(len(args.seeds), args.resamples, seed=0)
    ones = np.ones((1, len(held_out)), dtype=np.int64)
    arms = ("random", "pretrained")
    point = {arm: [] for arm in arms}
    draws = {arm: [] for arm in arms}
    pretraining = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as folder:
            trunk = Path(folder) / "pretrained.pt"
            started = time.monotonic()
            done = pretrain_trunk(
                PretrainSlices([p.volume for p in labelled + unlabelled]),
                trunk,
                config=config,
                options=replace(DEFAULT_OPTIONS, steps=args.pretrain_steps, seed=seed),
                minutes=args.pretrain_minutes,
            )
            pretraining.append(
                {
                    "seed": seed,
                    "steps": done.step,
                    "seconds": round(time.monotonic() - started),
                    "first_loss": done.losses[0],
                    "last_loss": float(np.mean(done.losses[-20:])),
                }
            )
            print(f"seed {seed} pretrained: {pretraining[-1]}", flush=True)
            for arm in arms:
                model = train_arm(
                    samples, config, seed, args.steps, trunk if arm != "random" else None
                )
                steps, images = froc_steps(model, held_out)
                point[arm].append(
                    float(
                        resampled_froc(steps, ones, images=images, fp_rates=[args.fp_rate])[0, 0]
                    )
                )
                draws[arm].append(
                    resampled_froc(steps, counts, images=images, fp_rates=[args.fp_rate])[:, 0]
                )
                print(f"seed {seed} {arm}: {point[arm][-1]:.3f}", flush=True)
    figures = {}
    for arm in arms:
        low, high = percentile_interval(combine(np.array(draws[arm]), weights))
        figures[arm] = {
            "mean": float(np.mean(point[arm])),
            "low": low,
            "high": high,
            "per_seed": point[arm],
        }
    difference = np.array(draws["pretrained"]) - np.array(draws["random"])
    low, high = percentile_interval(combine(difference, weights))
    gain = np.subtract(point["pretrained"], point["random"])
    report = {
        "question": "LPG held-out sensitivity at FP rate per marked slice: pretrained - random",
        "fp_rate": args.fp_rate,
        "seeds": args.seeds,
        "train_volumes": args.train,
        "unlabelled_volumes": args.unlabelled,
        "held_out_volumes": args.held_out,
        "held_out_lesions": sum(len(p.lesions) for p in held_out),
        "training_slices": len(samples),
        "lpg_steps": args.steps,
        "size": args.size,
        "pretraining": pretraining,
        "sensitivity": figures,
        "gain": {"mean": float(gain.mean()), "low": low, "high": high, "per_seed": gain.tolist()},
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
