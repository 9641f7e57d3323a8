"""Header checks of NIfTI, MetaImage and NRRD files, before SimpleITK reads their voxels.

SimpleITK (ITK 5.4) reads some damaged or hostile files without an error:

* a NIfTI file shorter than its header says comes back zero-filled, plain or gzip;
* a NaN, zero, negative or infinite NIfTI ``pixdim`` or NRRD ``spacings``
  becomes 1 mm (or its absolute value), a negative MetaImage ``ElementSpacing``
  its absolute value;
* a MetaImage ``ElementDataFile`` or NRRD ``data file`` may name any file
  (``../../etc/passwd``, an absolute path), whose bytes are then read as voxels;
* a compressed MetaImage whose zlib stream is damaged gives wrong voxels.

The ``check_*`` functions read the header themselves and refuse those, and
any header claiming more than :data:`~.limits.MAX_VOXELS` voxels, with an
:class:`~.errors.ImageFormatError` naming the file, before anything is
allocated. A data file named by a header must lie in the header's folder or
below it (after resolving ``..`` and symbolic links). Compressed voxel data
(``.nii.gz``, compressed MetaImage) is decompressed once, in 1 MiB pieces, to
check that it is complete and undamaged (gzip's CRC, zlib's Adler-32).
"""

from __future__ import annotations

import gzip
import math
import re
import struct
import zlib
from pathlib import Path

from napari_lesion_harvest.io.errors import ImageFormatError
from napari_lesion_harvest.io.limits import MAX_VOXELS

#: Text headers (MetaImage, NRRD) longer than this are refused.
MAX_TEXT_HEADER_BYTES = 65536
_CHUNK = 1 << 20
#: Bytes per voxel of NIfTI ``datatype`` codes.
_NIFTI_DATATYPE_BYTES = {
    2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4,
    1024: 8, 1280: 8, 1536: 16, 1792: 16, 2048: 32, 2304: 4,
}  # fmt: skip
_MET_TYPE_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4,
    "MET_UINT": 4, "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}  # fmt: skip
_NRRD_TYPE_BYTES = {
    **dict.fromkeys(
        ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1
    ),
    **dict.fromkeys(
        ("short", "short int", "signed short", "signed short int", "int16", "int16_t",
         "ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2
    ),
    **dict.fromkeys(
        ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32",
         "uint32_t", "float"), 4
    ),
    **dict.fromkeys(
        ("longlong", "long long", "long long int", "signed long long",
         "signed long long int", "int64", "int64_t", "ulonglong", "unsigned long long",
         "unsigned long long int", "uint64", "uint64_t", "double"), 8
    ),
}  # fmt: skip
_NUMBER_PATTERN = re.compile(
    r"^(?P<name>.*%.*?)\s+(?P<first>-?\d+)\s+(?P<last>-?\d+)\s+(?P<step>-?\d+)"
)
_NUMBER_FORMAT = re.compile(r"%0?\d{0,2}[di]")


# --------------------------------------------------------------------------- shared checks


def _check_voxel_count(path: Path, sizes: list[int]) -> int:
    """Refuse non-positive sizes and more than MAX_VOXELS voxels; return the voxel count."""
    if not sizes:
        raise ImageFormatError(path, "the header gives no image size")
    if min(sizes) < 1:
        raise ImageFormatError(path, f"image size {sizes} has a side below 1")
    count = math.prod(sizes)
    if count > MAX_VOXELS:
        shown = " x ".join(str(s) for s in sizes)
        raise ImageFormatError(
            path, f"refusing an image of {shown} = {count:,} voxels (at most {MAX_VOXELS:,})"
        )
    return count


def _check_spacing(path: Path, field: str, values) -> None:
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ImageFormatError(
            path, f"{field} {list(values)}: voxel spacing must be finite and positive"
        )


def _check_size(path: Path, available: int, required: int, what: str) -> None:
    if available < required:
        raise ImageFormatError(
            path, f"truncated: {what} holds {available:,} bytes, the header needs {required:,}"
        )


def data_file_inside(header: Path, name: str, field: str) -> Path:
    """The data file ``name`` that ``header`` points to, refused unless it lies in its folder.

    Parameters
    ----------
    header : Path
        The header file.
    name : str
        File name as written in the header, relative to the header's folder.
    field : str
        Header field, for the message (``ElementDataFile``, ``data file``).

    Returns
    -------
    Path
        The resolved data file.

    Raises
    ------
    ImageFormatError
        An absolute path, a path that resolves (``..``, symbolic links) outside
        the header's folder, or no such file.
    """
    if not name or "\0" in name:
        raise ImageFormatError(header, f"{field} {name!r} is not a file name")
    if Path(name).is_absolute():
        raise ImageFormatError(
            header, f"{field} {name!r} is an absolute path; it must lie in the header's folder"
        )
    folder = header.resolve().parent
    target = (folder / name).resolve()
    if not target.is_relative_to(folder):
        raise ImageFormatError(
            header, f"{field} {name!r} lies outside the header's folder {folder}"
        )
    if not target.is_file():
        raise ImageFormatError(header, f"{field} {name!r}: no such file beside the header")
    return target


def _data_file_names(header: Path, value: str, list_lines: list[str], field: str):
    """The file names a data-file field denotes: one name, ``LIST`` lines or a number pattern.

    Yields the names one at a time, so that a pattern naming billions of files
    stops at its first refused name.
    """
    if value.split()[:1] == ["LIST"]:
        names = [line.strip() for line in list_lines if line.strip()]
        if not names:
            raise ImageFormatError(header, f"{field} LIST names no file")
        yield from names
        return
    pattern = _NUMBER_PATTERN.match(value)
    if pattern is None:
        yield value
        return
    name = pattern.group("name")
    if name.count("%") != 1 or not _NUMBER_FORMAT.search(name):
        raise ImageFormatError(header, f"{field} {value!r}: bad file-name pattern")
    first, last, step = (int(pattern.group(key)) for key in ("first", "last", "step"))
    numbers = range(first, last + (1 if step > 0 else -1), step) if step else range(0)
    if not numbers:
        raise ImageFormatError(header, f"{field} {value!r} names no file")
    for number in numbers:
        yield name % number


def _external_data_files(header: Path, value: str, list_lines: list[str], field: str):
    """The resolved data files a header names, each checked by :func:`data_file_inside`."""
    names = _data_file_names(header, value, list_lines, field)
    return [data_file_inside(header, name, field) for name in names]


def _inflated_size(path: Path, *, offset: int, limit: int) -> int:
    """Decompress the zlib (or gzip) stream at ``offset`` in pieces; its size in bytes."""
    decompressor = zlib.decompressobj(47)  # zlib or gzip header, as MetaIO accepts
    size = 0
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            while not decompressor.eof:
                data = decompressor.unconsumed_tail or handle.read(_CHUNK)
                if not data:
                    break
                size += len(decompressor.decompress(data, _CHUNK))
                if size > limit:
                    raise ImageFormatError(
                        path, f"compressed voxel data holds more than the header's {limit:,} bytes"
                    )
    except zlib.error as error:
        raise ImageFormatError(path, f"damaged compressed voxel data: {error}") from None
    if not decompressor.eof:
        raise ImageFormatError(path, "truncated: the compressed voxel data ends early")
    return size


# --------------------------------------------------------------------------- NIfTI


def _nifti_header(path: Path) -> bytes:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                return handle.read(540)
        with open(path, "rb") as handle:
            return handle.read(540)
    except (OSError, EOFError, zlib.error) as error:
        raise ImageFormatError(path, f"cannot read the NIfTI header: {error}") from None


def _gzip_data_size(path: Path, limit: int) -> int:
    """Bytes of a ``.gz`` file once decompressed, checking its CRC (all members)."""
    size = 0
    try:
        with gzip.open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ImageFormatError(
                        path, f"gzip data holds more than the header's {limit:,} bytes"
                    )
    except (OSError, EOFError, zlib.error) as error:
        raise ImageFormatError(path, f"damaged or truncated gzip data: {error}") from None
    return size


def check_nifti(path: Path) -> None:
    """Check a ``.nii`` / ``.nii.gz`` header and that the file holds all its voxels.

    Raises
    ------
    ImageFormatError
        Not a NIfTI-1/2 header, a bad ``dim``, more than ``MAX_VOXELS`` voxels,
        a spatial ``pixdim`` that is not finite and positive, an unknown
        ``datatype``, or fewer voxel bytes than the header needs (for
        ``.nii.gz``: damaged or truncated gzip data).
    """
    header = _nifti_header(path)
    sizes = {struct.unpack(e + "i", header[:4])[0]: e for e in "<>"} if len(header) >= 4 else {}
    size = next((n for n in (348, 540) if n in sizes), None)
    if size is None:
        raise ImageFormatError(path, "not a NIfTI file (sizeof_hdr is neither 348 nor 540)")
    if len(header) < size:
        raise ImageFormatError(path, f"truncated NIfTI header ({len(header)} bytes)")
    endian = sizes[size]
    if size == 348:
        dim = struct.unpack_from(endian + "8h", header, 40)
        datatype = struct.unpack_from(endian + "h", header, 70)[0]
        pixdim = struct.unpack_from(endian + "8f", header, 76)
        vox_offset = struct.unpack_from(endian + "f", header, 108)[0]
    else:
        datatype = struct.unpack_from(endian + "h", header, 12)[0]
        dim = struct.unpack_from(endian + "8q", header, 16)
        pixdim = struct.unpack_from(endian + "8d", header, 104)
        vox_offset = struct.unpack_from(endian + "q", header, 168)[0]
    if not 1 <= dim[0] <= 7:
        raise ImageFormatError(path, f"NIfTI dim[0] = {dim[0]} is not 1 to 7")
    voxels = _check_voxel_count(path, list(dim[1 : dim[0] + 1]))
    spatial = pixdim[1 : min(dim[0], 3) + 1]
    if not all(math.isfinite(v) and v > 0 for v in spatial):
        raise ImageFormatError(
            path,
            f"pixdim [{', '.join(f'{v:g}' for v in spatial)}]: voxel spacing must be finite "
            "and positive",
        )
    if datatype not in _NIFTI_DATATYPE_BYTES:
        raise ImageFormatError(path, f"unknown NIfTI datatype {datatype}")
    if not (math.isfinite(vox_offset) and vox_offset >= 0):
        raise ImageFormatError(path, f"NIfTI vox_offset {vox_offset} is not a byte position")
    required = int(vox_offset) + voxels * _NIFTI_DATATYPE_BYTES[datatype]
    if path.name.lower().endswith(".gz"):
        available = _gzip_data_size(path, required + _CHUNK)
        _check_size(path, available, required, "the decompressed file")
    else:
        _check_size(path, path.stat().st_size, required, "the file")


# --------------------------------------------------------------------------- text headers


def _text_header(path: Path, *, ends_at) -> tuple[list[str], int]:
    """Lines of a text header up to the line ``ends_at(line)`` accepts (included).

    Returns the lines and the byte offset just after that line (-1 when no
    line matched: the header is the whole file).
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_TEXT_HEADER_BYTES + 1)
    except OSError as error:
        raise ImageFormatError(
            path, f"cannot read the header: {error.strerror or error}"
        ) from None
    lines, offset = [], 0
    for raw_line in raw.splitlines(keepends=True):
        offset += len(raw_line)
        line = raw_line.decode("latin-1").rstrip("\r\n")
        lines.append(line)
        if ends_at(line):
            return lines, offset
    if len(raw) > MAX_TEXT_HEADER_BYTES:
        raise ImageFormatError(path, f"header longer than {MAX_TEXT_HEADER_BYTES} bytes")
    return lines, -1


def _lines_after(path: Path, offset: int) -> list[str]:
    """Text lines of ``path`` from byte ``offset`` (at most MAX_TEXT_HEADER_BYTES of them)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(MAX_TEXT_HEADER_BYTES).decode("latin-1").splitlines()


def _numbers(path: Path, field: str, text: str, kind=float) -> list:
    try:
        return [kind(token) for token in text.split()]
    except ValueError:
        raise ImageFormatError(path, f"{field} {text!r} is not a list of numbers") from None


def _first_int(path: Path, field: str, fields: dict[str, str], *, default: int) -> int:
    """The first number of header field ``field`` (matched in lower case), or ``default``."""
    values = _numbers(path, field, fields.get(field.lower(), ""), int)
    return values[0] if values else default


# --------------------------------------------------------------------------- MetaImage


def _is_metaimage_data_line(line: str) -> bool:
    return line.partition("=")[0].strip().lower() == "elementdatafile"


def check_metaimage(path: Path) -> None:
    """Check a ``.mha`` / ``.mhd`` header, where its data file lies, and the data's size.

    Raises
    ------
    ImageFormatError
        No ``ElementDataFile``, bad ``DimSize`` or more than ``MAX_VOXELS``
        voxels, an ``ElementSpacing`` that is not finite and positive, a data
        file outside the header's folder (absolute, ``..``, ``LIST`` or pattern
        entries), fewer bytes than ``DimSize`` needs, or compressed data that
        is damaged or short.
    """
    lines, header_end = _text_header(path, ends_at=_is_metaimage_data_line)
    if header_end < 0:
        raise ImageFormatError(path, "no ElementDataFile line in the MetaImage header")
    fields = {}
    for line in lines:
        key, _, value = line.partition("=")
        fields[key.strip().lower()] = value.strip()
    sizes = _numbers(path, "DimSize", fields.get("dimsize", ""), int)
    voxels = _check_voxel_count(path, sizes)
    for field in ("ElementSpacing", "ElementSize"):
        if field.lower() in fields:
            _check_spacing(path, field, _numbers(path, field, fields[field.lower()]))
    channels = _first_int(path, "ElementNumberOfChannels", fields, default=1)
    element_bytes = _MET_TYPE_BYTES.get(fields.get("elementtype", "").upper())
    compressed = fields.get("compresseddata", "false").lower() == "true"
    binary = fields.get("binarydata", "true").lower() == "true"
    required = voxels * channels * (element_bytes or 0)
    value = fields["elementdatafile"]
    if value.upper() == "LOCAL":
        data_files, offset = [path], header_end
    else:
        list_lines = _lines_after(path, header_end) if value.split()[:1] == ["LIST"] else []
        data_files = _external_data_files(path, value, list_lines, "ElementDataFile")
        offset = max(_first_int(path, "HeaderSize", fields, default=0), 0)
    if not (binary and element_bytes):
        return  # ASCII voxels or an element type ITK refuses itself: no byte count to check
    if compressed and len(data_files) == 1:
        inflated = _inflated_size(data_files[0], offset=offset, limit=required)
        _check_size(path, inflated, required, "the decompressed ElementDataFile")
    elif not compressed:
        available = sum(f.stat().st_size for f in data_files) - offset * len(data_files)
        what = "the voxel data after the header" if value.upper() == "LOCAL" else "ElementDataFile"
        _check_size(path, available, required, what)


# --------------------------------------------------------------------------- NRRD


def _check_space_directions(path: Path, text: str) -> None:
    """Refuse a NRRD ``space directions`` vector that is not finite or is zero (no spacing)."""
    for token in re.findall(r"\([^)]*\)", text):
        try:
            vector = [float(v) for v in token.strip("()").split(",")]
        except ValueError:
            raise ImageFormatError(path, f"space directions {text!r} do not parse") from None
        if not all(math.isfinite(v) for v in vector) or not any(vector):
            raise ImageFormatError(
                path, f"space direction {token}: voxel spacing must be finite and positive"
            )


def check_nrrd(path: Path) -> None:
    """Check a ``.nrrd`` / ``.nhdr`` header, where its data file lies, and raw data's size.

    Raises
    ------
    ImageFormatError
        Not NRRD, bad ``sizes`` or more than ``MAX_VOXELS`` voxels, ``spacings``
        or ``space directions`` that are not finite and non-zero, a ``data
        file`` outside the header's folder, or raw data shorter than ``sizes``
        needs. Compressed NRRD data is checked by SimpleITK, which reports a
        short or damaged stream.
    """
    lines, header_end = _text_header(path, ends_at=lambda line: line == "")
    if not lines or not lines[0].startswith("NRRD000"):
        raise ImageFormatError(path, "not a NRRD file (no NRRD000x magic line)")
    fields, list_lines = {}, []
    for index, line in enumerate(lines[1:], start=1):
        if line.startswith("#") or ":=" in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() in ("data file", "datafile") and value.split()[:1] == ["LIST"]:
            list_lines = lines[index + 1 :]
            break
    sizes = _numbers(path, "sizes", fields.get("sizes", ""), int)
    voxels = _check_voxel_count(path, sizes)
    if "spacings" in fields:
        _check_spacing(path, "spacings", _numbers(path, "spacings", fields["spacings"]))
    _check_space_directions(path, fields.get("space directions", ""))
    value = fields.get("data file", fields.get("datafile"))
    byte_skip = _first_int(path, "byte skip", fields, default=0)
    if value is None:
        data_files, offset = [path], header_end
    else:
        data_files = _external_data_files(path, value, list_lines, "data file")
        offset = 0
    element_bytes = _NRRD_TYPE_BYTES.get(fields.get("type", "").lower())
    if fields.get("encoding", "").lower() != "raw" or not element_bytes or byte_skip < 0:
        return  # compressed or text encodings: SimpleITK reports short data itself
    if value is None and header_end < 0:
        raise ImageFormatError(path, "no blank line ends the NRRD header and no data file named")
    required = voxels * element_bytes
    skipped = (offset + byte_skip) * len(data_files)
    available = sum(f.stat().st_size for f in data_files) - skipped
    what = "the voxel data after the header" if value is None else "data file"
    _check_size(path, available, required, what)
