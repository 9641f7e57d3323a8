"""CT display windows: the clinical presets and the volume's own DICOM window."""

from __future__ import annotations

#: Clinical window presets as ``(min, max)`` HU.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "soft tissue": (-160.0, 240.0),
    "lung": (-1350.0, 150.0),
    "bone": (-450.0, 1050.0),
}
#: Keys that switch the window in the viewer (napari key names).
WINDOW_KEYS: dict[str, str] = {"1": "soft tissue", "2": "lung", "3": "bone", "4": "DICOM"}
#: Window used when a volume has no DICOM window of its own.
DEFAULT_WINDOW = "soft tissue"


def available_windows(dicom_window: tuple[float, float] | None) -> dict[str, tuple[float, float]]:
    """The presets plus ``"DICOM"`` (the volume's own window) when it has one.

    Parameters
    ----------
    dicom_window : tuple of float or None
        ``(min, max)`` HU from the volume (DeepLesion ``DICOM_windows``).

    Returns
    -------
    dict
        Name -> ``(min, max)`` HU, presets first.
    """
    windows = dict(WINDOW_PRESETS)
    if dicom_window is not None:
        low, high = (float(v) for v in dicom_window)
        if high > low:
            windows["DICOM"] = (low, high)
    return windows


def apply_window(image_layer, name: str, dicom_window: tuple[float, float] | None = None) -> None:
    """Set the contrast limits of a napari image layer to the window ``name``.

    Raises
    ------
    KeyError
        When ``name`` is neither a preset nor ``"DICOM"`` of a volume that has one.
    """
    windows = available_windows(dicom_window)
    if name not in windows:
        raise KeyError(f"unknown window {name!r}; available: {', '.join(windows)}")
    low, high = windows[name]
    range_low, range_high = image_layer.contrast_limits_range
    image_layer.contrast_limits_range = (min(range_low, low), max(range_high, high))
    image_layer.contrast_limits = (low, high)
