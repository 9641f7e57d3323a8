"""The held-out FROC of the LPGs that two quality-benchmark runs trained, paired by seed.

Each seed's project of a ``benchmarks/quality_bench.py`` run stores the LPG of every
round. Two runs that differ only in how the LPG starts (``--random``: from random
weights; ``--pretrained``: e.g. ``--pretrain-pretext blobs --pretrain-steps 2000``)
train their round-1 LPGs on the same labelled slices with the same seed, so their
difference is the start alone. Later rounds learn from each run's own harvest.

Both LPGs of a seed scan the project's V_H_test volumes: fully annotated, never a
training or a pretraining volume (``harvest.pretraining.PRETRAINING_SPLITS``).
Reported: the sensitivity at ``--fp-rate`` false positives per marked slice (2D rule,
IoU >= 0.5, the top 20 detections per slice with score >= 0.01, as
``benchmarks/pretrain_bench.py``), per arm and seed, and the paired difference
(pretrained - random) with a 95% bootstrap interval over the V_H_test volumes and
the seeds (the quality benchmark's two-level bootstrap).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/round_lpg_bench.py --random A
--pretrained C [--seeds 0 1 2] [--round 1] [--out FILE]``, where A and C are
``quality_bench.py --out`` folders with the same phantom. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from pretrain_bench import ARMS, paired_figures, sensitivity, show_and_keep
from quality_bench import RUN_FILE

from napari_lesion_harvest.evaluation.bootstrap import volume_resamples
from napari_lesion_harvest.harvest.quality import test_set
from napari_lesion_harvest.io.sources import open_volume
from napari_lesion_harvest.lpg.checkpoint import load_model
from napari_lesion_harvest.store import HarvestProject


def finished_seeds(run: Path) -> set[int]:
    """The seeds whose rounds finished in quality-benchmark folder ``run``."""
    return {int(f.parent.name.removeprefix("seed-")) for f in run.glob(f"seed-*/{RUN_FILE}")}


def round_lpg(project_dir: Path, round_number: int):
    """The LPG that round ``round_number`` of the project trained (sha256 checked)."""
    with HarvestProject.open(project_dir) as project:
        ref = project.rounds.checkpoint("lpg", round_number=round_number)
    return load_model(project_dir / ref.path, sha256=ref.sha256)


def test_volumes(project_dir: Path) -> tuple[dict, list]:
    """``(truth, volumes)``: the project's V_H_test marks by volume id and the volumes."""
    truth, _ = test_set(project_dir)
    with HarvestProject.open(project_dir) as project:
        volumes = [open_volume(project.volume(volume_id)) for volume_id in truth]
    return truth, volumes


def run_seed(seed: int, folders: dict, round_number: int, fp_rate: float, resamples: int) -> dict:
    """Both arms' round LPGs of ``seed`` on its V_H_test volumes.

    Returns
    -------
    dict
        ``seed``, ``lesions`` (on V_H_test), ``seconds``, ``note`` (arm -> the LPG's
        start), ``point`` (arm -> sensitivity at ``fp_rate``) and ``draws`` (arm -> its
        values over ``resamples`` resamples of the V_H_test volumes).
    """
    projects = {arm: folders[arm] / f"seed-{seed}" / "project" for arm in ARMS}
    truth, volumes = test_volumes(projects["random"])
    if list(test_set(projects["pretrained"])[0]) != list(truth):
        raise SystemExit(f"seed {seed}: the two runs hold different V_H_test volumes")
    counts = volume_resamples(len(volumes), resamples, seed=0)
    run = {"seed": seed, "lesions": sum(len(marks) for marks in truth.values())}
    run.update(note={}, point={}, draws={})
    started = time.monotonic()
    for arm in ARMS:
        model = round_lpg(projects[arm], round_number)
        run["note"][arm] = model.pretrained_note
        point, draws = sensitivity(model, volumes, truth, counts, fp_rate)
        run["point"][arm], run["draws"][arm] = point, draws
        print(f"seed {seed} {arm}: {point:.3f}", flush=True)
    run["seconds"] = round(time.monotonic() - started)
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=Path, required=True, help="run without pretraining")
    parser.add_argument("--pretrained", type=Path, required=True, help="run with pretraining")
    parser.add_argument("--seeds", type=int, nargs="+", help="default: finished in both runs")
    parser.add_argument("--round", type=int, default=1, help="whose LPG (1: equal labels)")
    parser.add_argument("--fp-rate", type=float, default=1.0)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    folders = {"random": args.random, "pretrained": args.pretrained}
    finished = {arm: finished_seeds(folder) for arm, folder in folders.items()}
    both = finished["random"] & finished["pretrained"]
    seeds = sorted(both) if args.seeds is None else args.seeds
    if not seeds or set(seeds) - both:
        parser.error(
            f"seeds {seeds or 'to compare'} must have finished in both runs; finished: "
            f"{sorted(finished['random'])} in {args.random}, "
            f"{sorted(finished['pretrained'])} in {args.pretrained}"
        )
    torch.set_num_threads(1)
    runs = [run_seed(s, folders, args.round, args.fp_rate, args.resamples) for s in seeds]
    result = {
        "question": "round LPG's V_H_test sensitivity at FP rate per marked slice: "
        "pretrained - random",
        "random": str(args.random),
        "pretrained": str(args.pretrained),
        "round": args.round,
        "fp_rate": args.fp_rate,
        "resamples": args.resamples,
        "seeds": seeds,
        **paired_figures(runs, args.resamples),
        "runs": runs,
    }
    show_and_keep(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
