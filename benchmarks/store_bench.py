"""Benchmark of the harvest project store (SQLite, WAL).

Measures, on a project of ``--volumes`` volumes:

1. inserting ``--boxes`` 2D proposal boxes (3D proposals of 1..15 slices) as one
   round stage (one transaction);
2. reading all overlays of one volume (marks + proposals + verdicts), median
   and p99 over ``--queries`` random volumes (target p99 < 20 ms), and the
   volume table with counts;
3. adding a mark until it is durable (the call returns after the fsynced
   commit), median and p99, with ``synchronous=FULL`` (the default) and
   ``NORMAL`` measured in the same run (target median < 10 ms);
4. opening the project (with its page check of the annotation tables) against
   a full ``PRAGMA quick_check`` and ``lesion-harvest check``'s
   ``integrity_check``, and an online backup (warm page cache: the file was
   just written).

Run: ``python benchmarks/store_bench.py`` (about two minutes).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D, RecistMark
from napari_lesion_harvest.store import HarvestProject, ProposalRow, StageResult, VolumeRecord


def _percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, q))


def _proposal_rows(n_boxes: int, volume_ids: list[str], rng: np.random.Generator):
    """Random 3D proposals with ``n_boxes`` 2D boxes in total, spread over the volumes."""
    made = 0
    while made < n_boxes:
        k = int(min(rng.integers(1, 16), n_boxes - made))
        z0 = int(rng.integers(0, 100))
        corner = rng.uniform(0, 480, 2)
        size = rng.uniform(8, 40, 2)
        boxes = np.tile(np.concatenate([corner, corner + size]), (k, 1)) + rng.normal(0, 1, (k, 4))
        yield ProposalRow(
            volume_ids[int(rng.integers(len(volume_ids)))],
            Proposal3D(np.arange(z0, z0 + k), boxes, rng.uniform(0.1, 1.0, k)),
            role="P_pos_H" if rng.random() < 0.1 else "candidate",
            s_c=float(rng.random()),
        )
        made += k


def _mark(rng: np.random.Generator) -> RecistMark:
    centre = rng.uniform(50, 450, 2)
    half = rng.uniform(5, 30)
    coords = [
        *(centre - [half, 0]),
        *(centre + [half, 0]),
        *(centre - [0, half / 2]),
        *(centre + [0, half / 2]),
    ]
    return RecistMark.from_measurement_coordinates(coords, z=int(rng.integers(0, 100)))


def build_project(folder: Path, *, n_volumes: int, n_boxes: int, seed: int) -> dict:
    """Create the project, import volumes + marks, write one round; return timings."""
    rng = np.random.default_rng(seed)
    volume_ids = [f"{i:06d}_01_01_001-100" for i in range(n_volumes)]
    figures = {}
    with HarvestProject.open(folder, create=True) as project:
        start = time.perf_counter()
        project.add_volumes(
            (
                VolumeRecord(v, "deeplesion_png", f"Images_png/{v}", "V_H", shape=(100, 512, 512))
                for v in volume_ids
            ),
            author="bench",
        )
        project.add_marks(((v, _mark(rng)) for v in volume_ids for _ in range(2)), author="DL")
        figures["import_s"] = time.perf_counter() - start

        number = project.rounds.create({"bench": True}).number
        with project.rounds.lock(number) as lock:
            project.rounds.start(number, lock=lock)
            rows = list(_proposal_rows(n_boxes, volume_ids, rng))
            start = time.perf_counter()
            ids = project.rounds.write_stage(
                number, "tracking", StageResult(proposals=rows), lock=lock
            )
            figures["insert_s"] = time.perf_counter() - start
            figures["n_proposals"] = len(ids)
            project.rounds.finish(number, lock=lock)
        for proposal_id in rng.choice(np.asarray(ids), size=min(2000, len(ids)), replace=False):
            project.set_verdict(int(proposal_id), "accepted", author="bench")
    figures["file_mb"] = (folder / "project.sqlite").stat().st_size / 2**20
    return figures


def time_overlays(folder: Path, *, n_queries: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    with HarvestProject.open(folder) as project:
        volume_ids = [v.volume_id for v in project.volumes()]
        samples, n_props = [], []
        for volume_id in rng.choice(volume_ids, size=n_queries):
            start = time.perf_counter()
            overlays = project.volume_overlays(str(volume_id))
            samples.append(time.perf_counter() - start)
            n_props.append(len(overlays.proposals))
        start = time.perf_counter()
        summaries = project.volume_summaries()
        table_s = time.perf_counter() - start
    return {
        "overlay_median_ms": _percentile_ms(samples, 50),
        "overlay_p99_ms": _percentile_ms(samples, 99),
        "proposals_per_volume": statistics.mean(n_props),
        "table_ms": table_s * 1000,
        "table_rows": len(summaries),
    }


def time_mark_durability(folder: Path, *, n_marks: int, synchronous: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    with HarvestProject.open(folder, synchronous=synchronous) as project:
        volume_ids = [v.volume_id for v in project.volumes()][:100]
        samples = []
        for i in range(n_marks):
            mark = _mark(rng)
            start = time.perf_counter()
            project.add_mark(volume_ids[i % len(volume_ids)], mark, author="bench")
            samples.append(time.perf_counter() - start)
    return {"median_ms": _percentile_ms(samples, 50), "p99_ms": _percentile_ms(samples, 99)}


def time_checks(folder: Path) -> dict:
    """Seconds to open the project, to run the full checks, and to back it up."""
    import sqlite3

    from napari_lesion_harvest.store.backup import check_project

    figures = {}
    start = time.perf_counter()
    HarvestProject.open(folder).close()
    figures["open_s"] = time.perf_counter() - start
    conn = sqlite3.connect(folder / "project.sqlite")  # no project is open in this process
    start = time.perf_counter()
    assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    figures["quick_check_s"] = time.perf_counter() - start
    conn.close()
    start = time.perf_counter()
    assert check_project(folder) == []
    figures["integrity_check_s"] = time.perf_counter() - start
    with HarvestProject.open(folder) as project:
        start = time.perf_counter()
        backup = project.backup()
        figures["backup_s"] = time.perf_counter() - start
    figures["backup_mb"] = backup.stat().st_size / 2**20
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=15_000)
    parser.add_argument("--boxes", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--marks", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="where to build the project")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp) / "bench_project"
        print(
            f"machine: {platform.machine()}, {platform.python_implementation()} "
            f"{platform.python_version()}, sqlite in {folder}"
        )
        built = build_project(folder, n_volumes=args.volumes, n_boxes=args.boxes, seed=args.seed)
        print(
            f"import {args.volumes} volumes + {2 * args.volumes} marks: {built['import_s']:.2f} s"
        )
        print(
            f"insert {args.boxes:,} 2D boxes ({built['n_proposals']:,} 3D proposals) in one "
            f"stage: {built['insert_s']:.2f} s ({args.boxes / built['insert_s']:,.0f} boxes/s); "
            f"project.sqlite {built['file_mb']:.0f} MiB"
        )
        read = time_overlays(folder, n_queries=args.queries, seed=args.seed + 1)
        print(
            f"overlays of one volume ({read['proposals_per_volume']:.1f} proposals + 2 marks "
            f"on average), {args.queries} queries: median {read['overlay_median_ms']:.2f} ms, "
            f"p99 {read['overlay_p99_ms']:.2f} ms (target p99 < 20 ms)"
        )
        print(f"volume table with counts ({read['table_rows']} rows): {read['table_ms']:.0f} ms")
        for synchronous in ("FULL", "NORMAL"):
            durable = time_mark_durability(
                folder, n_marks=args.marks, synchronous=synchronous, seed=args.seed + 2
            )
            print(
                f"add a mark until durable, synchronous={synchronous}, {args.marks} marks: "
                f"median {durable['median_ms']:.2f} ms, p99 {durable['p99_ms']:.2f} ms"
                + (" (target median < 10 ms)" if synchronous == "FULL" else "")
            )
        checks = time_checks(folder)
        print(
            f"open the project (page check of the annotation tables): {checks['open_s']:.2f} s; "
            f"full quick_check {checks['quick_check_s']:.2f} s; integrity_check + foreign keys "
            f"(lesion-harvest check) {checks['integrity_check_s']:.2f} s"
        )
        print(
            f"online backup, checked (lesion-harvest backup): {checks['backup_s']:.2f} s, "
            f"{checks['backup_mb']:.0f} MiB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
