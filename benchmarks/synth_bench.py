"""Synthetic CT generation speed: volumes per second at 256 and 512 in-plane, written to disk.

Target (issue 5): a 40-volume, 256 x 256 x ~40-slice training set in under a minute.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/synth_bench.py [--volumes-512 6]``
Prints wall-clock and CPU seconds (the CPU figure is less sensitive to other
processes sharing the machine), for generation alone and generation + writing
(DeepLesion PNGs, DL_info.csv, truth files).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from napari_lesion_harvest.synthetic.dataset import generate_dataset, series_identities, volume_rng
from napari_lesion_harvest.synthetic.phantom import PhantomConfig, generate_volume


def _timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def generation_only(size: int, volumes: int, slices: tuple[int, int]) -> tuple[float, float, int]:
    """Seconds (wall, cpu) to generate ``volumes`` phantoms in memory; total slices."""
    config = PhantomConfig(size=size, slices=slices)
    identities = series_identities(volumes, 1)

    def run():
        return sum(
            generate_volume(volume_rng(1, i), identities[i], config=config).volume.shape[0]
            for i in range(volumes)
        )

    total_slices, wall, cpu = _timed(run)
    return wall, cpu, total_slices


def dataset(size: int, volumes: int, slices: tuple[int, int], workers: int):
    """Seconds (wall, cpu of this process) to generate and write a whole dataset."""
    config = PhantomConfig(size=size, slices=slices)
    with tempfile.TemporaryDirectory() as out:
        result, wall, cpu = _timed(
            lambda: generate_dataset(out, volumes=volumes, seed=1, config=config, workers=workers)
        )
        size_mb = (
            sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
            / 2**20
        )
    return wall, cpu, result.lesion_count, size_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes-256", type=int, default=40)
    parser.add_argument("--volumes-512", type=int, default=6)
    args = parser.parse_args()
    slices = (36, 44)  # ~40 slices
    print(f"machine: {os.cpu_count()} CPUs; numpy {np.__version__}")
    for size, volumes in ((256, args.volumes_256), (512, args.volumes_512)):
        wall, cpu, total = generation_only(size, min(volumes, 10), slices)
        n = min(volumes, 10)
        print(
            f"generate only  {size}x{size}: {n} volumes ({total} slices) in {wall:.1f} s wall, "
            f"{cpu:.1f} s CPU -> {n / wall:.2f} volumes/s wall, {n / cpu:.2f} volumes/s CPU"
        )
    for size, volumes, workers in (
        (256, args.volumes_256, 1),
        (256, args.volumes_256, 2),
        (512, args.volumes_512, 1),
    ):
        wall, cpu, lesions, size_mb = dataset(size, volumes, slices, workers)
        print(
            f"generate+write {size}x{size}x~40, {volumes} volumes, workers={workers}: "
            f"{wall:.1f} s wall ({volumes / wall:.2f} volumes/s), main-process CPU {cpu:.1f} s, "
            f"{lesions} lesions, {size_mb:.0f} MB on disk"
        )


if __name__ == "__main__":
    main()
