"""Bringing data into a project: volumes with their original marks, and mark files.

Sources that ``lesion-harvest import`` and the widget accept:

* a DeepLesion root folder (``Images_png/`` + ``DL_info.csv``) or the path of
  a ``DL_info.csv`` whose ``Images_png/`` lies beside it: one volume per
  ``Slice_range`` sub-volume, its DL_info marks as ``original`` marks;
* NIfTI / NRRD / MHA / MHD files and DICOM series folders (SimpleITK);
* mark files for volumes already in the project: a DL_info-style CSV, this
  package's marks CSV / JSON (``docs/formats.md``) or the paper's 2D RECIST-box
  pickles (boxes only: each becomes a cross-shaped mark with the same box, see
  :meth:`~napari_lesion_harvest.geometry.RecistMark.from_box`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from napari_lesion_harvest.geometry import RecistMark
from napari_lesion_harvest.io.sources import DEEPLESION_READER, SITK_READER

DL_INFO_NAME = "DL_info.csv"
IMAGES_DIR_NAME = "Images_png"


@dataclass
class ImportSummary:
    """What an import added and what it had to skip.

    Attributes
    ----------
    volumes : list of str
        Ids of the volumes added.
    marks : int
        Marks added.
    skipped : list of str
        One line per skipped row, volume or file, with the reason.
    """

    volumes: list[str] = field(default_factory=list)
    marks: int = 0
    skipped: list[str] = field(default_factory=list)


def is_deeplesion_source(path: Path) -> bool:
    """A DeepLesion root folder or a ``DL_info.csv`` with ``Images_png/`` beside it."""
    if path.is_dir():
        return (path / DL_INFO_NAME).is_file() and (path / IMAGES_DIR_NAME).is_dir()
    return is_dl_info_csv(path) and (path.parent / IMAGES_DIR_NAME).is_dir()


def is_dl_info_csv(path: Path) -> bool:
    """Whether ``path`` is a CSV whose header is DeepLesion's ``DL_info.csv`` header."""
    from napari_lesion_harvest.io.deeplesion import DL_INFO_COLUMNS

    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    with open(path, newline="") as handle:
        header = next(csv.reader(handle), [])
    return tuple(h.strip() for h in header) == tuple(DL_INFO_COLUMNS)


def deeplesion_volumes(path: Path, *, split: str, summary: ImportSummary):
    """Volume records and original marks of a DeepLesion dataset.

    Sub-volumes whose series folder is missing, or with unreadable first
    slices, are skipped and listed in ``summary.skipped``; missing slices
    inside a range are filled from the nearest slice and listed too.

    Returns
    -------
    records : list of VolumeRecord
    marks : list of (volume_id, RecistMark)
    """
    from napari_lesion_harvest.io.deeplesion import DeepLesionDataset, read_dl_info
    from napari_lesion_harvest.io.errors import LesionIOError
    from napari_lesion_harvest.store import VolumeRecord

    root = path if path.is_dir() else path.parent
    dl_info = read_dl_info(root / DL_INFO_NAME if path.is_dir() else path)
    summary.skipped.extend(f"{dl_info.path}: {row}" for row in dl_info.report.skipped)
    dataset = DeepLesionDataset(root / IMAGES_DIR_NAME, dl_info, on_missing="nearest")
    records, marks = [], []
    for volume_id in dataset.volume_ids:
        try:
            volume = dataset.open(volume_id)
        except LesionIOError as error:
            summary.skipped.append(f"volume {volume_id}: {error}")
            continue
        missing = volume.attributes["missing_slices"]
        if missing:
            summary.skipped.append(
                f"volume {volume_id}: slices {missing} missing, nearest slice shown instead"
            )
        attributes = {
            key: value
            for key, value in volume.attributes.items()
            if key not in ("series_dir", "missing_slices")
        }
        records.append(
            VolumeRecord(
                volume_id=volume_id,
                reader=DEEPLESION_READER,
                path=volume.attributes["series_dir"],
                split=split,
                shape=volume.shape,
                spacing=volume.spacing,
                display_window=volume.display_window,
                attributes=attributes,
            )
        )
        marks.extend((volume_id, mark) for mark in dataset.marks(volume_id))
    return records, marks


def image_volume(path: Path, *, split: str):
    """The volume record of one NIfTI / NRRD / MHA / MHD file or DICOM folder."""
    from napari_lesion_harvest.io.sitk_reader import read_sitk_volume
    from napari_lesion_harvest.store import VolumeRecord

    volume = read_sitk_volume(path)
    return VolumeRecord(
        volume_id=volume.volume_id,
        reader=SITK_READER,
        path=str(path.resolve()),
        split=split,
        shape=volume.shape,
        spacing=volume.spacing,
        attributes={"original_orientation": volume.attributes["original_orientation"]},
    )


def read_mark_file(path: Path) -> tuple[list[tuple[str, RecistMark]], list[str]]:
    """Marks from a DL_info CSV, our marks CSV / JSON, or the paper's 2D pickles.

    Returns
    -------
    marks : list of (volume_id, RecistMark)
    skipped : list of str
        Rows the lenient readers skipped, with the reason.
    """
    suffix = path.suffix.lower()
    if is_dl_info_csv(path):
        from napari_lesion_harvest.io.deeplesion import read_dl_info

        dl_info = read_dl_info(path)
        marks = [(row.volume_id, row.mark) for row in dl_info.rows]
        return marks, [f"{path}: {row}" for row in dl_info.report.skipped]
    if suffix in (".csv", ".json"):
        from napari_lesion_harvest.io.annotations import read_marks

        records, report = read_marks(path)
        return [(r.volume_id, r.mark) for r in records], [f"{path}: {s}" for s in report.skipped]
    if suffix == ".pkl":
        from napari_lesion_harvest.io.paper_pickles import read_recist_box_pickle

        marks = [
            (volume_id, RecistMark.from_box(box, int(z)))
            for volume_id, boxes in read_recist_box_pickle(path).items()
            for z, box in zip(boxes.slices, boxes.boxes, strict=True)
        ]
        return marks, []
    raise ValueError(f"{path}: not a mark file (DL_info CSV, marks CSV/JSON or 2D pickle)")


def import_sources(
    project, sources: Iterable[str | Path], *, split: str = "V_H", author: str
) -> ImportSummary:
    """Add volumes (with their original marks) and mark files to a project.

    A source is read and checked whole before anything is written; its
    volumes are then added in one transaction and its marks in another, so a
    bad source adds nothing and leaves earlier sources in place.

    Parameters
    ----------
    project : HarvestProject
    sources : iterable of path
        DeepLesion roots or ``DL_info.csv`` files, image files / DICOM
        folders, or mark files (``original`` marks of volumes already imported).
    split : str
        Split of the new volumes (``V_H`` by default).
    author : str
        Recorded in the audit log.

    Raises
    ------
    ValueError
        A source that is none of the above (names it).
    """
    from napari_lesion_harvest.io.sitk_reader import is_dicom_folder, medical_suffix

    summary = ImportSummary()
    for source in sources:
        path = Path(source).resolve()
        if not path.exists():
            raise ValueError(f"{path}: no such file or folder")
        if is_deeplesion_source(path):
            records, marks = deeplesion_volumes(path, split=split, summary=summary)
        elif medical_suffix(path) or (path.is_dir() and is_dicom_folder(path)):
            records, marks = [image_volume(path, split=split)], []
        elif path.is_file():
            records = []
            marks, skipped = read_mark_file(path)
            summary.skipped.extend(skipped)
        else:
            raise ValueError(
                f"{path}: not a DeepLesion folder, image file, DICOM folder or mark file"
            )
        known = {r.volume_id for r in records} | {v.volume_id for v in project.volumes()}
        unknown = sorted({vid for vid, _ in marks if vid not in known})
        summary.skipped.extend(f"{path}: marks of unknown volume {vid}" for vid in unknown)
        marks = [(vid, mark) for vid, mark in marks if vid in known]
        if records:
            project.add_volumes(records, author=author)
        if marks:
            project.add_marks(marks, author=author, origin="original")
        summary.volumes.extend(r.volume_id for r in records)
        summary.marks += len(marks)
    return summary
