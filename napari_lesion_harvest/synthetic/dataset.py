"""Whole synthetic datasets on disk, in DeepLesion's layout, with the full ground truth.

Layout of ``out_dir``::

    Images_png/PPPPPP_SS_SS/NNN.png   16-bit slices (HU + 32768)
    DL_info.csv                       the ORIGINAL (incomplete) marks only, 18 columns
    truth/marks.csv                   every lesion's RECIST mark (origin "truth")
    truth/lesions.json                every lesion's per-slice boxes, with its kind,
                                      contrast, RECIST mark and whether it is marked (meta)
    split.json                        V_M, V_H, V_H_test, V_D_test volume ids
    synth.json                        generation parameters and per-volume settings
    nifti/<volume_id>.nii.gz          (optional) the same volumes as NIfTI

Volume ``i`` is generated from ``numpy.random.default_rng([seed, 1, i])`` only,
so datasets are byte-identical for the same arguments, and volumes can be made
in parallel processes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from napari_lesion_harvest.io.annotations import MarkRecord, write_lesions, write_marks
from napari_lesion_harvest.io.deeplesion_writer import (
    dl_info_row,
    write_dl_info,
    write_series_pngs,
)
from napari_lesion_harvest.synthetic.phantom import (
    PhantomConfig,
    SeriesIdentity,
    SyntheticVolume,
    generate_volume,
)
from napari_lesion_harvest.synthetic.split import DatasetSplit, split_volumes

#: ``origin`` of the complete ground-truth marks in ``truth/marks.csv``.
TRUTH_ORIGIN = "truth"
#: Probability that the next volume belongs to a new patient (else: a new study).
NEW_PATIENT_PROBABILITY = 0.7


@dataclass
class SyntheticDataset:
    """What :func:`generate_dataset` wrote.

    Attributes
    ----------
    root : Path
    dl_info : Path
    truth_marks : Path
    truth_lesions : Path
    volume_ids : list of str
    split : DatasetSplit
    lesion_count, mark_count : int
        Lesions drawn, and how many of them carry an original mark.
    """

    root: Path
    dl_info: Path
    truth_marks: Path
    truth_lesions: Path
    volume_ids: list[str]
    split: DatasetSplit
    lesion_count: int
    mark_count: int


def volume_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of volume ``index`` of the dataset made with ``seed``."""
    return np.random.default_rng([int(seed), 1, int(index)])


def series_identities(count: int, seed: int) -> list[SeriesIdentity]:
    """Patient/study numbers, sex, age and first slice number of ``count`` sub-volumes.

    Consecutive volumes share a patient (a later study) with probability
    ``1 - NEW_PATIENT_PROBABILITY``; every sub-volume is series 1 of its study.
    """
    rng = np.random.default_rng([int(seed), 0])
    identities = []
    patient = study = 0
    gender, age = "M", 50
    for index in range(count):
        if index == 0 or rng.uniform() < NEW_PATIENT_PROBABILITY:
            patient, study = patient + 1, 1
            gender, age = str(rng.choice(["M", "F"])), int(rng.integers(20, 86))
        else:
            study += 1
        first = int(rng.integers(1, 150))
        identities.append(SeriesIdentity(patient, study, 1, first, gender, age + study - 1))
    return identities


def _train_val_test(patient_index: int, seed: int) -> int:
    """DeepLesion's ``Train_Val_Test`` (1/2/3, about 70/15/15%) of a patient."""
    u = np.random.default_rng([int(seed), 2, int(patient_index)]).uniform()
    return 1 if u < 0.7 else (2 if u < 0.85 else 3)


def _lesion_meta(volume: SyntheticVolume, index: int) -> dict:
    lesion = volume.lesions[index]
    return {
        "lesion_id": lesion.lesion_id,
        "kind": lesion.kind,
        "coarse_type": lesion.coarse_type,
        "marked": lesion.marked,
        "diameter_mm": lesion.diameter_mm,
        "contrast_hu": lesion.contrast_hu,
        "conspicuity": lesion.conspicuity,
        "recist_z": lesion.recist.z,
        "recist_long_axis": lesion.recist.long_axis.tolist(),
        "recist_short_axis": lesion.recist.short_axis.tolist(),
        "normalized_location": list(lesion.meta["normalized_location"]),
    }


def _make_and_write(job) -> dict:
    """Generate volume ``index``, write its slices (and NIfTI); return its truth records."""
    root, seed, index, identity, config, write_nifti = job
    volume = generate_volume(volume_rng(seed, index), identity, config=config)
    hu = volume.volume.array()
    write_series_pngs(root / "Images_png", identity.series, hu, identity.first_slice)
    if write_nifti:
        from napari_lesion_harvest.io.sitk_reader import write_sitk_volume

        (root / "nifti").mkdir(exist_ok=True)
        write_sitk_volume(volume.volume, root / "nifti" / f"{volume.volume_id}.nii.gz")
    first, last = volume.volume.attributes["slice_range"]
    rows = [
        dl_info_row(
            lesion.recist,
            series=identity.series,
            slice_range=(first, last),
            spacing_zyx=volume.volume.spacing,
            image_size_yx=volume.volume.shape[1:],
            normalized_location=lesion.meta["normalized_location"],
            lesion_type=lesion.coarse_type,
            dicom_window=lesion.meta["dicom_window"],
            gender=identity.gender,
            age=identity.age,
            train_val_test=_train_val_test(identity.patient_index, seed),
        )
        for lesion in volume.lesions
        if lesion.marked
    ]
    for lesion in volume.lesions:
        lesion.extent.meta = _lesion_meta(volume, lesion.lesion_id)
    return {
        "volume_id": volume.volume_id,
        "rows": rows,
        "marks": [MarkRecord(volume.volume_id, m, TRUTH_ORIGIN) for m in volume.all_marks],
        "lesions": [lesion.extent for lesion in volume.lesions],
        "settings": {
            "shape_zyx": list(volume.volume.shape),
            "spacing_zyx": list(volume.volume.spacing),
            **volume.meta,
        },
    }


def generate_dataset(
    out_dir: str | PathLike,
    *,
    volumes: int,
    seed: int = 0,
    config: PhantomConfig | None = None,
    write_nifti: bool = False,
    workers: int = 1,
    split_fractions: tuple[float, float, float] = (0.05, 0.1, 0.15),
    progress: Callable[[int, int], None] | None = None,
) -> SyntheticDataset:
    """Generate ``volumes`` phantom sub-volumes and write them as a DeepLesion-layout dataset.

    Parameters
    ----------
    out_dir : path
        Output folder (created); existing files of the same names are replaced.
    volumes : int
        Number of sub-volumes (>= 1).
    seed : int
        Same seed and options give byte-identical files.
    config : PhantomConfig
        Size, slice counts, lesions per volume, mark fraction, ...
    write_nifti : bool
        Also write every volume as ``nifti/<volume_id>.nii.gz``.
    workers : int
        Processes generating volumes in parallel (1: in this process).
    split_fractions : tuple of float
        Fractions of V_M, V_H^test and V_D^test for ``split.json``.
    progress : callable, optional
        ``progress(done, total)`` after each volume.

    Returns
    -------
    SyntheticDataset
    """
    config = config or PhantomConfig()
    if volumes < 1:
        raise ValueError(f"volumes must be >= 1, got {volumes}")
    root = Path(out_dir)
    (root / "truth").mkdir(parents=True, exist_ok=True)
    identities = series_identities(volumes, seed)
    jobs = [(root, seed, i, identities[i], config, write_nifti) for i in range(volumes)]
    results = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(_make_and_write, jobs):
                results.append(result)
                if progress:
                    progress(len(results), volumes)
    else:
        for job in jobs:
            results.append(_make_and_write(job))
            if progress:
                progress(len(results), volumes)
    rows = [row for result in results for row in result["rows"]]
    dl_info = write_dl_info(root / "DL_info.csv", rows)
    truth_marks = root / "truth" / "marks.csv"
    write_marks(truth_marks, [mark for result in results for mark in result["marks"]])
    truth_lesions = root / "truth" / "lesions.json"
    write_lesions(truth_lesions, {r["volume_id"]: r["lesions"] for r in results})
    volume_ids = [r["volume_id"] for r in results]
    fraction_m, fraction_h_test, fraction_d_test = split_fractions
    split = split_volumes(
        volume_ids,
        seed=seed,
        fraction_m=fraction_m,
        fraction_h_test=fraction_h_test,
        fraction_d_test=fraction_d_test,
    )
    split.write(root / "split.json")
    manifest = {
        "generator": "napari_lesion_harvest.synthetic",
        "seed": seed,
        "volumes": volumes,
        "config": asdict(config),
        "volume_settings": {r["volume_id"]: r["settings"] for r in results},
    }
    (root / "synth.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    lesion_count = sum(len(r["lesions"]) for r in results)
    return SyntheticDataset(
        root, dl_info, truth_marks, truth_lesions, volume_ids, split, lesion_count, len(rows)
    )
