"""Helpers for the data-entry tests: a tiny synthetic DeepLesion dataset and a project's state."""

from __future__ import annotations

import csv
from pathlib import Path

from napari_lesion_harvest.store import HarvestProject
from napari_lesion_harvest.synthetic.dataset import generate_dataset
from napari_lesion_harvest.synthetic.phantom import PhantomConfig


def tiny_dataset(folder: Path, *, volumes: int = 3, seed: int = 1):
    """A synthetic DeepLesion-layout dataset (64 px, 8-10 slices) with NIfTI copies.

    Returns the :class:`~napari_lesion_harvest.synthetic.dataset.SyntheticDataset`:
    ``root`` (``Images_png/`` + ``DL_info.csv``), ``root / "nifti"``, ``truth_marks``.
    """
    config = PhantomConfig(size=64, slices=(8, 10))
    return generate_dataset(folder, volumes=volumes, seed=seed, config=config, write_nifti=True)


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
