"""Checking a 16-bit grayscale PNG slice from its first and last bytes, without decoding.

A PNG file is an 8-byte signature, an ``IHDR`` chunk (width, height, bit
depth, colour type) and, at its very end, the 12-byte ``IEND`` chunk. Reading
those 45 bytes tells whether the slice has the right kind and size and was
written to the end, at the cost of one ``open`` and two small reads; a
full decode (Pillow) still finds damage inside the compressed data.
"""

from __future__ import annotations

import os
import struct
import zlib
from os import PathLike

from napari_lesion_harvest.io.errors import ImageFormatError
from napari_lesion_harvest.io.limits import MAX_SLICE_SIDE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The ``IEND`` chunk: length 0, type, CRC. Every complete PNG ends with these 12 bytes.
IEND_CHUNK = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_IHDR_START = b"\x00\x00\x00\x0dIHDR"
_HEAD_BYTES = 8 + 8 + 13 + 4  # signature, IHDR length + type, IHDR data, CRC
_COLOUR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}


def hu_png_shape(
    path: str | PathLike, *, expected_shape: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Check that ``path`` is a complete 16-bit grayscale PNG and return its ``(Y, X)``.

    Parameters
    ----------
    path : path
        A DeepLesion slice file.
    expected_shape : (int, int), optional
        Required ``(Y, X)`` (the series' first slice).

    Returns
    -------
    (int, int)
        Height and width from the ``IHDR`` chunk.

    Raises
    ------
    ImageFormatError
        Unreadable, empty, not a PNG, damaged header, not 16-bit grayscale, a
        side of 0 or above :data:`~.limits.MAX_SLICE_SIDE`, a size other than
        ``expected_shape``, or no ``IEND`` chunk at the end (truncated).
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
            size = os.fstat(handle.fileno()).st_size
            tail = b""
            if size >= _HEAD_BYTES + len(IEND_CHUNK):
                handle.seek(-len(IEND_CHUNK), os.SEEK_END)
                tail = handle.read(len(IEND_CHUNK))
    except OSError as error:
        raise ImageFormatError(path, f"cannot read the file: {error.strerror or error}") from None
    if size == 0:
        raise ImageFormatError(path, "empty file (0 bytes)")
    if not head.startswith(PNG_SIGNATURE):
        raise ImageFormatError(path, "not a PNG file (no PNG signature)")
    if len(head) < _HEAD_BYTES or head[8:16] != _IHDR_START:
        raise ImageFormatError(path, f"truncated or damaged PNG header ({size} bytes)")
    (crc,) = struct.unpack(">I", head[29:33])
    if zlib.crc32(head[12:29]) != crc:
        raise ImageFormatError(path, "damaged PNG header (IHDR checksum mismatch)")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", head[16:26])
    if bit_depth != 16 or colour_type != 0:
        colour = _COLOUR_TYPES.get(colour_type, f"colour type {colour_type}")
        raise ImageFormatError(
            path, f"expected a 16-bit grayscale PNG, got {bit_depth}-bit {colour}"
        )
    if not (1 <= width <= MAX_SLICE_SIDE and 1 <= height <= MAX_SLICE_SIDE):
        raise ImageFormatError(
            path,
            f"refusing a {width} x {height} image: each side must be 1 to {MAX_SLICE_SIDE} pixels",
        )
    shape = (height, width)
    if expected_shape is not None and shape != tuple(expected_shape):
        raise ImageFormatError(
            path,
            f"slice size {shape} (Y, X) differs from the series' size {tuple(expected_shape)}",
        )
    if tail != IEND_CHUNK:
        raise ImageFormatError(path, f"truncated PNG: its {size} bytes do not end with IEND")
    return shape
