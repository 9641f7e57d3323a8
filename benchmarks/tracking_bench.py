"""Benchmark: 2D boxes stacked into 3D proposals per second (issue 7).

Synthetic LPG output: every volume has ``n_slices`` slices; lesions are
ellipsoids whose boxes follow their cross-section with 1 px jitter, and a
quarter of the boxes are isolated false positives. ``density`` is the mean
number of boxes per slice. Reports

* throughput of :func:`stack_proposals` for densities 1 .. 50 boxes per slice;
* scaling from 10^4 to 10^6 boxes at 5 and 50 boxes per slice (time per
  box must stay about constant);
* at 50 boxes per slice, the same stacking with the pair pruning switched off
  (every track compared with every box of its volume's next slice, every
  tracklet end with every head), to show what the pruning saves;
* the Kalman cost per linked box of one filterpy ``KalmanFilter`` per track
  (predict + update) against the vectorised :class:`BoxKalmanModel`, to show
  whether per-track filterpy objects would be the bottleneck;
* duplicate suppression of each volume's stacked proposals (the scan's next step),
  seconds per volume at 5, 20 and 50 boxes per slice.

Run (one core)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tracking_bench.py [--max-boxes 1000000]
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import numpy as np

from napari_lesion_harvest.tracking import stack_proposals, stack_proposals_batch, stacking
from napari_lesion_harvest.tracking.kalman import (
    BoxKalmanModel,
    boxes_to_measurements,
    make_box_filter,
)
from napari_lesion_harvest.tracking.pairing import overlap_candidates
from napari_lesion_harvest.tracking.suppression import suppress_duplicates


def synthetic_volume(rng: np.random.Generator, *, n_slices: int, density: float) -> dict:
    """LPG-like boxes for one volume: ``{z: (boxes (N, 4), scores (N,))}``."""
    lesion_boxes = 0.75 * density * n_slices
    mean_extent = 8.0
    n_lesions = max(1, int(round(lesion_boxes / mean_extent)))
    per_slice: dict[int, tuple[list, list]] = {z: ([], []) for z in range(n_slices)}
    for _ in range(n_lesions):
        half_depth = rng.uniform(1.5, 7.5)
        zc = rng.uniform(0, n_slices)
        radius = rng.uniform(8, 40)
        cx, cy = rng.uniform(50, 460, size=2)
        score = rng.uniform(0.2, 0.99)
        for z in range(max(0, int(np.ceil(zc - half_depth))), min(n_slices, int(zc + half_depth))):
            r = radius * np.sqrt(max(0.05, 1 - ((z - zc) / half_depth) ** 2))
            x, y = cx + rng.normal(0, 0.7, size=1)[0], cy + rng.normal(0, 0.7, size=1)[0]
            rx, ry = np.maximum(r + rng.normal(0, 0.7, size=2), 2.0)
            per_slice[z][0].append([x - rx, y - ry, x + rx, y + ry])
            per_slice[z][1].append(score * rng.uniform(0.7, 1.0))
    n_noise = rng.poisson(0.25 * density * n_slices)
    for _ in range(n_noise):
        z = int(rng.integers(n_slices))
        x, y = rng.uniform(0, 480, size=2)
        size = rng.uniform(6, 30)
        per_slice[z][0].append([x, y, x + size, y + size])
        per_slice[z][1].append(rng.uniform(0.1, 0.6))
    return {
        z: (np.asarray(b, dtype=np.float64).reshape(-1, 4), np.asarray(s, dtype=np.float64))
        for z, (b, s) in per_slice.items()
    }


def make_dataset(seed: int, *, n_boxes: int, density: float, n_slices: int = 60) -> list[dict]:
    """Volumes until about ``n_boxes`` boxes are reached."""
    rng = np.random.default_rng(seed)
    volumes, total = [], 0
    while total < n_boxes:
        volume = synthetic_volume(rng, n_slices=n_slices, density=density)
        total += sum(len(scores) for _, scores in volume.values())
        volumes.append(volume)
    return volumes


def time_stacking(volumes: list[dict], *, batch: bool) -> tuple[int, int, float]:
    """(boxes, proposals, seconds): all volumes in one batch, or one call per volume."""
    model = BoxKalmanModel()
    n_boxes = sum(len(s) for v in volumes for _, s in v.values())
    start = time.perf_counter()
    if batch:
        results = stack_proposals_batch(volumes, score_threshold=0.0, model=model)
    else:
        results = [stack_proposals(v, score_threshold=0.0, model=model) for v in volumes]
    seconds = time.perf_counter() - start
    return n_boxes, sum(len(r) for r in results), seconds


def kalman_cost_per_box(n_tracks: int = 2000, length: int = 10) -> tuple[float, float]:
    """Seconds per linked box: one filterpy filter per track vs. the vectorised model."""
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 400, size=(n_tracks, 2))
    boxes = np.concatenate([boxes, boxes + rng.uniform(10, 60, size=(n_tracks, 2))], axis=1)
    measurements = boxes_to_measurements(boxes)

    start = time.perf_counter()
    filters = [make_box_filter(m) for m in measurements]
    for _ in range(length):
        for kf, m in zip(filters, measurements, strict=True):
            kf.predict()
            kf.update(m)
    filterpy_s = (time.perf_counter() - start) / (n_tracks * length)

    model = BoxKalmanModel()
    start = time.perf_counter()
    # Vectorised over the tracks of one slice: time it with 5 tracks per slice.
    group = 5
    for lo in range(0, n_tracks, group):
        states = model.initial_states(measurements[lo : lo + group])
        n_updates = np.zeros(len(states), dtype=np.int64)
        for _ in range(length):
            states = model.update(model.predict(states), n_updates, measurements[lo : lo + group])
            n_updates += 1
    vector_s = (time.perf_counter() - start) / (n_tracks * length)
    return filterpy_s, vector_s


def time_suppression(volumes: list[dict]) -> tuple[int, int, float]:
    """(proposals in, proposals kept, seconds per volume) of ``suppress_duplicates``."""
    stacked = [stack_proposals(v, score_threshold=0.0) for v in volumes]
    start = time.perf_counter()
    kept = [suppress_duplicates(proposals) for proposals in stacked]
    seconds = (time.perf_counter() - start) / len(volumes)
    return sum(map(len, stacked)), sum(map(len, kept)), seconds


def every_pair(group_a, boxes_a, group_b, boxes_b, *, min_iou):
    """The unpruned candidates: every pair of the same group, whatever its distance."""
    return overlap_candidates(group_a, boxes_a, group_b, boxes_b, min_iou=0.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-boxes", type=int, default=1_000_000)
    args = parser.parse_args(argv)

    time_stacking(make_dataset(0, n_boxes=2_000, density=50), batch=True)  # warm up imports
    print(
        "density (boxes/slice) | boxes | proposals | batch s | batch boxes/s | per-volume boxes/s"
    )
    for density in (1, 5, 10, 20, 50):
        volumes = make_dataset(1, n_boxes=50_000, density=density)
        n, p, s = time_stacking(volumes, batch=True)
        n_single, _, s_single = time_stacking(volumes[: max(1, len(volumes) // 5)], batch=False)
        print(f"{density} | {n} | {p} | {s:.2f} | {n / s:,.0f} | {n_single / s_single:,.0f}")

    print("\nscaling: boxes/slice | boxes | s | us/box")
    for density in (5, 50):
        size = 10_000
        while size <= args.max_boxes:
            n, _, s = time_stacking(make_dataset(2, n_boxes=size, density=density), batch=True)
            print(f"{density} | {n} | {s:.2f} | {1e6 * s / n:.1f}")
            size *= 10

    volumes = make_dataset(3, n_boxes=50_000, density=50)
    n, p, pruned_s = time_stacking(volumes, batch=True)
    with mock.patch.object(stacking, "overlap_candidates", every_pair):
        _, p_all, all_s = time_stacking(volumes, batch=True)
    print(
        f"\n50 boxes/slice, {n} boxes: pruned pairs {pruned_s:.2f} s ({p} proposals), "
        f"every pair {all_s:.2f} s ({p_all} proposals), speed-up {all_s / pruned_s:.1f}x"
    )

    filterpy_s, vector_s = kalman_cost_per_box()
    print(
        f"\nKalman predict+update per linked box: filterpy object per track "
        f"{1e6 * filterpy_s:.1f} us, vectorised (5 tracks/slice) {1e6 * vector_s:.1f} us"
    )

    print("\nduplicate suppression: boxes/slice | volumes | proposals | kept | ms per volume")
    for density in (5, 20, 50):
        volumes = make_dataset(4, n_boxes=30 * 60 * density, density=density)
        n_in, n_kept, per_volume = time_suppression(volumes)
        print(f"{density} | {len(volumes)} | {n_in} | {n_kept} | {1e3 * per_volume:.1f}")


if __name__ == "__main__":
    main()
