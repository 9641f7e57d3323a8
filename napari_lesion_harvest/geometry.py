"""Boxes, RECIST marks, IoU and 3D proposals: the one place for coordinate conventions.

Conventions (used by every module of the package)
-------------------------------------------------
* Volumes are arrays of shape ``(Z, Y, X)``: axial slice, row, column.
* A pixel coordinate ``(x, y)`` is the centre of array element ``[y, x]``
  (0-based, x = column, y = row). DeepLesion's ``DL_info.csv`` and the
  DeepLesionAnnotation pickles use exactly these coordinates (no -1 shift),
  and so does napari's data coordinate system for an image layer.
* Slice indices ``z`` are 0-based inside a (sub-)volume. DeepLesion's
  ``Key_slice_index`` and ``Slice_range`` are 1-based file numbers; use
  :func:`key_slice_to_index` / :func:`index_to_key_slice`.
* Box modes are named explicitly (as in MONAI):

  ``xyxy``
      2D box ``(x1, y1, x2, y2)``: DeepLesion ``Bounding_boxes``.
  ``xyzxyz``
      3D box ``(x1, y1, z1, x2, y2, z2)``: this package's 3D box.
  ``xyxyzz``
      3D box ``(x1, y1, x2, y2, z1, z2)``: DeepLesionAnnotation ``3D-Box.pkl``.

  Corners are inclusive pixel coordinates. IoU uses either continuous
  widths ``x2 - x1`` or the released evaluation's pixel convention
  ``x2 - x1 + 1`` (``plus_one=True``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Padding (pixels) that DeepLesion adds around the RECIST endpoints to make a box.
RECIST_BOX_PADDING = 5.0
#: Tolerated angle range (degrees) between long and short axes: real DeepLesion marks
#: are only roughly perpendicular (79.5 to 90 degrees in the example rows).
RECIST_ANGLE_RANGE_DEG = (75.0, 90.0)


# --------------------------------------------------------------------------- slices


def key_slice_to_index(key_slice: int, first_slice: int) -> int:
    """Convert a 1-based DeepLesion slice number to a 0-based index in its sub-volume.

    Parameters
    ----------
    key_slice : int
        ``Key_slice_index`` (1-based file number, ``KKK`` in ``KKK.png``).
    first_slice : int
        First slice of the ``Slice_range`` (1-based, inclusive).

    Returns
    -------
    int
        ``key_slice - first_slice``; this is the ``z`` of the paper's pickles.
    """
    return int(key_slice) - int(first_slice)


def index_to_key_slice(z: int, first_slice: int) -> int:
    """Inverse of :func:`key_slice_to_index`."""
    return int(z) + int(first_slice)


# --------------------------------------------------------------------------- boxes


def as_boxes(boxes, width: int = 4) -> np.ndarray:
    """Return ``boxes`` as a float64 array of shape ``(N, width)`` (``(0, width)`` if empty)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, width), dtype=np.float64)
    return arr.reshape(-1, width)


def xyxyzz_to_xyzxyz(boxes) -> np.ndarray:
    """Convert 3D boxes from ``(x1, y1, x2, y2, z1, z2)`` to ``(x1, y1, z1, x2, y2, z2)``.

    Parameters
    ----------
    boxes : array_like, shape (N, 6)

    Returns
    -------
    ndarray, shape (N, 6)
    """
    arr = as_boxes(boxes, 6)
    return arr[:, [0, 1, 4, 2, 3, 5]]


def xyzxyz_to_xyxyzz(boxes) -> np.ndarray:
    """Convert 3D boxes from ``(x1, y1, z1, x2, y2, z2)`` to ``(x1, y1, x2, y2, z1, z2)``."""
    arr = as_boxes(boxes, 6)
    return arr[:, [0, 1, 3, 4, 2, 5]]


def box_area(boxes, *, plus_one: bool = False) -> np.ndarray:
    """Areas of 2D ``xyxy`` boxes, shape ``(N,)``; ``plus_one`` adds 1 to width and height."""
    arr = as_boxes(boxes)
    extra = 1.0 if plus_one else 0.0
    return np.prod(np.clip(arr[:, 2:] - arr[:, :2] + extra, 0, None), axis=1)


def _pairwise_iou(
    boxes_a, boxes_b, ndim: int, plus_one: bool, elementwise: bool = False
) -> np.ndarray:
    """IoU of axis-aligned boxes given as ``(lo_1..lo_ndim, hi_1..hi_ndim)``.

    All pairs ``(N, M)``, or with ``elementwise`` row ``i`` against row ``i`` ``(N,)``.
    """
    a = as_boxes(boxes_a, 2 * ndim)
    b = as_boxes(boxes_b, 2 * ndim)
    if elementwise:
        if a.shape != b.shape:
            raise ValueError(f"elementwise IoU needs equal box counts, got {len(a)} and {len(b)}")
    else:
        a, b = a[:, None, :], b[None, :, :]
    extra = 1.0 if plus_one else 0.0
    lo_a, hi_a, lo_b, hi_b = a[..., :ndim], a[..., ndim:], b[..., :ndim], b[..., ndim:]
    inter = np.prod(np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b) + extra, 0, None), -1)
    size_a = np.prod(np.clip(hi_a - lo_a + extra, 0, None), axis=-1)
    size_b = np.prod(np.clip(hi_b - lo_b + extra, 0, None), axis=-1)
    union = size_a + size_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def iou_2d(boxes_a, boxes_b, *, plus_one: bool = False, elementwise: bool = False) -> np.ndarray:
    """Pairwise IoU of 2D boxes.

    Parameters
    ----------
    boxes_a : array_like, shape (N, 4)
        ``xyxy`` boxes.
    boxes_b : array_like, shape (M, 4)
        ``xyxy`` boxes.
    plus_one : bool, optional
        Use the pixel convention ``w = x2 - x1 + 1`` (DeepLesion's released
        evaluation) instead of continuous widths.
    elementwise : bool, optional
        IoU of row ``i`` of ``boxes_a`` with row ``i`` of ``boxes_b`` only
        (``N == M``), shape ``(N,)``.

    Returns
    -------
    ndarray, shape (N, M), or (N,) with ``elementwise``
        IoU in [0, 1]; 0 where the union is empty.
    """
    return _pairwise_iou(boxes_a, boxes_b, 2, plus_one, elementwise)


def iou_3d(boxes_a, boxes_b, *, plus_one: bool = False, elementwise: bool = False) -> np.ndarray:
    """Pairwise IoU of 3D ``xyzxyz`` boxes, shape ``(N, M)`` (``(N,)`` with ``elementwise``).

    With ``plus_one`` every extent (x, y and z) is ``hi - lo + 1``, so a box
    on one slice (``z1 == z2``) has depth 1.
    """
    return _pairwise_iou(boxes_a, boxes_b, 3, plus_one, elementwise)


def clip_boxes(boxes, image_shape_yx) -> np.ndarray:
    """Clip ``xyxy`` boxes to an image of shape ``(Y, X)`` (pixel centres 0..X-1, 0..Y-1)."""
    arr = as_boxes(boxes).copy()
    height, width = image_shape_yx
    arr[:, [0, 2]] = np.clip(arr[:, [0, 2]], 0, width - 1)
    arr[:, [1, 3]] = np.clip(arr[:, [1, 3]], 0, height - 1)
    return arr


# --------------------------------------------------------------------------- RECIST


@dataclass(frozen=True)
class RecistMark:
    """A RECIST measurement on one axial slice.

    Attributes
    ----------
    z : int
        Slice index, 0-based inside the volume.
    long_axis : ndarray, shape (2, 2)
        Endpoints ``[[x1, y1], [x2, y2]]`` of the long axis, pixel coordinates.
    short_axis : ndarray, shape (2, 2)
        Endpoints ``[[x1, y1], [x2, y2]]`` of the short axis, pixel coordinates.
    """

    z: int
    long_axis: np.ndarray
    short_axis: np.ndarray

    def __post_init__(self):
        for name in ("long_axis", "short_axis"):
            arr = np.asarray(getattr(self, name), dtype=np.float64).reshape(2, 2)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"RECIST {name} has non-finite coordinates: {arr.tolist()}")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "z", int(self.z))

    @classmethod
    def from_measurement_coordinates(cls, values, z: int) -> RecistMark:
        """Build a mark from DL_info's 8 ``Measurement_coordinates``.

        Parameters
        ----------
        values : array_like, shape (8,)
            Long axis ``x1, y1, x2, y2`` then short axis ``x1, y1, x2, y2``.
        z : int
            0-based slice index inside the volume.
        """
        arr = np.asarray(values, dtype=np.float64).ravel()
        if arr.size != 8:
            raise ValueError(f"a RECIST mark needs 8 coordinates, got {arr.size}")
        return cls(z=z, long_axis=arr[:4].reshape(2, 2), short_axis=arr[4:].reshape(2, 2))

    @classmethod
    def from_box(cls, box, z: int, *, padding: float = RECIST_BOX_PADDING) -> RecistMark:
        """A cross-shaped mark whose :meth:`box` is ``box``, for files that hold boxes only.

        The paper's 2D pickles keep boxes, not RECIST endpoints. The mark made
        here has a horizontal and a vertical axis through the box centre,
        spanning the box shrunk by ``padding``, so ``from_box(b, z).box() == b``.
        Its "long" axis is the longer of the two.

        Parameters
        ----------
        box : array_like, shape (4,)
            ``xyxy`` box in pixel coordinates.
        z : int
            0-based slice index.
        """
        x1, y1, x2, y2 = np.asarray(box, dtype=np.float64).ravel()[:4] + [
            padding,
            padding,
            -padding,
            -padding,
        ]
        if x2 < x1 or y2 < y1:
            raise ValueError(f"box {box} is smaller than twice the padding {padding}")
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        horizontal = [[x1, cy], [x2, cy]]
        vertical = [[cx, y1], [cx, y2]]
        if x2 - x1 >= y2 - y1:
            return cls(z=z, long_axis=horizontal, short_axis=vertical)
        return cls(z=z, long_axis=vertical, short_axis=horizontal)

    def measurement_coordinates(self) -> np.ndarray:
        """The 8 DL_info ``Measurement_coordinates``, shape ``(8,)``."""
        return np.concatenate([self.long_axis.ravel(), self.short_axis.ravel()])

    @property
    def endpoints(self) -> np.ndarray:
        """All four endpoints, shape ``(4, 2)`` as ``(x, y)``."""
        return np.vstack([self.long_axis, self.short_axis])

    def diameters_px(self) -> tuple[float, float]:
        """Lengths of the long and short axes in pixels (DL_info ``Lesion_diameters_Pixel_``)."""
        return (
            float(np.linalg.norm(self.long_axis[1] - self.long_axis[0])),
            float(np.linalg.norm(self.short_axis[1] - self.short_axis[0])),
        )

    def diameters_mm(self, pixel_spacing_yx) -> tuple[float, float]:
        """Lengths of the long and short axes in mm given the in-plane spacing ``(sy, sx)``."""
        scale = np.asarray(pixel_spacing_yx, dtype=np.float64)[::-1]  # (sx, sy)
        return (
            float(np.linalg.norm((self.long_axis[1] - self.long_axis[0]) * scale)),
            float(np.linalg.norm((self.short_axis[1] - self.short_axis[0]) * scale)),
        )

    def axis_angle_deg(self) -> float:
        """Angle between the two axes in degrees, in [0, 90]."""
        u = self.long_axis[1] - self.long_axis[0]
        v = self.short_axis[1] - self.short_axis[0]
        norm = np.linalg.norm(u) * np.linalg.norm(v)
        if norm == 0:
            return 0.0
        cos = abs(float(np.dot(u, v))) / norm
        return float(np.degrees(np.arccos(np.clip(cos, 0.0, 1.0))))

    def is_perpendicular(self, *, min_angle_deg: float = RECIST_ANGLE_RANGE_DEG[0]) -> bool:
        """Whether the axes are perpendicular within tolerance (real marks: 79.5 to 90 deg)."""
        return self.axis_angle_deg() >= min_angle_deg

    def box(self, *, padding: float = RECIST_BOX_PADDING, image_shape_yx=None) -> np.ndarray:
        """The 2D ``xyxy`` box: min/max of the endpoints padded by ``padding`` px.

        This reproduces DL_info's ``Bounding_boxes``. With ``image_shape_yx``
        the box is clipped to the image.

        Returns
        -------
        ndarray, shape (4,)
        """
        pts = self.endpoints
        box = np.concatenate([pts.min(axis=0) - padding, pts.max(axis=0) + padding])
        if image_shape_yx is not None:
            box = clip_boxes(box, image_shape_yx)[0]
        return box


# --------------------------------------------------------------------------- 3D proposals


@dataclass
class Proposal3D:
    """A 3D lesion proposal: a tracklet of 2D boxes on consecutive slices.

    Attributes
    ----------
    slices : ndarray of int, shape (K,)
        Slice indices ``z`` (0-based, increasing) the proposal spans.
    boxes : ndarray, shape (K, 4)
        ``xyxy`` box on each slice, pixel coordinates.
    scores : ndarray, shape (K,)
        LPG objectness of each 2D box.
    """

    slices: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.slices = np.asarray(self.slices, dtype=np.int64).ravel()
        self.boxes = as_boxes(self.boxes)
        self.scores = np.asarray(self.scores, dtype=np.float64).ravel()
        k = len(self.slices)
        if k == 0 or self.boxes.shape[0] != k or self.scores.shape[0] != k:
            raise ValueError(
                f"a 3D proposal needs K >= 1 slices with one box and one score each; got "
                f"{k} slices, {self.boxes.shape[0]} boxes, {self.scores.shape[0]} scores"
            )
        order = np.argsort(self.slices, kind="stable")
        self.slices = self.slices[order]
        self.boxes = self.boxes[order]
        self.scores = self.scores[order]

    @property
    def s_g(self) -> float:
        """Objectness of the proposal: the highest 2D score (the paper's s_g)."""
        return float(self.scores.max())

    @property
    def best_index(self) -> int:
        """Position (in ``slices``) of the highest-objectness slice."""
        return int(np.argmax(self.scores))

    @property
    def best_slice(self) -> int:
        """The slice ``z`` with the highest 2D score."""
        return int(self.slices[self.best_index])

    @property
    def best_box(self) -> np.ndarray:
        """The ``xyxy`` box on the highest-objectness slice, shape ``(4,)``."""
        return self.boxes[self.best_index]

    @property
    def box_3d(self) -> np.ndarray:
        """Enclosing ``xyzxyz`` box ``(x1, y1, z1, x2, y2, z2)``, shape ``(6,)``."""
        lo = self.boxes[:, :2].min(axis=0)
        hi = self.boxes[:, 2:].max(axis=0)
        return np.array([lo[0], lo[1], self.slices.min(), hi[0], hi[1], self.slices.max()])

    def box_on_slice(self, z: int) -> np.ndarray | None:
        """The ``xyxy`` box on slice ``z`` or ``None`` when the proposal has none there."""
        hit = np.flatnonzero(self.slices == z)
        return self.boxes[hit[0]] if hit.size else None
