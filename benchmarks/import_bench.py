"""How long ``import napari_lesion_harvest`` (and what napari loads at start) takes, and
that it imports neither torch nor Qt.

Each figure is the median of fresh interpreter runs (``python -X importtime`` is
not needed: the child reports its own wall time around the import).

Run: ``.venv/bin/python benchmarks/import_bench.py``
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

MODULES = [
    "napari_lesion_harvest",
    "napari_lesion_harvest.cli",
    "napari_lesion_harvest.store",
    "napari_lesion_harvest.io.napari_readers",
]
CHILD = """
import json, sys, time
start = time.perf_counter()
import {module}
elapsed = time.perf_counter() - start
heavy = sorted(m for m in ("torch", "torchvision", "napari", "qtpy", "PyQt6") if m in sys.modules)
print(json.dumps({{"seconds": elapsed, "heavy": heavy}}))
"""


def measure(module: str, runs: int = 7) -> dict:
    """Median import time of ``module`` over ``runs`` fresh interpreters."""
    results = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", CHILD.format(module=module)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results.append(json.loads(out))
    return {
        "median_ms": 1000 * statistics.median(r["seconds"] for r in results),
        "heavy_modules": results[0]["heavy"],
    }


def main() -> int:
    print(f"{'module':<42}{'median ms':>10}  heavy modules imported")
    for module in MODULES:
        result = measure(module)
        heavy = ", ".join(result["heavy_modules"]) or "none"
        print(f"{module:<42}{result['median_ms']:>10.1f}  {heavy}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
