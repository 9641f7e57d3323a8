"""Size bounds the image readers enforce from headers, before any pixel is allocated.

A header can claim any size; these bounds turn an absurd claim (a damaged or
hostile file) into a clear :class:`~.errors.ImageFormatError` instead of a
memory error or a decoder's own exception.
"""

from __future__ import annotations

#: Largest width or height of a 2D slice, in pixels. CT matrices are 512 x 512
#: (DeepLesion) and at most 1024 or 2048 on high-resolution scanners; 8192 leaves
#: a 4x margin. An 8192 x 8192 16-bit slice is 128 MiB and has 67 M pixels, under
#: Pillow's 89 M-pixel decompression-bomb limit, so Pillow never refuses a slice
#: that passed this bound.
MAX_SLICE_SIDE = 8192

#: Most voxels in one 3D volume: 2**31 is a 512 x 512 x 8192-slice volume, 4 GiB
#: as int16 HU (a whole-body CT at 0.5 mm is about 512 x 512 x 2000).
MAX_VOXELS = 2**31

#: Most slices in one DeepLesion sub-volume (``Slice_range``): a whole-body CT at
#: 0.5 mm has about 2000 slices, and each DeepLesion sub-volume is a part of one.
MAX_SUBVOLUME_SLICES = 2048
