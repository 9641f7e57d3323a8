"""Which training batch and step count bring the ``lite`` LPG to its loss and held-out
detection in the least CPU time?

Each arm trains the ``lite`` LPG (soft-tissue window, as ``benchmarks/pretrain_bench.py``)
from random weights on the key slices of phantom volumes ``0..--train-1`` with every
lesion. An arm is ``BATCH/LEARNING_RATE[/STEPS]``; without STEPS it runs ``--examples``
/ BATCH steps, so that every such arm sees the same training examples (the default
4800 = the ``lite`` preset's 600 steps of 8). The first arm is the reference (the
preset's: ``8/1e-3``). Every arm of a seed starts from the same weights and draws its
samples in the same order.

Per arm and seed, recorded:

* the training loss of every step (``LPGTrainResult.history``) and the process CPU
  time of every step (``time.process_time``, one torch thread: steady on a shared
  machine), whose median over the steps after the first five is the arm's CPU seconds
  per step; the loss against CPU time is steps x that median;
* the target loss: the reference arm's mean loss over its last ``--target-steps``
  steps (same seed), and the CPU time each arm takes until the mean loss of its last
  ``--window-examples`` / BATCH steps first reaches it;
* the held-out FROC sensitivity at ``--fp-rate`` false positives per marked slice (2D
  rule, IoU >= 0.5, volumes from index 500, as ``pretrain_bench.py``) at
  ``--evaluations`` checkpoints evenly over the arm's steps (a checkpoint part-way
  through a run has not had the learning rate's cosine decay to zero that a shorter
  run would have).

Each arm's sensitivity at each checkpoint is compared with the reference arm's at
its end: the paired difference with a 95% two-level bootstrap interval over held-out
volumes and seeds (``harvest.quality.seed_weights``, as the quality benchmark).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lpg_budget_bench.py --seeds 0 1 2``
(about 50 minutes of one core with the default arms). Prints one JSON object (and
``--out FILE`` keeps it).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from loss_curve import steps_to_target, trailing_mean
from pretrain_bench import HELD_OUT_START, froc_steps

from napari_lesion_harvest.evaluation.bootstrap import (
    percentile_interval,
    resampled_froc,
    volume_resamples,
)
from napari_lesion_harvest.harvest.quality import combine, seed_weights
from napari_lesion_harvest.lpg.checkpoint import load_checkpoint, model_from_checkpoint
from napari_lesion_harvest.lpg.config import get_config
from napari_lesion_harvest.lpg.phantom_froc import key_slice_samples, synthetic_ct
from napari_lesion_harvest.lpg.train import LPGTrainOptions, train_lpg

#: Steps of a run left out of its median step time (first batches, allocator warm-up).
WARMUP_STEPS = 5


@dataclass(frozen=True)
class Arm:
    """One training setting: batch size, peak learning rate and optimiser steps."""

    batch_size: int
    learning_rate: float
    steps: int

    @property
    def name(self) -> str:
        return f"B{self.batch_size} lr {self.learning_rate:g} {self.steps} steps"

    @classmethod
    def parse(cls, text: str, *, examples: int) -> Arm:
        """``BATCH/LEARNING_RATE[/STEPS]``; STEPS defaults to ``examples`` / BATCH."""
        parts = text.split("/")
        if len(parts) not in (2, 3):
            raise argparse.ArgumentTypeError(f"arm {text!r}: use BATCH/LEARNING_RATE[/STEPS]")
        batch = int(parts[0])
        steps = int(parts[2]) if len(parts) == 3 else max(1, examples // batch)
        return cls(batch, float(parts[1]), steps)


class HeldOutFroc:
    """The held-out sensitivity at one FP rate of a model: on the held-out set itself
    and on each bootstrap resample of its volumes."""

    def __init__(self, phantoms, *, fp_rate: float, resamples: int):
        self.phantoms, self.fp_rate = phantoms, fp_rate
        self.counts = volume_resamples(len(phantoms), resamples, seed=0)
        self.ones = np.ones((1, len(phantoms)), dtype=np.int64)

    def __call__(self, model) -> tuple[float, np.ndarray]:
        """Sensitivity on the held-out set, and on each resample (shape (B,))."""
        steps, images = froc_steps(model, self.phantoms)
        point, draws = (
            resampled_froc(steps, counts, images=images, fp_rates=[self.fp_rate])[:, 0]
            for counts in (self.ones, self.counts)
        )
        return float(point[0]), draws


class ArmRun:
    """One arm's training for one seed: step losses, step CPU times and the held-out
    sensitivity at each checkpoint (``progress`` and ``on_checkpoint`` of
    :func:`~napari_lesion_harvest.lpg.train.train_lpg`)."""

    def __init__(self, checkpoint: Path, froc: HeldOutFroc):
        self.checkpoint, self.froc = checkpoint, froc
        self.step_seconds: list[float] = []
        self.sensitivity: dict[int, tuple[float, np.ndarray]] = {}
        self.step = 0
        self.clock = time.process_time()

    def progress(self, step: int, total: int, record: dict) -> None:
        now = time.process_time()
        self.step_seconds.append(now - self.clock)
        self.clock, self.step = now, step

    def on_checkpoint(self, sha256: str, size: int) -> None:
        if self.step not in self.sensitivity:  # the last step's checkpoint is written twice
            state = load_checkpoint(self.checkpoint, sha256=sha256)
            self.sensitivity[self.step] = self.froc(model_from_checkpoint(state).eval())
        self.clock = time.process_time()  # the next step's time leaves the evaluation out


def run_arm(samples, config, arm: Arm, seed: int, froc: HeldOutFroc, *, evaluations: int):
    """Train ``arm`` with ``seed``; its losses (shape (steps,)), median CPU seconds per
    step, and held-out sensitivity by checkpoint step."""
    with tempfile.TemporaryDirectory() as folder:
        run = ArmRun(Path(folder) / "lpg.pt", froc)
        result = train_lpg(
            samples,
            config=config,
            options=LPGTrainOptions(
                steps=arm.steps,
                batch_size=arm.batch_size,
                learning_rate=arm.learning_rate,
                seed=seed,
                checkpoint_every=max(1, arm.steps // evaluations),
            ),
            checkpoint_path=run.checkpoint,
            resume=False,
            pretrained=False,
            progress=run.progress,
            on_checkpoint=run.on_checkpoint,
        )
    losses = np.array([record["total"] for record in result.history])
    step_seconds = float(np.median(run.step_seconds[WARMUP_STEPS:] or run.step_seconds))
    return losses, step_seconds, run.sensitivity


def interval(per_seed_draws, weights) -> list[float]:
    """95% interval of the seeds' mean from per-seed draws (S, B)."""
    return list(percentile_interval(combine(np.array(per_seed_draws), weights)))


def summary(arms, seeds, runs, args) -> dict:
    """The report's figures per arm (``runs[arm][seed] = run_arm(...)``)."""
    reference = arms[0]
    weights = seed_weights(len(seeds), args.resamples, seed=0)
    targets = [float(trailing_mean(runs[reference][s][0], args.target_steps)[-1]) for s in seeds]
    final = {s: runs[reference][s][2][reference.steps] for s in seeds}
    report = {}
    for arm in arms:
        window = max(1, round(args.window_examples / arm.batch_size))
        per_seed = [runs[arm][s] for s in seeds]
        step_seconds = [run[1] for run in per_seed]
        to_target = [
            steps_to_target(run[0], target, window=window)
            for run, target in zip(per_seed, targets, strict=True)
        ]
        curve = []
        for fraction in np.linspace(0.1, 1.0, 10):
            step = max(window, int(round(fraction * arm.steps)))
            curve.append(
                {
                    "step": step,
                    "reference_step_equivalent": step * arm.batch_size / reference.batch_size,
                    "cpu_seconds": round(step * float(np.mean(step_seconds)), 1),
                    "loss": float(
                        np.mean([trailing_mean(run[0][:step], window)[-1] for run in per_seed])
                    ),
                }
            )
        detection = []
        for step in sorted(per_seed[0][2]):
            points = [run[2][step][0] for run in per_seed]
            gain = [run[2][step][1] - final[s][1] for run, s in zip(per_seed, seeds, strict=True)]
            detection.append(
                {
                    "step": step,
                    "reference_step_equivalent": step * arm.batch_size / reference.batch_size,
                    "sensitivity": float(np.mean(points)),
                    "interval": interval([run[2][step][1] for run in per_seed], weights),
                    "per_seed": points,
                    "minus_reference_final": float(
                        np.mean(points) - np.mean([final[s][0] for s in seeds])
                    ),
                    "minus_reference_final_interval": interval(gain, weights),
                }
            )
        report[arm.name] = {
            "batch_size": arm.batch_size,
            "learning_rate": arm.learning_rate,
            "steps": arm.steps,
            "examples": arm.steps * arm.batch_size,
            "cpu_seconds_per_step": step_seconds,
            "cpu_seconds": [round(arm.steps * s, 1) for s in step_seconds],
            "smoothing_window_steps": window,
            "loss_curve": curve,
            "steps_to_target": to_target,
            "cpu_seconds_to_target": [
                None if n is None else round(n * s, 1)
                for n, s in zip(to_target, step_seconds, strict=True)
            ],
            "detection": detection,
        }
    return {"target_loss": targets, "arms": report}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train", type=int, default=24, help="labelled phantom volumes")
    parser.add_argument("--held-out", type=int, default=8, help="held-out phantom volumes")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--examples", type=int, default=4800, help="training examples per arm")
    parser.add_argument(
        "--arms",
        nargs="+",
        default=["8/1e-3", "4/1e-3", "16/1e-3", "16/2e-3", "8/1e-3/300"],
        help="BATCH/LEARNING_RATE[/STEPS]; the first is the reference",
    )
    parser.add_argument("--evaluations", type=int, default=4, help="held-out FROCs per arm")
    parser.add_argument("--target-steps", type=int, default=50)
    parser.add_argument("--window-examples", type=int, default=400)
    parser.add_argument("--fp-rate", type=float, default=1.0)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    arms = [Arm.parse(text, examples=args.examples) for text in args.arms]
    torch.set_num_threads(1)
    config = get_config("lite", max_side=args.size, hu_window=(-200.0, 300.0))
    labelled = [synthetic_ct(i, args.size) for i in range(args.train)]
    held_out = [
        synthetic_ct(i, args.size) for i in range(HELD_OUT_START, HELD_OUT_START + args.held_out)
    ]
    samples = [s for p in labelled for s in key_slice_samples(p, p.lesions)]
    froc = HeldOutFroc(held_out, fp_rate=args.fp_rate, resamples=args.resamples)
    runs = {arm: {} for arm in arms}
    for seed in args.seeds:
        for arm in arms:
            runs[arm][seed] = run_arm(
                samples, config, arm, seed, froc, evaluations=args.evaluations
            )
            losses, step_seconds, sensitivity = runs[arm][seed]
            print(
                f"seed {seed} {arm.name}: {step_seconds:.3f} CPU s/step, last-50 loss "
                f"{np.mean(losses[-50:]):.3f}, sensitivity "
                + " ".join(f"{step}:{point:.3f}" for step, (point, _) in sensitivity.items()),
                flush=True,
            )
    report = {
        "question": "lite LPG: CPU time to the reference arm's loss, held-out sensitivity",
        "machine": {"torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "fp_rate": args.fp_rate,
        "seeds": args.seeds,
        "train_volumes": args.train,
        "held_out_volumes": args.held_out,
        "held_out_lesions": sum(len(p.lesions) for p in held_out),
        "training_slices": len(samples),
        "size": args.size,
        "target_steps": args.target_steps,
        "window_examples": args.window_examples,
        **summary(arms, args.seeds, runs, args),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
