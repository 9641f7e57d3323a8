"""Configuration of a harvest round: named presets (`lite`, `paper`) or a JSON file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from napari_lesion_harvest.harvest.hard_negatives import (
    HARD_NEGATIVE_MIN_OBJECTNESS,
    HARD_NEGATIVES_PER_VOLUME,
)
from napari_lesion_harvest.harvest.threshold import HARVEST_PRECISION
from napari_lesion_harvest.harvest.training_sets import FINE_TUNING_SLICE_CHOICES
from napari_lesion_harvest.lpc.patches import DEFAULT_PAD_PX
from napari_lesion_harvest.lpg.data import Augmentation
from napari_lesion_harvest.lpg.preprocess import checked_hu_window

#: Smallest LPG training crop: a few of the heads' stride-4 cells around a lesion.
MIN_LPG_CROP_PX = 32


@dataclass(frozen=True)
class RoundConfig:
    """Every setting of a harvest round, with the paper's values as defaults.

    Attributes
    ----------
    lpg_config : str
        LPG architecture preset: ``"paper"`` (DenseNet-121, 512 px) or ``"lite"`` (CPU).
    lpg_max_side : int or None
        Longest side (pixels) of the LPG's resampled slices; None keeps the
        preset's (paper 512, lite 256). Smaller is faster and coarser.
    lpg_hu_window : (float, float) or None
        HU window of the LPG's input; None keeps the preset's (the paper's
        [-1024, 3071]). A narrow soft-tissue window helps a small network trained
        for minutes on a CPU (see ``demo_config``).
    lpg_zoom_range : (float, float)
        Range of the random in-plane zoom of the LPG's training slices
        (CenterNet's 0.6-1.4, which the paper follows; a model trained for only
        a few dozen steps learns faster with a narrower range).
    lpg_flip_probability : float
        Probability of mirroring an LPG training slice left to right (CenterNet's
        0.5; 0 turns the flip off).
    lpg_train_steps, lpg_finetune_steps : int
        Optimiser steps to train the LPG in round 1 and to fine-tune it later.
    lpg_batch_size : int
        Slices per LPG training step.
    lpg_learning_rate : float
        Peak AdamW learning rate of the LPG.
    lpg_finetune_learning_rate : float or None
        Peak learning rate of the later rounds' fine-tuning; None uses
        ``lpg_learning_rate`` (the paper gives no separate value).
    lpg_crop_px : int or None
        Train the LPG on square windows of this side (pixels of the resampled
        slice, rounded down to a multiple of 16) placed around a random box of
        the slice, instead of on whole slices; scanning still sees whole slices.
        Lets a CPU train at a fine resolution (``lpg_max_side``) for the cost of
        a coarse one. None: whole slices (the paper).
    scan_batch_size : int
        Target slices per LPG forward pass when scanning volumes (GPU memory
        grows with it; the network runs in bfloat16 on CUDA).
    score_threshold : float
        t_G: 2D boxes below this objectness are not stacked (paper: 0.1).
    link_iou : float
        IoU above which 2D boxes of consecutive slices are linked (paper: 0.8).
    fuse_iou : float
        IoU from which two tracklets that touch after extending each by one
        slice are fused into one proposal (paper: 0.8).
    duplicate_iou : float
        A 3D proposal overlapping a stronger one on a shared slice by this IoU
        is dropped as a duplicate (not in the paper; > 1 keeps all).
    match_iou : float
        P3D IoU at which a proposal hits a RECIST mark (paper: 0.5).
    lpg_crossing_positives : bool
        When fine-tuning, draw every positive proposal as a positive on each
        LPG training slice it crosses, not only on its best slice (not in the
        paper, where a known lesion is background on those slices).
    lpg_ignore_unmarked_background : bool
        When fine-tuning, a training slice of a volume outside ``V_M`` (``V_H``,
        and ``V_H_test`` with its original marks) that holds no positive (only
        hard negatives) supervises the LPG only on its hard negatives: its
        other pixels may show lesions nobody marked, so they are not taught as
        background (not in the paper, which teaches them as background).
    lpg_finetune_slices : str
        Which fine-tuning slices the LPG draws, and how often: ``"all"`` once
        each (the paper); ``"balanced"``: those with a positive repeated until
        they make about half of the draws; ``"with_positive"``: only those (see
        :func:`~napari_lesion_harvest.harvest.training_sets.drawn_fine_tuning_slices`).
    exclude_lesion_pieces : bool
        Leave out of the LPG's and LPC's negatives every P_neg_M and P_neg_H
        proposal that lies on a marked lesion away from its RECIST slice, or
        offset on it (a piece of the lesion, which the P3D rule calls a miss;
        not in the paper, which trains on them as negatives). Such proposals
        also stay out of the V_M scores that set the harvest threshold.
    lpc_variant : str
        ``"multiview"`` (paper), ``"axial"`` or ``"3d"``.
    lpc_epochs : int
        Maximum LPC training epochs (early stopping may end sooner).
    lpc_patch_size : int
        Side of each LPC view patch in pixels.
    lpc_pad_px : float
        Context around a proposal in its LPC patches, in in-plane pixels of the
        volume (paper: 64, on DeepLesion's 512 x 512 slices; scale it with the
        image size to keep the same context in mm on coarser images).
    lpc_width : str
        ``"paper"`` (ResNet-18) or ``"lite"`` (narrower, for CPU).
    lpc_hu_window : (float, float) or None
        HU window of the LPC's patches; None: the paper's [-1024, 3071], whatever
        ``lpg_hu_window`` is (on the phantom, the LPG's soft-tissue window for the
        LPC too gave no gain over 3 rounds; docs/performance.md, session 11).
    harvest_precision : float
        Precision on V_M the harvest threshold must reach (paper: 0.95).
    threshold_mode : str
        ``"out_of_fold"`` (honest, default) or ``"in_sample"`` (the paper's choice).
    folds : int
        Folds of the out-of-fold V_M scores.
    hard_negative_min_objectness : float
        Non-harvested proposals with s_g at least this are hard negatives (paper: 0.5).
    hard_negatives_per_volume : int
        Plus, per sub-volume, up to this many top-s_g proposals (paper: 5).
    max_rounds : int
        Round limit of ``lesion-harvest round`` (paper: 3).
    seed : int
        Seed of every random choice, for repeatable rounds.
    """

    lpg_config: str = "paper"
    lpg_max_side: int | None = None
    lpg_hu_window: tuple[float, float] | None = None
    lpg_zoom_range: tuple[float, float] = Augmentation.scale_range
    lpg_flip_probability: float = Augmentation.flip_probability
    lpg_train_steps: int = 20000
    lpg_finetune_steps: int = 5000
    lpg_batch_size: int = 16
    lpg_learning_rate: float = 2e-4
    lpg_finetune_learning_rate: float | None = None
    lpg_crop_px: int | None = None
    scan_batch_size: int = 32
    score_threshold: float = 0.1
    link_iou: float = 0.8
    fuse_iou: float = 0.8
    duplicate_iou: float = 0.5
    match_iou: float = 0.5
    lpg_crossing_positives: bool = False
    lpg_ignore_unmarked_background: bool = False
    lpg_finetune_slices: str = "all"
    exclude_lesion_pieces: bool = False
    lpc_variant: str = "multiview"
    lpc_epochs: int = 30
    lpc_patch_size: int = 128
    lpc_pad_px: float = DEFAULT_PAD_PX
    lpc_width: str = "paper"
    lpc_hu_window: tuple[float, float] | None = None
    harvest_precision: float = HARVEST_PRECISION
    threshold_mode: str = "out_of_fold"
    folds: int = 5
    hard_negative_min_objectness: float = HARD_NEGATIVE_MIN_OBJECTNESS
    hard_negatives_per_volume: int = HARD_NEGATIVES_PER_VOLUME
    max_rounds: int = 3
    seed: int = 0

    def __post_init__(self):
        for name in ("lpg_hu_window", "lpc_hu_window"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, checked_hu_window(value, f"config field {name!r}"))
        zoom = tuple(float(v) for v in self.lpg_zoom_range)
        if len(zoom) != 2 or not 0 < zoom[0] <= zoom[1]:
            raise ValueError(
                f"config field 'lpg_zoom_range' must be [low, high] with 0 < low <= high, "
                f"got {self.lpg_zoom_range!r}"
            )
        object.__setattr__(self, "lpg_zoom_range", zoom)
        for name in (
            "lpg_crossing_positives",
            "lpg_ignore_unmarked_background",
            "exclude_lesion_pieces",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"config field {name!r} must be true or false")
        for name in ("lpg_learning_rate", "lpg_finetune_learning_rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"config field {name!r} must be > 0")
        if self.lpg_crop_px is not None and (
            isinstance(self.lpg_crop_px, bool)
            or not isinstance(self.lpg_crop_px, int)
            or self.lpg_crop_px < MIN_LPG_CROP_PX
        ):
            raise ValueError(
                f"config field 'lpg_crop_px' must be null or a whole number of pixels "
                f">= {MIN_LPG_CROP_PX}, got {self.lpg_crop_px!r}"
            )
        if not 0 <= self.lpg_flip_probability <= 1:
            raise ValueError("config field 'lpg_flip_probability' must be in [0, 1]")
        choices = {
            "lpg_config": ("paper", "lite"),
            "lpc_variant": ("multiview", "axial", "3d"),
            "lpc_width": ("paper", "lite"),
            "lpg_finetune_slices": FINE_TUNING_SLICE_CHOICES,
            "threshold_mode": ("out_of_fold", "in_sample"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"config field {name!r} must be one of {allowed}")
        for name in ("score_threshold", "link_iou", "fuse_iou", "match_iou", "harvest_precision"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"config field {name!r} must be in (0, 1]")

    def to_json(self) -> str:
        """The configuration as a JSON object (stored with each round)."""
        return json.dumps(asdict(self), sort_keys=True)


#: The CPU preset: a small LPG and LPC that train in minutes on the phantom.
LITE = RoundConfig(
    lpg_config="lite",
    lpg_train_steps=600,
    lpg_finetune_steps=200,
    lpg_batch_size=8,
    lpg_learning_rate=1e-3,
    lpc_epochs=12,
    lpc_patch_size=64,
    lpc_width="lite",
)
PRESETS = {"paper": RoundConfig(), "lite": LITE}


def load_config(name_or_path: str, **overrides) -> RoundConfig:
    """A preset by name (``lite``, ``paper``) or a JSON file of fields over the paper preset.

    Raises
    ------
    ValueError
        For an unknown preset, an unreadable file or an unknown field; the
        message names the file and the field.
    """
    if name_or_path in PRESETS:
        base = PRESETS[name_or_path]
    else:
        path = Path(name_or_path)
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(
                f"config {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) "
                f"nor a readable JSON file: {error}"
            ) from error
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a JSON object of config fields")
        base_name = values.pop("preset", "paper")
        if base_name not in PRESETS:
            raise ValueError(f"{path}: unknown preset {base_name!r}")
        overrides = {**values, **overrides}
        base = PRESETS[base_name]
    known = {f.name for f in fields(RoundConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"{name_or_path}: unknown config field(s) {', '.join(unknown)}")
    return replace(base, **overrides)
