"""Paired difference of two quality-benchmark runs (B minus A), with 95% intervals.

Both runs must come from ``benchmarks/quality_bench.py`` on the same phantom (same
V_H_test volumes), the same training seeds and the same bootstrap resamples.
Each resample draws the same volumes and the same seeds for both arms, and the
difference is taken seed by seed (same seed, same volumes) before the seeds are
averaged: the paired bootstrap of the difference. Pairing removes the spread
that comes from which lesions the test set holds; what is left is each arm's
own training noise, which the seed level of the resample keeps in the interval.
A default changes only when the interval of its R@90P (or gain) difference
excludes zero (docs/experiments/quality-benchmark.md).

Run: ``.venv/bin/python tools/quality_compare.py A/quality.json B/quality.json
[--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from napari_lesion_harvest.evaluation.bootstrap import percentile_interval
from napari_lesion_harvest.harvest.quality import KEYS, STATISTICS, combine, seed_weights

#: Rows compared (the method's ranking; the s_g rows are in each run's own report).
COMPARED_KEYS = tuple(key for key in KEYS if key.endswith("/s_gc"))


def load(path: Path) -> dict:
    """A ``quality.json``; ends the program naming the file when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"{path}: not a readable quality.json ({error})") from error
    if not isinstance(data, dict) or "draws" not in data:
        raise SystemExit(f"{path}: not a quality.json of benchmarks/quality_bench.py")
    return data


def check_paired(a: dict, b: dict, names: tuple[Path, Path]) -> None:
    """End the program when the runs cannot be paired, naming what differs."""
    protocol_a, protocol_b = a["protocol"], b["protocol"]
    checks = {
        "V_H_test volumes": (a["volumes"], b["volumes"]),
        "phantom": (protocol_a["phantom"], protocol_b["phantom"]),
        "seeds": (protocol_a["seeds"], protocol_b["seeds"]),
        "bootstrap resamples": (protocol_a["bootstrap"], protocol_b["bootstrap"]),
    }
    for what, (left, right) in checks.items():
        if left != right:
            raise SystemExit(
                f"{names[0]} and {names[1]} differ in their {what} ({left} against {right}); "
                "a paired difference needs the same phantom, seeds and resamples"
            )


def paired_differences(a: dict, b: dict) -> list[dict]:
    """Per round both runs report: B - A of each statistic of each compared row.

    Returns
    -------
    list of dict
        ``{"round", "rows": {key: {statistic: {"a", "b", "difference", "low",
        "high", "excludes_zero"}}}}``.
    """
    bootstrap = a["protocol"]["bootstrap"]
    weights = seed_weights(
        len(a["protocol"]["seeds"]), bootstrap["resamples"], seed=bootstrap["seed"]
    )
    found = []
    for number in sorted(set(a["draws"]) & set(b["draws"]), key=int):
        summary_a = a["summary"][int(number) - 1]
        summary_b = b["summary"][int(number) - 1]
        rows = {}
        for key in COMPARED_KEYS:
            rows[key] = {}
            for stat in STATISTICS:
                per_seed = np.asarray(b["draws"][number][key][stat]) - np.asarray(
                    a["draws"][number][key][stat]
                )
                low, high = percentile_interval(combine(per_seed, weights))
                mean_a = summary_a["figures"][key][stat]["mean"]
                mean_b = summary_b["figures"][key][stat]["mean"]
                rows[key][stat] = {
                    "a": mean_a,
                    "b": mean_b,
                    "difference": mean_b - mean_a,
                    "low": low,
                    "high": high,
                    "excludes_zero": bool(low > 0 or high < 0),
                }
        found.append({"round": int(number), "rows": rows})
    return found


def format_differences(found: list[dict], names: tuple[Path, Path]) -> str:
    lines = [
        f"A = {names[0]}",
        f"B = {names[1]}",
        f"{'round':<6}{'row':<16}{'stat':<6}{'A':>8}{'B':>8}{'B - A [95% CI]':>28}",
    ]
    for entry in found:
        for key, stats in entry["rows"].items():
            for stat, d in stats.items():
                mark = "  *" if d["excludes_zero"] else ""
                lines.append(
                    f"{entry['round']:<6}{key:<16}{stat:<6}{d['a']:>8.3f}{d['b']:>8.3f}"
                    f"{d['difference']:>+10.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{mark}"
                )
    lines.append("* the 95% interval excludes zero")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="quality.json of the reference run")
    parser.add_argument("b", type=Path, help="quality.json of the changed run")
    parser.add_argument("--json", type=Path, help="also write the differences here")
    args = parser.parse_args(argv)
    a, b = load(args.a), load(args.b)
    check_paired(a, b, (args.a, args.b))
    found = paired_differences(a, b)
    print(format_differences(found, (args.a, args.b)))
    if args.json:
        args.json.write_text(json.dumps(found, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
