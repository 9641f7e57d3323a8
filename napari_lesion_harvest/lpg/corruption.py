"""Models Genesis corruptions of an LPG input stack (Zhou et al., MICCAI 2019).

Self-supervised pretraining (:mod:`napari_lesion_harvest.lpg.pretrain`) asks
the network to restore a stack from a corrupted copy. The corruptions are the
paper's, in 2.5D on the LPG's own 9-slice stacks (every slice of a stack is
corrupted alike, so the 3D context stays consistent):

* local pixel shuffling: the pixels inside many small windows are permuted
  (texture must be inferred from the surroundings);
* non-linear intensity transform: a random monotonic Bezier curve remaps the
  intensities (the network must learn what the HU values are, hence tissue);
* in-painting (random boxes replaced by noise) or out-painting (everything
  outside one box replaced by noise): anatomy must be completed from context.

Intensities are the network's scaled to [0, 1] (:func:`to_unit`), as in
Models Genesis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.lpg.config import LPGConfig


@dataclass(frozen=True)
class Corruptions:
    """Probabilities and sizes of the corruptions (Models Genesis' defaults).

    Attributes
    ----------
    shuffle_probability : float
        Of local pixel shuffling.
    shuffle_windows_per_pixel : float
        Windows shuffled per canvas pixel.
    shuffle_max_fraction : float
        Largest window side as a fraction of the canvas side.
    intensity_probability : float
        Of the non-linear intensity transform.
    painting_probability : float
        Of in- or out-painting.
    inpainting_share : float
        Share of in-painting among paintings (the rest is out-painting).
    """

    shuffle_probability: float = 0.5
    shuffle_windows_per_pixel: float = 1 / 256
    shuffle_max_fraction: float = 1 / 16
    intensity_probability: float = 0.9
    painting_probability: float = 0.9
    inpainting_share: float = 0.5


def to_unit(stack, config: LPGConfig):
    """Network intensities (windowed, mean subtracted) to [0, 1]."""
    return (stack + config.pixel_mean) / 255.0


def from_unit(stack, config: LPGConfig):
    """Inverse of :func:`to_unit`."""
    return stack * 255.0 - config.pixel_mean


def corrupt(
    stack: np.ndarray, rng: np.random.Generator, corruptions: Corruptions | None = None
) -> np.ndarray:
    """A corrupted copy of ``stack``.

    Parameters
    ----------
    stack : ndarray, shape (S, H, W), float32
        Slices in [0, 1] (:func:`to_unit`).
    rng : numpy.random.Generator
        Every random draw comes from it.
    corruptions : Corruptions, optional
        Default: Models Genesis' (``Corruptions()``).

    Returns
    -------
    ndarray, shape (S, H, W), float32
    """
    corruptions = corruptions or Corruptions()
    out = np.array(stack, dtype=np.float32, copy=True)
    if rng.uniform() < corruptions.shuffle_probability:
        out = _shuffle_windows(out, rng, corruptions)
    if rng.uniform() < corruptions.intensity_probability:
        out = _bezier_intensity(out, rng)
    if rng.uniform() < corruptions.painting_probability:
        if rng.uniform() < corruptions.inpainting_share:
            out = _inpaint(out, rng)
        else:
            out = _outpaint(out, rng)
    return out


def _shuffle_windows(stack: np.ndarray, rng, corruptions: Corruptions) -> np.ndarray:
    """Permute the pixels inside random small windows (one permutation for all slices)."""
    _, height, width = stack.shape
    count = max(1, int(height * width * corruptions.shuffle_windows_per_pixel))
    largest = max(2, int(min(height, width) * corruptions.shuffle_max_fraction))
    for _ in range(count):
        h, w = (int(v) for v in rng.integers(1, largest + 1, size=2))
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        window = stack[:, y : y + h, x : x + w].reshape(len(stack), -1)
        stack[:, y : y + h, x : x + w] = window[:, rng.permutation(h * w)].reshape(-1, h, w)
    return stack


def _bezier_intensity(stack: np.ndarray, rng) -> np.ndarray:
    """Remap [0, 1] by a cubic Bezier curve from (0, 0) to (1, 1) (or its mirror)."""
    inner = rng.uniform(size=(2, 2))
    points = np.array([[0.0, 0.0], inner[0], inner[1], [1.0, 1.0]])
    t = np.linspace(0.0, 1.0, 1000)[:, None]
    curve = (
        (1 - t) ** 3 * points[0]
        + 3 * (1 - t) ** 2 * t * points[1]
        + 3 * (1 - t) * t**2 * points[2]
        + t**3 * points[3]
    )
    xs, ys = curve[:, 0], curve[:, 1]
    order = np.argsort(xs)
    if rng.uniform() < 0.5:
        ys = 1.0 - ys  # the mirrored curve inverts contrast
    clipped = np.clip(stack, 0.0, 1.0)
    return np.interp(clipped, xs[order], ys[order]).astype(np.float32)


def _noise_like(stack: np.ndarray, rng) -> np.ndarray:
    return rng.uniform(size=stack.shape[1:]).astype(np.float32)


def _inpaint(stack: np.ndarray, rng) -> np.ndarray:
    """Replace up to five random boxes (1/6 to 1/3 of each side) by noise."""
    _, height, width = stack.shape
    for _ in range(int(rng.integers(1, 6))):
        h = int(rng.integers(max(1, height // 6), max(2, height // 3) + 1))
        w = int(rng.integers(max(1, width // 6), max(2, width // 3) + 1))
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        stack[:, y : y + h, x : x + w] = _noise_like(stack, rng)[None, y : y + h, x : x + w]
    return stack


def _outpaint(stack: np.ndarray, rng) -> np.ndarray:
    """Keep one random box (3/7 to 4/7 of each side); replace the rest by noise."""
    _, height, width = stack.shape
    h = int(rng.integers(3 * height // 7, 4 * height // 7 + 1))
    w = int(rng.integers(3 * width // 7, 4 * width // 7 + 1))
    y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    painted = np.broadcast_to(_noise_like(stack, rng), stack.shape).copy()
    painted[:, y : y + h, x : x + w] = stack[:, y : y + h, x : x + w]
    return painted
