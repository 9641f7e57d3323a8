"""Patches around a 3D proposal: axial, coronal and sagittal planes, or a sub-volume.

Every patch covers the same cube of physical space around the proposal centre:
the proposal's extent padded by ``pad_px`` in-plane pixels on each side (along
z the same physical distance, ``pad_px`` times the in-plane spacing), made
cubic by taking the largest half-width of the three axes. The cube is sampled
on an isotropic grid of ``size`` points per axis, so a lesion keeps its
physical proportions in every view although the slice interval differs from the
in-plane spacing. Where the cube reaches outside the volume, ``PatchSpec.outside``
says what the patch shows there:

``air``     -1024 HU (the paper's crops). Near a sub-volume end the coronal and
            sagittal views show a band of air whose height is the distance to
            the end, so the patch tells the classifier where the proposal lies.
``mirror``  the volume mirrored at its faces (whole-sample symmetric, repeated
            as often as needed): the patch shows tissue whatever the proposal's
            place, and a proposal near an end differs from one in the middle
            only by what the volume holds around it.

Intensities go
through the LPG's :func:`~napari_lesion_harvest.lpg.preprocess.window_hu` with the
spec's HU window (by default the paper's [-1024, 3071]) and the LPG's mean
(:func:`lpc_window`).

Only the slices the requested planes cross are read from the (lazy) volume, each
once per call.

View layouts (rows, columns), all in increasing index order:

``axial``    (y, x) through the centre slice
``coronal``  (z, x) through the centre row
``sagittal`` (z, y) through the centre column
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpg.config import CONFIGS
from napari_lesion_harvest.lpg.preprocess import checked_hu_window, window_hu

_LPG_CONFIG = CONFIGS["paper"]
#: The paper's HU window (the LPG's), the LPC's default.
PAPER_HU_WINDOW = tuple(float(v) for v in _LPG_CONFIG.hu_window)
#: HU written outside the volume: the low end of the paper's window (air).
AIR_HU = PAPER_HU_WINDOW[0]

#: What a patch shows outside the volume (see the module docstring), the paper's first.
OUTSIDE_FILLS = ("air", "mirror")
#: The three planes, in the order the multi-view model stacks them.
VIEW_NAMES = ("axial", "coronal", "sagittal")
#: Default side of a 2D patch in pixels (the `paper` preset's; the paper does not give it).
DEFAULT_PATCH_SIZE = 128
#: Default context around the proposal, in in-plane pixels (the paper's 64).
DEFAULT_PAD_PX = 64.0

# For each view: which volume axes (0 = z, 1 = y, 2 = x) the rows and columns follow.
_VIEW_AXES = {"axial": (1, 2), "coronal": (0, 2), "sagittal": (0, 1)}


def lpc_window(hu, window: tuple[float, float] = PAPER_HU_WINDOW) -> np.ndarray:
    """The LPG's intensity mapping: HU clipped to ``window``, scaled to [0, 255], minus 50.

    Parameters
    ----------
    hu : array_like, any shape
    window : (float, float), optional
        Low and high HU (default: the paper's [-1024, 3071]).

    Returns
    -------
    ndarray, float32, same shape
    """
    return window_hu(hu, window=window, mean=_LPG_CONFIG.pixel_mean)


@dataclass(frozen=True)
class PatchSpec:
    """What a classifier reads around each proposal.

    Attributes
    ----------
    kind : {"views", "cube"}
        2D planes through the centre, or a 3D sub-volume.
    views : tuple of str
        Planes (subset of :data:`VIEW_NAMES`, in that order) for ``kind="views"``.
    size : int
        Samples per patch axis.
    pad_px : float
        Context around the proposal extent, in in-plane pixels.
    hu_window : (float, float)
        HU window of the intensities (:func:`lpc_window`); a soft-tissue window
        spreads the 10-80 HU contrast of organ lesions over more grey levels.
    outside : {"air", "mirror"}
        What the patch shows where it reaches outside the volume (module docstring).
    """

    kind: str = "views"
    views: tuple[str, ...] = VIEW_NAMES
    size: int = DEFAULT_PATCH_SIZE
    pad_px: float = DEFAULT_PAD_PX
    hu_window: tuple[float, float] = PAPER_HU_WINDOW
    outside: str = "air"

    def __post_init__(self):
        if self.kind not in ("views", "cube"):
            raise ValueError(f"patch kind must be 'views' or 'cube', got {self.kind!r}")
        if self.outside not in OUTSIDE_FILLS:
            raise ValueError(f"outside must be one of {OUTSIDE_FILLS}, got {self.outside!r}")
        views = tuple(self.views)
        unknown = [v for v in views if v not in VIEW_NAMES]
        if self.kind == "views" and (not views or unknown):
            raise ValueError(f"views must be a non-empty subset of {VIEW_NAMES}, got {views}")
        if int(self.size) < 2:
            raise ValueError(f"patch size must be >= 2, got {self.size}")
        if not self.pad_px >= 0:
            raise ValueError(f"pad_px must be >= 0, got {self.pad_px}")
        object.__setattr__(self, "hu_window", checked_hu_window(self.hu_window, "hu_window"))
        object.__setattr__(self, "views", views)
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "pad_px", float(self.pad_px))

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one proposal's patch: ``(V, S, S)`` or ``(S, S, S)``."""
        if self.kind == "cube":
            return (self.size,) * 3
        return (len(self.views), self.size, self.size)


def proposal_field_of_view(
    proposal: Proposal3D, spacing, *, pad_px: float = DEFAULT_PAD_PX
) -> tuple[np.ndarray, float]:
    """Centre and half-width of the cube a proposal's patches cover.

    Parameters
    ----------
    proposal : Proposal3D
    spacing : (float, float, float)
        Voxel spacing ``(sz, sy, sx)`` in mm.
    pad_px : float, optional
        Context on each side in in-plane pixels; along z the same distance in mm.

    Returns
    -------
    centre : ndarray, shape (3,)
        Centre ``(z, y, x)`` in voxel coordinates.
    half_mm : float
        Half the side of the cube in mm.
    """
    sz, sy, sx = (float(s) for s in spacing)
    x1, y1, z1, x2, y2, z2 = proposal.box_3d
    centre = np.array([(z1 + z2) / 2, (y1 + y2) / 2, (x1 + x2) / 2])
    pad_mm = pad_px * (sy + sx) / 2
    half_extents = (
        (z2 - z1) / 2 * sz + pad_mm,
        (y2 - y1) / 2 * sy + pad_px * sy,
        (x2 - x1) / 2 * sx + pad_px * sx,
    )
    return centre, max(max(half_extents), 0.5 * min(sz, sy, sx))


def _sample_grids(centre, half_mm, spacing, spec: PatchSpec) -> list[np.ndarray]:
    """Voxel coordinates of every sample: one ``(3, ...)`` array per view or one cube."""
    size = spec.size
    offsets_mm = ((np.arange(size) + 0.5) / size * 2.0 - 1.0) * half_mm
    axis_coords = [centre[a] + offsets_mm / spacing[a] for a in range(3)]
    if spec.kind == "cube":
        return [np.stack(np.meshgrid(*axis_coords, indexing="ij"))]
    grids = []
    for view in spec.views:
        row_axis, col_axis = _VIEW_AXES[view]
        rows, cols = np.meshgrid(axis_coords[row_axis], axis_coords[col_axis], indexing="ij")
        grid = np.empty((3, size, size))
        grid[:] = np.asarray(centre)[:, None, None]
        grid[row_axis], grid[col_axis] = rows, cols
        grids.append(grid)
    return grids


def _mirrored_into(grid: np.ndarray, shape) -> np.ndarray:
    """``grid`` (voxel coordinates, ``(3, ...)``) reflected into the volume: each axis
    folded whole-sample symmetrically about its first and last voxel, repeatedly."""
    folded = np.empty_like(grid)
    for axis, n in enumerate(shape):
        if n == 1:
            folded[axis] = 0.0
            continue
        period = 2.0 * (n - 1)
        phase = np.mod(grid[axis], period)
        folded[axis] = np.where(phase <= n - 1, phase, period - phase)
    return folded


def _grid_bounds(grids: Sequence[np.ndarray], shape) -> list:
    """Per grid, the ``(lo, hi)`` voxel block (``(3,)`` int arrays, inclusive) its
    trilinear samples read, or None when the grid lies wholly outside the volume."""
    upper = np.asarray(shape) - 1
    bounds = []
    for grid in grids:
        flat = grid.reshape(3, -1)
        lo = np.clip(np.floor(flat.min(axis=1)).astype(int), 0, upper)
        hi = np.clip(np.floor(flat.max(axis=1)).astype(int) + 1, 0, upper)
        inside = np.all(flat.max(axis=1) > -1) and np.all(flat.min(axis=1) < upper + 1)
        bounds.append((lo, hi) if inside else None)
    return bounds


class SliceWindow:
    """The slices of a volume that the remaining proposals need, each read once.

    Proposals are visited in the order of the first slice they read; a slice
    below the first slice of every proposal still to visit is released.
    """

    def __init__(self, volume: CTVolume):
        self.volume = volume
        self.held: dict[int, np.ndarray] = {}

    def get(self, z: int) -> np.ndarray:
        if z not in self.held:
            self.held[z] = self.volume.slice(z)
        return self.held[z]

    def release_below(self, z: int) -> None:
        for held in [k for k in self.held if k < z]:
            del self.held[held]


def _sample_blocks(slices: SliceWindow, grids, bounds) -> list[np.ndarray]:
    """Trilinear samples (HU, float32) at each coordinate grid, from its block of voxels."""
    from scipy.ndimage import map_coordinates

    samples = []
    for grid, b in zip(grids, bounds, strict=True):
        if b is None:
            samples.append(np.full(grid.shape[1:], AIR_HU, dtype=np.float32))
            continue
        (z0, y0, x0), (z1, y1, x1) = b
        block = np.stack([slices.get(z)[y0 : y1 + 1, x0 : x1 + 1] for z in range(z0, z1 + 1)])
        local = grid - b[0].reshape((3,) + (1,) * (grid.ndim - 1))
        samples.append(
            map_coordinates(
                block.astype(np.float32, copy=False),
                local,
                order=1,
                mode="grid-constant",
                cval=AIR_HU,
            )
        )
    return samples


def extract_patches(
    volume: CTVolume,
    proposals: Sequence[Proposal3D],
    spec: PatchSpec = PatchSpec(),
    *,
    windowed: bool = True,
) -> np.ndarray:
    """Patches of every proposal of one volume, ready for the classifier.

    Parameters
    ----------
    volume : CTVolume
        The (lazily loaded) volume the proposals belong to.
    proposals : sequence of Proposal3D
    spec : PatchSpec, optional
        Views or cube, patch size, context, HU window and what lies outside the volume.
    windowed : bool, optional
        Apply :func:`lpc_window` (default); otherwise return HU.

    Returns
    -------
    ndarray, float32, shape (N, V, S, S) for views or (N, S, S, S) for a cube
        Views in ``spec.views`` order with the layouts given in the module
        docstring; cubes as ``(z, y, x)``.
    """
    spacing = np.asarray(volume.spacing, dtype=np.float64)
    out = np.empty((len(proposals),) + spec.shape, dtype=np.float32)
    grids = []
    for proposal in proposals:
        centre, half_mm = proposal_field_of_view(proposal, spacing, pad_px=spec.pad_px)
        proposal_grids = _sample_grids(centre, half_mm, spacing, spec)
        if spec.outside == "mirror":
            proposal_grids = [_mirrored_into(g, volume.shape) for g in proposal_grids]
        grids.append(proposal_grids)
    bounds = [_grid_bounds(g, volume.shape) for g in grids]
    first_slice = [min((b[0][0] for b in bs if b is not None), default=0) for bs in bounds]
    order = sorted(range(len(proposals)), key=first_slice.__getitem__)
    slices = SliceWindow(volume)
    for rank, i in enumerate(order):
        samples = _sample_blocks(slices, grids[i], bounds[i])
        out[i] = samples[0] if spec.kind == "cube" else np.stack(samples)
        if rank + 1 < len(order):
            slices.release_below(first_slice[order[rank + 1]])
    return lpc_window(out, spec.hu_window) if windowed else out
