"""Round configuration: presets, JSON files, and errors that name the field."""

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest

from napari_lesion_harvest.harvest.config import (
    LITE,
    PAPER,
    field_names,
    load_config,
    stored_config,
    with_changes,
)
from napari_lesion_harvest.harvest.config_migration import FLAT_NAMES, dotted_fields
from napari_lesion_harvest.harvest.config_overrides import add_set_option, with_set_fields
from napari_lesion_harvest.harvest.errors import RoundConfigError
from tests.previous_version import OLD_FIELDS, as_previous_version


def test_presets_by_name_and_paper_defaults():
    paper = load_config("paper")
    scan = paper.scan
    assert (scan.score_threshold, scan.link_iou, scan.fuse_iou) == (0.1, 0.8, 0.8)
    assert paper.harvest.match_iou == 0.5
    assert paper.harvest.precision == 0.95 and paper.harvest.hard_negatives_per_volume == 5
    assert paper == PAPER and load_config("lite") == LITE
    assert load_config("lite", {"seed": 3}).seed == 3


def test_the_paper_preset_gives_the_components_their_own_defaults():
    from napari_lesion_harvest.harvest.stages import lpc_plan, lpg_training_options
    from napari_lesion_harvest.lpc.options import LPCPlan, LPCTrainOptions
    from napari_lesion_harvest.lpg.train import LPGTrainOptions

    lpg = PAPER.lpg
    built = lpg_training_options(PAPER, steps=lpg.train_steps, batch_size=lpg.batch_size, seed=0)
    assert replace(built, checkpoint_every=0) == LPGTrainOptions()
    assert lpc_plan(PAPER, seed=0) == LPCPlan(("multiview",), LPCTrainOptions())
    lite = lpc_plan(LITE, seed=4)
    assert (lite.options.patch_size, lite.options.width, lite.options.seed) == (64, "lite", 4)


def test_the_precision_reaches_the_lpgs_training_and_scan():
    from napari_lesion_harvest.harvest.stages import lpg_training_options, scan_options

    assert (PAPER.lpg.precision, PAPER.scan.precision) == ("auto", "auto")
    config = with_changes(LITE, {"lpg.precision": "bfloat16", "scan.precision": "float32"})
    options = lpg_training_options(config, steps=3, batch_size=2, seed=0)
    assert options.precision == "bfloat16"
    assert scan_options(config)["precision"] == "float32"


def test_json_file_overrides_a_preset_and_round_trips(tmp_path):
    path = tmp_path / "round.json"
    path.write_text(json.dumps({"preset": "lite", "lpg": {"train_steps": 50}, "lpc.folds": 3}))
    config = load_config(str(path))
    assert (config.lpg.architecture, config.lpg.train_steps, config.lpc.folds) == ("lite", 50, 3)
    assert config.lpg.batch_size == LITE.lpg.batch_size  # the section's other fields: lite's
    assert stored_config(1, json.loads(config.to_json())) == config


def test_lpg_overrides_reach_the_architecture(tmp_path):
    from napari_lesion_harvest.harvest.stages import lpg_architecture

    assert lpg_architecture(LITE).hu_window == (-1024.0, 3071.0)
    path = tmp_path / "soft.json"
    path.write_text(json.dumps({"preset": "lite", "lpg": {"hu_window": [-200, 300]}}))
    config = load_config(str(path), {"lpg.max_side": 96})
    assert config.lpg.hu_window == (-200.0, 300.0)
    assert config.lpg.zoom_range == (0.6, 1.4)
    assert stored_config(1, json.loads(config.to_json())) == config
    architecture = lpg_architecture(config)
    assert (architecture.hu_window, architecture.max_side) == ((-200.0, 300.0), 96)
    assert architecture.growth_rate == lpg_architecture(LITE).growth_rate
    with pytest.raises(ValueError, match="lpg.hu_window"):
        replace(PAPER.lpg, hu_window=(300, -200))


def test_the_lpc_reads_the_papers_hu_window_whatever_the_lpgs():
    from napari_lesion_harvest.harvest.stages import lpc_training_options
    from napari_lesion_harvest.lpc.models import build_classifier

    soft_lpg = with_changes(PAPER, {"lpg.hu_window": [-200, 300]})
    options = lpc_training_options(soft_lpg, seed=1)
    assert options.hu_window is None
    assert build_classifier(hu_window=options.hu_window, pretrained=False).spec.hu_window == (
        -1024.0,
        3071.0,
    )


def test_the_lpc_choice_fields_round_trip_and_stay_the_papers_by_default(tmp_path):
    paper = load_config("paper")
    assert (paper.lpc.variant, paper.lpc.candidates) == ("multiview", None)
    assert (paper.lpc.v_h_scoring, paper.lpc.outside) == ("final_model", "air")
    path = tmp_path / "lpc.json"
    path.write_text(
        json.dumps(
            {
                "preset": "lite",
                "lpc": {
                    "candidates": ["multiview", "features", "s_g"],
                    "v_h_scoring": "fold_mean",
                    "outside": "mirror",
                },
            }
        )
    )
    config = load_config(str(path))
    assert config.lpc.candidates == ("multiview", "features", "s_g")
    assert stored_config(1, json.loads(config.to_json())) == config
    assert with_changes(PAPER, {"lpc.variant": "features"}).lpc.variant == "features"


def test_bad_configs_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="neither a preset"):
        load_config(str(tmp_path / "missing.json"))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"lpg_steps": 5}))
    with pytest.raises(ValueError) as raised:
        load_config(str(path))
    assert str(raised.value) == (
        f"{path}: unknown config field 'lpg_steps'; did you mean lpg.train_steps, "
        "lpg.finetune_steps?"
    )
    path.write_text(json.dumps({"lpg": 5}))
    with pytest.raises(ValueError, match="'lpg' must be an object of its fields"):
        load_config(str(path))
    with pytest.raises(ValueError, match="lpc.threshold_mode"):
        replace(PAPER.lpc, threshold_mode="guess")
    with pytest.raises(ValueError, match="harvest.match_iou"):
        replace(PAPER.harvest, match_iou=0)
    with pytest.raises(ValueError, match="scan.fuse_iou"):
        with_changes(PAPER, {"fuse_iou": 1.5})
    with pytest.raises(ValueError, match="lpg.zoom_range"):
        replace(PAPER.lpg, zoom_range=(1.4, 0.6))
    with pytest.raises(ValueError, match="lpg.flip_probability"):
        replace(PAPER.lpg, flip_probability=2.0)
    for crop in (16, 128.0, True):
        with pytest.raises(ValueError, match="'lpg.crop_px'.*>= 32"):
            with_changes(PAPER, {"lpg.crop_px": crop})
    with pytest.raises(ValueError, match="'lpg.learning_rate' must be a number > 0"):
        replace(PAPER.lpg, learning_rate=-1e-3)


#: For each field, values of the wrong type or out of range (as JSON could give them).
BAD_VALUES = {
    "lpg.architecture": ["huge", 1, None],
    "lpg.max_side": [16, 64.0, "64", True],
    "lpg.hu_window": [[300, -200], [1], ["a", "b"], 5],
    "lpg.zoom_range": [[0, 1], [1.4, 0.6], [1.0], None],
    "lpg.flip_probability": [-0.1, 1.5, "half", None, float("nan")],
    "lpg.train_steps": [0, -5, 2.5, "100", None],
    "lpg.finetune_steps": [-1, 1.5, None],
    "lpg.batch_size": [0, "abc", 4.0, True, None],
    "lpg.learning_rate": [0, -1.0, "fast", float("inf"), None],
    "lpg.crop_px": [16, 128.0, True],
    "scan.batch_size": [0, "8", None],
    "scan.score_threshold": [0, 1.5, "0.1", None],
    "scan.link_iou": [0, 2],
    "scan.fuse_iou": [0, 1.5],
    "scan.duplicate_iou": [0, -1, None],
    "scan.precision": ["half", None, 16],
    "harvest.match_iou": [0, 1.01],
    "lpg.ignore_known_lesions": ["true", 1, None],
    "lpg.precision": ["bf16", None],
    "lpg.edge_stack_probability": [-0.1, 1.5, "often", None, float("nan")],
    "lpc.variant": ["2.5d", None],
    "lpc.candidates": [[], ["features", "features"], ["resnet"], "features", [1]],
    "lpc.v_h_scoring": ["ensemble", None],
    "lpc.outside": ["zero", None],
    "lpc.epochs": [0, 1.5, None],
    "lpc.patch_size": [8, 32.0, None],
    "lpc.pad_px": [-1, "wide", None],
    "lpc.width": ["huge"],
    "harvest.precision": [0, 1.2, None],
    "harvest.threshold_lesions": ["marked", 1, None],
    "lpc.threshold_mode": ["guess", None],
    "lpc.folds": [1, 0, 2.5, None],
    "harvest.hard_negative_min_objectness": [-0.5, 1.5, None],
    "harvest.hard_negatives_per_volume": [-1, 2.5, None],
    "max_rounds": [0, "3", None],
    "seed": [-1, 0.5, None],
}


def test_every_field_is_checked_for_type_and_range():
    assert set(BAD_VALUES) == set(field_names())


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
    path.write_text(json.dumps({"lpg.learning_rate": 1, "lpc": {"pad_px": 32, "folds": 3}}))
    config = load_config(str(path))
    assert isinstance(config.lpg.learning_rate, float) and config.lpg.learning_rate == 1.0
    assert isinstance(config.lpc.pad_px, float) and config.lpc.folds == 3
    assert stored_config(1, json.loads(config.to_json())) == config


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
    assert (config.max_rounds, config.seed, config.lpg.max_side) == (2, 5, 128)
    assert config.lpg.hu_window == DEMO_PRESET_CHANGES["lpg.hu_window"]
    assert config.lpc.folds == DEMO_PRESET_CHANGES["lpc.folds"]
    assert (config.scan.link_iou, config.scan.fuse_iou) == (0.5, 0.5)
    assert config.lpc.pad_px == 16  # the paper's 64 pixels of a 512-pixel slice, in mm
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"preset": "lite", "lpc": {"folds": 4}}))
    mine = demo_config(str(path), rounds=1, seed=0, size=64)
    assert (mine.lpc.folds, mine.lpg.hu_window, mine.lpg.max_side) == (4, None, 64)
    assert (mine.scan.link_iou, mine.scan.fuse_iou) == (0.8, 0.8)


def test_a_removed_field_in_a_file_loads_at_its_old_value_and_is_refused_otherwise(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"preset": "lite", "folds": 3, **OLD_FIELDS}))
    assert load_config(str(path)) == with_changes(LITE, {"lpc.folds": 3})
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
    old = {**_previous_version("lite"), **OLD_FIELDS}
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
    assert list(rows) == field_names()
    lite_fields, paper_fields = (dotted_fields(json.loads(c.to_json())) for c in (LITE, PAPER))
    for name, (lite, paper) in rows.items():
        assert (lite, paper) == (lite_fields[name], paper_fields[name]), name


def _previous_version(preset: str) -> dict:
    """The ``preset``'s configuration as the previous version (flat field names) stored it
    with its rounds."""
    path = Path(__file__).parent / "data" / f"round_config_flat_{preset}.json"
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("preset", "config"), [("paper", PAPER), ("lite", LITE)])
def test_a_configuration_the_previous_version_stored_flat_loads_with_every_value(preset, config):
    old = _previous_version(preset)
    assert set(old) == set(FLAT_NAMES) | {"max_rounds", "seed"}
    assert as_previous_version(config) == {**old, **OLD_FIELDS}
    assert stored_config(2, old) == config
    assert stored_config(2, {**old, "lpg_train_steps": 7}).lpg.train_steps == 7
    with pytest.raises(RoundConfigError) as raised:
        stored_config(2, {**old, "lpc_epochs": 0})
    assert str(raised.value) == (
        "the configuration stored with round 2: config field 'lpc.epochs' must be a whole "
        "number >= 1, got 0"
    )


def test_a_field_set_under_two_names_is_refused(tmp_path):
    path = tmp_path / "twice.json"
    path.write_text(json.dumps({"lpg": {"train_steps": 50}, "lpg_train_steps": 60}))
    with pytest.raises(RoundConfigError) as raised:
        load_config(str(path))
    assert str(raised.value) == f"{path}: config field 'lpg.train_steps' is set twice"


def _parser():
    parser = argparse.ArgumentParser(prog="bench")
    add_set_option(parser)
    return parser


def test_set_takes_dotted_and_flat_names_and_names_an_unknown_one(capsys):
    parser = _parser()
    texts = parser.parse_args(["--set", "lpg.train_steps=80", "--set", "folds=3"]).set
    changed = with_set_fields(LITE, texts, parser)
    assert changed == with_changes(LITE, {"lpg.train_steps": 80, "lpc.folds": 3})
    assert (changed.lpg.train_steps, changed.lpc.folds) == (80, 3)
    with pytest.raises(SystemExit) as exited:
        with_set_fields(LITE, ["lpg.train_step=80"], parser)
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (
        "bench: error: --set: unknown config field 'lpg.train_step'; did you mean "
        "lpg.train_steps, lpg.finetune_steps?"
    )
    with pytest.raises(SystemExit):
        with_set_fields(LITE, ["lpg.batch_size=0"], parser)
    assert "'lpg.batch_size' must be a whole number >= 1, got 0" in capsys.readouterr().err
