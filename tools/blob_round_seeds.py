"""Does the tests' tiny round configuration finish a round at every training seed?

The GUI and engine tests run real rounds on the blob project
(:func:`napari_lesion_harvest.harvest.blob_project.make_blob_project`) with
:data:`~napari_lesion_harvest.harvest.blob_project.TINY_CONFIG`. A round whose LPG
matches no mark leaves the LPC without a positive and ends with an error, so the
configuration must learn the blobs at whichever seed a test's round number gives.
For each seed this builds a fresh blob project, runs one round through the
``lesion-harvest round`` command with ``TINY_CONFIG`` at that seed (and
``--steps`` LPG steps when given) and prints the round's status and time.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python tools/blob_round_seeds.py WORK [--seeds 0 1 2 3 4 5]
[--steps 40]`` (about 10 s per seed on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from napari_lesion_harvest.harvest.blob_project import TINY_CONFIG, make_blob_project
from napari_lesion_harvest.store import HarvestProject


def run_seed(work: Path, seed: int, steps: int | None) -> tuple[str, float, str]:
    """One round on a fresh blob project: (status, seconds, error or "")."""
    folder = work / f"seed-{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    project_dir = make_blob_project(folder)
    config = dict(TINY_CONFIG, seed=seed)
    if steps is not None:
        config["lpg.train_steps"] = steps
    config_path = folder / "seed_config.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    command = [sys.executable, "-m", "napari_lesion_harvest", "round", str(project_dir)]
    command += ["--config", str(config_path), "--device", "cpu"]
    started = time.monotonic()
    subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    with HarvestProject.open(project_dir) as project:
        record = project.rounds.list()[-1]
    return record.status, seconds, record.error or ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work", type=Path, help="blob projects are built here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--steps", type=int, help="LPG steps instead of TINY_CONFIG's")
    args = parser.parse_args(argv)
    steps = args.steps if args.steps is not None else TINY_CONFIG["lpg.train_steps"]
    finished = 0
    for seed in args.seeds:
        status, seconds, error = run_seed(args.work, seed, args.steps)
        finished += status == "done"
        print(f"seed {seed} ({steps} LPG steps): {status} in {seconds:.1f} s {error[:100]}")
    print(f"{finished} of {len(args.seeds)} seeds finished their round")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
