"""The lesion-harvesting paper's annotation pickles (DeepLesionAnnotation), read safely.

The released files are Python 2 pickles (protocol 2, ``encoding='latin1'``)
holding only numpy float64 scalars. Unpickling runs whatever callables the
file names, so :func:`load_restricted_pickle` accepts exactly these globals
and refuses every other one with :class:`~.errors.UnsafePickleError` before
anything is called:

* ``numpy.core.multiarray.scalar`` / ``numpy._core.multiarray.scalar``
* ``numpy.dtype``
* ``_codecs.encode``

Even these resolve to checked stand-ins, not to numpy's own functions: numpy
trusts the state a pickle gives a dtype, and a mutated one crashed the whole
process (SIGSEGV; found by ``tests/test_io_fuzz.py``). The stand-ins accept plain
numeric scalars (bool, integer, float) of the right byte count and ``latin1``
text, and anything else is a :class:`~.errors.FormatError`.

Before unpickling, :func:`~.pickle_scan.scan_pickle` replays the opcodes on a
model of the unpickler's stack and refuses, with a :class:`~.errors.FormatError`
naming the file and the limit, every pickle whose unpickling or reading is not
bounded by its size: files over :data:`MAX_PICKLE_BYTES`, containers nested
deeper than :data:`MAX_NESTING`, memo indices beyond the objects stored so far,
shared references that expand an object to more than :data:`MAX_OBJECTS_PER_BYTE`
objects per byte of the file, containers or globals as dict keys, integers wider
than 64 bits, sets, self-containing containers, ``BUILD`` on a global (it would
change the stand-in for every later read), and protocol 5's out-of-band buffer
opcodes (CPython's unpickler reports a truncated ``BYTEARRAY8`` as an extra
``SystemError`` through ``sys.excepthook``, which a GUI shows as a crash). The
readers then count the objects they visit against the same allowance.

Layouts (volume keys ``PPPPPP_SS_SS_aaa-bbb``; the ``Revised-*`` files add
``.annot``, which the readers strip):

``2D RECIST boxes`` (``Revised-Train744.pkl``, ``Revised-Train100.pkl``, ``RECIST-Box-Valid.pkl``)
    ``{volume: {z: [[x1, y1, x2, y2, z, z], ...]}}`` -> :func:`read_recist_box_pickle`.
``3D boxes`` (``3D-Box.pkl``)
    ``{volume: [[x1, y1, x2, y2, z1, z2], ...]}`` (``xyxyzz``) -> :func:`read_3d_box_pickle`.
``Mined lesions`` (``MinedLesions.pkl``)
    ``{volume: [[(z, [x1, y1, x2, y2, score]), ...], ...]}`` -> :func:`read_mined_lesions_pickle`,
    written by :func:`write_mined_lesions_pickle`.

``z`` is 0-based inside the sub-volume; ``x``/``y`` are pixel coordinates as in
``DL_info.csv`` (see :mod:`napari_lesion_harvest.geometry`).
"""

from __future__ import annotations

import io
import math
import numbers
import os
import pickle
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D, xyxyzz_to_xyzxyz
from napari_lesion_harvest.io.deeplesion import normalize_volume_id
from napari_lesion_harvest.io.errors import FormatError, UnsafePickleError
from napari_lesion_harvest.io.pickle_scan import scan_pickle

#: Largest pickle read, in bytes. The largest released file
#: (``RECIST-Box-Valid.pkl``) is 1.7 MB; the paper's 9,805 harvested lesions in
#: the ``MinedLesions.pkl`` layout, pickled by Python 2 with numpy scalars (about
#: 300 bytes per slice box, 10 slices per lesion), would make about 30 MB. Reading
#: such files takes about 8 bytes of memory per byte (0.5 GB at this limit); a
#: hostile file of nothing but empty dicts makes CPython's unpickler take about 90
#: (6 GB at this limit, which a workstation survives; 256 MiB would allow 23 GB).
MAX_PICKLE_BYTES = 64 * 2**20
#: Deepest container nesting read. The paper's layouts nest 3 (``3D-Box.pkl``),
#: 4 (RECIST boxes) and 5 (``MinedLesions.pkl``) deep; hashing a tuple nested
#: some hundred thousand deep crashes the process.
MAX_NESTING = 16
#: Objects a pickle may expand to, per byte of the file, counting a shared
#: object each time it is referenced. Every object a pickle holds without
#: sharing costs at least one byte, so shared references cannot make reading a
#: file cost more than an unshared file of the same size; the released files
#: hold 0.03 objects per byte.
MAX_OBJECTS_PER_BYTE = 1
#: Longest numpy dtype name accepted (``"longdouble"`` has 10 characters).
_MAX_DTYPE_NAME = 16


class _PickledDtype:
    """A numpy dtype as a pickle describes it (``numpy.dtype(name, align, copy)`` then
    ``BUILD`` with its state), checked before numpy builds anything.

    Only a plain numeric type name and the state's byte order are used.
    """

    def __init__(self, name, *_align_copy):
        plain = isinstance(name, str) and len(name) <= _MAX_DTYPE_NAME
        dtype = np.dtype(name) if plain else None
        if dtype is None or dtype.kind not in "biuf" or dtype.shape or dtype.names:
            raise ValueError(f"numpy dtype {reprlib.repr(name)} is not a plain number type")
        self.dtype = dtype

    def __setstate__(self, state):
        byteorder = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        if byteorder not in ("<", ">", "=", "|"):
            raise ValueError(f"numpy dtype state {reprlib.repr(state)} has no byte order")
        if byteorder != "|":
            self.dtype = self.dtype.newbyteorder(byteorder)


def _pickled_scalar(dtype, data):
    """``numpy.core.multiarray.scalar(dtype, data)`` for plain numbers only."""
    if not isinstance(dtype, _PickledDtype):
        raise ValueError("numpy scalar without a numpy dtype")
    if not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
        raise ValueError(f"numpy {dtype.dtype} scalar needs {dtype.dtype.itemsize} bytes")
    return np.frombuffer(data, dtype=dtype.dtype)[0]


def _pickled_latin1(text, encoding):
    """``_codecs.encode(text, 'latin1')``: how Python 3 pickles bytes at protocol 2."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError(f"only latin1 text is decoded, got {type(text).__name__} {encoding!r}")
    return text.encode("latin1")


#: The only globals a pickle may name, mapped to the checked stand-ins they resolve to.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "scalar"): _pickled_scalar,
    ("numpy._core.multiarray", "scalar"): _pickled_scalar,
    ("numpy", "dtype"): _PickledDtype,
    ("_codecs", "encode"): _pickled_latin1,
}


@dataclass(frozen=True)
class SliceBoxes:
    """2D boxes on slices of one volume (RECIST boxes).

    Attributes
    ----------
    slices : ndarray of int64, shape (N,)
        0-based slice index of each box.
    boxes : ndarray of float64, shape (N, 4)
        ``xyxy`` boxes, pixel coordinates.
    """

    slices: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.slices)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                self._path,
                f"refusing to unpickle global {module}.{name}: only numpy scalars/dtypes "
                "and _codecs.encode are allowed",
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError(self._path, "refusing a pickle with persistent ids")


def load_restricted_pickle(source: str | PathLike | bytes, *, name: str | None = None):
    """Unpickle ``source`` allowing only the numpy scalar / dtype and ``_codecs.encode`` globals.

    Parameters
    ----------
    source : path or bytes
        A pickle file or its bytes.
    name : str, optional
        Name used in error messages (default: the path, or ``<bytes>``).

    Raises
    ------
    UnsafePickleError
        The pickle names any other global (nothing it names is called).
    FormatError
        The bytes are not a readable pickle, or break a limit of
        :func:`~.pickle_scan.scan_pickle` (checked before anything is built).
    """
    path = _source_name(source, name)
    return _unpickle(_pickle_bytes(source, path), path)


def _source_name(source, name: str | None) -> str:
    if name:
        return name
    return "<bytes>" if isinstance(source, bytes | bytearray) else str(source)


def _pickle_bytes(source: str | PathLike | bytes, path: str) -> bytes:
    """The bytes of ``source``, refusing more than :data:`MAX_PICKLE_BYTES` before reading."""
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
    else:
        try:
            with open(source, "rb") as file:
                size = os.fstat(file.fileno()).st_size  # 0 for pipes and devices
                data = _read_at_most(file, MAX_PICKLE_BYTES) if size <= MAX_PICKLE_BYTES else None
        except OSError as error:
            raise FormatError(path, f"cannot read file: {error}") from error
    if data is None or len(data) > MAX_PICKLE_BYTES:
        raise FormatError(
            path,
            f"the file is larger than {MAX_PICKLE_BYTES:,} bytes, the limit for an "
            "annotation pickle",
        )
    return data


def _read_at_most(file, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of ``file`` (one more tells it is larger), read in
    16 MiB pieces: ``read(n)`` allocates ``n`` bytes before it knows the file's length."""
    pieces, left = [], limit + 1
    while left and (piece := file.read(min(left, 16 * 2**20))):
        pieces.append(piece)
        left -= len(piece)
    return b"".join(pieces)


def _unpickle(data: bytes, path: str):
    scan_pickle(data, path, max_depth=MAX_NESTING, max_objects=MAX_OBJECTS_PER_BYTE * len(data))
    try:
        return _RestrictedUnpickler(io.BytesIO(data), path).load()
    except (UnsafePickleError, FormatError):
        raise
    except Exception as error:  # the unpickler raises many types on corrupt input
        reason = f"not a readable pickle: {type(error).__name__}: {error}"
        raise FormatError(path, reason) from error


class _Visits:
    """Counts the objects a reader visits against the file's allowance.

    A scanned pickle's objects expand to at most ``limit`` objects, so the
    count is a second guard: a reader never expands shared references further.
    """

    def __init__(self, path: str, limit: int):
        self.path = path
        self.limit = limit
        self.left = limit

    def of(self, container):
        """``container``, after counting its items as visited."""
        self.left -= len(container)
        if self.left < 0:
            raise FormatError(
                self.path,
                f"reading visits more than {self.limit:,} objects through shared references "
                f"(the limit is {MAX_OBJECTS_PER_BYTE} per byte of the file)",
            )
        return container


# --------------------------------------------------------------------------- validation


def _number(value, path: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FormatError(path, f"expected a number, got {type(value).__name__}", key=where)
    number = float(value)
    if not math.isfinite(number):
        raise FormatError(path, f"non-finite number {number}", key=where)
    return number


def _numbers(values, count: int, path: str, where: str, visits: _Visits) -> list[float]:
    if not isinstance(values, list | tuple) or len(values) != count:
        size = len(values) if isinstance(values, list | tuple) else type(values).__name__
        raise FormatError(path, f"expected a list of {count} numbers, got {size}", key=where)
    return [_number(v, path, where) for v in visits.of(values)]


def _slice_index(value, path: str, where: str) -> int:
    number = _number(value, path, where)
    if number != int(number) or not 0 <= number < 2.0**63:
        reason = f"slice index must be a whole number from 0 to 2**63, got {number}"
        raise FormatError(path, reason, key=where)
    return int(number)


def _volume_dict(obj, path: str) -> dict:
    if not isinstance(obj, dict):
        raise FormatError(path, f"expected a dict of volumes, got {type(obj).__name__}")
    for key in obj:
        if not isinstance(key, str):
            raise FormatError(path, f"volume key must be a string, got {reprlib.repr(key)}")
    return obj


def _load(source, name: str | None) -> tuple[object, str, _Visits]:
    """The unpickled object, the name for messages, and the objects a reader may visit."""
    path = _source_name(source, name)
    data = _pickle_bytes(source, path)
    return _unpickle(data, path), path, _Visits(path, MAX_OBJECTS_PER_BYTE * len(data))


# --------------------------------------------------------------------------- readers


def read_recist_box_pickle(
    source: str | PathLike | bytes, *, name: str | None = None
) -> dict[str, SliceBoxes]:
    """Read a 2D RECIST-box pickle (``Revised-*.pkl``, ``RECIST-Box-Valid.pkl``).

    Returns
    -------
    dict of str to SliceBoxes
        Volume id (``.annot`` stripped) to its boxes, ordered by slice then file order.

    Raises
    ------
    FormatError, UnsafePickleError
    """
    return _slice_boxes(*_load(source, name))


def _slice_boxes(obj, path: str, visits: _Visits) -> dict[str, SliceBoxes]:
    """:func:`read_recist_box_pickle` on the unpickled ``obj``."""
    result: dict[str, SliceBoxes] = {}
    for key, per_slice in visits.of(_volume_dict(obj, path)).items():
        if not isinstance(per_slice, dict):
            raise FormatError(path, "expected {z: [boxes]} for a volume", key=key)
        slices, boxes = [], []
        for z_key in sorted(visits.of(per_slice), key=lambda k: _slice_index(k, path, key)):
            z = _slice_index(z_key, path, key)
            entries = per_slice[z_key]
            if not isinstance(entries, list | tuple):
                raise FormatError(path, f"slice {z}: expected a list of boxes", key=key)
            for entry in visits.of(entries):
                x1, y1, x2, y2, z1, z2 = _numbers(entry, 6, path, f"{key} z={z}", visits)
                if z1 != z or z2 != z:
                    raise FormatError(path, f"box on slice {z} says z = {z1:g}..{z2:g}", key=key)
                slices.append(z)
                boxes.append((x1, y1, x2, y2))
        result[normalize_volume_id(key)] = SliceBoxes(
            np.asarray(slices, dtype=np.int64), np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        )
    return result


def read_3d_box_pickle(
    source: str | PathLike | bytes, *, name: str | None = None
) -> dict[str, np.ndarray]:
    """Read ``3D-Box.pkl``.

    Returns
    -------
    dict of str to ndarray, shape (N, 6)
        Volume id to its 3D boxes converted to this package's ``xyzxyz`` mode
        ``(x1, y1, z1, x2, y2, z2)`` (the file stores ``xyxyzz``).

    Notes
    -----
    ``z`` is continuous in this file: 78 of its 874 boxes span half slices
    (e.g. ``-0.5 .. 0.5`` for a lesion seen on slice 0 only), so z values are
    kept as floats and only ``z1 <= z2`` is required.
    """
    return _boxes_3d(*_load(source, name))


def _boxes_3d(obj, path: str, visits: _Visits) -> dict[str, np.ndarray]:
    """:func:`read_3d_box_pickle` on the unpickled ``obj``."""
    result: dict[str, np.ndarray] = {}
    for key, entries in visits.of(_volume_dict(obj, path)).items():
        if not isinstance(entries, list | tuple):
            raise FormatError(path, "expected a list of 3D boxes", key=key)
        rows = [_numbers(entry, 6, path, key, visits) for entry in visits.of(entries)]
        for *_, z1, z2 in rows:
            if z1 > z2:
                raise FormatError(path, f"3D box has z range {z1:g}..{z2:g}", key=key)
        result[normalize_volume_id(key)] = xyxyzz_to_xyzxyz(rows)
    return result


def read_mined_lesions_pickle(
    source: str | PathLike | bytes, *, name: str | None = None
) -> dict[str, list[Proposal3D]]:
    """Read a ``MinedLesions.pkl``-layout file of per-slice tracklets.

    Returns
    -------
    dict of str to list of Proposal3D
        Volume id to its lesions; each lesion's per-slice boxes and scores.
    """
    return _mined_lesions(*_load(source, name))


def _mined_lesions(obj, path: str, visits: _Visits) -> dict[str, list[Proposal3D]]:
    """:func:`read_mined_lesions_pickle` on the unpickled ``obj``."""
    result: dict[str, list[Proposal3D]] = {}
    for key, lesions in visits.of(_volume_dict(obj, path)).items():
        if not isinstance(lesions, list | tuple):
            raise FormatError(path, "expected a list of lesions", key=key)
        proposals = []
        for number, lesion in enumerate(visits.of(lesions)):
            where = f"{key} lesion {number}"
            if not isinstance(lesion, list | tuple) or not lesion:
                raise FormatError(path, "a lesion must be a non-empty list", key=where)
            slices, boxes, scores, seen = [], [], [], set()
            for item in visits.of(lesion):
                if not isinstance(item, list | tuple) or len(item) != 2:
                    raise FormatError(path, "expected (z, [x1, y1, x2, y2, score])", key=where)
                z = _slice_index(visits.of(item)[0], path, where)
                *box, score = _numbers(item[1], 5, path, where, visits)
                if z in seen:
                    raise FormatError(path, f"slice {z} appears twice", key=where)
                seen.add(z)
                slices.append(z)
                boxes.append(box)
                scores.append(score)
            proposals.append(Proposal3D(slices, boxes, scores))
        result[normalize_volume_id(key)] = proposals
    return result


# --------------------------------------------------------------------------- writer


def write_mined_lesions_pickle(
    path: str | PathLike, lesions: Mapping[str, Sequence[Proposal3D]]
) -> None:
    """Write lesions in the paper's ``MinedLesions.pkl`` layout (protocol 2).

    The file holds only built-in ints, floats, lists, tuples and strings (no
    globals), so any unpickler, including :func:`load_restricted_pickle`, reads it.

    Parameters
    ----------
    path : path
        Output file; written to a temporary name first and then renamed.
    lesions : mapping of str to sequence of Proposal3D
        Volume id to its lesions.
    """
    payload = {
        str(volume_id): [
            [
                (int(z), [float(v) for v in (*box, score)])
                for z, box, score in zip(p.slices, p.boxes, p.scores, strict=True)
            ]
            for p in proposals
        ]
        for volume_id, proposals in lesions.items()
    }
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(pickle.dumps(payload, protocol=2))
    partial.replace(target)
