"""A tiny harvest project: NIfTI volumes with bright spherical lesions, whose rounds
train in seconds (the engine and UI tests, ``benchmarks/ui_bench.py``,
``tools/ui_screenshots.py``).

Built only through the package's public API (NIfTI writer, marks writer,
``import_sources``, the store), the way a user's data would come in.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_lesion_harvest.geometry import RecistMark
from napari_lesion_harvest.harvest.importing import import_sources
from napari_lesion_harvest.io.annotations import MarkRecord, write_marks
from napari_lesion_harvest.io.sitk_reader import write_sitk_volume
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.store import HarvestProject
from napari_lesion_harvest.vocabulary import Origin, Split

SHAPE = (12, 64, 64)
SPACING = (2.0, 0.8, 0.8)
V_M = ("vol00", "vol01", "vol02", "vol03")

#: A round configuration that trains in seconds on these volumes. 80 LPG steps, without
#: the flip and with a narrow zoom, learn the blobs at every training seed 1-6 with two
#: torch threads, and at 5 of 6 with one (``tools/blob_round_seeds.py``; 40 steps: 5 of 6
#: with two threads; a seed that fails leaves the classifier without a positive proposal).
TINY_CONFIG = {
    "preset": "lite",
    "lpg.max_side": 64,
    "lpg.zoom_range": [0.8, 1.2],
    "lpg.flip_probability": 0.0,
    "lpg.train_steps": 80,
    "lpg.finetune_steps": 10,
    "lpg.batch_size": 4,
    "lpg.learning_rate": 0.003,
    "lpc.epochs": 3,
    "lpc.patch_size": 32,
    "lpc.folds": 2,
    "max_rounds": 2,
}


def blob_volumes(n_volumes: int = 8, *, seed: int = 0):
    """Volumes of soft tissue noise with three bright ellipsoids (lesions) and two bright
    tubes along z (vessels, the hard negatives) each, and the lesions' marks.

    Returns
    -------
    volumes : list of CTVolume
    truth : list of MarkRecord
        One mark per lesion, on its centre slice.
    original : list of MarkRecord
        The first lesion of each volume only (incomplete marks).
    """
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    volumes, truth, original = [], [], []
    for i in range(n_volumes):
        volume_id = f"vol{i:02d}"
        hu = rng.normal(40, 12, SHAPE)
        hu[:, :, :4] = -1000
        centres = []
        while len(centres) < 3:
            centre = (int(rng.integers(4, 8)), *rng.integers(12, 52, size=2))
            if all(np.hypot(centre[1] - c[1], centre[2] - c[2]) > 16 for c in centres):
                centres.append(centre)
        for k, (cz, cy, cx) in enumerate(centres):
            radius = float(rng.uniform(4.5, 7))
            # Ellipsoids twice as long along z as across (in mm), like many lesions.
            z_scale = SPACING[0] / SPACING[1] / 2
            inside = ((zz - cz) * z_scale) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2
            hu[inside < radius**2] = 180
            mark = RecistMark(
                z=cz,
                long_axis=[[cx - radius, cy], [cx + radius, cy]],
                short_axis=[[cx, cy - radius], [cx, cy + radius]],
            )
            truth.append(MarkRecord(volume_id, mark, "truth"))
            if k == 0:
                original.append(MarkRecord(volume_id, mark, Origin.original))
        for _ in range(2):  # vessels: as bright as a lesion on an axial slice, tubes along z
            while True:
                cy, cx = rng.integers(10, 54, size=2)
                if all(np.hypot(cy - c[1], cx - c[2]) > 15 for c in centres):
                    break
            centres.append((0, cy, cx))
            hu[:, (yy[0] - cy) ** 2 + (xx[0] - cx) ** 2 < rng.uniform(3, 4.5) ** 2] = 180
        volumes.append(CTVolume.from_array(volume_id, hu.round().astype(np.int16), SPACING))
    return volumes, truth, original


def make_blob_project(folder: Path, *, n_volumes: int = 8, n_test: int = 1) -> Path:
    """Write the volumes and marks to ``folder/data`` and build ``folder/project``.

    V_M (4 volumes) gets its full marks and is complete; V_H_test (the last
    ``n_test`` volumes) gets its full marks as hidden expert marks and is flagged
    complete (the evaluation's truth); the rest is V_H with original marks.
    Writes ``folder/tiny.json`` (:data:`TINY_CONFIG`).
    """
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    volumes, truth, original = blob_volumes(n_volumes)
    for volume in volumes:
        write_sitk_volume(volume, data / f"{volume.volume_id}.nii.gz")
    write_marks(data / "original.csv", original)
    project_dir = folder / "project"
    with HarvestProject.open(project_dir, create=True) as project:
        import_sources(
            project,
            [*sorted(data.glob("*.nii.gz")), data / "original.csv"],
            author="test",
        )
        test_ids = tuple(v.volume_id for v in volumes[-n_test:])
        for volume_id in test_ids:
            project.set_split(volume_id, Split.V_H_test, author="test")
        hidden = [(r.volume_id, r.mark) for r in truth if r.volume_id in V_M + test_ids]
        project.add_marks(hidden, author="radiologist", origin=Origin.expert)
        for volume_id in V_M + test_ids:  # V_H_test: flagged complete, split kept
            project.set_volume_complete(volume_id, author="radiologist")
    (folder / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    return project_dir
