"""Evaluation speed: P3D matching + FROC + AP + recall at precision, vectorised vs a plain loop.

Scene (the issue's target): 10,000 volumes, 100 proposals per volume, 5 slices
per proposal, 3 RECIST lesions per volume; about a third of the lesions get
a jittered proposal through their slice, the rest of the proposals are random.

The vectorised pipeline runs on the whole scene. The plain Python loop (one
detection at a time, as the released evaluation does) runs on the first
``--loop-volumes`` volumes, and the vectorised pipeline is timed on that same
subset too, so the ratio compares equal work; the loop's full-scene time is
extrapolated linearly (its cost is linear in the volumes).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_bench.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_lesion_harvest.evaluation.curve import detection_curve
from napari_lesion_harvest.evaluation.froc import froc
from napari_lesion_harvest.evaluation.matching import match_p3d
from napari_lesion_harvest.evaluation.pr import average_precision, recall_at_precision
from napari_lesion_harvest.evaluation.tables import ProposalTable, RecistTruth


def make_scene(n_volumes, n_proposals, n_slices, n_lesions, seed=0):
    """Flat arrays of a synthetic test set (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n_marks = n_volumes * n_lesions
    mark_volume = np.repeat(np.arange(n_volumes), n_lesions)
    mark_z = rng.integers(n_slices, 60, n_marks)
    corner = rng.uniform(0, 450, (n_marks, 2))
    mark_boxes = np.c_[corner, corner + rng.uniform(10, 60, (n_marks, 2))]

    n_prop = n_volumes * n_proposals
    proposal_volume = np.repeat(np.arange(n_volumes), n_proposals)
    first_z = rng.integers(0, 60, n_prop)
    corner = rng.uniform(0, 450, (n_prop, 2))
    boxes = np.c_[corner, corner + rng.uniform(10, 60, (n_prop, 2))]
    # One proposal per lesion slot near its mark, found 2 times in 3.
    near = (np.arange(n_prop) % n_proposals < n_lesions) & (rng.uniform(size=n_prop) < 2 / 3)
    target = proposal_volume[near] * n_lesions + np.arange(n_prop)[near] % n_proposals
    first_z[near] = mark_z[target] - rng.integers(0, n_slices, near.sum())
    size = mark_boxes[target, 2:] - mark_boxes[target, :2]
    boxes[near] = mark_boxes[target] + rng.normal(0, 0.1, (near.sum(), 4)) * np.c_[size, size]

    slice_proposal = np.repeat(np.arange(n_prop), n_slices)
    slice_z = first_z[slice_proposal] + np.tile(np.arange(n_slices), n_prop)
    slice_boxes = boxes[slice_proposal]
    # Proposals near a lesion tend to score higher, as a trained detector's do.
    base = np.where(near, rng.uniform(0.4, 1.0, n_prop), rng.uniform(0.0, 0.8, n_prop))
    slice_scores = base[slice_proposal] * rng.uniform(0.5, 1.0, n_prop * n_slices)
    volume_ids = [f"vol{i:05d}" for i in range(n_volumes)]
    truth = RecistTruth(
        tuple(volume_ids), mark_volume, mark_z.astype(np.int64), mark_boxes.astype(np.float64)
    )
    arrays = (volume_ids, proposal_volume, slice_proposal, slice_z, slice_boxes, slice_scores)
    return truth, arrays


def vectorised(truth, table):
    curve = detection_curve(match_p3d(truth, table))
    return froc(curve), average_precision(curve), recall_at_precision(curve), curve


def plain_loop(truth, arrays, n_volumes):
    """One detection at a time in decreasing confidence, one mark at a time (+1 IoU)."""
    volume_ids, proposal_volume, slice_proposal, slice_z, slice_boxes, slice_scores = arrays
    marks = {v: [] for v in range(n_volumes)}
    for v, z, box in zip(truth.volume, truth.z, truth.boxes.tolist(), strict=True):
        if v < n_volumes:
            marks[int(v)].append((int(z), box))
    tracklets = {}
    for p, z, box, s in zip(
        slice_proposal.tolist(),
        slice_z.tolist(),
        slice_boxes.tolist(),
        slice_scores.tolist(),
        strict=True,
    ):
        if proposal_volume[p] < n_volumes:
            tracklets.setdefault(p, []).append((z, box, s))
    confidence = {p: max(s for _, _, s in rows) for p, rows in tracklets.items()}
    order = sorted(confidence, key=confidence.get, reverse=True)
    found = {v: [False] * len(m) for v, m in marks.items()}
    hits = fp = fp_voc = 0
    tps, fps, fps_voc = [], [], []
    for p in order:
        volume = int(proposal_volume[p])
        by_slice = {z: box for z, box, _ in reversed(tracklets[p])}
        any_hit = False
        for j, (z, m) in enumerate(marks[volume]):
            b = by_slice.get(z)
            if b is None:
                continue
            iw = max(min(b[2], m[2]) - max(b[0], m[0]) + 1, 0)
            ih = max(min(b[3], m[3]) - max(b[1], m[1]) + 1, 0)
            inter = iw * ih
            union = (b[2] - b[0] + 1) * (b[3] - b[1] + 1) + (m[2] - m[0] + 1) * (m[3] - m[1] + 1)
            if inter / (union - inter) >= 0.5:
                any_hit = True
                if found[volume][j]:
                    fp_voc += 1
                else:
                    found[volume][j] = True
                    hits += 1
        if not any_hit:
            fp += 1
            fp_voc += 1
        tps.append(hits)
        fps.append(fp)
        fps_voc.append(fp_voc)
    n_marks = sum(len(m) for m in marks.values())
    recall = np.array(tps) / n_marks
    precision = np.array(tps) / np.maximum(np.array(tps) + np.array(fps_voc), 1e-12)
    readings = np.interp([0.125, 0.25, 0.5, 1, 2, 4, 8, 16], np.array(fps) / n_volumes, recall)
    return readings, recall, precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=10_000)
    parser.add_argument("--proposals", type=int, default=100)
    parser.add_argument("--slices", type=int, default=5)
    parser.add_argument("--lesions", type=int, default=3)
    parser.add_argument("--loop-volumes", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    truth, arrays = make_scene(args.volumes, args.proposals, args.slices, args.lesions)
    n_rows = len(arrays[2])
    print(
        f"scene: {args.volumes} volumes, {len(arrays[1])} proposals, {n_rows} per-slice boxes, "
        f"{truth.n_lesions} lesions"
    )
    start = time.perf_counter()
    table = ProposalTable.from_slices(*arrays)
    print(f"ProposalTable.from_slices (flat arrays in): {time.perf_counter() - start:.2f} s")
    best = np.inf
    for _ in range(args.repeats):
        start = time.perf_counter()
        readings, ap, at_precision, _ = vectorised(truth, table)
        best = min(best, time.perf_counter() - start)
    print(
        f"vectorised P3D match + curve + FROC + AP + R@P, full scene: {best:.2f} s (best of "
        f"{args.repeats})"
    )
    print(
        f"  FROC {np.round(readings, 3).tolist()}  AP {ap:.3f}  R@90P {at_precision[2].recall:.3f}"
    )

    # Equal work for the ratio: the first loop-volumes volumes.
    n_sub = args.loop_volumes
    keep_p = arrays[1] < n_sub
    keep_rows = keep_p[arrays[2]]
    sub_arrays = (
        arrays[0][:n_sub],
        arrays[1][keep_p],
        arrays[2][keep_rows],
        arrays[3][keep_rows],
        arrays[4][keep_rows],
        arrays[5][keep_rows],
    )
    keep_m = truth.volume < n_sub
    sub_truth = RecistTruth(
        truth.volume_ids[:n_sub], truth.volume[keep_m], truth.z[keep_m], truth.boxes[keep_m]
    )
    sub_table = ProposalTable.from_slices(*sub_arrays)
    start = time.perf_counter()
    *_, sub_curve = vectorised(sub_truth, sub_table)
    vec_sub = time.perf_counter() - start
    start = time.perf_counter()
    _, loop_recall, loop_precision = plain_loop(truth, arrays, n_sub)
    loop_sub = time.perf_counter() - start
    assert np.array_equal(loop_recall, sub_curve.recall)
    assert np.allclose(loop_precision, sub_curve.precision)
    print(
        f"subset of {n_sub} volumes: vectorised {vec_sub:.3f} s, plain loop {loop_sub:.2f} s, "
        f"ratio {loop_sub / vec_sub:.0f}x (same recall and precision at every point)"
    )
    print(
        f"plain loop extrapolated to the full scene: {loop_sub * args.volumes / n_sub:.0f} s "
        f"vs vectorised {best:.2f} s"
    )


if __name__ == "__main__":
    main()
