"""Configuration of a harvest round: named presets (`lite`, `paper`) or a JSON file.

:class:`RoundConfig` composes one section per component: :class:`LPGSettings`
(``lpg``), :class:`ScanSettings` (``scan``), :class:`LPCSettings` (``lpc``) and
:class:`HarvestSettings` (``harvest``). A field is named by its section and its own
name, ``lpg.train_steps``; each field, its value in both presets and its meaning are
tabled in docs/harvest.md#configuration. A section's defaults are the ``paper``
preset, and a setting that a component's own options also hold takes its default from
them (:class:`~napari_lesion_harvest.lpg.train.LPGTrainOptions`,
:class:`~napari_lesion_harvest.lpg.data.SliceAugmentation`,
:class:`~napari_lesion_harvest.lpc.options.LPCTrainOptions`,
:class:`~napari_lesion_harvest.lpc.options.LPCPlan`, the tracker's constants), so that
each default has one home.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar

from napari_lesion_harvest.evaluation.matching import IOU_THRESHOLD_2D
from napari_lesion_harvest.harvest import config_rules as rule
from napari_lesion_harvest.harvest.config_migration import (
    FLAT_NAMES,
    dotted_fields,
    without_removed_fields,
)
from napari_lesion_harvest.harvest.errors import RoundConfigError
from napari_lesion_harvest.harvest.hard_negatives import (
    HARD_NEGATIVE_MIN_OBJECTNESS,
    HARD_NEGATIVES_PER_VOLUME,
)
from napari_lesion_harvest.harvest.threshold import HARVEST_PRECISION, THRESHOLD_LESIONS
from napari_lesion_harvest.lpc.choices import CLASSIFIER_NAMES, V_H_SCORINGS, V_M_SCORE_MODES
from napari_lesion_harvest.lpc.options import LPCPlan, LPCTrainOptions
from napari_lesion_harvest.lpc.patches import OUTSIDE_FILLS
from napari_lesion_harvest.lpg.config import DEFAULT_PRECISION, PRECISIONS
from napari_lesion_harvest.lpg.data import SliceAugmentation
from napari_lesion_harvest.lpg.train import LPGTrainOptions
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


@dataclass(frozen=True, kw_only=True)
class LPGSettings:
    """How a round builds and trains the lesion proposal generator (section ``lpg``).

    The fields are tabled in docs/harvest.md#configuration; :attr:`RULES` checks them.
    """

    architecture: str = "paper"
    max_side: int | None = None
    hu_window: tuple[float, float] | None = None
    zoom_range: tuple[float, float] = SliceAugmentation.scale_range
    flip_probability: float = SliceAugmentation.flip_probability
    edge_stack_probability: float = SliceAugmentation.edge_probability
    train_steps: int = LPGTrainOptions.steps
    finetune_steps: int = 5000
    batch_size: int = LPGTrainOptions.batch_size
    learning_rate: float = LPGTrainOptions.learning_rate
    crop_px: int | None = None
    ignore_known_lesions: bool = False
    precision: str = LPGTrainOptions.precision

    RULES: ClassVar[dict] = {
        "architecture": rule.choice("paper", "lite"),
        "max_side": rule.whole(MIN_LPG_CROP_PX, optional=True),
        "hu_window": rule.hu_window,
        "zoom_range": rule.zoom,
        "flip_probability": rule.real(0.0, 1.0),
        "edge_stack_probability": rule.real(0.0, 1.0),
        "train_steps": rule.whole(1),
        "finetune_steps": rule.whole(0),
        "batch_size": rule.whole(1),
        "learning_rate": rule.real(0.0, low_open=True),
        "crop_px": rule.whole(MIN_LPG_CROP_PX, optional=True),
        "ignore_known_lesions": rule.flag,
        "precision": rule.choice(*PRECISIONS),
    }

    def __post_init__(self):
        rule.check_fields(self, "lpg.")


@dataclass(frozen=True, kw_only=True)
class ScanSettings:
    """How a round scans the volumes and stacks 3D proposals (section ``scan``): the
    options of :func:`~napari_lesion_harvest.tracking.scan.scan_volume`."""

    batch_size: int = 32
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    link_iou: float = DEFAULT_LINK_IOU
    fuse_iou: float = DEFAULT_FUSE_IOU
    duplicate_iou: float = DEFAULT_DUPLICATE_IOU
    precision: str = DEFAULT_PRECISION

    RULES: ClassVar[dict] = {
        "batch_size": rule.whole(1),
        "score_threshold": rule.FRACTION,
        "link_iou": rule.FRACTION,
        "fuse_iou": rule.FRACTION,
        "duplicate_iou": rule.real(0.0, low_open=True),
        "precision": rule.choice(*PRECISIONS),
    }

    def __post_init__(self):
        rule.check_fields(self, "scan.")


@dataclass(frozen=True, kw_only=True)
class LPCSettings:
    """How a round fits the lesion proposal classifier (section ``lpc``): the
    :class:`~napari_lesion_harvest.lpc.fitting.LPCPlan` and the CNN settings of its
    :class:`~napari_lesion_harvest.lpc.train.LPCTrainOptions`."""

    variant: str = LPCTrainOptions.variant
    candidates: tuple[str, ...] | None = None
    v_h_scoring: str = LPCPlan.v_h_scoring
    outside: str = LPCTrainOptions.outside
    epochs: int = LPCTrainOptions.epochs
    patch_size: int = LPCTrainOptions.patch_size
    pad_px: float = LPCTrainOptions.pad_px
    width: str = LPCTrainOptions.width
    folds: int = LPCPlan.folds
    threshold_mode: str = LPCPlan.threshold_mode

    RULES: ClassVar[dict] = {
        "variant": rule.choice(*CLASSIFIER_NAMES),
        "candidates": rule.names(*CLASSIFIER_NAMES),
        "v_h_scoring": rule.choice(*V_H_SCORINGS),
        "outside": rule.choice(*OUTSIDE_FILLS),
        "epochs": rule.whole(1),
        "patch_size": rule.whole(MIN_LPC_PATCH_PX),
        "pad_px": rule.real(0.0),
        "width": rule.choice("paper", "lite"),
        "folds": rule.whole(2),
        "threshold_mode": rule.choice(*V_M_SCORE_MODES),
    }

    def __post_init__(self):
        rule.check_fields(self, "lpc.")


@dataclass(frozen=True, kw_only=True)
class HarvestSettings:
    """How a round matches, harvests and picks hard negatives (section ``harvest``)."""

    precision: float = HARVEST_PRECISION
    threshold_lesions: str = "all"
    match_iou: float = IOU_THRESHOLD_2D
    hard_negative_min_objectness: float = HARD_NEGATIVE_MIN_OBJECTNESS
    hard_negatives_per_volume: int = HARD_NEGATIVES_PER_VOLUME

    RULES: ClassVar[dict] = {
        "precision": rule.FRACTION,
        "threshold_lesions": rule.choice(*THRESHOLD_LESIONS),
        "match_iou": rule.FRACTION,
        "hard_negative_min_objectness": rule.real(0.0, 1.0),
        "hard_negatives_per_volume": rule.whole(0),
    }

    def __post_init__(self):
        rule.check_fields(self, "harvest.")


#: The sections of :class:`RoundConfig`, by field name.
SECTIONS = {
    "lpg": LPGSettings,
    "scan": ScanSettings,
    "lpc": LPCSettings,
    "harvest": HarvestSettings,
}


@dataclass(frozen=True, kw_only=True)
class RoundConfig:
    """Every setting of a harvest round: the four sections of :data:`SECTIONS`, the
    number of rounds and the seed. Its defaults are the ``paper`` preset."""

    lpg: LPGSettings = field(default_factory=LPGSettings)
    scan: ScanSettings = field(default_factory=ScanSettings)
    lpc: LPCSettings = field(default_factory=LPCSettings)
    harvest: HarvestSettings = field(default_factory=HarvestSettings)
    max_rounds: int = 3
    seed: int = 0

    RULES: ClassVar[dict] = {"max_rounds": rule.whole(1), "seed": rule.whole(0)}

    def __post_init__(self):
        rule.check_fields(self)

    def to_json(self) -> str:
        """The configuration as a JSON object of sections (stored with each round)."""
        return json.dumps(asdict(self), sort_keys=True)


#: The paper's setting.
PAPER = RoundConfig()
#: The CPU preset: a small LPG and LPC that train in minutes on the phantom.
LITE = RoundConfig(
    lpg=LPGSettings(
        architecture="lite", train_steps=600, finetune_steps=200, batch_size=8, learning_rate=1e-3
    ),
    lpc=LPCSettings(epochs=12, patch_size=64, width="lite"),
)
PRESETS = {"paper": PAPER, "lite": LITE}


def field_names() -> list[str]:
    """The dotted name of every field of :class:`RoundConfig`, in order."""
    names = []
    for item in fields(RoundConfig):
        section = SECTIONS.get(item.name)
        names += [f"{item.name}.{f.name}" for f in fields(section)] if section else [item.name]
    return names


def with_changes(config: RoundConfig, changes: Mapping, *, where: str | None = None):
    """``config`` with the fields ``changes`` set.

    Parameters
    ----------
    changes : mapping
        Field values by dotted name (``"lpg.train_steps"``), by section
        (``"lpg": {"train_steps": 80}``) or by an earlier version's flat name
        (``"lpg_train_steps"``).
    where : str, optional
        What the changes come from (a file, a round); errors start with it.

    Returns
    -------
    RoundConfig

    Raises
    ------
    RoundConfigError
        An unknown field (the message lists close names), a field set twice, or
        a value of the wrong type or out of range; the message names the field.
    """
    try:
        values = dotted_fields(changes)
        _refuse_unknown(values)
        by_section = {}
        for name, value in values.items():
            section, _, own_name = name.rpartition(".")
            by_section.setdefault(section, {})[own_name] = value
        top_level = by_section.pop("", {})
        sections = {name: replace(getattr(config, name), **v) for name, v in by_section.items()}
        return replace(config, **sections, **top_level)
    except RoundConfigError as error:
        if where is None:
            raise
        raise RoundConfigError(f"{where}: {error}") from error


def _refuse_unknown(values: dict) -> None:
    """Raise :class:`RoundConfigError` for the first name of ``values`` that is no
    field, with the field names closest to it."""
    known = field_names()
    for name in values:
        if name in SECTIONS:
            raise RoundConfigError(f"config field {name!r} must be an object of its fields")
        if name not in known:
            spelled = {**{n: n for n in known}, **FLAT_NAMES}
            close = difflib.get_close_matches(name, list(spelled), n=3)
            hint = f"; did you mean {', '.join(dict.fromkeys(spelled[c] for c in close))}?"
            raise RoundConfigError(f"unknown config field {name!r}" + (hint if close else ""))


def load_config(name_or_path: str, changes: Mapping | None = None) -> RoundConfig:
    """A preset by name (``lite``, ``paper``), or a JSON file of fields over a preset
    (``"preset"``, default ``paper``); then the fields ``changes``
    (as :func:`with_changes` takes them).

    Raises
    ------
    RoundConfigError
        For an unknown preset, an unreadable file, an unknown field, or a field
        of the wrong type or out of range; the message names the file and the field.
    """
    if name_or_path in PRESETS:
        config, where = PRESETS[name_or_path], f"preset {name_or_path!r}"
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
        values = without_removed_fields(
            values,
            lambda name, value: (
                f"{path}: config field {name!r} is no longer in this version "
                f"(the file sets it to {value}); remove it from the file"
            ),
        )
        config = with_changes(PRESETS[base_name], values, where=where)
    return with_changes(config, changes or {}, where=where)


def stored_config(number: int, values: Mapping) -> RoundConfig:
    """The configuration stored with round ``number`` (fields over the paper preset,
    in sections or, written by an earlier version, flat).

    A field of :data:`~napari_lesion_harvest.harvest.config_migration.REMOVED_FIELDS`
    at the value every preset gave it is left out.

    Raises
    ------
    RoundConfigError
        A field this version does not know or refuses, or a removed field at another
        value (the round then cannot resume: it is discarded); the message names it.
    """
    values = without_removed_fields(
        values,
        lambda name, value: (
            f"round {number} was run with {name}={value}, which this version "
            "no longer has; discard it with `lesion-harvest round --discard`"
        ),
    )
    return with_changes(PAPER, values, where=f"the configuration stored with round {number}")
