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
    ALLOWED_GLOBALS,
    MAX_NESTING,
    MAX_PICKLE_BYTES,
    _boxes_3d,
    _mined_lesions,
    _slice_boxes,
    _Visits,
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


#: A mutated float64 pickle (found by test_io_fuzz) whose dtype state (six items,
#: sizes -1) made numpy's ``scalar`` crash the process (SIGSEGV) when numpy's own
#: functions were allowed. Its BINPUT 75 (byte 102) is now refused before unpickling.
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


#: The same dtype state in a well-formed pickle of one float64 (1.5): plain
#: ``pickle.loads`` crashes on it; the stand-ins read only the byte order.
_SHORT_DTYPE_STATE_PICKLE = (
    b"\x80\x02cnumpy._core.multiarray\nscalar\ncnumpy\ndtype\nX\x02\x00\x00\x00f8\x89\x88\x87R"
    b"(K\x03X\x01\x00\x00\x00<NJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    b"c_codecs\nencode\nX\t\x00\x00\x00\x00\x00\x00\x00\x00\x00\xc3\xb8?"
    b"X\x06\x00\x00\x00latin1\x86R\x86R."
)


@pytest.mark.parametrize(
    ("payload", "printed"),
    [
        (_CRASHING_PICKLE, "{path}: pickle opcode BINPUT at byte 102"),
        (_SHORT_DTYPE_STATE_PICKLE, "1.5"),
    ],
)
def test_a_mutated_dtype_state_gives_a_format_error_not_a_crash(tmp_path, payload, printed):
    path = tmp_path / "mutated.pkl"
    path.write_bytes(payload)
    code = (
        "import sys\n"
        "from napari_lesion_harvest.io.errors import FormatError\n"
        "from napari_lesion_harvest.io.paper_pickles import load_restricted_pickle\n"
        "try:\n"
        "    print(load_restricted_pickle(sys.argv[1]))\n"
        "except FormatError as error:\n"
        "    print(error)\n"
    )
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr  # -11 when the process crashed
    assert run.stdout.startswith(printed.format(path=path))


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


# --------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    "file_name",
    ["Revised-Train744.pkl", "Revised-Train100.pkl", "RECIST-Box-Valid.pkl", "3D-Box.pkl"],
)
def test_real_pickles_unpickle_as_numpy_itself_does(annotation_dir, file_name):
    """The scan and stand-ins change nothing on the released (trusted) files."""
    data = (annotation_dir / file_name).read_bytes()
    ours = load_restricted_pickle(data, name=file_name)
    numpy_own = pickle.loads(data, encoding="latin1")

    def same(a, b):
        if isinstance(a, dict):
            return type(b) is dict and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list | tuple):
            return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
        return type(a) is type(b) and a == b and getattr(a, "dtype", 0) == getattr(b, "dtype", 0)

    assert same(ours, numpy_own)


def _deep_tuple_key(levels: int) -> bytes:
    """``{((((),),),): 1}``, ``levels`` deep: hashing the key recurses in C."""
    return b"\x80\x02}" + b")" + b"\x85" * levels + b"K\x01s."


def _tuple_dag_key(levels: int) -> bytes:
    """``{t: 1}`` with ``t = (u, u)``, ``u = (v, v)``, ...: ``2**levels`` empty tuples
    through shared references (memo slot 0), each level costing 5 bytes."""
    return b"\x80\x02}" + b")" + b"q\x00h\x00\x86" * levels + b"K\x01s."


def _shared_boxes(volumes: int, references: int) -> bytes:
    """A valid RECIST-box layout in which every volume shares one slice dict whose
    list holds ``references`` references to one box."""
    per_slice = {0: [[10.0, 20.0, 30.0, 40.0, 0.0, 0.0]] * references}
    return pickle.dumps({f"{v:06d}_01_01_001-002": per_slice for v in range(volumes)}, protocol=2)


#: In a child process: the FormatError (or "loaded") of reader argv[2] on file
#: argv[1], under an address-space limit 256 MiB above what the imports take.
_BOUNDED_READ = """
import resource, sys
from napari_lesion_harvest.io import paper_pickles
from napari_lesion_harvest.io.errors import FormatError
with open("/proc/self/status") as status:
    in_use = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
_, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (in_use + 256 * 2**20, hard))
try:
    getattr(paper_pickles, sys.argv[2])(sys.argv[1])
    print("loaded")
except FormatError as error:
    print(error)
"""


def _read_in_child(path, reader: str) -> str:
    """The child's one line; a crash, a hang past 60 s or an escaped error fails."""
    run = subprocess.run(
        [sys.executable, "-c", _BOUNDED_READ, str(path), reader],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, f"exit status {run.returncode}: {run.stderr[-3000:]}"
    return run.stdout.strip()


@pytest.mark.parametrize(
    ("payload", "reader", "refusal"),
    [
        pytest.param(  # 300 KB: the process crashed (SIGSEGV) hashing the key
            _deep_tuple_key(300_000),
            "read_recist_box_pickle",
            f"pickle opcode TUPLE1 at byte 19 nests containers deeper than the limit of "
            f"{MAX_NESTING} levels",
            id="deep-tuple-key",
        ),
        pytest.param(  # 330 bytes: hashing the key (and printing it) took 2**64 steps
            _tuple_dag_key(64),
            "read_recist_box_pickle",
            "makes an object that shared references expand to more than 328 objects, the limit",
            id="exponential-shared-tuple-key",
        ),
        pytest.param(  # 51 KB: reading took 10 million boxes (a 64 KB one: 35 s, 490 MB)
            _shared_boxes(1_000, 10_000),
            "read_recist_box_pickle",
            "APPENDS at byte 16,113 makes an object that shared references expand to more than",
            id="quadratic-shared-boxes",
        ),
        pytest.param(  # 9 bytes: CPython's memo array grew to 2**26 slots (1 GB)
            b"\x80\x02Nr" + (2**26).to_bytes(4, "little") + b".",
            "read_3d_box_pickle",
            "pickle opcode LONG_BINPUT at byte 3 stores memo index 67,108,864, beyond the "
            "0 objects stored so far",
            id="memo-index",
        ),
    ],
)
def test_hostile_pickles_are_refused_before_building_objects(tmp_path, payload, reader, refusal):
    path = tmp_path / "hostile.pkl"
    path.write_bytes(payload)
    line = _read_in_child(path, reader)
    assert line.startswith(f"{path}: pickle opcode ") and refusal in line


def test_a_lesion_on_many_slices_reads_in_linear_time(tmp_path):
    """A repeated-slice check by list search made this file take minutes (n**2 / 2)."""
    path = tmp_path / "MinedLesions.pkl"
    lesion = [(z, [1, 2, 3, 4, 0]) for z in range(200_000)]
    path.write_bytes(pickle.dumps({"000001_01_01_001-002": [lesion]}, protocol=2))
    assert _read_in_child(path, "read_mined_lesions_pickle") == "loaded"


def test_container_keys_sets_wide_integers_and_cycles_are_refused():
    tuple_key = pickle.dumps({(1, 2): [[1.0, 2.0, 3.0, 4.0, 0.0, 0.0]]}, protocol=2)
    with pytest.raises(FormatError, match=r"key\.pkl: .* uses a container or a global as a dict"):
        read_3d_box_pickle(tuple_key, name="key.pkl")
    a_set = pickle.dumps({"v": {1.0}}, protocol=4)
    with pytest.raises(FormatError, match="EMPTY_SET at byte 17 is not supported"):
        load_restricted_pickle(a_set, name="set.pkl")
    wide = pickle.dumps({"v": [[1.0, 2.0, 3.0, 4.0, 2**70, 5.0]]}, protocol=2)
    with pytest.raises(FormatError, match="LONG1 at byte 56 holds an integer wider than 64 bits"):
        read_3d_box_pickle(wide, name="wide.pkl")
    cycle = []
    cycle.append(cycle)
    with pytest.raises(FormatError, match="APPEND at byte .* already placed inside another"):
        load_restricted_pickle(pickle.dumps({"v": cycle}, protocol=2), name="cycle.pkl")
    huge_slice = pickle.dumps({"v": [[(1e300, [1.0, 2.0, 3.0, 4.0, 0.5])]]}, protocol=2)
    with pytest.raises(FormatError, match="slice index must be a whole number from 0 to 2"):
        read_mined_lesions_pickle(huge_slice, name="huge.pkl")


def test_state_cannot_be_set_on_an_allowed_global():
    """BUILD on a global would change the stand-in function for every later read."""
    scalar = ALLOWED_GLOBALS[("numpy.core.multiarray", "scalar")]
    defaults = b"X\x0c\x00\x00\x00__defaults__(K\x01K\x02t"
    payload = b"\x80\x02cnumpy.core.multiarray\nscalar\nN}" + defaults + b"s\x86b."
    with pytest.raises(FormatError, match="BUILD at byte 59 sets the state of a global"):
        load_restricted_pickle(payload, name="build.pkl")
    assert scalar.__defaults__ is None


def test_files_over_the_size_limit_are_refused_unread(tmp_path):
    path = tmp_path / "huge.pkl"
    with open(path, "wb") as file:  # sparse: no data is written or read
        file.truncate(MAX_PICKLE_BYTES + 1)
    with pytest.raises(
        FormatError, match=rf"huge\.pkl: the file is larger than {MAX_PICKLE_BYTES:,}"
    ):
        read_recist_box_pickle(path)


@pytest.mark.parametrize(
    ("convert", "shared"),
    [
        (_slice_boxes, {0: [[1.0, 2.0, 3.0, 4.0, 0.0, 0.0]] * 100}),
        (_boxes_3d, [[1.0, 2.0, 3.0, 4.0, 0.0, 1.0]] * 100),
        (_mined_lesions, [[(0, [1.0, 2.0, 3.0, 4.0, 0.5])]] * 100),
    ],
)
def test_readers_count_the_objects_they_visit(convert, shared):
    """The second guard: a reader stops expanding shared objects at the file's allowance."""
    volumes = {f"{v:06d}_01_01_001-002": shared for v in range(100)}
    assert len(convert(volumes, "shared.pkl", _Visits("shared.pkl", 100_000))) == 100
    with pytest.raises(FormatError, match=r"shared\.pkl: reading visits more than 10,000 objects"):
        convert(volumes, "shared.pkl", _Visits("shared.pkl", 10_000))
