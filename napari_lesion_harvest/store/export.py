"""Export the completed annotation set of a project.

What is exported (see ``docs/formats.md``, "Exports"):

* ``marks.csv`` / ``marks.json``: every live RECIST mark, original (from the
  dataset) and expert (drawn in the tool), written by
  :func:`napari_lesion_harvest.io.annotations.write_marks`;
* ``lesions.csv`` / ``lesions.json``: the harvested lesions of a round (3D
  proposals accepted by an expert, or harvested as ``P_pos_H`` and not
  rejected) with their per-slice boxes and LPG scores, written by
  :func:`napari_lesion_harvest.io.annotations.write_lesions`; the JSON keeps
  each lesion's 3D box, s_g, s_c, s_gc, role, round and verdict in ``meta``;
* ``MinedLesions.pkl``: the same lesions in the paper's pickle layout
  ``{volume_id: [[(z, [x1, y1, x2, y2, score]), ...], ...]}`` (protocol 2,
  built-in floats only), written by
  :func:`napari_lesion_harvest.io.paper_pickles.write_mined_lesions_pickle`.

The files are first written (and fsynced) in a hidden staging folder inside
the output folder, then each is renamed over its final name and the folder is
fsynced: an interrupted export (Ctrl-C, a kill, a power cut) leaves every
final name with either its previous file or the complete new one, never a
half file. Only the hidden ``.export-*`` staging folder of a killed export may
stay behind; it can be deleted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from napari_lesion_harvest.durable import fsync_path
from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.store.errors import InvalidValueError
from napari_lesion_harvest.store.project import HarvestProject
from napari_lesion_harvest.store.records import StoredProposal

#: Export formats and the files each one writes.
EXPORT_FILES = {
    "csv": ("marks.csv", "lesions.csv"),
    "json": ("marks.json", "lesions.json"),
    "pickle": ("MinedLesions.pkl",),
}


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_annotations` wrote.

    Attributes
    ----------
    folder : Path
    files : list of Path
        Every file written.
    n_marks : int
        Marks exported (original + expert).
    n_lesions : int
        Harvested lesions exported.
    round_number : int or None
        Round whose lesions were exported (None: no done round yet, no lesions).
    """

    folder: Path
    files: list[Path] = field(default_factory=list)
    n_marks: int = 0
    n_lesions: int = 0
    round_number: int | None = None


def lesion_proposal(stored: StoredProposal) -> Proposal3D:
    """The exported form of a harvested lesion: its tracklet with store facts in ``meta``.

    ``meta`` holds ``proposal_id``, ``round``, ``role``, ``box_3d`` (``xyzxyz``),
    ``s_g``, ``s_c``, ``s_gc`` and ``verdict`` (``accepted``, ``rejected`` or None),
    on top of the proposal's own meta.
    """
    source = stored.proposal
    meta = {
        **source.meta,
        "proposal_id": stored.id,
        "round": stored.round_number,
        "role": stored.role,
        "box_3d": list(stored.box_3d),
        "s_g": stored.s_g,
        "s_c": stored.s_c,
        "s_gc": stored.s_gc,
        "verdict": stored.verdict.verdict if stored.verdict else None,
    }
    return Proposal3D(source.slices, source.boxes, source.scores, meta=meta)


def export_annotations(
    project: HarvestProject,
    folder: str | Path | None = None,
    *,
    round_number: int | None = None,
    formats: Iterable[str] = ("csv", "json", "pickle"),
    splits: Iterable[str] | None = None,
) -> ExportResult:
    """Write the completed annotation set (marks + harvested lesions).

    Parameters
    ----------
    project : HarvestProject
    folder : str or Path, optional
        Output folder (created); default ``<project>/exports``.
    round_number : int, optional
        Round whose harvested lesions are exported; default the latest done round.
    formats : iterable of {"csv", "json", "pickle"}, optional
        Which files to write (see :data:`EXPORT_FILES`).
    splits : iterable of str, optional
        Only volumes of these splits (default: all volumes).

    Returns
    -------
    ExportResult

    Raises
    ------
    InvalidValueError
        An unknown format.
    NotFoundError
        An unknown round.
    """
    from napari_lesion_harvest.io.annotations import MarkRecord, write_lesions, write_marks
    from napari_lesion_harvest.io.paper_pickles import write_mined_lesions_pickle

    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in EXPORT_FILES]
    if unknown:
        raise InvalidValueError(
            f"unknown export format(s) {unknown}; choose from {', '.join(EXPORT_FILES)}"
        )
    out = Path(folder) if folder is not None else project.exports_dir
    if out.exists() and not out.is_dir():
        raise InvalidValueError(f"{out} exists and is not a folder; export into a folder")
    out.mkdir(parents=True, exist_ok=True)
    keep = (
        None if splits is None else {v.volume_id for s in splits for v in project.volumes(split=s)}
    )

    marks = [
        MarkRecord(m.volume_id, m.mark, m.origin, m.author)
        for m in project.marks()
        if keep is None or m.volume_id in keep
    ]
    if round_number is None:
        round_number = project.latest_done_round()
    lesions: dict[str, list[Proposal3D]] = {}
    if round_number is not None:
        for stored in project.rounds.harvested_lesions(round_number):
            if keep is None or stored.volume_id in keep:
                lesions.setdefault(stored.volume_id, []).append(lesion_proposal(stored))

    result = ExportResult(
        folder=out,
        n_marks=len(marks),
        n_lesions=sum(map(len, lesions.values())),
        round_number=round_number,
    )
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".export-"))
    try:
        for name in formats:
            if name == "pickle":
                write_mined_lesions_pickle(staging / EXPORT_FILES[name][0], lesions)
                continue
            marks_file, lesions_file = (staging / f for f in EXPORT_FILES[name])
            write_marks(marks_file, marks)
            write_lesions(lesions_file, lesions)
        file_names = [file_name for name in formats for file_name in EXPORT_FILES[name]]
        for file_name in file_names:
            fsync_path(staging / file_name)
        for file_name in file_names:
            os.replace(staging / file_name, out / file_name)
            result.files.append(out / file_name)
        fsync_path(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result
