"""Property-based tests: random and mutated CSV / JSON / pickle / image input gives only typed
errors."""

from __future__ import annotations

import csv
import io
import pickle

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_lesion_harvest.geometry import Proposal3D, RecistMark
from napari_lesion_harvest.io.annotations import (
    MarkRecord,
    read_lesions,
    read_marks,
    write_lesions,
    write_marks,
)
from napari_lesion_harvest.io.deeplesion import read_dl_info, read_hu_png
from napari_lesion_harvest.io.deeplesion_writer import write_series_pngs
from napari_lesion_harvest.io.errors import LesionIOError
from napari_lesion_harvest.io.medical_headers import check_metaimage, check_nifti, check_nrrd
from napari_lesion_harvest.io.paper_pickles import (
    MAX_NESTING,
    MAX_OBJECTS_PER_BYTE,
    load_restricted_pickle,
    read_3d_box_pickle,
    read_mined_lesions_pickle,
    read_recist_box_pickle,
)
from napari_lesion_harvest.io.sitk_reader import write_sitk_volume
from napari_lesion_harvest.io.volume import CTVolume

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """``original`` with a few random byte flips, insertions, deletions and a truncation."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[position] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        else:
            del data[position:]
    return bytes(data)


def _only_typed_errors(read, path, data: bytes):
    path.write_bytes(data)
    try:
        read(path)
    except LesionIOError as error:
        assert str(path) in str(error)


# --------------------------------------------------------------------------- DL_info.csv


@FUZZ
@given(data=st.data())
def test_mutated_dl_info_gives_rows_or_typed_errors(tmp_path, dl_info_rows_csv, data):
    original = dl_info_rows_csv.read_bytes()
    blob = data.draw(mutated(original))
    path = tmp_path / "DL_info.csv"
    _only_typed_errors(read_dl_info, path, blob)
    _only_typed_errors(lambda p: read_dl_info(p, strict=True), path, blob)
    try:
        info = read_dl_info(path)
    except LesionIOError:
        return
    # lenient mode accounts for every data row: loaded or listed as skipped
    assert len(info.rows) + len(info.report.skipped) == info.report.rows_read


_CELL_TEXT = st.one_of(
    st.text(max_size=12),
    st.from_regex(r"-?\d{1,4}(\.\d)?(,-?\d{1,4}(\.\d)?){0,8}", fullmatch=True),
)


@FUZZ
@given(
    cells=st.one_of(  # a whole new row, or some cells of the real row replaced
        st.lists(st.text(max_size=12), min_size=0, max_size=20),
        st.dictionaries(st.integers(0, 17), _CELL_TEXT, min_size=1, max_size=6),
    ),
    row=st.integers(1, 6),
)
def test_random_cells_in_a_real_row_are_reported(tmp_path, dl_info_rows_csv, cells, row):
    lines = dl_info_rows_csv.read_text().splitlines()
    if isinstance(cells, dict):
        real = next(csv.reader([lines[row]]))
        cells = [cells.get(k, cell) for k, cell in enumerate(real)]
    buffer = io.StringIO()
    csv.writer(buffer).writerow(cells)
    lines[row] = buffer.getvalue().strip("\r\n")
    path = tmp_path / "DL_info.csv"
    path.write_text("\n".join(lines) + "\n")
    info = read_dl_info(path)
    assert info.report.rows_read >= 5
    assert len(info.rows) + len(info.report.skipped) == info.report.rows_read
    # the column-wise parser judges each row on its own cells: alone in a file, a row
    # gives the same row or is skipped for the same reason
    cells_at_line, line = {}, 0
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        for cells in reader:
            cells_at_line[line + 1], line = cells, reader.line_num

    def alone(line: int):
        single = tmp_path / "alone.csv"
        with open(single, "w", newline="") as handle:
            csv.writer(handle).writerows([cells_at_line[1], cells_at_line[line]])
        return read_dl_info(single)

    for parsed in info.rows:
        assert alone(parsed.line).rows == [parsed._replace(line=2)]
    for skipped in info.report.skipped:
        (again,) = alone(skipped.row).report.skipped
        assert (again.column, again.reason) == (skipped.column, skipped.reason)


@FUZZ
@given(blob=st.binary(max_size=400))
def test_random_bytes_as_dl_info(tmp_path, blob):
    _only_typed_errors(read_dl_info, tmp_path / "DL_info.csv", blob)


# --------------------------------------------------------------------------- pickles

_PICKLE_2D = pickle.dumps(
    {
        "000001_01_01_001-020.annot": {
            3: [[np.float64(v) for v in (10.5, 20.25, 30.0, 40.0, 3.0, 3.0)]],
            7: [[np.float64(v) for v in (1.0, 2.0, 3.0, 4.0, 7.0, 7.0)]] * 2,
        }
    },
    protocol=2,
)
_PICKLE_3D = pickle.dumps(
    {"000001_01_01_001-020": [[np.float64(v) for v in (1, 2, 3, 4, 0.5, 6.5)]]}, protocol=2
)
_PICKLE_MINED = pickle.dumps(
    {"000001_01_01_001-020": [[(2, [1.0, 2.0, 3.0, 4.0, 0.5]), (3, [1.0, 2.0, 3.0, 4.0, 0.9])]]},
    protocol=2,
)
_PICKLE_READERS = [read_recist_box_pickle, read_3d_box_pickle, read_mined_lesions_pickle]


def test_fuzz_seeds_are_valid():
    assert len(read_recist_box_pickle(_PICKLE_2D)["000001_01_01_001-020"]) == 3
    assert read_3d_box_pickle(_PICKLE_3D)["000001_01_01_001-020"].shape == (1, 6)
    assert read_mined_lesions_pickle(_PICKLE_MINED)["000001_01_01_001-020"][0].s_g == 0.9


@FUZZ
@given(data=st.data(), seed=st.sampled_from([_PICKLE_2D, _PICKLE_3D, _PICKLE_MINED]))
def test_mutated_pickles_give_only_typed_errors(tmp_path, data, seed):
    blob = data.draw(mutated(seed))
    for read in _PICKLE_READERS:
        _only_typed_errors(read, tmp_path / "x.pkl", blob)


@FUZZ
@given(blob=st.binary(max_size=300))
def test_random_bytes_as_pickle(tmp_path, blob):
    for read in _PICKLE_READERS:
        _only_typed_errors(read, tmp_path / "x.pkl", b"\x80\x02" + blob)


@st.composite
def structured_pickles(draw) -> bytes:
    """A protocol-2 pickle built by up to 40 random steps that are valid for the stack
    at hand: leaves, lists, dicts, tuples, APPEND / SETITEM, DUP and memo puts and gets
    (shared references), so nesting and sharing grow as the steps go."""
    opcodes, stack, memo = [b"\x80\x02"], [], []  # stack and memo hold kinds
    for _ in range(draw(st.integers(1, 40))):
        steps = ["leaf", "list", "dict"]
        if stack:
            steps += ["tuple1", "dup", "put"] if len(memo) < 256 else ["tuple1", "dup"]
        if len(stack) >= 2:
            steps.append("tuple2")
            if stack[-2] == "list":
                steps.append("append")
        if len(stack) >= 3 and stack[-3] == "dict" and stack[-2] == "leaf":
            steps.append("setitem")
        if memo:
            steps.append("get")
        step = draw(st.sampled_from(steps))
        if step == "leaf":
            opcodes.append(draw(st.sampled_from([b"K\x07", b"N", b"G" + bytes(8)])))
            stack.append("leaf")
        elif step in ("list", "dict"):
            opcodes.append(b"]" if step == "list" else b"}")
            stack.append(step)
        elif step in ("tuple1", "tuple2"):
            count = int(step[-1])
            opcodes.append(b"\x85" if count == 1 else b"\x86")
            del stack[-count:]
            stack.append("tuple")
        elif step == "append":
            opcodes.append(b"a")
            stack.pop()
        elif step == "setitem":
            opcodes.append(b"s")
            del stack[-2:]
        elif step == "dup":
            opcodes.append(b"2")
            stack.append(stack[-1])
        elif step == "put":
            opcodes.append(b"q" + bytes([len(memo)]))
            memo.append(stack[-1])
        else:
            index = draw(st.integers(0, len(memo) - 1))
            opcodes.append(b"h" + bytes([index]))
            stack.append(memo[index])
    opcodes.append(b"\x86" * (len(stack) - 1) + b".")
    return b"".join(opcodes)


def _expanded_size_and_depth(obj, cap: int) -> tuple[int, int]:
    """Objects in ``obj`` counting shared ones at each reference, and container depth;
    stops past ``cap`` objects (a cycle would never end)."""
    size, depth, todo = 0, 0, [(obj, 0)]
    while todo and size <= cap:
        item, level = todo.pop()
        size += 1
        children = []
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset):
            children = list(item)
        if children or isinstance(item, list | tuple | dict | set | frozenset):
            depth = max(depth, level + 1)
        todo.extend((child, level + 1) for child in children)
    return size, depth


@settings(FUZZ, max_examples=300)
@given(blob=structured_pickles())
def test_random_structure_is_refused_or_within_the_limits(tmp_path, blob):
    """What the opcode scan lets through really is within its limits once unpickled."""
    for read in _PICKLE_READERS:
        _only_typed_errors(read, tmp_path / "x.pkl", blob)
    try:
        loaded = load_restricted_pickle(blob)
    except LesionIOError:
        return
    limit = MAX_OBJECTS_PER_BYTE * len(blob)
    size, depth = _expanded_size_and_depth(loaded, cap=limit)
    assert size <= limit and depth <= MAX_NESTING


# --------------------------------------------------------------------------- our formats


def _our_files(tmp_path) -> dict[str, bytes]:
    marks = [
        MarkRecord("v1", RecistMark.from_measurement_coordinates(np.arange(8) * 1.5, 2), "user")
    ]
    lesions = {"v1": [Proposal3D([1, 2], [[1, 2, 3, 4], [2, 3, 4, 5]], [0.5, 0.7])]}
    files = {}
    for suffix in (".csv", ".json"):
        write_marks(tmp_path / f"m{suffix}", marks)
        write_lesions(tmp_path / f"l{suffix}", lesions)
        files[f"m{suffix}"] = (tmp_path / f"m{suffix}").read_bytes()
        files[f"l{suffix}"] = (tmp_path / f"l{suffix}").read_bytes()
    return files


@FUZZ
@given(data=st.data(), which=st.sampled_from(["m.csv", "m.json", "l.csv", "l.json"]))
def test_mutated_annotation_files_give_only_typed_errors(tmp_path, data, which):
    original = _our_files(tmp_path)[which]
    blob = data.draw(mutated(original))
    read = read_marks if which.startswith("m") else read_lesions
    _only_typed_errors(read, tmp_path / f"fuzz{which[1:]}", blob)
    _only_typed_errors(lambda p: read(p, strict=True), tmp_path / f"fuzz{which[1:]}", blob)


# --------------------------------------------------------------------------- images


def _image_seeds(folder) -> dict[str, bytes]:
    """A 16-bit PNG slice (the project's writer) and small NIfTI / NRRD / MHA volumes."""
    hu = np.random.default_rng(2).integers(-1024, 2000, size=(3, 12, 16)).astype(np.int16)
    [png] = write_series_pngs(folder, "000001_01_01", hu[:1], 1)
    seeds = {".png": png.read_bytes()}
    for suffix in (".nii", ".nii.gz", ".nrrd", ".mha"):
        write_sitk_volume(CTVolume.from_array("v", hu, (2.5, 0.8, 0.7)), folder / f"v{suffix}")
        seeds[suffix] = (folder / f"v{suffix}").read_bytes()
    return seeds


_IMAGE_CHECKS = {
    ".png": read_hu_png,
    ".nii": check_nifti,
    ".nii.gz": check_nifti,
    ".nrrd": check_nrrd,
    ".mha": check_metaimage,
}


@FUZZ
@given(data=st.data(), suffix=st.sampled_from(list(_IMAGE_CHECKS)))
def test_mutated_images_give_only_typed_errors(tmp_path, data, suffix):
    """Slices decode or raise a typed error; volume headers pass or raise one, naming the file."""
    blob = data.draw(mutated(_image_seeds(tmp_path)[suffix]))
    path = tmp_path / f"fuzz{suffix}"
    _only_typed_errors(lambda p: _IMAGE_CHECKS[suffix](p), path, blob)
