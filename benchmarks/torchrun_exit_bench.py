"""How often a finished 2-rank torchrun LPG training job still fails at exit.

Runs ``torchrun --standalone --nproc_per_node 2 -m napari_lesion_harvest.lpg.job``
on a tiny training job (random volumes, a very small MSCN, 4 steps) ``--runs`` times,
optionally beside ``--busy`` CPU-bound processes (the race is rare on an idle
machine), and prints how many runs exited non-zero and why (the first line of C++
or Python fatal output). ``--exit interpreter`` launches the job through a wrapper
that exits the way a plain Python program does, to measure the teardown race that
:func:`napari_lesion_harvest.lpg.distributed.exit_launched_process` avoids.

    .venv/bin/python benchmarks/torchrun_exit_bench.py --runs 40 --busy 2 [--exit interpreter]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

#: A very small MSCN (as a job file's ``config``).
TINY_CONFIG = {"name": "lite", "growth_rate": 8, "num_init_features": 16, "bn_size": 2,
               "block_config": [2, 2, 2], "feature_channels": 16, "head_channels": 16,
               "max_side": 32}  # fmt: skip
#: Runs the job and leaves through the interpreter's normal exit (``sys.exit``).
INTERPRETER_EXIT = (
    "import sys\nfrom napari_lesion_harvest.lpg.job import main\nsys.exit(main(sys.argv[1:]))\n"
)


def write_job(folder: Path) -> Path:
    """Three random 8 x 32 x 32 volumes with one box each, and a 4-step training job."""
    rng = np.random.default_rng(0)
    volumes, samples = [], []
    for index in range(3):
        np.save(folder / f"v{index}.npy", rng.normal(0, 200, (8, 32, 32)).astype(np.int16))
        volumes.append({"id": f"v{index}", "path": f"v{index}.npy", "spacing": [2, 0.8, 0.8]})
        samples.append({"volume": f"v{index}", "z": 4, "positive_boxes": [[8, 8, 20, 18]]})
    job = {"mode": "train", "volumes": volumes, "samples": samples, "config": TINY_CONFIG,
           "options": {"steps": 4, "batch_size": 2, "warmup_steps": 1},
           "checkpoint": "lpg.pt", "output": "result.json"}  # fmt: skip
    path = folder / "train.job"
    path.write_text(json.dumps(job))
    return path


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def failure_reason(stderr: str) -> str:
    """The first fatal line of a failed run's output."""
    for line in stderr.splitlines():
        if "terminate called" in line or "Fatal Python error" in line or "Error" in line:
            return line.strip()[:120]
    return "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--busy", type=int, default=0, help="CPU-bound processes beside")
    parser.add_argument("--exit", choices=("launched", "interpreter"), default="launched")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="torchrun_exit_"))
    job = write_job(folder)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launcher += ["--nproc_per_node", "2"]
    if args.exit == "launched":
        command = [*launcher, "-m", "napari_lesion_harvest.lpg.job", job.name]
    else:
        (folder / "interpreter_exit.py").write_text(INTERPRETER_EXIT)
        command = [*launcher, "interpreter_exit.py", job.name]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    busy = [multiprocessing.Process(target=_spin, args=(1e6,)) for _ in range(args.busy)]
    for process in busy:
        process.start()
    reasons: Counter[str] = Counter()
    started = time.monotonic()
    try:
        for _ in range(args.runs):
            (folder / "result.json").unlink(missing_ok=True)
            done = subprocess.run(
                command, cwd=folder, env=env, capture_output=True, text=True, timeout=600
            )
            if done.returncode != 0:
                written = (folder / "result.json").is_file()
                reasons[f"{failure_reason(done.stderr)} (result written: {written})"] += 1
    finally:
        for process in busy:
            process.terminate()
    seconds = time.monotonic() - started
    print(
        f"{args.runs} runs, exit {args.exit}, {args.busy} busy processes, "
        f"{seconds / args.runs:.1f} s per run: {sum(reasons.values())} failed"
    )
    for reason, count in reasons.most_common():
        print(f"  {count} x {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
