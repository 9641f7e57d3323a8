"""Cost of the LPC's self-supervised pretraining: seconds per step for each preset's LPC.

For the ``lite`` and ``paper`` presets' LPC (``lpc.variant``, ``lpc.width``,
``lpc.patch_size``: multiview, lite, 64 px; multiview, paper, 128 px), times
``--steps`` steps of :func:`~napari_lesion_harvest.lpc.pretrain.pretrain_trunks`
(batches of 8 patches cut from phantom CT volumes at ``--size`` px, corrupted, restored)
after one warm-up step, and prints seconds per step and the default 2000 steps' time.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lpc_pretrain_bench.py [--steps 6]
[--size 256] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from napari_lesion_harvest.harvest.config import LITE, PAPER
from napari_lesion_harvest.harvest.pretraining import lpc_architecture
from napari_lesion_harvest.lpc.pretrain import DEFAULT_OPTIONS, pretrain_trunks
from napari_lesion_harvest.lpg.phantom_froc import synthetic_ct
from napari_lesion_harvest.lpg.pretrain import PretrainSlices


def seconds_per_step(slices, config: dict, steps: int, folder: Path) -> float:
    """Mean seconds of ``steps`` pretraining steps after a warm-up step."""
    times = []
    pretrain_trunks(
        slices,
        folder / "lpc.pt",
        config=config,
        options=replace(DEFAULT_OPTIONS, steps=steps + 1),
        save_every_s=1e9,
        progress=lambda step, total, parts: times.append(time.perf_counter()),
    )
    return (times[-1] - times[0]) / (len(times) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per preset")
    parser.add_argument("--size", type=int, default=256, help="phantom slice side, px")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    slices = PretrainSlices([synthetic_ct(i, args.size).volume for i in range(2)])
    threads = torch.get_num_threads()
    print(f"# {platform.machine()}, {threads} torch threads, torch {torch.__version__}")
    print("| preset | LPC | s per step (8 patches) | 2000 steps |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, preset in (("lite", LITE), ("paper", PAPER)):
            config = lpc_architecture(preset)
            seconds = seconds_per_step(slices, config, args.steps, Path(tmp) / name)
            shown = f"{config['variant']}, {config['width']}, {config['patch_size']} px"
            print(f"| {name} | {shown} | {seconds:.2f} | {2000 * seconds / 60:.0f} min |")


if __name__ == "__main__":
    main()
