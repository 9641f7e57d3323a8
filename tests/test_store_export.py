"""Export of the completed annotation set: CSV, JSON and the paper's MinedLesions pickle."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.annotations import read_lesions, read_marks
from napari_lesion_harvest.io.paper_pickles import read_mined_lesions_pickle
from napari_lesion_harvest.store import (
    InvalidValueError,
    ProposalRow,
    StageResult,
    VolumeRecord,
)
from napari_lesion_harvest.store.export import export_annotations
from tests.builders import new_project, recist_mark, synthetic_volume, writing_round


def _tracklet(z0, x, scores):
    k = len(scores)
    boxes = [[x + 0.25 * i, 20.5, x + 15.75, 40.125 - i] for i in range(k)]
    return Proposal3D(np.arange(z0, z0 + k), boxes, scores)


@pytest.fixture
def project(tmp_path):
    """A project after one round, with its proposal rows (verdicts on rows 1 and 2)."""
    volumes = [
        VolumeRecord("000001_01_01_103-115", "deeplesion_png", "-", "V_H"),
        VolumeRecord("000002_01_01_010-020", "deeplesion_png", "-", "V_M"),
        VolumeRecord("000003_01_01_001-009", "deeplesion_png", "-", "V_H_test"),
    ]
    with new_project(tmp_path / "proj", volumes) as opened:
        opened.add_marks(
            [("000001_01_01_103-115", recist_mark(4)), ("000003_01_01_001-009", recist_mark(2))],
            author="DeepLesion",
        )
        opened.add_mark("000002_01_01_010-020", recist_mark(6, x=40), author="rad")
        gone = opened.add_mark("000002_01_01_010-020", recist_mark(7), author="rad")
        opened.delete_mark(gone.id, author="rad")
        rows = [
            ProposalRow(
                "000001_01_01_103-115",
                _tracklet(3, 50, [0.4, 0.95, 0.6]),
                "P_pos_H",
                s_c=0.9,
                s_gc=0.855,
            ),
            ProposalRow("000001_01_01_103-115", _tracklet(8, 90, [0.7, 0.3]), "P_neg_H", s_c=0.2),
            ProposalRow("000002_01_01_010-020", _tracklet(1, 30, [0.8]), "P_pos_H", s_c=0.7),
            ProposalRow("000003_01_01_001-009", _tracklet(0, 10, [0.5, 0.5]), "candidate"),
        ]
        with writing_round(opened) as round_:
            ids = round_.write("harvest", StageResult(proposals=rows))
        opened.set_verdict(ids[1], "accepted", author="rad")  # a hard negative that is a lesion
        opened.set_verdict(ids[2], "rejected", author="rad")  # a harvested false positive
        yield opened, rows


def test_export_writes_marks_and_harvested_lesions_in_all_formats(project, tmp_path):
    project, rows = project
    result = export_annotations(project, tmp_path / "out")
    assert sorted(p.name for p in result.files) == [
        "MinedLesions.pkl",
        "lesions.csv",
        "lesions.json",
        "marks.csv",
        "marks.json",
    ]
    assert (result.n_marks, result.n_lesions, result.round_number) == (3, 2, 1)

    for suffix in ("csv", "json"):
        marks, report = read_marks(tmp_path / "out" / f"marks.{suffix}", strict=True)
        assert report.rows_read == 3
        by_volume = {(m.volume_id, m.origin, m.author, m.mark.z) for m in marks}
        assert by_volume == {
            ("000001_01_01_103-115", "original", "DeepLesion", 4),
            ("000003_01_01_001-009", "original", "DeepLesion", 2),
            ("000002_01_01_010-020", "expert", "rad", 6),
        }
        expert = next(m for m in marks if m.origin == "expert")
        np.testing.assert_array_equal(
            expert.mark.measurement_coordinates(), recist_mark(6, x=40).measurement_coordinates()
        )

        lesions, _ = read_lesions(tmp_path / "out" / f"lesions.{suffix}", strict=True)
        assert list(lesions) == ["000001_01_01_103-115"]
        exported = lesions["000001_01_01_103-115"]
        expected = [rows[0].proposal, rows[1].proposal]
        for got, want in zip(exported, expected, strict=True):
            np.testing.assert_array_equal(got.slices, want.slices)
            np.testing.assert_allclose(got.boxes, want.boxes, rtol=1e-6)  # stored as float32
            np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)

    lesions, _ = read_lesions(tmp_path / "out" / "lesions.json", strict=True)
    meta = [lesion.meta for lesion in lesions["000001_01_01_103-115"]]
    assert [(m["role"], m["verdict"], m["round"]) for m in meta] == [
        ("P_pos_H", None, 1),
        ("P_neg_H", "accepted", 1),
    ]
    assert meta[0]["s_gc"] == pytest.approx(0.855)
    np.testing.assert_allclose(meta[0]["box_3d"], rows[0].proposal.box_3d)


def test_mined_lesions_pickle_has_the_paper_layout(project, tmp_path):
    project, _ = project
    export_annotations(project, tmp_path / "out", formats=["pickle"])
    raw = (tmp_path / "out" / "MinedLesions.pkl").read_bytes()
    assert raw[:2] == b"\x80\x02"  # protocol 2
    payload = pickle.loads(raw)
    lesion = payload["000001_01_01_103-115"][0]
    assert [z for z, _ in lesion] == [3, 4, 5]
    z, values = lesion[1]
    assert type(z) is int and all(type(v) is float for v in values) and len(values) == 5
    assert values[4] == pytest.approx(0.95)
    # the package's own restricted reader agrees
    read = read_mined_lesions_pickle(tmp_path / "out" / "MinedLesions.pkl")
    assert [len(lesions) for lesions in read.values()] == [2]


def test_export_filters_splits_and_rejects_unknown_formats(project, tmp_path):
    project, _ = project
    result = export_annotations(project, tmp_path / "vm", splits=["V_M"], formats=["json"])
    assert (result.n_marks, result.n_lesions) == (1, 0)
    with pytest.raises(InvalidValueError, match="xlsx"):
        export_annotations(project, tmp_path / "x", formats=["xlsx"])
    a_file = tmp_path / "a_file"
    a_file.write_text("kept")
    with pytest.raises(InvalidValueError, match=f"{a_file} exists and is not a folder"):
        export_annotations(project, a_file, formats=["json"])
    assert a_file.read_text() == "kept"


def test_export_before_any_round_has_marks_and_no_lesions(tmp_path):
    with new_project(tmp_path / "p", [synthetic_volume("v")], author="me") as project:
        project.add_mark("v", recist_mark(1), author="me")
        result = export_annotations(project)
        assert result.folder == project.exports_dir
        assert (result.n_marks, result.n_lesions, result.round_number) == (1, 0, None)
        assert pickle.loads((project.exports_dir / "MinedLesions.pkl").read_bytes()) == {}
