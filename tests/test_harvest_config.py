"""Round configuration: presets, JSON files, and errors that name the field."""

import json

import pytest

from napari_lesion_harvest.harvest.config import LITE, RoundConfig, load_config


def test_presets_by_name_and_paper_defaults():
    paper = load_config("paper")
    assert (paper.score_threshold, paper.link_iou, paper.match_iou) == (0.1, 0.8, 0.5)
    assert paper.harvest_precision == 0.95 and paper.hard_negatives_per_volume == 5
    assert load_config("lite") == LITE
    assert load_config("lite", seed=3).seed == 3


def test_json_file_overrides_a_preset_and_round_trips(tmp_path):
    path = tmp_path / "round.json"
    path.write_text(json.dumps({"preset": "lite", "lpg_train_steps": 50, "folds": 3}))
    config = load_config(str(path))
    assert (config.lpg_config, config.lpg_train_steps, config.folds) == ("lite", 50, 3)
    assert RoundConfig(**json.loads(config.to_json())) == config


def test_bad_configs_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="neither a preset"):
        load_config(str(tmp_path / "missing.json"))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"lpg_steps": 5}))
    with pytest.raises(ValueError, match="unknown config field.*lpg_steps"):
        load_config(str(path))
    with pytest.raises(ValueError, match="threshold_mode"):
        RoundConfig(threshold_mode="guess")
    with pytest.raises(ValueError, match="match_iou"):
        RoundConfig(match_iou=0)
