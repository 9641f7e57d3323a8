"""The CT volume type shared by every module: HU int16, (z, y, x), lazily loaded."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class CTVolume:
    """A CT (sub-)volume in Hounsfield units, read slice by slice on demand.

    Parameters
    ----------
    volume_id : str
        Stable id, e.g. DeepLesion's ``PPPPPP_SS_SS_aaa-bbb``.
    shape : tuple of int
        ``(Z, Y, X)``.
    spacing : tuple of float
        Voxel spacing ``(sz, sy, sx)`` in mm (``sz`` = slice interval).
    load_slice : callable
        ``load_slice(z) -> ndarray, shape (Y, X), int16`` in HU.
    source : str
        Where the data came from (reader name and path), for messages and the store.
    origin : tuple of float, optional
        Physical position ``(z, y, x)`` of voxel ``[0, 0, 0]`` in mm when the format has one.
    direction : ndarray, shape (3, 3), optional
        Direction cosines (rows: z, y, x axes) when the format has them.
    display_window : tuple of float, optional
        Default ``(min, max)`` HU window for display (DeepLesion ``DICOM_windows``).
    attributes : dict
        Reader-specific extras (``possibly_noisy``, ``train_val_test``, ...).
    cache_slices : int
        Number of decoded slices kept in memory.
    """

    volume_id: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    load_slice: Callable[[int], np.ndarray] = field(repr=False)
    source: str = ""
    origin: tuple[float, float, float] | None = None
    direction: np.ndarray | None = field(default=None, repr=False)
    display_window: tuple[float, float] | None = None
    attributes: dict = field(default_factory=dict)
    cache_slices: int = 64
    _cache: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"{self.volume_id}: shape must be (Z, Y, X) >= 1, got {self.shape}")
        if len(self.spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in self.spacing):
            raise ValueError(
                f"{self.volume_id}: spacing must be 3 finite positive numbers, got {self.spacing}"
            )

    @classmethod
    def from_array(cls, volume_id: str, hu, spacing, **kwargs) -> CTVolume:
        """Wrap an in-memory array of shape ``(Z, Y, X)`` in HU."""
        data = np.asarray(hu)
        if data.ndim != 3:
            raise ValueError(f"{volume_id}: expected a (Z, Y, X) array, got shape {data.shape}")
        data = data.astype(np.int16, copy=False)
        kwargs.setdefault("source", "memory")
        return cls(volume_id, data.shape, spacing, load_slice=data.__getitem__, **kwargs)

    @property
    def num_slices(self) -> int:
        """Number of axial slices ``Z``."""
        return self.shape[0]

    def slice(self, z: int) -> np.ndarray:
        """Axial slice ``z`` in HU, shape ``(Y, X)``, int16 (cached)."""
        z = int(z)
        if not 0 <= z < self.shape[0]:
            raise IndexError(f"{self.volume_id}: slice {z} outside 0..{self.shape[0] - 1}")
        if z in self._cache:
            self._cache.move_to_end(z)
            return self._cache[z]
        image = np.asarray(self.load_slice(z))
        if image.shape != self.shape[1:]:
            raise ValueError(
                f"{self.volume_id} ({self.source}): slice {z} has shape {image.shape}, "
                f"expected {self.shape[1:]}"
            )
        image = image.astype(np.int16, copy=False)
        self._cache[z] = image
        while len(self._cache) > self.cache_slices:
            self._cache.popitem(last=False)
        return image

    def slices(self, zs) -> np.ndarray:
        """Stack of slices ``zs`` in HU, shape ``(len(zs), Y, X)``."""
        return np.stack([self.slice(z) for z in zs])

    def array(self) -> np.ndarray:
        """The whole volume in HU, shape ``(Z, Y, X)``, int16 (loads every slice)."""
        return self.slices(range(self.shape[0]))

    def clear_cache(self) -> None:
        """Drop the decoded slices kept in memory."""
        self._cache.clear()
