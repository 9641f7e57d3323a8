"""The paper's volume split: V_M (fully annotated), V_H (harvested), V_H^test and V_D^test.

In the paper, 744 of 14,075 training volumes (5.3%) are fully annotated (V_M),
another 100 fully annotated training volumes are held out to evaluate
harvesting (V_H^test, treated like V_H), and 1,071 test volumes (V_D^test)
are fully annotated to evaluate detectors and never seen while harvesting.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from napari_lesion_harvest.vocabulary import Split

SPLIT_NAMES = (Split.V_M, Split.V_H, Split.V_H_test, Split.V_D_test)


@dataclass(frozen=True)
class DatasetSplit:
    """Volume ids of each part of the split (disjoint; together all volumes)."""

    v_m: tuple[str, ...]
    v_h: tuple[str, ...]
    v_h_test: tuple[str, ...]
    v_d_test: tuple[str, ...]

    def as_dict(self) -> dict[str, list[str]]:
        """``{"V_M": [...], "V_H": [...], "V_H_test": [...], "V_D_test": [...]}``."""
        parts = (self.v_m, self.v_h, self.v_h_test, self.v_d_test)
        return {name: list(ids) for name, ids in zip(SPLIT_NAMES, parts, strict=True)}

    def write(self, path: str | PathLike) -> Path:
        """Write the split as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.as_dict(), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: str | PathLike) -> DatasetSplit:
        """Read a split written by :meth:`write`.

        Raises
        ------
        ValueError
            When the file lacks one of the parts or a volume is in two parts.
        """
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        missing = [name for name in SPLIT_NAMES if not isinstance(data.get(name), list)]
        if missing:
            raise ValueError(f"{path}: split file lacks the list(s) {missing}")
        parts = [tuple(str(v) for v in data[name]) for name in SPLIT_NAMES]
        seen: set[str] = set()
        for part in parts:
            if seen & set(part):
                raise ValueError(f"{path}: volumes in two parts: {sorted(seen & set(part))}")
            seen |= set(part)
        return cls(*parts)


#: Datasets smaller than this get no guaranteed volume per part (fractions are rounded).
MIN_VOLUMES_FOR_ALL_PARTS = 4


def _count(fraction: float, total: int, name: str) -> int:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {fraction}")
    count = int(round(fraction * total))
    if fraction > 0 and total >= MIN_VOLUMES_FOR_ALL_PARTS:
        count = max(1, count)
    return count


def part_sizes(
    total: int, fraction_m: float, fraction_h_test: float, fraction_d_test: float
) -> tuple[int, int, int]:
    """Volumes :func:`split_volumes` gives V_M, V_H^test and V_D^test out of ``total``
    (V_D^test takes whole patients, so it can end up larger).

    Raises
    ------
    ValueError
        A fraction outside [0, 1).
    """
    return (
        _count(fraction_m, total, "fraction_m"),
        _count(fraction_h_test, total, "fraction_h_test"),
        _count(fraction_d_test, total, "fraction_d_test"),
    )


def patient_of(volume_id: str) -> str:
    """Patient key of a DeepLesion-style id ``PPPPPP_SS_SS_aaa-bbb`` (the ``PPPPPP`` part)."""
    return volume_id.split("_", 1)[0]


def split_volumes(
    volume_ids: Sequence[str],
    *,
    seed: int = 0,
    fraction_m: float = 0.05,
    fraction_h_test: float = 0.1,
    fraction_d_test: float = 0.15,
    group_of: Callable[[str], str] = patient_of,
) -> DatasetSplit:
    """Choose V_M, V_H, V_H^test and V_D^test.

    V_D^test takes whole patients (``group_of``), so that no patient of the
    detector's test set is seen while harvesting; V_M and V_H^test are drawn
    from the remaining volumes; the rest is V_H. Every part with a non-zero
    fraction gets at least one volume when there are at least
    :data:`MIN_VOLUMES_FOR_ALL_PARTS` volumes (smaller datasets: rounded counts).

    Parameters
    ----------
    volume_ids : sequence of str
    seed : int
        Same seed and ids give the same split.
    fraction_m, fraction_h_test, fraction_d_test : float
        Fractions of all volumes for V_M, V_H^test and V_D^test.
    group_of : callable
        Patient key of a volume id.

    Raises
    ------
    ValueError
        Fractions out of range, or no volume left for V_H.
    """
    ids = list(dict.fromkeys(str(v) for v in volume_ids))
    total = len(ids)
    n_m, n_h_test, n_d_test = part_sizes(total, fraction_m, fraction_h_test, fraction_d_test)
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for volume_id in ids:
        groups.setdefault(group_of(volume_id), []).append(volume_id)
    d_test: list[str] = []
    for key in rng.permutation(sorted(groups)):
        if len(d_test) >= n_d_test:
            break
        d_test.extend(groups[str(key)])
    rest = [v for v in ids if v not in set(d_test)]
    if n_m + n_h_test >= len(rest):
        raise ValueError(
            f"{total} volumes are too few for V_M={n_m}, V_H_test={n_h_test}, "
            f"V_D_test={len(d_test)} and a non-empty V_H"
        )
    order = [rest[i] for i in rng.permutation(len(rest))]
    v_m, v_h_test = order[:n_m], order[n_m : n_m + n_h_test]
    chosen = set(v_m) | set(v_h_test)
    v_h = [v for v in rest if v not in chosen]
    keep_order = {v: i for i, v in enumerate(ids)}
    return DatasetSplit(
        *(tuple(sorted(part, key=keep_order.__getitem__)) for part in (v_m, v_h, v_h_test, d_test))
    )
