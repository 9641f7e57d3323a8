"""Reading the paper's annotation pickles: restricted unpickling, its opcode scan, the readers.

For each released pickle in ``../shared/data/deeplesion_annotation``, the best of
``--repeats`` timings, on the bytes already in memory, of
:func:`~napari_lesion_harvest.io.paper_pickles.load_restricted_pickle` (scan and
unpickling), of the bounding opcode scan it runs first
(:func:`~napari_lesion_harvest.io.pickle_scan.scan_pickle`, with the reader's
limits), so the scan's share of the unpickling is measured in the same run, and
of the whole read into the project's types (``read_3d_box_pickle`` for
``3D-Box.pkl``, ``read_recist_box_pickle`` for the others). Nothing is unpickled
without the project's restrictions.

Usage::

    .venv/bin/python benchmarks/pickle_bench.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from napari_lesion_harvest.io import paper_pickles
from napari_lesion_harvest.io.pickle_scan import scan_pickle

ANNOTATIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "deeplesion_annotation"


def best_seconds(function, *args, repeats: int, **options) -> float:
    """Shortest of ``repeats`` wall times of ``function(*args, **options)``."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function(*args, **options)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(
        f"{'file':24s} {'bytes':>10s} {'unpickle ms':>12s} {'scan ms':>8s} {'scan share':>11s} "
        f"{'whole read ms':>14s}"
    )
    for path in sorted(ANNOTATIONS.glob("*.pkl")):
        data = path.read_bytes()
        unpickle = best_seconds(paper_pickles.load_restricted_pickle, data, repeats=args.repeats)
        scan = best_seconds(
            scan_pickle,
            data,
            path.name,
            repeats=args.repeats,
            max_depth=paper_pickles.MAX_NESTING,
            max_objects=paper_pickles.MAX_OBJECTS_PER_BYTE * len(data),
        )
        reader = (
            paper_pickles.read_3d_box_pickle
            if path.name == "3D-Box.pkl"
            else paper_pickles.read_recist_box_pickle
        )
        whole = best_seconds(reader, data, repeats=args.repeats)
        print(
            f"{path.name:24s} {len(data):>10,d} {unpickle * 1e3:12.1f} {scan * 1e3:8.1f} "
            f"{scan / unpickle:10.0%} {whole * 1e3:14.1f}"
        )


if __name__ == "__main__":
    main()
