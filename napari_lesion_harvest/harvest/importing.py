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

Reading is separate from writing: :func:`read_sources` and :func:`read_mark_source`
read and check everything (each mark against its volume's shape) and write
nothing; the result goes into the project in one transaction
(:meth:`~napari_lesion_harvest.store.HarvestProject.add_batch`), which adds
only what the project does not hold yet. Bad input (a file, a volume, a row)
raises :class:`BadInputError` naming it; with ``skip_invalid`` the valid part is
kept and every skipped item is listed instead.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from napari_lesion_harvest.geometry import RecistMark
from napari_lesion_harvest.io.sources import DEEPLESION_READER, SITK_READER
from napari_lesion_harvest.store.records import BatchResult, DataBatch, MarkEntry, VolumeRecord
from napari_lesion_harvest.vocabulary import Split

DL_INFO_NAME = "DL_info.csv"
IMAGES_DIR_NAME = "Images_png"


class BadInputError(ValueError):
    """A source, volume, row or mark that cannot be imported; the message names it."""


@dataclass
class ImportPlan:
    """What the sources hold, read and checked; nothing is written yet.

    Attributes
    ----------
    volumes : list of VolumeRecord
    marks : list of MarkEntry
        Each inside its volume, with its file and row in ``source``.
    skipped : list of str
        With ``skip_invalid``: one line per skipped file, volume or row, naming it.
    """

    volumes: list[VolumeRecord] = field(default_factory=list)
    marks: list[MarkEntry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """``"checked 12 volume(s) and 30 mark(s)"`` (``"checked 30 mark(s)"`` without volumes)."""
        volumes = f"{len(self.volumes)} volume(s) and " if self.volumes else ""
        return f"checked {volumes}{len(self.marks)} mark(s)"


@dataclass
class ImportSummary:
    """What an import added, what the project already held, and what it skipped.

    Attributes
    ----------
    volumes : list of str
        Ids of the volumes added.
    marks : int
        Marks added.
    skipped : list of str
        One line per skipped row, volume or file, with the reason.
    volumes_present : list of str
        Volumes already in the project with the same data.
    marks_present : int
        Marks already in the project (or repeated in the sources).
    marks_kept_deleted : list of int
        Ids of soft-deleted marks that the sources hold again; they stay deleted.
    """

    volumes: list[str] = field(default_factory=list)
    marks: int = 0
    skipped: list[str] = field(default_factory=list)
    volumes_present: list[str] = field(default_factory=list)
    marks_present: int = 0
    marks_kept_deleted: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, result: BatchResult, skipped: list[str]) -> ImportSummary:
        """The summary of a written batch."""
        return cls(
            volumes=result.volumes_added,
            marks=len(result.marks_added),
            skipped=skipped,
            volumes_present=result.volumes_present,
            marks_present=result.marks_present,
            marks_kept_deleted=result.marks_kept_deleted,
        )

    def counts(self) -> str:
        """``"2 new volume(s), 10 already in the project; 5 new mark(s), 25 already present"``."""
        return (
            f"{len(self.volumes)} new volume(s), {len(self.volumes_present)} already in the "
            f"project; {mark_counts(self.marks, self.marks_present, self.marks_kept_deleted)}"
        )


def mark_counts(added: int, present: int, kept_deleted: list[int]) -> str:
    """``"5 new mark(s), 25 already present"`` and the deleted marks that stay deleted."""
    text = f"{added} new mark(s), {present} already present"
    if kept_deleted:
        shown = " ".join(map(str, kept_deleted[:10])) + (" ..." if len(kept_deleted) > 10 else "")
        text += (
            f", {len(kept_deleted)} deleted in the project and kept deleted "
            f"(ids {shown}; `lesion-harvest marks PROJECT --restore ID` brings one back)"
        )
    return text


class _Skips:
    """Bad input policy: raise :class:`BadInputError` (default), or list and go on."""

    def __init__(self, skip_invalid: bool):
        self.skip_invalid = skip_invalid
        self.lines: list[str] = []

    def bad(self, message: str, error: Exception | None = None) -> None:
        if not self.skip_invalid:
            raise BadInputError(message) from error
        self.lines.append(message)


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


def _deeplesion_volumes(path: Path, *, split: str, skips: _Skips):
    """Volume records and original marks of a DeepLesion dataset.

    A sub-volume whose slices cannot be read (series folder or slice files
    missing, damaged images) is bad input.

    Returns
    -------
    records : list of VolumeRecord
    marks : list of MarkEntry
    """
    from napari_lesion_harvest.io.deeplesion import DeepLesionDataset, read_dl_info
    from napari_lesion_harvest.io.errors import LesionIOError
    from napari_lesion_harvest.store import VolumeRecord

    root = path if path.is_dir() else path.parent
    dl_info = read_dl_info(
        root / DL_INFO_NAME if path.is_dir() else path, strict=not skips.skip_invalid
    )
    skips.lines.extend(f"{dl_info.path}: {row}" for row in dl_info.report.skipped)
    dataset = DeepLesionDataset(root / IMAGES_DIR_NAME, dl_info, on_missing="raise")
    records, marks = [], []
    for volume_id in dataset.volume_ids:
        rows = dataset.rows(volume_id)
        try:
            volume = dataset.open(volume_id)
        except LesionIOError as error:
            skips.bad(f"volume {volume_id} ({len(rows)} mark(s)): {error}", error)
            continue
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
        marks.extend(
            MarkEntry(volume_id, row.mark, f"{dl_info.path}, line {row.line}") for row in rows
        )
    return records, marks


def image_volume(path: Path, *, split: str) -> VolumeRecord:
    """The volume record of one NIfTI / NRRD / MHA / MHD file or DICOM folder."""
    from napari_lesion_harvest.io.sitk_reader import read_sitk_volume

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


def _read_marks(path: Path, skips: _Skips) -> list[MarkEntry]:
    """Marks from a DL_info CSV, our marks CSV / JSON, or the paper's 2D pickles, each
    with its file and line (or record) in ``source``."""
    suffix = path.suffix.lower()
    strict = not skips.skip_invalid
    if is_dl_info_csv(path):
        from napari_lesion_harvest.io.deeplesion import read_dl_info

        dl_info = read_dl_info(path, strict=strict)
        skips.lines.extend(f"{path}: {row}" for row in dl_info.report.skipped)
        return [MarkEntry(r.volume_id, r.mark, f"{path}, line {r.line}") for r in dl_info.rows]
    if suffix in (".csv", ".json"):
        from napari_lesion_harvest.io.annotations import read_marks

        records, report = read_marks(path, strict=strict)
        skips.lines.extend(f"{path}: {row}" for row in report.skipped)
        if suffix == ".csv":
            bad = {row.row for row in report.skipped}
            places = [f"line {n}" for n in _csv_data_lines(path) if n not in bad]
        else:
            bad = {row.key for row in report.skipped}
            places = [f"marks[{i}]" for i in range(report.rows_read) if f"marks[{i}]" not in bad]
        return [
            MarkEntry(r.volume_id, r.mark, f"{path}, {place}")
            for r, place in zip(records, places, strict=True)
        ]
    if suffix == ".pkl":
        from napari_lesion_harvest.io.paper_pickles import read_recist_box_pickle

        marks = []
        for volume_id, boxes in read_recist_box_pickle(path).items():
            for index, (z, box) in enumerate(zip(boxes.slices, boxes.boxes, strict=True)):
                where = f"{path}, key {volume_id!r}, box {index} (slice {int(z)})"
                try:
                    marks.append(MarkEntry(volume_id, RecistMark.from_box(box, int(z)), where))
                except ValueError as error:
                    skips.bad(f"{where}: {error}", error)
        return marks
    raise ValueError(f"{path}: not a mark file (DL_info CSV, marks CSV/JSON or 2D pickle)")


def _csv_data_lines(path: Path) -> list[int]:
    """1-based line numbers of the non-empty data rows of a CSV file (header excluded)."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        lines, line = [], reader.line_num
        for cells in reader:
            first, line = line + 1, reader.line_num
            if cells:
                lines.append(first)
    return lines


def _check_marks(
    marks: Iterable[MarkEntry], shapes: dict[str, tuple | None], skips: _Skips
) -> list[MarkEntry]:
    """The marks whose volume is in ``shapes`` (volume id to ``(Z, Y, X)`` or None) and
    that lie inside it; in a lenient import, one skipped line per unknown volume."""
    from napari_lesion_harvest.store import InvalidValueError
    from napari_lesion_harvest.store.rows import checked_mark_values

    kept, unknown = [], {}
    for entry in marks:
        if entry.volume_id not in shapes:
            if not skips.skip_invalid:
                raise BadInputError(
                    f"{entry.source}: volume {entry.volume_id!r} is not in the project; "
                    "import it first"
                )
            unknown.setdefault(entry.volume_id, []).append(entry.source)
            continue
        try:
            checked_mark_values(
                entry.mark, shapes[entry.volume_id], volume_id=entry.volume_id, where=entry.source
            )
        except InvalidValueError as error:
            skips.bad(str(error), error)
            continue
        kept.append(entry)
    for volume_id, sources in unknown.items():
        skips.bad(
            f"{len(sources)} mark(s) of volume {volume_id!r}, which is not in the project "
            f"(first: {sources[0]})"
        )
    return kept


def read_sources(
    project, sources: Iterable[str | Path], *, split: str = Split.V_H, skip_invalid: bool = False
) -> ImportPlan:
    """Read and check volumes (with their original marks) and mark files; write nothing.

    Parameters
    ----------
    project : HarvestProject
        Its volumes are the ones that mark files may refer to (besides the new ones).
    sources : iterable of path
        DeepLesion roots or ``DL_info.csv`` files, image files / DICOM
        folders, or mark files (``original`` marks of volumes imported before
        or in the same call).
    split : str
        Split of the new volumes (``V_H`` by default).
    skip_invalid : bool, optional
        Skip bad files, volumes and rows (each listed in ``ImportPlan.skipped``)
        instead of raising on the first.

    Returns
    -------
    ImportPlan

    Raises
    ------
    BadInputError
        (Without ``skip_invalid``) the first bad file, volume, row or mark, named;
        (always) a volume id that the project or another source holds with other data.
    ValueError
        A source that does not exist or is of no known kind (names it).
    """
    from napari_lesion_harvest.io.errors import LesionIOError
    from napari_lesion_harvest.io.sitk_reader import is_dicom_folder, medical_suffix

    skips = _Skips(skip_invalid)
    plan = ImportPlan()
    for source in sources:
        path = Path(source).resolve()
        if not path.exists():
            raise ValueError(f"{path}: no such file or folder")
        try:
            if is_deeplesion_source(path):
                records, marks = _deeplesion_volumes(path, split=split, skips=skips)
            elif medical_suffix(path) or (path.is_dir() and is_dicom_folder(path)):
                records, marks = [image_volume(path, split=split)], []
            elif path.is_file():
                records, marks = [], _read_marks(path, skips)
            else:
                raise ValueError(
                    f"{path}: not a DeepLesion folder, image file, DICOM folder or mark file"
                )
        except (LesionIOError, OSError) as error:
            skips.bad(
                str(error) if isinstance(error, LesionIOError) else f"{path}: {error}", error
            )
            continue
        plan.volumes.extend(records)
        plan.marks.extend(marks)
    known = {v.volume_id: v for v in project.volumes()}
    _check_volumes(plan.volumes, known)
    shapes = {v.volume_id: v.shape for v in (*known.values(), *plan.volumes)}
    plan.marks = _check_marks(plan.marks, shapes, skips)
    plan.skipped = skips.lines
    return plan


def _check_volumes(volumes: list[VolumeRecord], known: dict[str, VolumeRecord]) -> None:
    """Refuse a volume id that the project (or another source) holds with other data.

    The store checks this again when writing; checking here reports it before
    anything is written, also with ``skip_invalid`` (a conflict is not a bad row:
    the user decides which data the id stands for).
    """
    from napari_lesion_harvest.store.rows import volume_differences

    seen = dict(known)
    for record in volumes:
        other = seen.setdefault(record.volume_id, record)
        differences = volume_differences(other, record)
        if differences:
            where = "in the project" if record.volume_id in known else "in two sources"
            raise BadInputError(
                f"volume {record.volume_id!r} is already {where} with other data "
                f"({'; '.join(differences)}); nothing was imported"
            )


def read_mark_source(project, path: str | Path, *, skip_invalid: bool = False) -> ImportPlan:
    """Read a mark file and check its marks against the project's volumes; write nothing.

    Returns
    -------
    ImportPlan
        No volumes; the marks, each inside a volume of the project.

    Raises
    ------
    BadInputError, LesionIOError
        (Without ``skip_invalid``) the first bad row or mark, named.
    ValueError
        Not a mark file.
    """
    skips = _Skips(skip_invalid)
    marks = _read_marks(Path(path), skips)
    shapes = {v.volume_id: v.shape for v in project.volumes()}
    return ImportPlan(marks=_check_marks(marks, shapes, skips), skipped=skips.lines)


def import_sources(
    project,
    sources: Iterable[str | Path],
    *,
    split: str = Split.V_H,
    author: str,
    skip_invalid: bool = False,
    checked: Callable[[ImportPlan], None] | None = None,
) -> ImportSummary:
    """Add volumes (with their original marks) and mark files to a project, in one
    transaction; what the project already holds is not added again.

    Parameters
    ----------
    project : HarvestProject
    sources : iterable of path
        See :func:`read_sources`.
    split : str
        Split of the new volumes (``V_H`` by default).
    author : str
        Recorded in the audit log.
    skip_invalid : bool, optional
        Import the valid part and list every skipped file, volume and row.
    checked : callable, optional
        ``checked(plan)`` once everything is read and checked, before writing.

    Returns
    -------
    ImportSummary

    Raises
    ------
    BadInputError
        (Without ``skip_invalid``) the first bad file, volume, row or mark, and (always)
        a volume id that the project or another source holds with other data;
        nothing written.
    ValueError
        A source that does not exist or is of no known kind.
    """
    plan = read_sources(project, sources, split=split, skip_invalid=skip_invalid)
    if checked is not None:
        checked(plan)
    result = project.add_batch(DataBatch(volumes=plan.volumes, marks=plan.marks), author=author)
    return ImportSummary.of(result, plan.skipped)
