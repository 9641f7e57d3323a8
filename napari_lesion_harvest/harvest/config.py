"""Configuration of a harvest round: named presets (`lite`, `paper`) or a JSON file."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from numbers import Integral, Real
from pathlib import Path

from napari_lesion_harvest.evaluation.matching import IOU_THRESHOLD_2D
from napari_lesion_harvest.harvest.errors import RoundConfigError
from napari_lesion_harvest.harvest.hard_negatives import (
    HARD_NEGATIVE_MIN_OBJECTNESS,
    HARD_NEGATIVES_PER_VOLUME,
)
from napari_lesion_harvest.harvest.threshold import HARVEST_PRECISION
from napari_lesion_harvest.lpc.choices import CLASSIFIER_NAMES, V_H_SCORINGS, V_M_SCORE_MODES
from napari_lesion_harvest.lpc.patches import DEFAULT_PAD_PX, OUTSIDE_FILLS
from napari_lesion_harvest.lpg.data import SliceAugmentation
from napari_lesion_harvest.lpg.preprocess import checked_hu_window
from napari_lesion_harvest.tracking.stacking import (
    DEFAULT_FUSE_IOU,
    DEFAULT_LINK_IOU,
    DEFAULT_SCORE_THRESHOLD,
)
from napari_lesion_harvest.tracking.suppression import DEFAULT_DUPLICATE_IOU

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
    "lpg_crop_px": _whole(MIN_LPG_CROP_PX, optional=True),
    "scan_batch_size": _whole(1),
    "score_threshold": _FRACTION,
    "link_iou": _FRACTION,
    "fuse_iou": _FRACTION,
    "duplicate_iou": _real(0.0, low_open=True),
    "match_iou": _FRACTION,
    "lpg_ignore_known_lesions": _flag,
    "lpg_edge_stack_probability": _real(0.0, 1.0),
    "lpc_variant": _choice(*CLASSIFIER_NAMES),
    "lpc_candidates": _names(*CLASSIFIER_NAMES),
    "lpc_v_h_scoring": _choice(*V_H_SCORINGS),
    "lpc_outside": _choice(*OUTSIDE_FILLS),
    "lpc_epochs": _whole(1),
    "lpc_patch_size": _whole(MIN_LPC_PATCH_PX),
    "lpc_pad_px": _real(0.0),
    "lpc_width": _choice("paper", "lite"),
    "harvest_precision": _FRACTION,
    "threshold_mode": _choice(*V_M_SCORE_MODES),
    "folds": _whole(2),
    "hard_negative_min_objectness": _real(0.0, 1.0),
    "hard_negatives_per_volume": _whole(0),
    "max_rounds": _whole(1),
    "seed": _whole(0),
}


#: Fields of earlier versions, with the value both presets gave them. A configuration
#: (stored with a round, or a JSON file) that holds one at that value loads without it;
#: one that holds another value is refused (the option was measured and dropped, see
#: docs/experiments/).
REMOVED_FIELDS = {
    "lpg_crossing_positives": False,
    "lpg_ignore_unmarked_background": False,
    "lpg_finetune_slices": "all",
    "lpg_finetune_learning_rate": None,
    "exclude_lesion_pieces": False,
    "lpc_hu_window": None,
}


@dataclass(frozen=True, kw_only=True)
class RoundConfig:
    """Every setting of a harvest round; the presets :data:`PAPER` and :data:`LITE`
    give each one its value.

    Each field, its value in the ``lite`` and ``paper`` presets and its meaning
    are tabled in docs/harvest.md#configuration; :data:`FIELD_RULES` checks each
    field's type and range when the configuration is made.
    """

    lpg_config: str
    lpg_max_side: int | None
    lpg_hu_window: tuple[float, float] | None
    lpg_zoom_range: tuple[float, float]
    lpg_flip_probability: float
    lpg_train_steps: int
    lpg_finetune_steps: int
    lpg_batch_size: int
    lpg_learning_rate: float
    lpg_crop_px: int | None
    scan_batch_size: int
    score_threshold: float
    link_iou: float
    fuse_iou: float
    duplicate_iou: float
    match_iou: float
    lpg_ignore_known_lesions: bool
    lpg_edge_stack_probability: float
    lpc_variant: str
    lpc_candidates: tuple[str, ...] | None
    lpc_v_h_scoring: str
    lpc_outside: str
    lpc_epochs: int
    lpc_patch_size: int
    lpc_pad_px: float
    lpc_width: str
    harvest_precision: float
    threshold_mode: str
    folds: int
    hard_negative_min_objectness: float
    hard_negatives_per_volume: int
    max_rounds: int
    seed: int

    def __post_init__(self):
        for item in fields(self):
            checked = FIELD_RULES[item.name](item.name, getattr(self, item.name))
            object.__setattr__(self, item.name, checked)

    def to_json(self) -> str:
        """The configuration as a JSON object (stored with each round)."""
        return json.dumps(asdict(self), sort_keys=True)


#: The paper's setting. Where the round uses a component's own default, the value
#: is that component's constant; the other values are the round's (the LPG trains
#: longer, with larger batches and a lower learning rate than ``lpg.train.LPGTrainOptions``'
#: defaults, and the LPC's patches are larger than ``lpc.patches.DEFAULT_PATCH_SIZE``).
PAPER = RoundConfig(
    lpg_config="paper",
    lpg_max_side=None,
    lpg_hu_window=None,
    lpg_zoom_range=SliceAugmentation.scale_range,
    lpg_flip_probability=SliceAugmentation.flip_probability,
    lpg_train_steps=20000,
    lpg_finetune_steps=5000,
    lpg_batch_size=16,
    lpg_learning_rate=2e-4,
    lpg_crop_px=None,
    scan_batch_size=32,
    score_threshold=DEFAULT_SCORE_THRESHOLD,
    link_iou=DEFAULT_LINK_IOU,
    fuse_iou=DEFAULT_FUSE_IOU,
    duplicate_iou=DEFAULT_DUPLICATE_IOU,
    match_iou=IOU_THRESHOLD_2D,
    lpg_ignore_known_lesions=False,
    lpg_edge_stack_probability=SliceAugmentation.edge_probability,
    lpc_variant="multiview",
    lpc_candidates=None,
    lpc_v_h_scoring="final_model",
    lpc_outside="air",
    lpc_epochs=30,
    lpc_patch_size=128,
    lpc_pad_px=DEFAULT_PAD_PX,
    lpc_width="paper",
    harvest_precision=HARVEST_PRECISION,
    threshold_mode="out_of_fold",
    folds=5,
    hard_negative_min_objectness=HARD_NEGATIVE_MIN_OBJECTNESS,
    hard_negatives_per_volume=HARD_NEGATIVES_PER_VOLUME,
    max_rounds=3,
    seed=0,
)
#: The CPU preset: a small LPG and LPC that train in minutes on the phantom.
LITE = replace(
    PAPER,
    lpg_config="lite",
    lpg_train_steps=600,
    lpg_finetune_steps=200,
    lpg_batch_size=8,
    lpg_learning_rate=1e-3,
    lpc_epochs=12,
    lpc_patch_size=64,
    lpc_width="lite",
)
PRESETS = {"paper": PAPER, "lite": LITE}


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
        values = _current_fields(
            values,
            lambda name, value: (
                f"{path}: config field {name!r} is no longer in this version "
                f"(the file sets it to {value}); remove it from the file"
            ),
        )
        overrides = {**values, **overrides}
        base = PRESETS[base_name]
    return _with_fields(base, overrides, where)


def stored_config(number: int, values) -> RoundConfig:
    """The configuration stored with round ``number`` (fields over the paper preset).

    A field of :data:`REMOVED_FIELDS` at the value every preset gave it is left out.

    Raises
    ------
    RoundConfigError
        A field this version does not know or refuses, or a removed field at another
        value (the round then cannot resume: it is discarded); the message names it.
    """
    values = _current_fields(
        values,
        lambda name, value: (
            f"round {number} was run with {name}={value}, which this version "
            "no longer has; discard it with `lesion-harvest round --discard`"
        ),
    )
    return _with_fields(PAPER, values, f"the configuration stored with round {number}")


def _current_fields(values: dict, refusal) -> dict:
    """``values`` without the fields of :data:`REMOVED_FIELDS`.

    Raises
    ------
    RoundConfigError
        ``refusal(name, value as JSON)`` for the first removed field whose value is
        not the one every preset gave it.
    """
    for name, old in REMOVED_FIELDS.items():
        if name in values and json.dumps(values[name]) != json.dumps(old):
            raise RoundConfigError(refusal(name, json.dumps(values[name])))
    return {name: value for name, value in values.items() if name not in REMOVED_FIELDS}


def _with_fields(base: RoundConfig, values, where: str) -> RoundConfig:
    """``base`` with the fields ``values`` changed; errors start with ``where``."""
    unknown = sorted(set(values) - {f.name for f in fields(RoundConfig)})
    if unknown:
        raise RoundConfigError(f"{where}: unknown config field(s) {', '.join(unknown)}")
    try:
        return replace(base, **values)
    except RoundConfigError as error:
        raise RoundConfigError(f"{where}: {error}") from error
