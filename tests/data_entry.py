"""Helpers for the data-entry tests: a project's state, and CSV files changed row by row."""

from __future__ import annotations

import csv
from pathlib import Path

from napari_lesion_harvest.store import HarvestProject


def project_state(folder: Path) -> dict:
    """Everything data entry may change: volumes (split, completion), marks, audit actions."""
    with HarvestProject.open(folder) as project:
        assert project.integrity_check() == []
        return {
            "volumes": {v.volume_id: (v.split, v.complete, v.path) for v in project.volumes()},
            "marks": [
                (
                    m.id,
                    m.volume_id,
                    m.origin,
                    m.mark.z,
                    m.mark.measurement_coordinates().tolist(),
                    m.deleted,
                )
                for m in project.marks(include_deleted=True)
            ],
            "audit": [e.action for e in reversed(project.audit_log())],
        }


def rewrite_csv(source: Path, target: Path, change) -> None:
    """Copy a CSV file, passing its data rows (dicts) through ``change(rows) -> rows``."""
    with open(source, newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    with open(target, "w", newline="") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(change(rows))
