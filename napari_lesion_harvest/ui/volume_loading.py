"""Open a project volume's CT from its store record (the reader named in the record)."""

from __future__ import annotations

import numpy as np


def load_record(record) -> tuple[np.ndarray, tuple[float, float, float], tuple | None]:
    """Read a volume for display.

    Parameters
    ----------
    record : VolumeRecord
        ``reader`` is ``simpleitk`` (NIfTI / NRRD / MHA / DICOM) or ``deeplesion_png``.

    Returns
    -------
    hu : ndarray, shape (Z, Y, X), int16
    spacing : tuple of float
        ``(sz, sy, sx)`` in mm.
    display_window : tuple of float or None

    Raises
    ------
    ValueError
        For a reader this function does not know (named in the message).
    """
    if record.reader == "simpleitk":
        from napari_lesion_harvest.io.sitk_reader import read_sitk_volume

        volume = read_sitk_volume(record.path, volume_id=record.volume_id)
    elif record.reader == "deeplesion_png":
        from napari_lesion_harvest.io.deeplesion import open_series_range, parse_subvolume_id

        if record.spacing is None:
            raise ValueError(f"volume {record.volume_id}: the project has no spacing for it")
        _series, first, last = parse_subvolume_id(record.volume_id)
        volume = open_series_range(
            record.path, first, last, spacing_zyx=record.spacing, on_missing="nearest"
        )
    else:
        raise ValueError(
            f"volume {record.volume_id}: reader {record.reader!r} cannot be opened for display"
        )
    window = record.display_window or volume.display_window
    spacing = record.spacing or volume.spacing
    return volume.array(), tuple(spacing), window
