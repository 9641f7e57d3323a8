"""Import data into the open project in a worker thread, with a napari progress bar.

Sources are what :func:`~napari_lesion_harvest.harvest.importing.import_sources`
accepts (DeepLesion folders or ``DL_info.csv``, image files, DICOM folders,
mark files). The worker writes through its own handle on the dock's project
(:meth:`~napari_lesion_harvest.store.HarvestProject.share`): a process keeps
one connection per project file (see :mod:`napari_lesion_harvest.store.database`),
and the dock may close its handle while the import finishes with its own.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from pathlib import Path

#: Skipped rows listed in the notification (the rest is counted).
MAX_SKIPPED_SHOWN = 12


def import_one_by_one(
    project, sources: Sequence[str | Path], *, split: str, author: str
) -> Generator[tuple[int, int], None, tuple[object, str | None]]:
    """Import ``sources`` one after the other, yielding after each.

    Each source is imported in one transaction, skipping (and listing) its bad
    volumes and rows; what the project already holds is not added again, so
    importing a source twice is harmless. A source that cannot be imported
    (unknown kind, refused by the store) stops the import; the sources before
    it stay imported.

    Parameters
    ----------
    project : HarvestProject
        A handle for this import alone (the dock's ``project.share()``); closed
        when the import ends.

    Yields
    ------
    done, total : int
        Sources imported so far, and in all.

    Returns
    -------
    summary : ImportSummary
        What was added and skipped (one summary for all sources).
    error : str or None
        Why the import stopped early, naming the source; None when it did not.
    """
    from napari_lesion_harvest.harvest.importing import ImportSummary, import_sources
    from napari_lesion_harvest.io.errors import LesionIOError
    from napari_lesion_harvest.store import StoreError

    total = ImportSummary()
    with project:
        for done, source in enumerate(sources, start=1):
            try:
                part = import_sources(
                    project, [source], split=split, author=author, skip_invalid=True
                )
            except (LesionIOError, StoreError, ValueError, OSError) as error:
                return total, f"{source}: {error}"
            total.volumes.extend(part.volumes)
            total.marks += part.marks
            total.skipped.extend(part.skipped)
            yield done, len(sources)
    return total, None


def summary_message(summary) -> str:
    """One notification text: counts, then the skipped rows (at most :data:`MAX_SKIPPED_SHOWN`)."""
    text = f"Imported {len(summary.volumes)} volume(s) and {summary.marks} original mark(s)."
    if summary.skipped:
        shown = summary.skipped[:MAX_SKIPPED_SHOWN]
        text += f"\nSkipped {len(summary.skipped)}:\n" + "\n".join(f"- {s}" for s in shown)
        if len(summary.skipped) > len(shown):
            text += f"\n... and {len(summary.skipped) - len(shown)} more"
    return text
