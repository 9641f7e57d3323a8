"""Cost of the damage checks at import: DeepLesion slice headers, and compressed NIfTI data.

Writes ``--slices`` distinct 512 x 512 CT-like 16-bit PNGs (``io.deeplesion_writer``)
in a temporary folder, then reports, best of ``--repeats`` (files in the page cache):

* microseconds per slice of :func:`~napari_lesion_harvest.io.deeplesion.check_series_slices`
  (signature, IHDR, size bound and IEND of every file, no decoding), the run
  time that gives for DeepLesion's ~928,000 slices, and the same per slice for a full
  decode (:func:`~napari_lesion_harvest.io.deeplesion.read_hu_png`) for scale;
* for one ``--nifti-slices`` x 512 x 512 ``.nii.gz``: the header check with its
  full gzip verification (:func:`~napari_lesion_harvest.io.medical_headers.check_nifti`)
  against the whole :func:`~napari_lesion_harvest.io.sitk_reader.read_sitk_volume`,
  which includes it.

Usage::

    .venv/bin/python benchmarks/slice_check_bench.py [--slices 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from io_bench import ct_like_slices
from pickle_bench import best_seconds

from napari_lesion_harvest.io.deeplesion import check_series_slices, read_hu_png
from napari_lesion_harvest.io.deeplesion_writer import write_series_pngs
from napari_lesion_harvest.io.medical_headers import check_nifti
from napari_lesion_harvest.io.sitk_reader import read_sitk_volume, write_sitk_volume
from napari_lesion_harvest.io.volume import CTVolume

DEEPLESION_SLICES = 928_000  # about, the whole Images_png


def decode_all(paths: list[Path]) -> None:
    for path in paths:
        read_hu_png(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=2000)
    parser.add_argument("--decode-slices", type=int, default=200)
    parser.add_argument("--nifti-slices", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = []
        for start in range(0, args.slices, 100):
            count = min(100, args.slices - start)
            paths += write_series_pngs(
                root, "000001_01_01", ct_like_slices(count, 512, rng), start + 1
            )
        check = best_seconds(check_series_slices, paths, repeats=args.repeats)
        decoded = paths[: args.decode_slices]
        decode = best_seconds(decode_all, decoded, repeats=args.repeats)

        hu = ct_like_slices(args.nifti_slices, 512, rng)
        nifti = root / "scan.nii.gz"
        write_sitk_volume(CTVolume.from_array("scan", hu, (1.0, 0.7, 0.7)), nifti)
        header = best_seconds(check_nifti, nifti, repeats=args.repeats)
        whole = best_seconds(read_sitk_volume, nifti, repeats=args.repeats)
        nifti_mib = nifti.stat().st_size / 2**20

    per_slice = check / len(paths)
    print(f"slices: {len(paths)} distinct 512x512 PNGs (page cache warm)")
    print(f"header + IEND check : {1e6 * per_slice:8.1f} us/slice")
    print(f"full decode         : {1e6 * decode / len(decoded):8.1f} us/slice")
    print(
        f"check of DeepLesion's ~{DEEPLESION_SLICES:,} slices: "
        f"{per_slice * DEEPLESION_SLICES:.0f} s"
    )
    print(
        f"nii.gz {args.nifti_slices}x512x512 ({nifti_mib:.1f} MiB): header check with gzip "
        f"verification {header:.2f} s of a {whole:.2f} s read_sitk_volume"
    )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
