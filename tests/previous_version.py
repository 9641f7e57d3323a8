"""What the previous version of the package stored, for the tests of reading it back."""

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
