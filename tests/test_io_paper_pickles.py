"""The paper's DeepLesionAnnotation pickles: real files, restricted unpickling, MinedLesions."""

from __future__ import annotations

import os
import pickle
import pickletools
import subprocess
import sys

import numpy as np
import pytest

from napari_lesion_harvest.geometry import Proposal3D, iou_2d
from napari_lesion_harvest.io.deeplesion import parse_subvolume_id, read_dl_info
from napari_lesion_harvest.io.errors import FormatError, UnsafePickleError
from napari_lesion_harvest.io.paper_pickles import (
    load_restricted_pickle,
    read_3d_box_pickle,
    read_mined_lesions_pickle,
    read_recist_box_pickle,
    write_mined_lesions_pickle,
)


@pytest.mark.parametrize(
    ("file_name", "volumes", "boxes"),
    [
        ("Revised-Train744.pkl", 744, 3033),
        ("Revised-Train100.pkl", 100, 420),
        ("RECIST-Box-Valid.pkl", 3001, 4885),
    ],
)
def test_real_2d_pickles_load_with_readme_counts(annotation_dir, file_name, volumes, boxes):
    result = read_recist_box_pickle(annotation_dir / file_name)
    assert len(result) == volumes
    assert sum(len(v) for v in result.values()) == boxes
    for volume_id, slice_boxes in result.items():
        assert not volume_id.endswith(".annot")
        _, first, last = parse_subvolume_id(volume_id)
        assert slice_boxes.slices.min() >= 0 and slice_boxes.slices.max() <= last - first
        assert np.all(slice_boxes.boxes[:, 2:] > slice_boxes.boxes[:, :2])


def test_real_2d_pickle_values_match_the_file(annotation_dir):
    result = read_recist_box_pickle(annotation_dir / "Revised-Train744.pkl")
    entry = result["003433_01_01_024-040"]
    assert entry.slices.tolist() == [10]
    np.testing.assert_array_equal(entry.boxes, [[74.5, 204.278, 120.056, 255.167]])
    many = result["000214_01_01_033-054"]
    assert many.slices.tolist() == sorted(many.slices.tolist())
    assert len(many) == 12


def test_real_3d_box_pickle_agrees_with_dl_info(annotation_dir, dl_info_rows_csv):
    boxes_3d = read_3d_box_pickle(annotation_dir / "3D-Box.pkl")
    assert len(boxes_3d) == 272
    assert sum(len(b) for b in boxes_3d.values()) == 874
    # xyzxyz: z1 <= z2, x1 < x2; z is continuous (half-slice extents occur in the file)
    for boxes in boxes_3d.values():
        assert np.all(boxes[:, 2] <= boxes[:, 5]) and np.all(boxes[:, 0] < boxes[:, 3])
    z_ranges = boxes_3d["000029_01_01_057-069"][:, [2, 5]]
    assert np.isclose(z_ranges, [-0.5, 0.5]).all(axis=1).any()
    # The lesion of DL_info row 000091_04_01_090.png appears in 3D-Box.pkl: same
    # sub-volume id, key slice z inside the 3D box and the boxes overlapping.
    row = next(r for r in read_dl_info(dl_info_rows_csv).rows if r.series == "000091_04_01")
    assert row.volume_id == "000091_04_01_069-105" and row.z == 21
    boxes = boxes_3d[row.volume_id]
    spans = (boxes[:, 2] <= row.z) & (row.z <= boxes[:, 5])
    ious = iou_2d([row.bounding_box], boxes[spans][:, [0, 1, 3, 4]])[0]
    assert ious.max() > 0.7


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_naming_os_system_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"000001_01_01_001-002": _RunsShell(marker)}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*(posix|os)\.system"):
        read_recist_box_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"\x80\x02cbuiltins\neval\nq\x00X\x04\x00\x00\x001+1\x85R.",
        pickle.dumps(np.arange(3), protocol=2),  # numpy.core.multiarray._reconstruct
        pickle.dumps(np.float32(1.5), protocol=2),  # allowed scalar: loads
    ],
)
def test_only_numpy_scalar_dtype_and_codecs_globals_pass(payload):
    if b"_reconstruct" in payload or b"eval" in payload:
        with pytest.raises(UnsafePickleError, match="refusing to unpickle global"):
            load_restricted_pickle(payload, name="payload")
    else:
        assert load_restricted_pickle(payload) == np.float32(1.5)


def test_corrupt_and_wrong_layout_pickles_raise_format_errors(annotation_dir, tmp_path):
    data = (annotation_dir / "Revised-Train100.pkl").read_bytes()
    with pytest.raises(FormatError, match="not a readable pickle"):
        load_restricted_pickle(data[: len(data) // 2], name="half.pkl")
    with pytest.raises(FormatError, match="expected a list of 3D boxes") as info:
        read_3d_box_pickle(data, name="Revised-Train100.pkl")
    assert info.value.key == "002982_04_02_200-260.annot"
    bad_z = pickle.dumps({"v": {3: [[1.0, 2.0, 3.0, 4.0, 5.0, 5.0]]}}, protocol=2)
    with pytest.raises(FormatError, match="box on slice 3 says z = 5") as info:
        read_recist_box_pickle(bad_z, name="bad_z.pkl")
    assert info.value.key == "v" and info.value.path == "bad_z.pkl"
    nan_box = pickle.dumps({"v": [[(0, [1.0, 2.0, float("nan"), 4.0, 0.5])]]}, protocol=2)
    with pytest.raises(FormatError, match="non-finite"):
        read_mined_lesions_pickle(nan_box, name="nan.pkl")
    with pytest.raises(FormatError, match="cannot read file"):
        load_restricted_pickle(tmp_path / "missing.pkl")


def test_buffer_opcodes_are_refused_before_unpickling(monkeypatch):
    """A truncated BYTEARRAY8 (found by test_io_fuzz) made CPython's unpickler report
    a SystemError through sys.excepthook on top of its own error."""
    hooked = []
    monkeypatch.setattr("sys.excepthook", lambda *info: hooked.append(info))
    header = pickle.dumps({"v": [[1.0, 2.0]]}, protocol=2)[:-2]  # drop SETITEMS and STOP
    truncated = header + b"\x96\xe7e\x86q\x07eas."  # BYTEARRAY8 of an absurd length
    with pytest.raises(FormatError, match="truncated.pkl: pickle opcode BYTEARRAY8 at byte 40"):
        load_restricted_pickle(truncated, name="truncated.pkl")
    whole = pickle.dumps(bytearray(b"abc"), protocol=5)
    with pytest.raises(FormatError, match="BYTEARRAY8 at byte 11 is not supported"):
        load_restricted_pickle(whole, name="buffer.pkl")
    assert hooked == []


#: A mutated float64 pickle whose dtype state (six items, sizes -1) made numpy's
#: ``scalar`` crash the process (SIGSEGV) when numpy's own functions were allowed.
_CRASHING_PICKLE = (
    b"\x80\x02}q\x00X\x14\x00\x00\x00000001_01_"
    b"01_001-020q\x01]q\x02]q\x03(c"
    b"numpy._core.multiarr"
    b"ay\nscalar\nq\x04cnumpy\nd"
    b"type\nq\x05X\x02\x00\x00\x00f8q\x06\x89\x88\x87q"
    b"\x07RqK(K\x03X\x01\x00\x00\x00<q\tNJ\xff\xff\xff"
    b"\xffJ\xff\xff\xff\xffK\x00tq\nbc_codecs"
    b"\nencode\nq\x0bX\t\x00\x00\x00\x00\x00\x00\x00\x00"
    b"\x00\xc3\xb0?q\x0cX\x06\x00\x00\x00latin1q\r\x86"
    b"q\x0eRq\x0f\x86q\x10Rq\x11h\x04h\x08h\x0bX\x08\x00"
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00@q\x12h\r\x86q\x13Rq\x14"
    b"\x868q\x15Rq\x16h\x04h\x08h\x0bX\x08\x00\x00\x00\x00\x00"
    b"\x00\x00\x00\x00\x08@q\x17h\r\x86q\x18Rq\x19\x86q\x1aR"
    b"q\x1bh\x04h\x08h\x0bX\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10"
    b"@_h1\x8bq\x1ch\r\x86q\x1dRq\x1e\x86q\x1fRq"
    b" h\x04h\x08h\x0bX\t\x00\x00\x00\x00\x00\x00\x00\x00\x00\xc3\xa0"
    b'?q!h\r\x86q"Rq#\x15q$Rq%h\x04h'
    b"\x08h\x0bX\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x1a@q&h\r"
    b"\x86q'Rq(\x86q)Rq*eas."
)


def test_a_mutated_dtype_state_gives_a_format_error_not_a_crash(tmp_path):
    path = tmp_path / "mutated.pkl"
    path.write_bytes(_CRASHING_PICKLE)
    code = (
        "import sys\n"
        "from napari_lesion_harvest.io.errors import FormatError\n"
        "from napari_lesion_harvest.io.paper_pickles import read_mined_lesions_pickle\n"
        "try:\n"
        "    read_mined_lesions_pickle(sys.argv[1])\n"
        "except FormatError as error:\n"
        "    print(error)\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr  # -11 when the process crashed
    assert run.stdout.startswith(f"{path}: not a readable pickle")


@pytest.mark.parametrize(
    ("value", "loads"),
    [
        (np.float64(2.5).astype(">f8"), True),  # big-endian: the value, not the bytes
        (np.int16(-7), True),
        (np.bool_(True), True),
        (np.complex128(1 + 2j), False),  # not a plain number type
        (np.datetime64("2020-01-01"), False),
    ],
)
def test_only_plain_numeric_scalars_unpickle(value, loads):
    payload = pickle.dumps(value, protocol=2)
    if loads:
        loaded = load_restricted_pickle(payload)
        assert loaded == value and loaded.dtype.kind == value.dtype.kind
    else:
        with pytest.raises(FormatError, match="not a plain number type"):
            load_restricted_pickle(payload, name="payload")


def test_codecs_encode_decodes_only_latin1_text():
    assert load_restricted_pickle(pickle.dumps(b"\xf0?", protocol=2)) == b"\xf0?"
    rot13 = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(FormatError, match="only latin1 text"):
        load_restricted_pickle(rot13, name="rot13.pkl")


def test_mined_lesions_round_trip_with_only_builtin_types(tmp_path):
    lesions = {
        "000001_01_01_103-115": [
            Proposal3D(
                [4, 5, 6],
                [[10.5, 20, 30, 40.25], [11, 21, 31, 41], [12, 22, 32, 42]],
                [0.25, 0.9, 0.5],
            ),
            Proposal3D([0], [[1 / 3, 2 / 3, 5.0, 7.0]], [0.1]),
        ],
        "000002_01_01_001-010.annot": [Proposal3D([9], [[1, 2, 3, 4]], [1.0])],
    }
    path = tmp_path / "MinedLesions.pkl"
    write_mined_lesions_pickle(path, lesions)
    data = path.read_bytes()
    assert data[:2] == b"\x80\x02"
    ops = {op.name for op, _, _ in pickletools.genops(data)}
    assert not ops & {"GLOBAL", "STACK_GLOBAL", "REDUCE"}
    plain = pickle.loads(data)
    assert plain["000001_01_01_103-115"][0][1] == (5, [11.0, 21.0, 31.0, 41.0, 0.9])

    back = read_mined_lesions_pickle(path)
    assert list(back) == ["000001_01_01_103-115", "000002_01_01_001-010"]
    for original, loaded in zip(
        lesions["000001_01_01_103-115"], back["000001_01_01_103-115"], strict=True
    ):
        np.testing.assert_array_equal(loaded.slices, original.slices)
        np.testing.assert_array_equal(loaded.boxes, original.boxes)
        np.testing.assert_array_equal(loaded.scores, original.scores)
    assert back["000001_01_01_103-115"][0].s_g == 0.9
