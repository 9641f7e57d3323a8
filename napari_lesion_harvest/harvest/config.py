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
from napari_lesion_harvest.lpg.data import SliceAugmentation
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

    Each field, its value in the ``lite`` and ``paper`` presets and its meaning
    are tabled in docs/harvest.md#configuration; :data:`FIELD_RULES` checks each
    field's type and range when the configuration is made.
    """

    lpg_config: str = "paper"
    lpg_max_side: int | None = None
    lpg_hu_window: tuple[float, float] | None = None
    lpg_zoom_range: tuple[float, float] = SliceAugmentation.scale_range
    lpg_flip_probability: float = SliceAugmentation.flip_probability
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
