"""One synthetic CT sub-volume: anatomy, distractors, lesions, scanner effects and ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_lesion_harvest.geometry import RecistMark
from napari_lesion_harvest.io.deeplesion import subvolume_id
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.synthetic.anatomy import PELVIS_END_Z, Patient, build_anatomy
from napari_lesion_harvest.synthetic.canvas import Canvas, Tissue
from napari_lesion_harvest.synthetic.distractors import add_distractors
from napari_lesion_harvest.synthetic.imaging import acquire
from napari_lesion_harvest.synthetic.lesions import COARSE_TYPES, place_lesions
from napari_lesion_harvest.synthetic.marks import (
    DEFAULT_MARK_FRACTION,
    choose_marked,
    mark_probability,
)
from napari_lesion_harvest.synthetic.truth import LesionTruth, lesion_truth

#: DeepLesion-style display windows (min, max HU) by coarse lesion type.
LUNG_WINDOW = (-1350.0, 150.0)
BONE_WINDOW = (-450.0, 1050.0)
SOFT_TISSUE_WINDOW = (-175.0, 275.0)


@dataclass(frozen=True)
class PhantomConfig:
    """How phantom volumes vary.

    Attributes
    ----------
    size : int
        In-plane size (pixels); the field of view is that of a 512 x 512 scan
        with ``pixel_spacing_512`` spacing, so smaller sizes are coarser.
    slices : tuple of int
        Range (inclusive) of the number of slices of a sub-volume.
    slice_intervals : tuple of float
        Slice intervals (mm) to choose from, with ``slice_interval_weights``.
    pixel_spacing_512 : tuple of float
        Range of the in-plane spacing (mm) at 512 x 512.
    lesions : tuple of int
        Range (inclusive) of the number of lesions drawn per volume.
    noise_std : tuple of float
        Range of the image noise (HU).
    mark_fraction : float
        Mean fraction of lesions with an original mark.
    """

    size: int = 512
    slices: tuple[int, int] = (28, 52)
    slice_intervals: tuple[float, ...] = (1.0, 2.0, 2.5, 5.0)
    slice_interval_weights: tuple[float, ...] = (0.15, 0.3, 0.2, 0.35)
    pixel_spacing_512: tuple[float, float] = (0.6, 0.98)
    lesions: tuple[int, int] = (2, 7)
    noise_std: tuple[float, float] = (8.0, 18.0)
    mark_fraction: float = DEFAULT_MARK_FRACTION

    def __post_init__(self):
        if self.size < 32:
            raise ValueError(f"in-plane size must be at least 32 pixels, got {self.size}")
        if not 1 <= self.slices[0] <= self.slices[1]:
            raise ValueError(f"slices must be a range of positive counts, got {self.slices}")
        if not 0 <= self.lesions[0] <= self.lesions[1]:
            raise ValueError(f"lesions must be a range of counts >= 0, got {self.lesions}")
        if len(self.slice_intervals) != len(self.slice_interval_weights):
            raise ValueError("slice_intervals and slice_interval_weights differ in length")
        if not 0.0 < self.mark_fraction <= 1.0:
            raise ValueError(f"mark_fraction must be in (0, 1], got {self.mark_fraction}")


@dataclass(frozen=True)
class SeriesIdentity:
    """DeepLesion identity of a sub-volume: ``PPPPPP_SS_SS`` and its first slice number."""

    patient_index: int
    study_index: int
    series_index: int
    first_slice: int
    gender: str
    age: int

    @property
    def series(self) -> str:
        """``PPPPPP_SS_SS``."""
        return f"{self.patient_index:06d}_{self.study_index:02d}_{self.series_index:02d}"


@dataclass
class SyntheticVolume:
    """A phantom sub-volume with its full ground truth.

    Attributes
    ----------
    volume : CTVolume
        HU int16, shape ``(Z, Y, X)``; id ``PPPPPP_SS_SS_aaa-bbb``.
    identity : SeriesIdentity
    lesions : list of LesionTruth
        Every lesion; ``marked`` tells which carry an original mark.
    labels : ndarray, shape (Z, Y, X), uint8
        :class:`~.canvas.Tissue` of every voxel (lesions: ``Tissue.LESION``).
    meta : dict
        Generation parameters (phase, noise, body position of the first slice, ...).
    """

    volume: CTVolume
    identity: SeriesIdentity
    lesions: list[LesionTruth]
    labels: np.ndarray = field(repr=False)
    meta: dict = field(default_factory=dict)

    @property
    def volume_id(self) -> str:
        """``PPPPPP_SS_SS_aaa-bbb``."""
        return self.volume.volume_id

    @property
    def original_marks(self) -> list[RecistMark]:
        """RECIST marks of the marked lesions (DL_info's rows for this volume)."""
        return [lesion.recist for lesion in self.lesions if lesion.marked]

    @property
    def all_marks(self) -> list[RecistMark]:
        """RECIST marks of every lesion (the complete annotation)."""
        return [lesion.recist for lesion in self.lesions]


def _display_window(coarse_type: int) -> tuple[float, float]:
    if coarse_type == COARSE_TYPES["lung"]:
        return LUNG_WINDOW
    if coarse_type == COARSE_TYPES["bone"]:
        return BONE_WINDOW
    return SOFT_TISSUE_WINDOW


def _body_position(z_mm: float) -> float:
    """Normalised cranio-caudal position, like DeepLesion's body-part regression score."""
    return 0.3 + 0.45 * float(np.clip(z_mm / PELVIS_END_Z, 0.0, 1.0))


def _normalized_location(labels: np.ndarray, truth: LesionTruth, z_mm: float) -> tuple[float, ...]:
    """Lesion centre relative to the body's bounding box on its key slice, and body position."""
    body = labels[truth.recist.z] > Tissue.TABLE
    ys, xs = np.nonzero(body)
    cx, cy = truth.recist.endpoints.mean(axis=0)
    nx = (cx - xs.min()) / max(float(xs.max() - xs.min()), 1.0)
    ny = (cy - ys.min()) / max(float(ys.max() - ys.min()), 1.0)
    return (round(float(nx), 6), round(float(ny), 6), round(_body_position(z_mm), 6))


def generate_volume(
    rng: np.random.Generator,
    identity: SeriesIdentity,
    *,
    config: PhantomConfig | None = None,
) -> SyntheticVolume:
    """Generate one phantom sub-volume.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness: the same generator state gives the
        same volume, byte for byte.
    identity : SeriesIdentity
        Patient/study/series numbers and the first slice number.
    config : PhantomConfig

    Returns
    -------
    SyntheticVolume
    """
    config = config or PhantomConfig()
    patient = Patient.sample(rng)
    size = config.size
    n_slices = int(rng.integers(config.slices[0], config.slices[1] + 1))
    weights = np.asarray(config.slice_interval_weights, dtype=np.float64)
    interval = float(
        config.slice_intervals[int(rng.choice(len(weights), p=weights / weights.sum()))]
    )
    needed = (2 * patient.half_width * 1.06 + 30.0) / 512.0
    low = min(max(config.pixel_spacing_512[0], needed), config.pixel_spacing_512[1])
    fov_mm = 4.0 * round(rng.uniform(low, config.pixel_spacing_512[1]) * 128.0)
    spacing_xy = fov_mm / size
    region = rng.choice(3, p=[0.4, 0.45, 0.15])
    z_center = rng.uniform(*((40.0, 240.0), (240.0, 470.0), (470.0, 620.0))[region])
    z_start = z_center - (n_slices - 1) * interval / 2.0
    y_offset = float(
        np.clip(rng.uniform(0, 25), 0.92 * patient.half_depth + 40.0 - fov_mm / 2, 30.0)
    )
    canvas = Canvas.empty(
        (n_slices, size, size),
        (interval, spacing_xy, spacing_xy),
        z_start_mm=z_start,
        y_offset_mm=y_offset,
    )
    frame = build_anatomy(canvas, patient, rng)
    add_distractors(canvas, rng)
    placed = place_lesions(
        canvas, frame, rng, int(rng.integers(config.lesions[0], config.lesions[1] + 1))
    )
    noise_std = float(rng.uniform(*config.noise_std))
    hu = acquire(canvas.hu, rng, noise_std=noise_std, blur_px=max(0.5, 0.45 / spacing_xy))
    lesions = [
        lesion_truth(
            p.mask,
            p.window,
            lesion_id=i,
            kind=p.kind,
            coarse_type=p.coarse_type,
            diameter_mm=round(p.diameter_mm, 3),
            contrast_hu=round(p.contrast_hu, 3),
            conspicuity=round(p.conspicuity, 3),
        )
        for i, p in enumerate(placed)
    ]
    probability = mark_probability(
        config.mark_fraction, range(config.lesions[0], config.lesions[1] + 1)
    )
    marked = choose_marked([t.conspicuity for t in lesions], rng, probability=probability)
    for truth, is_marked in zip(lesions, marked, strict=True):
        truth.marked = bool(is_marked)
        z_mm = float(canvas.z[truth.recist.z])
        truth.meta["normalized_location"] = _normalized_location(canvas.labels, truth, z_mm)
        truth.meta["dicom_window"] = _display_window(truth.coarse_type)
    last_slice = identity.first_slice + n_slices - 1
    volume_id = subvolume_id(identity.series, identity.first_slice, last_slice)
    window = lesions[0].meta["dicom_window"] if lesions else SOFT_TISSUE_WINDOW
    volume = CTVolume.from_array(
        volume_id,
        hu,
        (interval, spacing_xy, spacing_xy),
        source="synthetic phantom",
        display_window=window,
        attributes={"slice_range": (identity.first_slice, last_slice)},
    )
    meta = {
        "phase": patient.phase,
        "noise_std_hu": round(noise_std, 3),
        "body_z_start_mm": round(float(z_start), 3),
        "fov_mm": fov_mm,
    }
    return SyntheticVolume(volume, identity, lesions, canvas.labels, meta)
