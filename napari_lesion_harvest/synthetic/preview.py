"""Axial, coronal and sagittal views of phantom volumes, for the docs and for looking at them.

``python -m napari_lesion_harvest.synthetic.preview OUT_DIR --seed S --indices I [I ...]``
(``[--size 512]``) writes ``phantom_<seed>_<i>_<window>.png`` montages (soft-tissue
and lung windows) with the original marks in yellow and the unmarked lesions in magenta.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_lesion_harvest.geometry import RecistMark

WINDOWS = {"soft_tissue": (-160.0, 240.0), "lung": (-1350.0, 150.0)}
MARKED_RGB = (255, 220, 0)
UNMARKED_RGB = (255, 0, 255)


def window_to_uint8(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Map HU to 0..255 grey levels through a ``(min, max)`` window."""
    low, high = window
    return (np.clip((hu.astype(np.float32) - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def _draw_line(rgb: np.ndarray, start, end, color) -> None:
    """Draw a segment between ``(x, y)`` points into an RGB image (in place)."""
    steps = int(np.ceil(np.hypot(end[0] - start[0], end[1] - start[1]) * 2)) + 1
    xs = np.rint(np.linspace(start[0], end[0], steps)).astype(int)
    ys = np.rint(np.linspace(start[1], end[1], steps)).astype(int)
    keep = (xs >= 0) & (xs < rgb.shape[1]) & (ys >= 0) & (ys < rgb.shape[0])
    rgb[ys[keep], xs[keep]] = color


def _to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


def orthogonal_views(
    hu: np.ndarray,
    spacing_zyx,
    centre_zyx,
    *,
    window: tuple[float, float],
    marks: tuple[tuple[RecistMark, tuple[int, int, int]], ...] = (),
) -> np.ndarray:
    """A montage of the axial, coronal and sagittal planes through ``centre_zyx``.

    Parameters
    ----------
    hu : ndarray, shape (Z, Y, X)
    spacing_zyx : tuple of float
        Voxel spacing; coronal and sagittal planes are stretched to square pixels.
    centre_zyx : tuple of int
        Voxel the three planes pass through.
    window : tuple of float
        Display window (min, max) HU.
    marks : tuple of (RecistMark, rgb)
        Marks drawn on the axial view when they lie on its slice.

    Returns
    -------
    ndarray, shape (H, W, 3), uint8
    """
    z, y, x = (int(v) for v in centre_zyx)
    sz, sy, sx = spacing_zyx
    axial = _to_rgb(window_to_uint8(hu[z], window))
    for mark, color in marks:
        if mark.z == z:
            for axis in (mark.long_axis, mark.short_axis):
                _draw_line(axial, axis[0], axis[1], color)
    stretch = sz / sy
    coronal = window_to_uint8(
        ndimage.zoom(hu[:, y, :].astype(np.float32), (stretch, 1), order=1), window
    )
    sagittal = window_to_uint8(
        ndimage.zoom(hu[:, :, x].astype(np.float32), (stretch, 1), order=1), window
    )
    height = axial.shape[0]
    panels = [axial]
    for plane in (coronal, sagittal):
        padded = np.zeros((height, plane.shape[1]), dtype=np.uint8)
        top = max(0, (height - plane.shape[0]) // 2)
        rows = min(height, plane.shape[0])
        padded[top : top + rows] = plane[:rows]
        panels.append(_to_rgb(padded))
    gap = np.full((height, 4, 3), 40, dtype=np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)


def save_phantom_views(out_dir, *, seed: int, indices, size: int = 512) -> list[Path]:
    """Generate volumes ``indices`` of the dataset made with ``seed``; save their views.

    The planes pass through the largest lesion of each volume (the volume's
    centre when it has none).

    Returns
    -------
    list of Path
    """
    from PIL import Image

    from napari_lesion_harvest.synthetic.dataset import series_identities, volume_rng
    from napari_lesion_harvest.synthetic.phantom import PhantomConfig, generate_volume

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    indices = [int(i) for i in indices]
    identities = series_identities(max(indices) + 1, seed)
    written = []
    for index in indices:
        sample = generate_volume(
            volume_rng(seed, index), identities[index], config=PhantomConfig(size=size)
        )
        hu = sample.volume.array()
        if sample.lesions:
            largest = max(sample.lesions, key=lambda lesion: lesion.recist.diameters_px()[0])
            cx, cy = largest.recist.long_axis.mean(axis=0)
            centre = (largest.recist.z, int(round(cy)), int(round(cx)))
        else:
            centre = tuple(s // 2 for s in hu.shape)
        marks = tuple(
            (lesion.recist, MARKED_RGB if lesion.marked else UNMARKED_RGB)
            for lesion in sample.lesions
        )
        for name, window in WINDOWS.items():
            image = orthogonal_views(hu, sample.volume.spacing, centre, window=window, marks=marks)
            path = out / f"phantom_{seed}_{index}_{name}.png"
            Image.fromarray(image).save(path, optimize=True)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line of :func:`save_phantom_views`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--indices", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    for path in save_phantom_views(
        args.out_dir, seed=args.seed, indices=args.indices, size=args.size
    ):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
