"""Configuration of a harvest round: named presets (`lite`, `paper`) or a JSON file."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from numbers import Integral, Real
from pathlib import Path

from napari_lesion_harvest.harvest.errors import RoundConfigError
from napari_lesion_harvest.harvest.hard_negatives import (
    HARD_NEGATIVE_MIN_OBJECTNESS,
    HARD_NEGATIVES_PER_VOLUME,
)
from napari_lesion_harvest.harvest.threshold import HARVEST_PRECISION
from napari_lesion_harvest.harvest.training_sets import FINE_TUNING_SLICE_CHOICES
from napari_lesion_harvest.lpc.choices import CLASSIFIER_NAMES, V_H_SCORINGS
from napari_lesion_harvest.lpc.patches import DEFAULT_PAD_PX, OUTSIDE_FILLS
from napari_lesion_harvest.lpg.data import Augmentation
from napari_lesion_harvest.lpg.preprocess import checked_hu_window

#: Smallest LPG training crop: a few of the heads' stride-4 cells around a lesion.
MIN_LPG_CROP_PX = 32
#: Smallest LPC view patch (the 3D variant's cube is half of it, at least 16 voxels).
MIN_LPC_PATCH_PX = 16


# ------------------------------------------------------------------- field rules


def _whole(minimum: int, *, optional: bool = False):
    """Rule: a whole number (not a boolean) >= ``minimum``; None too when ``optional``."""

    def check(name: str, value):
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
            allowed = ("null or " if optional else "") + f"a whole number >= {minimum}"
            raise RoundConfigError(f"config field {name!r} must be {allowed}, got {value!r}")
        return int(value)

    return check


def _real(low: float, high: float = math.inf, *, low_open: bool = False, optional=False):
    """Rule: a finite number in ``[low, high]`` (``(low, high]`` when ``low_open``),
    as a float; None too when ``optional``."""
    if math.isinf(high):
        interval = f"> {low:g}" if low_open else f">= {low:g}"
    else:
        interval = f"in {'(' if low_open else '['}{low:g}, {high:g}]"

    def check(name: str, value):
        if value is None and optional:
            return None
        if not (
            _is_number(value)
            and math.isfinite(value)
            and (low < value if low_open else low <= value)
            and value <= high
        ):
            allowed = ("null or " if optional else "") + f"a number {interval}"
            raise RoundConfigError(f"config field {name!r} must be {allowed}, got {value!r}")
        return float(value)

    return check


def _flag(name: str, value):
    """Rule: true or false."""
    if not isinstance(value, bool):
        raise RoundConfigError(f"config field {name!r} must be true or false, got {value!r}")
    return value


def _choice(*allowed: str):
    """Rule: one of ``allowed``."""

    def check(name: str, value):
        if not isinstance(value, str) or value not in allowed:
            raise RoundConfigError(
                f"config field {name!r} must be one of {', '.join(allowed)}, got {value!r}"
            )
        return value

    return check


def _pair(name: str, value) -> tuple:
    """Two numbers as a tuple of floats (JSON gives a list)."""
    try:
        pair = tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(_is_number(v) for v in pair):
        raise RoundConfigError(f"config field {name!r} must be [low, high], got {value!r}")
    return tuple(float(v) for v in pair)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _hu_window(name: str, value):
    """Rule: null or a ``[low, high]`` HU window with low < high."""
    if value is None:
        return None
    try:
        return checked_hu_window(_pair(name, value), f"config field {name!r}")
    except ValueError as error:
        raise RoundConfigError(str(error)) from error


def _zoom(name: str, value):
    """Rule: ``[low, high]`` with 0 < low <= high."""
    low, high = _pair(name, value)
    if not 0 < low <= high or not math.isfinite(high):
        raise RoundConfigError(
            f"config field {name!r} must be [low, high] with 0 < low <= high, got {value!r}"
        )
    return (low, high)


def _names(*allowed: str):
    """Rule: null, or a non-empty list of distinct names from ``allowed`` (as a tuple)."""

    def check(name: str, value):
        if value is None:
            return None
        names = tuple(value) if isinstance(value, list | tuple) else ()
        if not names or len(set(names)) != len(names) or any(n not in allowed for n in names):
            raise RoundConfigError(
                f"config field {name!r} must be null or a list of distinct names from "
                f"{', '.join(allowed)}, got {value!r}"
            )
        return names

    return check


_FRACTION = _real(0.0, 1.0, low_open=True)

#: How each :class:`RoundConfig` field is checked (and normalised: floats, tuples).
FIELD_RULES = {
    "lpg_config": _choice("paper", "lite"),
    "lpg_max_side": _whole(MIN_LPG_CROP_PX, optional=True),
    "lpg_hu_window": _hu_window,
    "lpg_zoom_range": _zoom,
    "lpg_flip_probability": _real(0.0, 1.0),
    "lpg_train_steps": _whole(1),
    "lpg_finetune_steps": _whole(0),
    "lpg_batch_size": _whole(1),
    "lpg_learning_rate": _real(0.0, low_open=True),
    "lpg_finetune_learning_rate": _real(0.0, low_open=True, optional=True),
    "lpg_crop_px": _whole(MIN_LPG_CROP_PX, optional=True),
    "scan_batch_size": _whole(1),
    "score_threshold": _FRACTION,
    "link_iou": _FRACTION,
    "fuse_iou": _FRACTION,
    "duplicate_iou": _real(0.0, low_open=True),
    "match_iou": _FRACTION,
    "lpg_crossing_positives": _flag,
    "lpg_ignore_unmarked_background": _flag,
    "lpg_ignore_known_lesions": _flag,
    "lpg_edge_stack_probability": _real(0.0, 1.0),
    "lpg_finetune_slices": _choice(*FINE_TUNING_SLICE_CHOICES),
    "exclude_lesion_pieces": _flag,
    "lpc_variant": _choice(*CLASSIFIER_NAMES),
    "lpc_candidates": _names(*CLASSIFIER_NAMES),
    "lpc_v_h_scoring": _choice(*V_H_SCORINGS),
    "lpc_outside": _choice(*OUTSIDE_FILLS),
    "lpc_epochs": _whole(1),
    "lpc_patch_size": _whole(MIN_LPC_PATCH_PX),
    "lpc_pad_px": _real(0.0),
    "lpc_width": _choice("paper", "lite"),
    "lpc_hu_window": _hu_window,
    "harvest_precision": _FRACTION,
    "threshold_mode": _choice("out_of_fold", "in_sample"),
    "folds": _whole(2),
    "hard_negative_min_objectness": _real(0.0, 1.0),
    "hard_negatives_per_volume": _whole(0),
    "max_rounds": _whole(1),
    "seed": _whole(0),
}


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
    lpg_ignore_known_lesions : bool
        On every LPG training slice, leave unsupervised (neither background nor hard
        negative) the regions where a known lesion may show away from its own
        training slice: for each usable mark, its box widened to its long diameter
        on the slices within one long diameter of its key slice; when fine-tuning,
        each positive proposal's tracked boxes (not in the paper, which teaches
        them as background; see
        :func:`~napari_lesion_harvest.harvest.training_sets.known_lesion_region`).
        Hard negatives on those regions are left out.
    lpg_edge_stack_probability : float
        Probability that an LPG training stack is built as if the volume ended
        a few slices above or below the training slice, so that training sees
        the clamped stacks (the edge slice repeated) that scanning builds near
        each volume's ends (not in the paper; 0 never).
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
        The round's LPC when ``lpc_candidates`` is null: ``"multiview"`` (paper),
        ``"axial"`` or ``"3d"`` (CNNs), ``"features"`` (logistic regression on
        proposal features, :mod:`~napari_lesion_harvest.lpc.feature_model`) or
        ``"s_g"`` (no classifier: s_c = 1, the LPG's objectness alone).
    lpc_candidates : tuple of str or None
        When set, the round trains each of these LPCs on the same out-of-fold V_M
        folds and uses the one whose lesion scores s_gc rank V_M best (average
        precision; ties to the earlier name), recording every candidate's figures
        in the round's metrics (not in the paper). None: ``lpc_variant`` alone.
    lpc_v_h_scoring : str
        How V_H proposals get s_c: ``"final_model"``, one more model trained on
        every verified proposal (the paper), or ``"fold_mean"``, the mean s_c of the
        out-of-fold models whose V_M scores set the harvest threshold, so both
        sides of the threshold come from the same models (not in the paper).
    lpc_outside : str
        What an LPC patch shows where it reaches outside the volume: ``"air"``
        (the paper's crops) or ``"mirror"`` (the volume mirrored at its faces, so a
        patch does not tell how near a sub-volume end the proposal lies).
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
    lpg_ignore_known_lesions: bool = False
    lpg_edge_stack_probability: float = 0.0
    lpg_finetune_slices: str = "all"
    exclude_lesion_pieces: bool = False
    lpc_variant: str = "multiview"
    lpc_candidates: tuple[str, ...] | None = None
    lpc_v_h_scoring: str = "final_model"
    lpc_outside: str = "air"
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
        for item in fields(self):
            checked = FIELD_RULES[item.name](item.name, getattr(self, item.name))
            object.__setattr__(self, item.name, checked)

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
    RoundConfigError
        For an unknown preset, an unreadable file, an unknown field, or a field
        of the wrong type or out of range; the message names the file and the field.
    """
    if name_or_path in PRESETS:
        base, where = PRESETS[name_or_path], f"preset {name_or_path!r}"
    else:
        path = Path(name_or_path)
        where = str(path)
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError) as error:  # ValueError: not UTF-8 or not JSON
            raise RoundConfigError(
                f"config {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) "
                f"nor a readable JSON file: {error}"
            ) from error
        if not isinstance(values, dict):
            raise RoundConfigError(f"{path}: expected a JSON object of config fields")
        base_name = values.pop("preset", "paper")
        if not isinstance(base_name, str) or base_name not in PRESETS:
            raise RoundConfigError(
                f"{path}: unknown preset {base_name!r} (use one of {', '.join(PRESETS)})"
            )
        overrides = {**values, **overrides}
        base = PRESETS[base_name]
    return _with_fields(base, overrides, where)


def stored_config(number: int, values) -> RoundConfig:
    """The configuration stored with round ``number`` (fields over the paper preset).

    Raises
    ------
    RoundConfigError
        A field this version does not know or refuses; the message names it.
    """
    return _with_fields(PRESETS["paper"], values, f"the configuration stored with round {number}")


def _with_fields(base: RoundConfig, values, where: str) -> RoundConfig:
    """``base`` with the fields ``values`` changed; errors start with ``where``."""
    unknown = sorted(set(values) - {f.name for f in fields(RoundConfig)})
    if unknown:
        raise RoundConfigError(f"{where}: unknown config field(s) {', '.join(unknown)}")
    try:
        return replace(base, **values)
    except RoundConfigError as error:
        raise RoundConfigError(f"{where}: {error}") from error
