"""Where a project's volumes come from: reader names, and opening a stored volume again.

The project store keeps, per volume, the name of its reader and a path
(:class:`~napari_lesion_harvest.store.records.VolumeRecord`). This module is
the one place that turns that back into a lazily loaded
:class:`~napari_lesion_harvest.io.volume.CTVolume`.
"""

from __future__ import annotations

from pathlib import Path

from napari_lesion_harvest.io.volume import CTVolume

#: Reader of DeepLesion sub-volumes: ``path`` is the series folder ``Images_png/PPPPPP_SS_SS``.
DEEPLESION_READER = "deeplesion_png"
#: Reader of NIfTI / NRRD / MHA / MHD files and DICOM series folders.
SITK_READER = "simpleitk"
READERS = (DEEPLESION_READER, SITK_READER)


def open_volume(record, *, cache_slices: int = 16) -> CTVolume:
    """Open a stored volume lazily.

    Parameters
    ----------
    record : VolumeRecord
        Needs ``volume_id``, ``reader``, ``path``, ``spacing``,
        ``display_window`` and, for DeepLesion, ``attributes["slice_range"]``.
    cache_slices : int
        Decoded slices kept in memory.

    Raises
    ------
    ValueError
        For an unknown reader; the message names the volume.
    napari_lesion_harvest.io.errors.LesionIOError
        When the files are missing or unreadable (names the file).
    """
    if record.reader == DEEPLESION_READER:
        from napari_lesion_harvest.io.deeplesion import open_series_range

        first, last = record.attributes["slice_range"]
        return open_series_range(
            Path(record.path),
            first,
            last,
            spacing_zyx=tuple(record.spacing),
            on_missing="nearest",
            display_window=record.display_window,
            cache_slices=cache_slices,
        )
    if record.reader == SITK_READER:
        from napari_lesion_harvest.io.sitk_reader import read_sitk_volume

        volume = read_sitk_volume(record.path, volume_id=record.volume_id)
        if record.display_window is not None:
            volume.display_window = tuple(record.display_window)
        return volume
    raise ValueError(
        f"volume {record.volume_id}: unknown reader {record.reader!r} (known: {READERS})"
    )
