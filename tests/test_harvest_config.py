"""Round configuration: presets, JSON files, and errors that name the field."""

import json
from dataclasses import fields, replace
from pathlib import Path

import pytest

from napari_lesion_harvest.harvest.config import LITE, PAPER, RoundConfig, load_config
from napari_lesion_harvest.harvest.errors import RoundConfigError
from tests.previous_version import OLD_FIELDS


def test_presets_by_name_and_paper_defaults():
    paper = load_config("paper")
    assert (paper.score_threshold, paper.link_iou, paper.fuse_iou) == (0.1, 0.8, 0.8)
    assert paper.match_iou == 0.5
    assert paper.harvest_precision == 0.95 and paper.hard_negatives_per_volume == 5
    assert paper == PAPER and load_config("lite") == LITE
    assert load_config("lite", seed=3).seed == 3


def test_json_file_overrides_a_preset_and_round_trips(tmp_path):
    path = tmp_path / "round.json"
    path.write_text(json.dumps({"preset": "lite", "lpg_train_steps": 50, "folds": 3}))
    config = load_config(str(path))
    assert (config.lpg_config, config.lpg_train_steps, config.folds) == ("lite", 50, 3)
    assert RoundConfig(**json.loads(config.to_json())) == config


def test_lpg_overrides_reach_the_architecture(tmp_path):
    from napari_lesion_harvest.harvest.stages import lpg_architecture

    assert lpg_architecture(LITE).hu_window == (-1024.0, 3071.0)
    path = tmp_path / "soft.json"
    path.write_text(json.dumps({"preset": "lite", "lpg_hu_window": [-200, 300]}))
    config = load_config(str(path), lpg_max_side=96)
    assert config.lpg_hu_window == (-200.0, 300.0)
    assert config.lpg_zoom_range == (0.6, 1.4)
    assert RoundConfig(**json.loads(config.to_json())) == config
    architecture = lpg_architecture(config)
    assert (architecture.hu_window, architecture.max_side) == ((-200.0, 300.0), 96)
    assert architecture.growth_rate == lpg_architecture(LITE).growth_rate
    with pytest.raises(ValueError, match="lpg_hu_window"):
        replace(PAPER, lpg_hu_window=(300, -200))


def test_the_lpc_reads_the_papers_hu_window_whatever_the_lpgs():
    from napari_lesion_harvest.harvest.stages import lpc_training_options
    from napari_lesion_harvest.lpc.models import build_classifier

    soft_lpg = replace(PAPER, lpg_hu_window=[-200, 300])
    options = lpc_training_options(soft_lpg, seed=1)
    assert options.hu_window is None
    assert build_classifier(hu_window=options.hu_window, pretrained=False).spec.hu_window == (
        -1024.0,
        3071.0,
    )


def test_the_lpc_choice_fields_round_trip_and_stay_the_papers_by_default(tmp_path):
    paper = load_config("paper")
    assert (paper.lpc_variant, paper.lpc_candidates) == ("multiview", None)
    assert (paper.lpc_v_h_scoring, paper.lpc_outside) == ("final_model", "air")
    path = tmp_path / "lpc.json"
    path.write_text(
        json.dumps(
            {
                "preset": "lite",
                "lpc_candidates": ["multiview", "features", "s_g"],
                "lpc_v_h_scoring": "fold_mean",
                "lpc_outside": "mirror",
            }
        )
    )
    config = load_config(str(path))
    assert config.lpc_candidates == ("multiview", "features", "s_g")
    assert RoundConfig(**json.loads(config.to_json())) == config
    assert replace(PAPER, lpc_variant="features").lpc_variant == "features"


def test_bad_configs_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="neither a preset"):
        load_config(str(tmp_path / "missing.json"))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"lpg_steps": 5}))
    with pytest.raises(ValueError, match="unknown config field.*lpg_steps"):
        load_config(str(path))
    with pytest.raises(ValueError, match="threshold_mode"):
        replace(PAPER, threshold_mode="guess")
    with pytest.raises(ValueError, match="match_iou"):
        replace(PAPER, match_iou=0)
    with pytest.raises(ValueError, match="fuse_iou"):
        replace(PAPER, fuse_iou=1.5)
    with pytest.raises(ValueError, match="lpg_zoom_range"):
        replace(PAPER, lpg_zoom_range=(1.4, 0.6))
    with pytest.raises(ValueError, match="lpg_flip_probability"):
        replace(PAPER, lpg_flip_probability=2.0)
    for crop in (16, 128.0, True):
        with pytest.raises(ValueError, match="'lpg_crop_px'.*>= 32"):
            replace(PAPER, lpg_crop_px=crop)
    with pytest.raises(ValueError, match="'lpg_learning_rate' must be a number > 0"):
        replace(PAPER, lpg_learning_rate=-1e-3)


#: For each field, values of the wrong type or out of range (as JSON could give them).
BAD_VALUES = {
    "lpg_config": ["huge", 1, None],
    "lpg_max_side": [16, 64.0, "64", True],
    "lpg_hu_window": [[300, -200], [1], ["a", "b"], 5],
    "lpg_zoom_range": [[0, 1], [1.4, 0.6], [1.0], None],
    "lpg_flip_probability": [-0.1, 1.5, "half", None, float("nan")],
    "lpg_train_steps": [0, -5, 2.5, "100", None],
    "lpg_finetune_steps": [-1, 1.5, None],
    "lpg_batch_size": [0, "abc", 4.0, True, None],
    "lpg_learning_rate": [0, -1.0, "fast", float("inf"), None],
    "lpg_crop_px": [16, 128.0, True],
    "scan_batch_size": [0, "8", None],
    "score_threshold": [0, 1.5, "0.1", None],
    "link_iou": [0, 2],
    "fuse_iou": [0, 1.5],
    "duplicate_iou": [0, -1, None],
    "match_iou": [0, 1.01],
    "lpg_ignore_known_lesions": ["true", 1, None],
    "lpg_edge_stack_probability": [-0.1, 1.5, "often", None, float("nan")],
    "lpc_variant": ["2.5d", None],
    "lpc_candidates": [[], ["features", "features"], ["resnet"], "features", [1]],
    "lpc_v_h_scoring": ["ensemble", None],
    "lpc_outside": ["zero", None],
    "lpc_epochs": [0, 1.5, None],
    "lpc_patch_size": [8, 32.0, None],
    "lpc_pad_px": [-1, "wide", None],
    "lpc_width": ["huge"],
    "harvest_precision": [0, 1.2, None],
    "threshold_mode": ["guess", None],
    "folds": [1, 0, 2.5, None],
    "hard_negative_min_objectness": [-0.5, 1.5, None],
    "hard_negatives_per_volume": [-1, 2.5, None],
    "max_rounds": [0, "3", None],
    "seed": [-1, 0.5, None],
}


def test_every_field_is_checked_for_type_and_range():
    assert set(BAD_VALUES) == {f.name for f in fields(RoundConfig)}


@pytest.mark.parametrize(
    ("field_name", "value"),
    [(name, value) for name, values in BAD_VALUES.items() for value in values],
)
def test_a_bad_field_in_a_json_file_names_the_file_and_the_field(tmp_path, field_name, value):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"preset": "lite", field_name: value}))
    with pytest.raises(RoundConfigError) as raised:
        load_config(str(path))
    message = str(raised.value)
    assert message.startswith(f"{path}: config field {field_name!r} must be"), message
    assert "\n" not in message


def test_numbers_are_normalised_and_whole_numbers_stay_whole(tmp_path):
    path = tmp_path / "round.json"
    path.write_text(json.dumps({"lpg_learning_rate": 1, "lpc_pad_px": 32, "folds": 3}))
    config = load_config(str(path))
    assert isinstance(config.lpg_learning_rate, float) and config.lpg_learning_rate == 1.0
    assert isinstance(config.lpc_pad_px, float) and config.folds == 3
    assert RoundConfig(**json.loads(config.to_json())) == config


def test_a_file_that_is_not_a_config_is_refused_in_one_line(tmp_path):
    path = tmp_path / "round.json"
    for text, expected in (
        ("[1, 2]", "expected a JSON object"),
        ('{"preset": ["lite"]}', "unknown preset"),
        ("{not json", "neither a preset"),
    ):
        path.write_text(text)
        with pytest.raises(RoundConfigError, match=expected):
            load_config(str(path))
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(RoundConfigError, match="neither a preset"):
        load_config(str(path))


def test_demo_changes_presets_but_not_a_users_file(tmp_path):
    from napari_lesion_harvest.harvest.demo import DEMO_PRESET_CHANGES, demo_config

    config = demo_config("lite", rounds=2, seed=5, size=128)
    assert (config.max_rounds, config.seed, config.lpg_max_side) == (2, 5, 128)
    assert config.lpg_hu_window == DEMO_PRESET_CHANGES["lpg_hu_window"]
    assert config.folds == DEMO_PRESET_CHANGES["folds"]
    assert (config.link_iou, config.fuse_iou) == (0.5, 0.5)
    assert config.lpc_pad_px == 16  # the paper's 64 pixels of a 512-pixel slice, in mm
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"preset": "lite", "folds": 4}))
    mine = demo_config(str(path), rounds=1, seed=0, size=64)
    assert (mine.folds, mine.lpg_hu_window, mine.lpg_max_side) == (4, None, 64)
    assert (mine.link_iou, mine.fuse_iou) == (0.8, 0.8)


def test_a_removed_field_in_a_file_loads_at_its_old_value_and_is_refused_otherwise(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"preset": "lite", "folds": 3, **OLD_FIELDS}))
    assert load_config(str(path)) == replace(LITE, folds=3)
    for name, value in (
        ("lpg_crossing_positives", True),
        ("lpg_finetune_slices", "with_positive"),
        ("lpg_finetune_learning_rate", 2e-4),
        ("lpc_hu_window", [-200, 300]),
        ("exclude_lesion_pieces", 0),  # not the old value false
    ):
        path.write_text(json.dumps({"preset": "lite", **OLD_FIELDS, name: value}))
        with pytest.raises(RoundConfigError) as raised:
            load_config(str(path))
        assert str(raised.value) == (
            f"{path}: config field {name!r} is no longer in this version (the file sets it "
            f"to {json.dumps(value)}); remove it from the file"
        )


def test_a_stored_configuration_with_a_removed_field_names_the_round():
    from napari_lesion_harvest.harvest.config import stored_config

    old = {**json.loads(LITE.to_json()), **OLD_FIELDS}
    assert stored_config(4, old) == LITE
    with pytest.raises(RoundConfigError) as raised:
        stored_config(4, {**old, "lpg_ignore_unmarked_background": True})
    assert str(raised.value) == (
        "round 4 was run with lpg_ignore_unmarked_background=true, which this version no "
        "longer has; discard it with `lesion-harvest round --discard`"
    )


def _docs_value(text: str):
    """A value of docs/harvest.md's configuration table (JSON, or a name in backticks)."""
    text = text.strip("`")
    try:
        return json.loads(text)
    except ValueError:
        return text


def test_the_docs_configuration_table_gives_every_field_its_preset_values():
    docs = Path(__file__).parents[1] / "docs" / "harvest.md"
    table = docs.read_text(encoding="utf-8").split("\n## Configuration\n")[1]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if line.startswith("| `") and len(cells) == 4:
            rows[cells[0].strip("`")] = (_docs_value(cells[1]), _docs_value(cells[2]))
    assert list(rows) == [f.name for f in fields(RoundConfig)]
    for name, (lite, paper) in rows.items():
        as_json = json.loads(LITE.to_json())[name], json.loads(PAPER.to_json())[name]
        assert (lite, paper) == as_json, name
