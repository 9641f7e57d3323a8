"""How well a lite LPG trained on the CPU finds held-out lesions of the CT phantom.

Trains ``lite`` (soft-tissue window, as the demo) on the key slices of ``--train``
phantom volumes and reports, on ``--held-out`` held-out volumes (8: 38 lesions):

* FROC sensitivity (2D rule, IoU >= 0.5, FPs per marked slice), and
* the proposal ceiling a harvest round works with: the share of lesions, and of
  lesions without an original mark, that a box with objectness >= t_G (0.1)
  covers at IoU >= 0.5 on some slice of the lesion.

``--round-one-labels`` trains on what round 1 of a harvest sees: the first quarter
of the volumes (V_M) with every lesion, the rest with their original marks only,
so their unmarked lesions on a marked slice count as background.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lpg_phantom_bench.py --train 96``
(one torch thread; about 8 minutes for 800 steps at 128 px). ``--no-flip``,
``--scale-range LO HI`` and ``--complete-repeat K`` (V_M's slices drawn K times as
often) change the training for comparisons.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from napari_lesion_harvest.geometry import iou_2d
from napari_lesion_harvest.lpg.config import get_config
from napari_lesion_harvest.lpg.data import LPGSample, SliceAugmentation
from napari_lesion_harvest.lpg.infer import detect_volume
from napari_lesion_harvest.lpg.phantom_froc import (
    detection_froc,
    full_marks,
    key_slice_samples,
    synthetic_ct,
)
from napari_lesion_harvest.lpg.train import LPGTrainOptions, train_lpg

#: First phantom index of the held-out volumes (the training volumes start at 0).
HELD_OUT_START = 500
T_G = 0.1


def training_samples(
    count: int, size: int, *, round_one_labels: bool, complete_repeat: int = 1
) -> list[LPGSample]:
    """Key-slice samples of phantom volumes ``0..count-1``: every lesion, or with
    ``round_one_labels`` every lesion of the first quarter (V_M, its samples
    listed ``complete_repeat`` times) and the marked ones elsewhere."""
    samples = []
    for index in range(count):
        phantom = synthetic_ct(index, size)
        complete = not round_one_labels or index < count // 4
        lesions = [p for p in phantom.lesions if complete or p.marked]
        repeat = complete_repeat if round_one_labels and complete else 1
        samples += key_slice_samples(phantom, lesions) * repeat
    return samples


def proposal_ceiling(model, phantoms) -> dict[str, float]:
    """Share of all and of unmarked lesions covered (IoU >= 0.5) by a box with s >= t_G."""
    covered = {"all": [], "unmarked": []}
    for phantom in phantoms:
        found = {f.z: f for f in detect_volume(model, phantom.volume, top_k=50, min_score=T_G)}
        for lesion in phantom.lesions:
            best = 0.0
            for z, box in zip(lesion.extent.slices, lesion.extent.boxes, strict=True):
                slice_found = found.get(int(z))
                if slice_found is not None and len(slice_found.boxes):
                    best = max(best, float(iou_2d(np.array([box]), slice_found.boxes).max()))
            covered["all"].append(best >= 0.5)
            if not lesion.marked:
                covered["unmarked"].append(best >= 0.5)
    return {name: float(np.mean(hits)) for name, hits in covered.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=24, help="training phantom volumes")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--round-one-labels", action="store_true")
    parser.add_argument("--held-out", type=int, default=8, help="held-out phantom volumes")
    parser.add_argument("--no-flip", action="store_true", help="train without left-right flips")
    parser.add_argument(
        "--scale-range", type=float, nargs=2, default=SliceAugmentation.scale_range
    )
    parser.add_argument(
        "--complete-repeat", type=int, default=1, help="draw V_M's slices this many times as often"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    samples = training_samples(
        args.train,
        args.size,
        round_one_labels=args.round_one_labels,
        complete_repeat=args.complete_repeat,
    )
    augmentation = SliceAugmentation(scale_range=tuple(args.scale_range))
    if args.no_flip:
        augmentation = replace(augmentation, flip_probability=0.0)
    started = time.monotonic()
    result = train_lpg(
        samples,
        config=get_config("lite", max_side=args.size, hu_window=(-200.0, 300.0)),
        options=LPGTrainOptions(
            steps=args.steps,
            batch_size=8,
            learning_rate=1e-3,
            warmup_steps=50,
            augmentation=augmentation,
        ),
        pretrained=False,
    )
    seconds = time.monotonic() - started
    held_out = [
        synthetic_ct(index, args.size)
        for index in range(HELD_OUT_START, HELD_OUT_START + args.held_out)
    ]
    froc = detection_froc(
        result.model, [p.volume for p in held_out], full_marks(held_out), (0.5, 1, 2, 4, 8)
    )
    ceiling = proposal_ceiling(result.model, held_out)
    print(
        json.dumps(
            {
                "train_volumes": args.train,
                "round_one_labels": args.round_one_labels,
                "flip": not args.no_flip,
                "scale_range": args.scale_range,
                "complete_repeat": args.complete_repeat,
                "held_out_lesions": sum(len(p.lesions) for p in held_out),
                "training_slices": len(samples),
                "steps": args.steps,
                "train_seconds": round(seconds),
                "froc": froc,
                "covered": ceiling,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
