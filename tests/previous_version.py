"""What the previous version of the package stored, for the tests of reading it back."""

import json

from napari_lesion_harvest.harvest.config_migration import FLAT_NAMES, dotted_fields

#: The fields the previous version had, at the value both its presets gave them, as its
#: rounds stored them.
OLD_FIELDS = {
    "lpg_crossing_positives": False,
    "lpg_ignore_unmarked_background": False,
    "lpg_finetune_slices": "all",
    "lpg_finetune_learning_rate": None,
    "exclude_lesion_pieces": False,
    "lpc_hu_window": None,
}


def as_previous_version(config) -> dict:
    """``config`` as the previous version stored it with a round: flat names (the
    fields added since, which have none, left out), and the fields it had that this
    version removed, at the value both presets gave them."""
    flat_names = {dotted: flat for flat, dotted in FLAT_NAMES.items()}
    values = dotted_fields(json.loads(config.to_json()))
    kept = {name: v for name, v in values.items() if "." not in name}
    kept |= {flat_names[name]: v for name, v in values.items() if name in flat_names}
    return {**kept, **OLD_FIELDS}
