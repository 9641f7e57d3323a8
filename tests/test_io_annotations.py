"""Our own marks / lesions CSV and JSON files: exact round trip, bad rows, strict mode."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_lesion_harvest.geometry import Proposal3D, RecistMark
from napari_lesion_harvest.io.annotations import (
    MarkRecord,
    read_lesions,
    read_marks,
    write_lesions,
    write_marks,
)
from napari_lesion_harvest.io.deeplesion import read_dl_info
from napari_lesion_harvest.io.errors import FormatError


def _awkward_marks() -> list[MarkRecord]:
    rng = np.random.default_rng(7)
    records = []
    for i in range(5):
        coords = rng.uniform(0, 512, 8) + rng.uniform(0, 1e-9, 8)
        records.append(
            MarkRecord(
                f"00000{i}_01_01_001-010",
                RecistMark.from_measurement_coordinates(coords, z=i),
                origin="user",
                author='Dr. "Quote", Comma',
            )
        )
    records.append(
        MarkRecord("x", RecistMark.from_measurement_coordinates([1 / 3] * 8, 0), "dl_info")
    )
    return records


def _assert_same_marks(loaded, original):
    assert len(loaded) == len(original)
    for a, b in zip(loaded, original, strict=True):
        assert (a.volume_id, a.mark.z, a.origin, a.author) == (
            b.volume_id,
            b.mark.z,
            b.origin,
            b.author,
        )
        # bit-exact floats
        assert (
            a.mark.measurement_coordinates().tobytes()
            == b.mark.measurement_coordinates().tobytes()
        )


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_marks_round_trip_exactly(tmp_path, suffix):
    records = _awkward_marks()
    path = tmp_path / f"marks{suffix}"
    write_marks(path, records)
    loaded, report = read_marks(path)
    assert report.ok and report.rows_read == len(records)
    _assert_same_marks(loaded, records)


def test_dl_info_marks_survive_our_format(tmp_path, dl_info_rows_csv):
    info = read_dl_info(dl_info_rows_csv)
    records = [MarkRecord(r.volume_id, r.mark, "dl_info") for r in info.rows]
    write_marks(tmp_path / "m.csv", records)
    loaded, _ = read_marks(tmp_path / "m.csv")
    for record, row in zip(loaded, info.rows, strict=True):
        assert record.mark.measurement_coordinates().tolist() == list(row.measurement)
        assert record.mark.z == row.z
        np.testing.assert_allclose(record.mark.box(), row.bounding_box, atol=1e-3)


def _lesions() -> dict[str, list[Proposal3D]]:
    return {
        "000001_01_01_103-115": [
            Proposal3D(
                [7, 5, 6], [[1.1, 2, 3, 4], [1 / 7, 2, 3, 4], [5, 6, 7, 8]], [0.2, 0.3, 0.91]
            ),
            Proposal3D([0], [[10, 20, 30, 40]], [0.5], meta={"origin": "harvest", "round": 2}),
        ],
        "vol_b": [Proposal3D([3, 4], [[1, 1, 2, 2], [1, 1, 3, 3]], [1e-12, 0.75])],
    }


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_lesions_round_trip_exactly(tmp_path, suffix):
    lesions = _lesions()
    path = tmp_path / f"lesions{suffix}"
    write_lesions(path, lesions)
    loaded, report = read_lesions(path)
    assert report.ok
    assert list(loaded) == list(lesions)
    for volume_id, proposals in lesions.items():
        assert len(loaded[volume_id]) == len(proposals)
        for a, b in zip(loaded[volume_id], proposals, strict=True):
            assert a.slices.tolist() == b.slices.tolist()
            assert a.boxes.tobytes() == b.boxes.tobytes()
            assert a.scores.tobytes() == b.scores.tobytes()
            if suffix == ".json":
                assert a.meta == b.meta


def test_bad_mark_rows_are_reported_one_by_one_and_strict_raises(tmp_path):
    path = tmp_path / "marks.csv"
    write_marks(path, _awkward_marks()[:2])
    lines = path.read_text().splitlines()
    good = lines[1]
    fields = good.split(",")
    lines += [
        ",".join(["v", "3", "abc", *fields[3:]]),  # line 4: unparsable long_x1
        ",".join(["v", "-1", *fields[2:]]),  # line 5: negative z
        ",".join(["v", "1", *fields[2:10], "", "me"]),  # line 6: empty origin
        "v,1,2,3",  # line 7: too few fields
        ",".join(["v", "2", "nan", *fields[3:]]),  # line 8: non-finite
    ]
    path.write_text("\n".join(lines) + "\n")
    records, report = read_marks(path)
    assert len(records) == 2
    assert [(s.row, s.column) for s in report.skipped] == [
        (4, "long_x1"),
        (5, "z"),
        (6, "origin"),
        (7, None),
        (8, "long_x1"),
    ]
    assert "unparsable number 'abc'" in str(report.skipped[0])
    assert "5 skipped" in report.summary()
    with pytest.raises(FormatError, match=r"marks\.csv, line 4, column 'long_x1'") as info:
        read_marks(path, strict=True)
    assert info.value.row == 4


def test_bad_lesion_rows_and_json_records(tmp_path):
    path = tmp_path / "lesions.csv"
    write_lesions(path, _lesions())
    text = path.read_text() + "vol_b,0,4,1,1,3,3,0.1\nvol_b,0,9,1,1,3,oops,0.1\n"
    path.write_text(text)
    loaded, report = read_lesions(path)
    assert [(s.column, s.row) for s in report.skipped] == [("z", 8), ("y2", 9)]
    assert len(loaded["vol_b"][0].slices) == 2  # duplicate slice 4 was not merged in
    with pytest.raises(FormatError):
        read_lesions(path, strict=True)

    json_path = tmp_path / "lesions.json"
    write_lesions(json_path, _lesions())
    document = json.loads(json_path.read_text())
    document["lesions"][1]["boxes"] = [[1, 2, 3]]
    document["lesions"].append("not a lesion")
    json_path.write_text(json.dumps(document))
    loaded, report = read_lesions(json_path)
    assert [s.key for s in report.skipped] == ["lesions[1]", "lesions[3]"]
    assert sum(len(v) for v in loaded.values()) == 2


def test_wrong_header_format_tag_and_extension_are_errors(tmp_path):
    bad_header = tmp_path / "marks.csv"
    bad_header.write_text("volume,z\n")
    with pytest.raises(FormatError, match="header must be") as info:
        read_marks(bad_header)
    assert info.value.row == 1 and info.value.column == "volume_id"
    wrong_tag = tmp_path / "marks.json"
    wrong_tag.write_text(json.dumps({"format": "something else", "marks": []}))
    with pytest.raises(FormatError, match="not a napari-lesion-harvest.marks file"):
        read_marks(wrong_tag)
    with pytest.raises(FormatError, match="unknown annotation file type"):
        write_marks(tmp_path / "marks.txt", [])
