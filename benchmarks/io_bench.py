"""DeepLesion I/O benchmark: slice reading vs a plain PNG decoder loop, memory, DL_info parsing.

Writes a DeepLesion-layout set (``Images_png`` + ``DL_info.csv``) of CT-like
random HU slices in a temporary folder, then reports:

* slices/s read through :class:`DeepLesionDataset` (every sub-volume, every
  slice) and slices/s of a plain ``PIL.Image.open`` + ``numpy.asarray`` loop
  over the same files in the same order, and their ratio (target >= 0.8);
* the peak of Python-tracked memory (tracemalloc, numpy included) while
  iterating all sub-volumes, next to the size of one sub-volume;
* DL_info rows/s for a generated 32,735-row file (the size of the real one;
  target: under 1 s), built from the six real rows in ``../shared/data``.

Usage::

    .venv/bin/python benchmarks/io_bench.py [--volumes 200] [--slices 8] [--size 512]
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

from napari_lesion_harvest.geometry import RecistMark
from napari_lesion_harvest.io.deeplesion import DeepLesionDataset, read_dl_info
from napari_lesion_harvest.io.deeplesion_writer import (
    dl_info_row,
    write_dl_info,
    write_series_pngs,
)

REAL_ROWS = (
    Path(__file__).resolve().parents[1].parent / "shared/data/deeplesion/DL_info_example_rows.csv"
)
DL_INFO_ROWS = 32_735


def ct_like_slices(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """HU slices ``(count, size, size)``: air, a soft-tissue ellipse with organs, noise."""
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    body = (xx / 0.42) ** 2 + (yy / 0.33) ** 2 < 1
    slices = np.full((count, size, size), -1000.0)
    for z in range(count):
        organ = ((xx - 0.1) / 0.12) ** 2 + ((yy + 0.05 * z / count) / 0.09) ** 2 < 1
        slices[z][body] = 40.0
        slices[z][organ] = 120.0
        slices[z] += rng.normal(0, 15, (size, size))
    return np.clip(slices, -1024, 3071).astype(np.int16)


def write_dataset(root: Path, volumes: int, slices: int, size: int) -> Path:
    """Write ``volumes`` sub-volumes (hard links to a pool of distinct slices) and DL_info."""
    rng = np.random.default_rng(0)
    images = root / "Images_png"
    pool_series = "900000_01_01"
    pool = write_series_pngs(images, pool_series, ct_like_slices(4 * slices, size, rng), 1)
    rows = []
    mark = RecistMark.from_measurement_coordinates([200, 200, 260, 240, 225, 240, 235, 200], 2)
    for v in range(volumes):
        series = f"{v + 1:06d}_01_01"
        folder = images / series
        folder.mkdir(parents=True)
        for z in range(slices):
            os.link(pool[(v * 3 + z) % len(pool)], folder / f"{z + 1:03d}.png")
        rows.append(
            dl_info_row(
                mark,
                series=series,
                slice_range=(1, slices),
                spacing_zyx=(2.0, 0.8, 0.8),
                image_size_yx=(size, size),
                normalized_location=(0.5, 0.5, 0.5),
            )
        )
    return write_dl_info(root / "DL_info.csv", rows)


def plain_decoder_loop(files: list[Path]) -> int:
    for path in files:
        np.asarray(Image.open(path))
    return len(files)


def reader_loop(dataset: DeepLesionDataset) -> int:
    count = 0
    for volume in dataset:
        count += volume.array().shape[0]
    return count


def timed(function, *args) -> tuple[float, int]:
    start = time.perf_counter()
    count = function(*args)
    return time.perf_counter() - start, count


def generate_dl_info(path: Path, rows: int) -> None:
    """A DL_info.csv of ``rows`` rows cycling the real rows with new patient numbers."""
    with open(REAL_ROWS, newline="") as handle:
        header, *real = list(csv.reader(handle))
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i in range(rows):
            row = list(real[i % len(real)])
            patient = i // len(real) + 1
            row[0] = f"{patient:06d}" + row[0][6:]
            row[1] = str(patient)
            writer.writerow(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=200)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv_path = write_dataset(root, args.volumes, args.slices, args.size)
        info = read_dl_info(csv_path, strict=True)
        dataset = DeepLesionDataset(root / "Images_png", info)
        files = [
            root / "Images_png" / row.series / f"{n:03d}.png"
            for row in info.rows
            for n in range(row.slice_range[0], row.slice_range[1] + 1)
        ]
        plain_decoder_loop(files[: args.slices * 4])  # warm the page cache and imports
        plain_best, reader_best = float("inf"), float("inf")
        for _ in range(args.repeats):  # alternate so both see the same machine load
            seconds, n_plain = timed(plain_decoder_loop, files)
            plain_best = min(plain_best, seconds)
            seconds, n_reader = timed(reader_loop, dataset)
            reader_best = min(reader_best, seconds)
        assert n_plain == n_reader == len(files)

        tracemalloc.start()
        reader_loop(DeepLesionDataset(root / "Images_png", info))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        one_volume = args.slices * args.size * args.size * 2

        big = root / "DL_info_big.csv"
        generate_dl_info(big, DL_INFO_ROWS)
        parse_best, parse_cpu = float("inf"), float("inf")
        for _ in range(3):
            cpu_start = time.process_time()
            parse_best = min(parse_best, timed(read_dl_info, big)[0])
            parse_cpu = min(parse_cpu, time.process_time() - cpu_start)
        parsed = read_dl_info(big)
        assert len(parsed.rows) == DL_INFO_ROWS and parsed.report.ok

    print(f"sub-volumes: {args.volumes} x {args.slices} slices of {args.size}x{args.size}")
    print(f"plain PIL decode loop : {len(files) / plain_best:8.1f} slices/s")
    print(f"DeepLesionDataset read: {len(files) / reader_best:8.1f} slices/s")
    print(f"ratio reader / plain  : {plain_best / reader_best:8.3f}")
    print(
        f"peak traced memory iterating {args.volumes} sub-volumes: {peak / 2**20:.1f} MiB "
        f"(one sub-volume = {one_volume / 2**20:.1f} MiB)"
    )
    print(
        f"DL_info parse: {DL_INFO_ROWS} rows in {parse_best:.3f} s = "
        f"{DL_INFO_ROWS / parse_best:,.0f} rows/s (CPU time {parse_cpu:.3f} s; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
