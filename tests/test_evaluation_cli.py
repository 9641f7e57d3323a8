"""`lesion-harvest evaluate` end to end on the paper's pickles and our lesions CSV; the plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_lesion_harvest.cli import main
from napari_lesion_harvest.evaluation.plots import evaluation_figure
from napari_lesion_harvest.evaluation.report import evaluate
from napari_lesion_harvest.evaluation.tables import ProposalTable, RecistTruth
from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.annotations import write_lesions
from napari_lesion_harvest.io.paper_pickles import read_recist_box_pickle


@pytest.fixture
def train100(annotation_dir):
    return annotation_dir / "Revised-Train100.pkl"


def shifted_detections(marks, rng):
    """Every other mark found by a 3-slice tracklet, shifted by up to 4 px; one FP per volume."""
    detections = {}
    for volume, boxes in marks.items():
        props = []
        for number, (z, box) in enumerate(zip(boxes.slices, boxes.boxes, strict=True)):
            if number % 2 == 0:
                moved = box + rng.uniform(-4, 4, 4)
                props.append(Proposal3D([z, z + 1, z + 2], [moved] * 3, rng.uniform(0, 1, 3)))
        props.append(Proposal3D([0], [[0, 0, 30, 30]], [rng.uniform(0, 1)]))
        detections[volume] = props
    return detections


def test_evaluate_command_json_matches_the_library(train100, tmp_path, capsys):
    marks = read_recist_box_pickle(train100)
    detections = shifted_detections(marks, np.random.default_rng(0))
    csv_path = tmp_path / "detections.csv"
    write_lesions(csv_path, detections)
    plot_path = tmp_path / "curves.png"

    argv = ["evaluate", "--truth", str(train100), "--detections", str(csv_path)]
    assert main([*argv, "--json", "--plot", str(plot_path), "--baseline", str(train100)]) == 0
    document = json.loads(capsys.readouterr().out)

    truth = RecistTruth.from_mapping(marks)
    expected = evaluate(truth, ProposalTable.from_proposals(detections, truth.volume_ids))
    assert document["n_lesions"] == 420 and document["n_images"] == 100
    assert [f["sensitivity"] for f in document["froc"]] == pytest.approx(
        expected.sensitivities.tolist(), abs=1e-15
    )
    assert document["ap"] == pytest.approx(expected.ap, abs=1e-15)
    assert document["baseline"] == {"recall": 1.0, "precision": pytest.approx(1.0, abs=0.01)}
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main([*argv, "--metric", "2d"]) == 0
    text = capsys.readouterr().out
    assert "metric 2d (IoU >= 0.5)" in text and "FPs per marked slice" in text


def test_evaluate_command_reports_bad_inputs(train100, annotation_dir, tmp_path, capsys):
    stray = tmp_path / "stray.csv"
    write_lesions(stray, {"not_a_test_volume": [Proposal3D([0], [[0, 0, 9, 9]], [0.5])]})
    argv = ["evaluate", "--truth", str(train100), "--detections", str(stray)]
    assert main(argv) == 2
    assert "not in the test set: not_a_test_volume" in capsys.readouterr().err
    assert main([*argv, "--ignore-extra-volumes"]) == 0
    assert "1 detection volume(s) outside the truth were ignored" in capsys.readouterr().out

    broken = tmp_path / "broken.csv"
    broken.write_text("volume_id,lesion,z,x1,y1,x2,y2,score\nv,0,1,2,3,oops,5,0.5\n")
    assert main(["evaluate", "--truth", str(train100), "--detections", str(broken)]) == 2
    assert "broken.csv" in capsys.readouterr().err

    three_d = str(annotation_dir / "3D-Box.pkl")
    assert main(["evaluate", "--truth", three_d, "--detections", three_d]) == 2
    assert "needs RecistTruth" in capsys.readouterr().err
    assert main(["evaluate", "--truth", three_d, "--detections", three_d, "--metric", "3d"]) == 0


def test_figure_marks_the_froc_readings_and_labels_axes(train100):
    marks = read_recist_box_pickle(train100)
    truth = RecistTruth.from_mapping(marks)
    table = ProposalTable.from_proposals(
        shifted_detections(marks, np.random.default_rng(1)), truth.volume_ids
    )
    result = evaluate(truth, table)
    froc_ax, pr_ax = evaluation_figure({"run": result}).axes
    assert froc_ax.get_xlabel() == "False positives per volume"
    assert pr_ax.get_xlabel() == "Recall" and pr_ax.get_ylabel() == "Precision"
    markers = [line for line in froc_ax.get_lines() if line.get_marker() == "o"]
    np.testing.assert_array_equal(markers[0].get_ydata(), result.sensitivities)
    pr_markers = [line for line in pr_ax.get_lines() if line.get_marker() == "o"]
    found = [p.recall for p in result.recall_at_precision if np.isfinite(p.precision)]
    np.testing.assert_array_equal(pr_markers[0].get_xdata(), found)
