"""Field names of round configurations across versions: the previous versions' flat
names (``lpg_train_steps``) as the sections' dotted names (``lpg.train_steps``), and
the fields this version no longer has.

A configuration written as JSON (a file, or one stored with a round) names its fields
in any of three forms: a section's object (``"lpg": {"train_steps": 80}``), a dotted
name (``"lpg.train_steps": 80``) or a flat name of an earlier version. :func:`dotted_fields`
reads all three; ``--set`` (:mod:`~napari_lesion_harvest.harvest.config_overrides`)
and :func:`~napari_lesion_harvest.harvest.config.load_config` go through it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from napari_lesion_harvest.harvest.errors import RoundConfigError

#: The flat field names of versions before the sections, with their dotted names.
FLAT_NAMES = {
    "lpg_config": "lpg.architecture",
    "lpg_max_side": "lpg.max_side",
    "lpg_hu_window": "lpg.hu_window",
    "lpg_zoom_range": "lpg.zoom_range",
    "lpg_flip_probability": "lpg.flip_probability",
    "lpg_edge_stack_probability": "lpg.edge_stack_probability",
    "lpg_train_steps": "lpg.train_steps",
    "lpg_finetune_steps": "lpg.finetune_steps",
    "lpg_batch_size": "lpg.batch_size",
    "lpg_learning_rate": "lpg.learning_rate",
    "lpg_crop_px": "lpg.crop_px",
    "lpg_ignore_known_lesions": "lpg.ignore_known_lesions",
    "scan_batch_size": "scan.batch_size",
    "score_threshold": "scan.score_threshold",
    "link_iou": "scan.link_iou",
    "fuse_iou": "scan.fuse_iou",
    "duplicate_iou": "scan.duplicate_iou",
    "lpc_variant": "lpc.variant",
    "lpc_candidates": "lpc.candidates",
    "lpc_v_h_scoring": "lpc.v_h_scoring",
    "lpc_outside": "lpc.outside",
    "lpc_epochs": "lpc.epochs",
    "lpc_patch_size": "lpc.patch_size",
    "lpc_pad_px": "lpc.pad_px",
    "lpc_width": "lpc.width",
    "folds": "lpc.folds",
    "threshold_mode": "lpc.threshold_mode",
    "harvest_precision": "harvest.precision",
    "match_iou": "harvest.match_iou",
    "hard_negative_min_objectness": "harvest.hard_negative_min_objectness",
    "hard_negatives_per_volume": "harvest.hard_negatives_per_volume",
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


def dotted_fields(values: Mapping) -> dict:
    """The fields ``values`` sets, by dotted name.

    Parameters
    ----------
    values : mapping
        Field values named by section objects, dotted names or :data:`FLAT_NAMES`;
        other names are kept as they are (the caller refuses the unknown ones).

    Raises
    ------
    RoundConfigError
        A field set twice (under two of its names); the message names it.
    """
    dotted = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            named = {f"{key}.{name}": inner for name, inner in value.items()}
        else:
            named = {FLAT_NAMES.get(key, key): value}
        for name, inner in named.items():
            if name in dotted:
                raise RoundConfigError(f"config field {name!r} is set twice")
            dotted[name] = inner
    return dotted


def without_removed_fields(values: Mapping, refusal: Callable[[str, str], str]) -> dict:
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
