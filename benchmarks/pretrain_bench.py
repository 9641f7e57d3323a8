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
--pretrain-minutes 10``. Prints one JSON object (and ``--out FILE`` keeps it), which
holds each seed's bootstrap draws: seeds run in separate processes (one ``--out``
each, same other options) are reported together by ``--combine FILE [FILE ...]``.
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
    percentile_interval,
    resampled_froc,
    volume_resamples,
)
from napari_lesion_harvest.harvest.quality import combine, seed_weights
from napari_lesion_harvest.lpg.config import DEFAULT_PRETEXT, PRETEXTS, get_config
from napari_lesion_harvest.lpg.phantom_froc import (
    froc_steps,
    full_marks,
    key_slice_samples,
    synthetic_ct,
)
from napari_lesion_harvest.lpg.pretrain import (
    DEFAULT_OPTIONS,
    PretrainSlices,
    pretrain_trunk,
)
from napari_lesion_harvest.lpg.train import LPGTrainOptions, train_lpg

#: First phantom index of the unlabelled-only and of the held-out volumes.
UNLABELLED_START, HELD_OUT_START = 200, 500


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


#: Options whose values must agree for seeds to be reported together.
SETTINGS = (
    "fp_rate",
    "train",
    "unlabelled",
    "held_out",
    "size",
    "steps",
    "pretext",
    "pretrain_steps",
    "pretrain_minutes",
    "resamples",
)
ARMS = ("random", "pretrained")


def run_seed(seed: int, args, config, labelled, unlabelled, held_out, samples) -> dict:
    """Pretrain with ``seed``, train both arms and scan the held-out volumes.

    Returns
    -------
    dict
        ``seed``, ``pretraining`` (steps, seconds, first and last loss), ``point``
        (arm -> sensitivity at ``--fp-rate``) and ``draws`` (arm -> its bootstrap
        draws over the held-out volumes, ``--resamples`` values).
    """
    counts = volume_resamples(len(held_out), args.resamples, seed=0)
    run = {"seed": seed, "point": {}, "draws": {}}
    with tempfile.TemporaryDirectory() as folder:
        trunk = Path(folder) / "pretrained.pt"
        started = time.monotonic()
        done = pretrain_trunk(
            PretrainSlices([p.volume for p in labelled + unlabelled]),
            trunk,
            config=config,
            options=replace(DEFAULT_OPTIONS, steps=args.pretrain_steps, seed=seed),
            pretext=args.pretext,
            minutes=args.pretrain_minutes,
        )
        run["pretraining"] = {
            "steps": done.step,
            "seconds": round(time.monotonic() - started),
            "first_loss": done.losses[0],
            "last_loss": float(np.mean(done.losses[-20:])),
        }
        print(f"seed {seed} pretrained: {run['pretraining']}", flush=True)
        volumes, truth = [p.volume for p in held_out], full_marks(held_out)
        for arm in ARMS:
            start_from = None if arm == "random" else trunk
            model = train_arm(samples, config, seed, args.steps, start_from)
            point, draws = sensitivity(model, volumes, truth, counts, args.fp_rate)
            run["point"][arm], run["draws"][arm] = point, draws
            print(f"seed {seed} {arm}: {point:.3f}", flush=True)
    return run


def sensitivity(model, volumes, truth, counts, fp_rate: float) -> tuple[float, list[float]]:
    """``model``'s sensitivity at ``fp_rate`` FPs per marked slice on ``volumes``
    (:func:`~napari_lesion_harvest.lpg.phantom_froc.froc_steps`, ``truth`` by volume
    id), and its value on each resample of the volumes in ``counts`` (B, V)."""
    steps, images = froc_steps(model, volumes, truth)
    ones = np.ones((1, len(volumes)), dtype=np.int64)
    point = resampled_froc(steps, ones, images=images, fp_rates=[fp_rate])[0, 0]
    draws = resampled_froc(steps, counts, images=images, fp_rates=[fp_rate])[:, 0]
    return float(point), draws.tolist()


def paired_figures(runs: list[dict], resamples: int) -> dict:
    """Each arm's mean sensitivity over ``runs`` (one per seed, with ``point`` and
    ``draws`` per arm of :data:`ARMS`) and the paired gain (pretrained - random), with
    95% two-level bootstrap intervals (volumes and seeds resampled)."""
    weights = seed_weights(len(runs), resamples, seed=0)
    figures = {}
    for arm in ARMS:
        draws = np.array([run["draws"][arm] for run in runs])
        low, high = percentile_interval(combine(draws, weights))
        per_seed = [run["point"][arm] for run in runs]
        figures[arm] = {"mean": float(np.mean(per_seed)), "low": low, "high": high}
        figures[arm]["per_seed"] = per_seed
    difference = np.array(
        [np.subtract(run["draws"]["pretrained"], run["draws"]["random"]) for run in runs]
    )
    low, high = percentile_interval(combine(difference, weights))
    gain = np.array([run["point"]["pretrained"] - run["point"]["random"] for run in runs])
    return {
        "sensitivity": figures,
        "gain": {"mean": float(gain.mean()), "low": low, "high": high, "per_seed": gain.tolist()},
    }


def report(settings: dict, runs: list[dict], held_out_lesions: int, training_slices: int) -> dict:
    """:func:`paired_figures` over ``runs`` with the settings and the seeds' pretraining."""
    return {
        "question": "LPG held-out sensitivity at FP rate per marked slice: pretrained - random",
        **settings,
        "seeds": [run["seed"] for run in runs],
        "held_out_lesions": held_out_lesions,
        "training_slices": training_slices,
        "pretraining": [{"seed": run["seed"], **run["pretraining"]} for run in runs],
        **paired_figures(runs, settings["resamples"]),
        "runs": runs,
    }


def combined(files: list[Path]) -> dict:
    """The report over the seeds of earlier runs' ``--out`` files (same settings)."""
    found = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    for name in (*SETTINGS, "held_out_lesions", "training_slices"):
        values = {json.dumps(f[name]) for f in found}
        if len(values) > 1:
            raise SystemExit(f"the files were made with different {name}: {sorted(values)}")
    runs = sorted((run for f in found for run in f["runs"]), key=lambda run: run["seed"])
    seeds = [run["seed"] for run in runs]
    if len(set(seeds)) < len(seeds):
        raise SystemExit(f"a seed is in more than one file: {seeds}")
    first = found[0]
    settings = {name: first[name] for name in SETTINGS}
    return report(settings, runs, first["held_out_lesions"], first["training_slices"])


def show_and_keep(result: dict, out: Path | None) -> None:
    """Print ``result`` without its per-seed ``runs``; write all of it to ``out``."""
    shown = {key: value for key, value in result.items() if key != "runs"}
    print(json.dumps(shown, indent=1))
    if out:
        out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


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
    parser.add_argument("--pretext", choices=PRETEXTS, default=DEFAULT_PRETEXT)
    parser.add_argument("--fp-rate", type=float, default=1.0)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--combine", type=Path, nargs="+", help="run nothing: report these --out files together"
    )
    args = parser.parse_args(argv)
    if args.combine:
        result = combined(args.combine)
    else:
        torch.set_num_threads(1)
        config = get_config("lite", max_side=args.size, hu_window=(-200.0, 300.0))
        labelled = [synthetic_ct(i, args.size) for i in range(args.train)]
        unlabelled = [
            synthetic_ct(i, args.size)
            for i in range(UNLABELLED_START, UNLABELLED_START + args.unlabelled)
        ]
        held_out = [
            synthetic_ct(i, args.size)
            for i in range(HELD_OUT_START, HELD_OUT_START + args.held_out)
        ]
        samples = [s for p in labelled for s in key_slice_samples(p, p.lesions)]
        runs = [
            run_seed(seed, args, config, labelled, unlabelled, held_out, samples)
            for seed in args.seeds
        ]
        settings = {name: getattr(args, name) for name in SETTINGS}
        lesions = sum(len(p.lesions) for p in held_out)
        result = report(settings, runs, lesions, len(samples))
    show_and_keep(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
