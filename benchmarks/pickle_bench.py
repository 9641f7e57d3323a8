"""Reading the paper's annotation pickles: whole restricted read and its opcode scan.

For each released pickle in ``../shared/data/deeplesion_annotation``, the best of
``--repeats`` timings of :func:`~napari_lesion_harvest.io.paper_pickles.load_restricted_pickle`
on the bytes already in memory, and of the protocol-5 opcode scan it runs first
(``_refuse_buffer_opcodes``), so the scan's share of the read is measured in the
same run. Nothing is unpickled without the project's restrictions.

Usage::

    .venv/bin/python benchmarks/pickle_bench.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from napari_lesion_harvest.io import paper_pickles

ANNOTATIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "deeplesion_annotation"


def best_seconds(function, *args, repeats: int) -> float:
    """Shortest of ``repeats`` wall times of ``function(*args)``."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function(*args)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{'file':24s} {'bytes':>10s} {'read ms':>9s} {'scan ms':>9s} {'scan share':>11s}")
    for path in sorted(ANNOTATIONS.glob("*.pkl")):
        data = path.read_bytes()
        read = best_seconds(paper_pickles.load_restricted_pickle, data, repeats=args.repeats)
        scan = best_seconds(
            paper_pickles._refuse_buffer_opcodes, data, path.name, repeats=args.repeats
        )
        print(
            f"{path.name:24s} {len(data):>10,d} {read * 1e3:9.1f} {scan * 1e3:9.1f} "
            f"{scan / read:10.0%}"
        )


if __name__ == "__main__":
    main()
