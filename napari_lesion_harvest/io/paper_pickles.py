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

It also refuses, before unpickling, the out-of-band buffer opcodes of protocol 5
(``BYTEARRAY8``, ``NEXT_BUFFER``, ``READONLY_BUFFER``): no annotation pickle uses
them, and CPython's unpickler reports a truncated ``BYTEARRAY8`` as an extra
``SystemError`` through ``sys.excepthook``, which a GUI shows as a crash.

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
import pickle
import pickletools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D, xyxyzz_to_xyzxyz
from napari_lesion_harvest.io.deeplesion import normalize_volume_id
from napari_lesion_harvest.io.errors import FormatError, UnsafePickleError


class _PickledDtype:
    """A numpy dtype as a pickle describes it (``numpy.dtype(name, align, copy)`` then
    ``BUILD`` with its state), checked before numpy builds anything.

    Only a plain numeric type name and the state's byte order are used.
    """

    def __init__(self, name, *_align_copy):
        dtype = np.dtype(name) if isinstance(name, str) else None
        if dtype is None or dtype.kind not in "biuf" or dtype.shape or dtype.names:
            raise ValueError(f"numpy dtype {name!r} is not a plain number type")
        self.dtype = dtype

    def __setstate__(self, state):
        byteorder = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        if byteorder not in ("<", ">", "=", "|"):
            raise ValueError(f"numpy dtype state {state!r} has no byte order")
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
#: Opcodes refused before unpickling (protocol 5's out-of-band buffers).
REFUSED_OPCODES = frozenset({"BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER"})


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
        Name used in error messages when ``source`` is bytes.

    Raises
    ------
    UnsafePickleError
        The pickle names any other global (nothing it names is called).
    FormatError
        The bytes are not a readable pickle, or hold an opcode of
        :data:`REFUSED_OPCODES`.
    """
    if isinstance(source, bytes | bytearray):
        data, path = bytes(source), name or "<bytes>"
    else:
        path = str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as error:
            raise FormatError(path, f"cannot read file: {error}") from error
    try:
        _refuse_buffer_opcodes(data, path)
        return _RestrictedUnpickler(io.BytesIO(data), path).load()
    except (UnsafePickleError, FormatError):
        raise
    except Exception as error:  # the unpickler raises many types on corrupt input
        reason = f"not a readable pickle: {type(error).__name__}: {error}"
        raise FormatError(path, reason) from error


def _refuse_buffer_opcodes(data: bytes, path: str) -> None:
    """Raise FormatError at the first opcode of :data:`REFUSED_OPCODES` before STOP,
    even a truncated one; any other fault is left to the unpickler, which reports it
    (a forbidden global before a malformed opcode is refused as unsafe)."""
    stream = io.BytesIO(data)
    start = 0  # where the opcode being read begins
    try:
        for opcode, _argument, start in pickletools.genops(stream):
            _refuse_opcode(opcode, start, path)
            start = stream.tell()
    except ValueError:  # malformed from ``start`` on: the unpickler names the fault,
        if start < len(data):  # unless it is a truncated refused opcode
            _refuse_opcode(pickletools.code2op.get(chr(data[start])), start, path)


def _refuse_opcode(opcode, start: int, path: str) -> None:
    """Raise FormatError when ``opcode`` (read at byte ``start``) is refused."""
    if opcode is not None and opcode.name in REFUSED_OPCODES:
        raise FormatError(path, f"pickle opcode {opcode.name} at byte {start} is not supported")


# --------------------------------------------------------------------------- validation


def _number(value, path: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FormatError(path, f"expected a number, got {type(value).__name__}", key=where)
    number = float(value)
    if not math.isfinite(number):
        raise FormatError(path, f"non-finite number {number}", key=where)
    return number


def _numbers(values, count: int, path: str, where: str) -> list[float]:
    if not isinstance(values, list | tuple) or len(values) != count:
        size = len(values) if isinstance(values, list | tuple) else type(values).__name__
        raise FormatError(path, f"expected a list of {count} numbers, got {size}", key=where)
    return [_number(v, path, where) for v in values]


def _slice_index(value, path: str, where: str) -> int:
    number = _number(value, path, where)
    if number != int(number) or number < 0:
        reason = f"slice index must be a whole number >= 0, got {number}"
        raise FormatError(path, reason, key=where)
    return int(number)


def _volume_dict(obj, path: str) -> dict:
    if not isinstance(obj, dict):
        raise FormatError(path, f"expected a dict of volumes, got {type(obj).__name__}")
    for key in obj:
        if not isinstance(key, str):
            raise FormatError(path, f"volume key must be a string, got {key!r}")
    return obj


def _load(source, name) -> tuple[object, str]:
    path = name or (str(source) if not isinstance(source, bytes | bytearray) else "<bytes>")
    return load_restricted_pickle(source, name=path), path


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
    obj, path = _load(source, name)
    result: dict[str, SliceBoxes] = {}
    for key, per_slice in _volume_dict(obj, path).items():
        if not isinstance(per_slice, dict):
            raise FormatError(path, "expected {z: [boxes]} for a volume", key=key)
        slices, boxes = [], []
        for z_key in sorted(per_slice, key=lambda k: _slice_index(k, path, key)):
            z = _slice_index(z_key, path, key)
            entries = per_slice[z_key]
            if not isinstance(entries, list | tuple):
                raise FormatError(path, f"slice {z}: expected a list of boxes", key=key)
            for entry in entries:
                x1, y1, x2, y2, z1, z2 = _numbers(entry, 6, path, f"{key} z={z}")
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
    obj, path = _load(source, name)
    result: dict[str, np.ndarray] = {}
    for key, entries in _volume_dict(obj, path).items():
        if not isinstance(entries, list | tuple):
            raise FormatError(path, "expected a list of 3D boxes", key=key)
        rows = [_numbers(entry, 6, path, key) for entry in entries]
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
    obj, path = _load(source, name)
    result: dict[str, list[Proposal3D]] = {}
    for key, lesions in _volume_dict(obj, path).items():
        if not isinstance(lesions, list | tuple):
            raise FormatError(path, "expected a list of lesions", key=key)
        proposals = []
        for number, lesion in enumerate(lesions):
            where = f"{key} lesion {number}"
            if not isinstance(lesion, list | tuple) or not lesion:
                raise FormatError(path, "a lesion must be a non-empty list", key=where)
            slices, boxes, scores = [], [], []
            for item in lesion:
                if not isinstance(item, list | tuple) or len(item) != 2:
                    raise FormatError(path, "expected (z, [x1, y1, x2, y2, score])", key=where)
                z = _slice_index(item[0], path, where)
                *box, score = _numbers(item[1], 5, path, where)
                if z in slices:
                    raise FormatError(path, f"slice {z} appears twice", key=where)
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
