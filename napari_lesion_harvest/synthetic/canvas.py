"""The phantom's drawing surface: HU and tissue-label arrays with physical coordinates.

Body coordinates (mm) used by every drawing function of the phantom:

* ``x``: lateral, increasing towards the patient's left (image right, radiological view);
* ``y``: antero-posterior, increasing posteriorly (image down); the body centre is ``y = 0``;
* ``z``: cranio-caudal body position, 0 at the lung apices, increasing caudally
  (about 650 at the femoral heads).

Shapes are implicit functions evaluated only inside their bounding box, so the
cost of a structure is proportional to its size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Tissue(IntEnum):
    """Tissue labels of the phantom's label volume (``uint8``)."""

    AIR = 0
    TABLE = 1
    SKIN = 2
    SUBCUTANEOUS_FAT = 3
    MUSCLE = 4
    CAVITY_FAT = 5
    LUNG = 6
    AIRWAY = 7
    VESSEL = 8
    HEART = 9
    LIVER = 10
    SPLEEN = 11
    KIDNEY = 12
    STOMACH = 13
    BOWEL = 14
    PANCREAS = 15
    GALLBLADDER = 16
    BLADDER = 17
    ESOPHAGUS = 18
    VERTEBRA = 19
    BONE = 20
    DISC = 21
    SPINAL_CANAL = 22
    CALCIFICATION = 23
    NODE = 24
    LESION = 30


#: Signature of an implicit shape: ``inside(z, y, x) -> bool array`` on broadcast grids (mm).
ShapeFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Canvas:
    """HU and label volumes of shape ``(Z, Y, X)`` with their body coordinates.

    Attributes
    ----------
    hu : ndarray, shape (Z, Y, X), float32
        Hounsfield units being drawn.
    labels : ndarray, shape (Z, Y, X), uint8
        :class:`Tissue` of every voxel.
    z, y, x : ndarray, shape (Z,), (Y,), (X,), float32
        Body coordinates (mm) of the voxel centres along each axis.
    spacing : tuple of float
        ``(sz, sy, sx)`` in mm.
    """

    hu: np.ndarray
    labels: np.ndarray
    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    spacing: tuple[float, float, float]

    @classmethod
    def empty(cls, shape, spacing, *, z_start_mm: float, y_offset_mm: float) -> Canvas:
        """An air-filled canvas.

        Parameters
        ----------
        shape : tuple of int
            ``(Z, Y, X)``.
        spacing : tuple of float
            ``(sz, sy, sx)`` in mm.
        z_start_mm : float
            Body ``z`` of the first slice.
        y_offset_mm : float
            Body ``y`` of the image centre row (positive: the body sits above the centre).
        """
        nz, ny, nx = (int(v) for v in shape)
        sz, sy, sx = (float(v) for v in spacing)
        z = (z_start_mm + sz * np.arange(nz)).astype(np.float32)
        y = ((np.arange(ny) - (ny - 1) / 2) * sy + y_offset_mm).astype(np.float32)
        x = ((np.arange(nx) - (nx - 1) / 2) * sx).astype(np.float32)
        hu = np.full((nz, ny, nx), -1000.0, dtype=np.float32)
        labels = np.zeros((nz, ny, nx), dtype=np.uint8)
        return cls(hu, labels, z, y, x, (sz, sy, sx))

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)``."""
        return self.hu.shape

    def window(self, lo_zyx, hi_zyx) -> tuple[slice, slice, slice] | None:
        """Index slices of the voxels whose centres lie in the box ``lo..hi`` (mm, z y x).

        Returns ``None`` when the box misses the canvas.
        """
        result = []
        for axis_coords, lo, hi in zip((self.z, self.y, self.x), lo_zyx, hi_zyx, strict=True):
            start = int(np.searchsorted(axis_coords, lo, side="left"))
            stop = int(np.searchsorted(axis_coords, hi, side="right"))
            if stop <= start:
                return None
            result.append(slice(start, stop))
        return tuple(result)

    def grids(self, window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Body coordinates ``(z, y, x)`` of a window, shapes (k, 1, 1), (1, m, 1), (1, 1, n)."""
        sz, sy, sx = window
        return (
            self.z[sz][:, None, None],
            self.y[sy][None, :, None],
            self.x[sx][None, None, :],
        )

    def paint(
        self,
        shape: ShapeFunction,
        lo_zyx,
        hi_zyx,
        value,
        tissue: Tissue,
        *,
        into: tuple[Tissue, ...] | None = None,
    ) -> np.ndarray | None:
        """Set the voxels inside ``shape`` (within the box ``lo..hi``) to ``value`` and ``tissue``.

        Parameters
        ----------
        shape : callable
            ``shape(z, y, x) -> bool`` on the broadcast body coordinates of the window.
        lo_zyx, hi_zyx : sequence of float
            Bounding box of the shape in body mm ``(z, y, x)``.
        value : float, ndarray or callable
            HU to write: a number, an array of the canvas's shape (read inside the
            window), or ``value(z, y, x) -> float array`` broadcast to the window.
        tissue : Tissue
            Label to write.
        into : tuple of Tissue, optional
            Only overwrite voxels currently labelled with one of these tissues.

        Returns
        -------
        ndarray of bool or None
            The painted mask inside the window (``None`` when the box misses the canvas).
        """
        window = self.window(lo_zyx, hi_zyx)
        if window is None:
            return None
        zz, yy, xx = self.grids(window)
        mask = np.broadcast_to(shape(zz, yy, xx), self.hu[window].shape)
        labels = self.labels[window]
        if into is not None:
            mask = mask & np.isin(labels, np.array(into, dtype=np.uint8))
        if not mask.any():
            return mask
        hu = self.hu[window]
        if callable(value):
            hu[mask] = np.broadcast_to(value(zz, yy, xx), mask.shape)[mask]
        elif isinstance(value, np.ndarray):
            hu[mask] = value[window][mask]
        else:
            hu[mask] = value
        labels[mask] = tissue
        return mask
