"""Patch extraction on a synthetic volume with a known bright cube."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpc.patches import (
    VIEW_NAMES,
    PatchSpec,
    extract_patches,
    lpc_window,
    proposal_field_of_view,
)

SPACING = (2.0, 0.5, 0.5)  # slice interval 4x the in-plane spacing
SHAPE = (40, 120, 120)
CUBE_HU = 1000
BACKGROUND_HU = 0


def cube_volume(z0, y0, x0, *, depth=5, side=20, loads=None):
    """Volume with a bright box of ``depth`` slices x ``side`` x ``side`` pixels (10 mm cube)."""
    hu = np.full(SHAPE, BACKGROUND_HU, dtype=np.int16)
    hu[z0 : z0 + depth, y0 : y0 + side, x0 : x0 + side] = CUBE_HU

    def load_slice(z):
        if loads is not None:
            loads.append(z)
        return hu[z]

    return CTVolume("cube", SHAPE, SPACING, load_slice=load_slice)


def cube_proposal(z0, y0, x0, *, depth=5, side=20):
    slices = np.arange(z0, z0 + depth)
    boxes = np.tile([x0, y0, x0 + side - 1, y0 + side - 1], (depth, 1))
    return Proposal3D(slices, boxes, np.full(depth, 0.9))


def bright_extent_mm(profile, pixel_mm):
    """Length (mm) of the part of a 1D profile above half the cube's windowed value."""
    half = (lpc_window(np.float32(CUBE_HU)) + lpc_window(np.float32(BACKGROUND_HU))) / 2
    return np.count_nonzero(profile > half) * pixel_mm


def bright_centroid(image):
    half = (lpc_window(np.float32(CUBE_HU)) + lpc_window(np.float32(BACKGROUND_HU))) / 2
    rows, cols = np.nonzero(image > half)
    return rows.mean(), cols.mean()


def test_cube_is_centred_with_physical_proportions_in_all_views():
    size = 48
    volume = cube_volume(17, 50, 50)
    proposal = cube_proposal(17, 50, 50)
    spec = PatchSpec(size=size, pad_px=16)
    patches = extract_patches(volume, [proposal], spec)
    assert patches.shape == (1, 3, size, size)
    assert patches.dtype == np.float32

    _, half_mm = proposal_field_of_view(proposal, SPACING, pad_px=16)
    pixel_mm = 2 * half_mm / size
    centre = (size - 1) / 2
    for view, image in zip(VIEW_NAMES, patches[0], strict=True):
        row_c, col_c = bright_centroid(image)
        assert abs(row_c - centre) < 0.6, view
        assert abs(col_c - centre) < 0.6, view
        mid = size // 2
        # a 10 mm cube is 10 mm along both patch axes, whatever the voxel spacing
        assert bright_extent_mm(image[mid, :], pixel_mm) == pytest.approx(10, abs=pixel_mm)
        assert bright_extent_mm(image[:, mid], pixel_mm) == pytest.approx(10, abs=pixel_mm)
    # the background inside the volume is soft tissue, not padding
    assert patches[0, :, 0, 0] == pytest.approx([lpc_window(np.float32(BACKGROUND_HU))] * 3)


def test_field_of_view_pads_z_by_the_in_plane_distance():
    proposal = cube_proposal(10, 40, 40, depth=3, side=10)  # z extent 2 slices = 4 mm
    centre, half_mm = proposal_field_of_view(proposal, (5.0, 0.8, 0.8), pad_px=64)
    np.testing.assert_allclose(centre, [11.0, 44.5, 44.5])
    # in-plane: 4.5 px * 0.8 + 64 * 0.8 = 54.8 mm; z: 2 * 5 / 2 + 64 * 0.8 = 56.2 mm
    assert half_mm == pytest.approx(56.2)


def test_cube_at_volume_corner_is_padded_with_air_and_keeps_its_place():
    size = 32
    volume = cube_volume(0, 0, 0)
    proposal = cube_proposal(0, 0, 0)
    spec = PatchSpec(size=size, pad_px=16)
    patches = extract_patches(volume, [proposal], spec, windowed=False)[0]
    _, half_mm = proposal_field_of_view(proposal, SPACING, pad_px=16)
    pixel_mm = 2 * half_mm / size
    centre = (size - 1) / 2
    for view, image in zip(VIEW_NAMES, patches, strict=True):
        # the corner outside the volume is air, the cube is still centred and 10 mm wide
        assert image[0, 0] == pytest.approx(-1024), view
        assert image[-1, -1] == pytest.approx(BACKGROUND_HU), view
        rows, cols = np.nonzero(image > CUBE_HU / 2)
        assert abs(rows.mean() - centre) < 0.6 and abs(cols.mean() - centre) < 0.6, view
        assert np.ptp(rows) + 1 == pytest.approx(10 / pixel_mm, abs=1.5), view


def test_proposal_outside_the_volume_gives_air():
    volume = cube_volume(10, 10, 10)
    far = Proposal3D([500], [[900, 900, 910, 910]], [0.5])
    patches = extract_patches(volume, [far], PatchSpec(size=8, pad_px=2), windowed=False)
    assert np.all(patches == -1024)


def test_cube_spec_matches_the_views_through_its_centre():
    size = 24
    volume = cube_volume(17, 50, 50)
    proposal = cube_proposal(17, 50, 50)
    cube = extract_patches(volume, [proposal], PatchSpec(kind="cube", size=size, pad_px=8))
    assert cube.shape == (1, size, size, size)
    mid = size // 2
    bright = cube[0] > lpc_window(np.float32(CUBE_HU / 2))
    # a cube again: equal extent along z, y and x
    extents = [np.count_nonzero(bright.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1))]
    assert max(extents) - min(extents) <= 1
    assert bright[mid, mid, mid]


def test_axial_only_reads_only_the_slices_around_the_centre():
    loads: list[int] = []
    volume = cube_volume(17, 50, 50, loads=loads)
    proposal = cube_proposal(17, 50, 50)
    extract_patches(volume, [proposal], PatchSpec(views=("axial",), size=16, pad_px=16))
    assert sorted(set(loads)) == [19, 20]  # centre z = 19 -> slices 19 and 20 (weight 0)
    loads.clear()
    volume.clear_cache()
    extract_patches(volume, [proposal], PatchSpec(size=16, pad_px=16))
    # coronal / sagittal read the slab the cube of view crosses, each slice once
    assert len(loads) == len(set(loads)) < SHAPE[0]


def test_many_proposals_read_each_slice_once_whatever_the_volume_cache():
    # Proposals at every depth, each reaching over more slices than the volume's cache
    # holds: the slices are still read once per call, and the patches are unchanged.
    loads: list[int] = []
    volume = cube_volume(17, 50, 50, loads=loads)
    volume.cache_slices = 2
    proposals = [cube_proposal(z, 30 + z, 40) for z in range(2, 34, 3)]
    spec = PatchSpec(size=16, pad_px=16)
    together = extract_patches(volume, proposals, spec)
    assert len(loads) == len(set(loads)) > 2 * volume.cache_slices
    one_by_one = np.stack([extract_patches(volume, [p], spec)[0] for p in proposals])
    np.testing.assert_array_equal(together, one_by_one)


def test_patch_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="views"):
        PatchSpec(views=("oblique",))
    with pytest.raises(ValueError, match="kind"):
        PatchSpec(kind="volume")
    with pytest.raises(ValueError, match="size"):
        PatchSpec(size=1)
    with pytest.raises(ValueError, match="hu_window"):
        PatchSpec(hu_window=(300, -200))
    with pytest.raises(ValueError, match="outside must be one of"):
        PatchSpec(outside="zero")


def test_a_soft_tissue_window_spreads_a_faint_lesion_over_more_grey_levels():
    """A 40 HU lesion is 2.5 grey levels in the paper's window and 20.4 in [-200, 300]."""
    hu = np.full(SHAPE, BACKGROUND_HU, dtype=np.int16)
    hu[17:22, 50:70, 50:70] = 40
    hu[:, :10, :] = -1000  # air, below the soft-tissue window
    volume = CTVolume("faint", SHAPE, SPACING, load_slice=lambda z: hu[z])
    proposal = cube_proposal(17, 50, 50)
    contrast = {}
    for window in ((-1024.0, 3071.0), (-200.0, 300.0)):
        patch = extract_patches(
            volume, [proposal], PatchSpec(size=48, pad_px=16, hu_window=window)
        )
        axial = patch[0, 0]
        contrast[window] = axial[24, 24] - axial[24, 2]  # lesion centre minus soft tissue
        assert axial[24, 24] == pytest.approx(lpc_window(np.float32(40), window))
    assert contrast[(-1024.0, 3071.0)] == pytest.approx(40 * 255 / 4095, rel=1e-3)
    assert contrast[(-200.0, 300.0)] == pytest.approx(40 * 255 / 500, rel=1e-3)
    far = extract_patches(
        volume, [cube_proposal(17, 0, 50)], PatchSpec(size=48, pad_px=16, hu_window=(-200, 300))
    )
    assert far.min() == pytest.approx(-50.0)  # air clips to the window's low end


def _layered_volume(hu, volume_id="layered"):
    return CTVolume.from_array(volume_id, hu, (2.0, 0.8, 0.8))


def test_mirrored_patches_do_not_tell_how_near_the_volume_end_a_proposal_lies():
    # every slice the same textured image: a proposal's surroundings look alike at
    # any depth, so only the padding could tell an end from the middle
    rng = np.random.default_rng(0)
    image = rng.integers(-100, 200, size=(48, 48)).astype(np.int16)
    volume = _layered_volume(np.repeat(image[None], 20, axis=0))
    boxes = [[18, 18, 28, 28]] * 3
    near_end = Proposal3D([0, 1, 2], boxes, [0.5] * 3)
    middle = Proposal3D([9, 10, 11], boxes, [0.5] * 3)
    mirrored = PatchSpec(size=24, pad_px=12, outside="mirror")
    end_patch, middle_patch = extract_patches(volume, [near_end, middle], mirrored)
    np.testing.assert_allclose(end_patch, middle_patch, atol=1e-3)
    with_air = extract_patches(volume, [near_end, middle], PatchSpec(size=24, pad_px=12))
    coronal = VIEW_NAMES.index("coronal")
    assert np.isclose(with_air[0, coronal], lpc_window(np.float32(-1024))).any()
    assert not np.allclose(with_air[0], with_air[1], atol=1e-3)


@pytest.mark.parametrize("kind", ["views", "cube"])
def test_mirrored_patches_are_those_of_the_volume_mirrored_at_its_faces(kind):
    rng = np.random.default_rng(1)
    hu = rng.integers(-300, 300, size=(10, 30, 30)).astype(np.int16)
    corner = Proposal3D([0, 1], [[1, 2, 7, 9], [0, 1, 8, 8]], [0.6, 0.7])
    spec = PatchSpec(kind=kind, size=12, pad_px=10)
    pad = 40  # more than the patch reaches beyond the volume on every side
    mirrored = np.pad(hu, pad, mode="reflect")  # whole-sample symmetric, repeated
    shifted = Proposal3D(corner.slices + pad, corner.boxes + pad, corner.scores)
    expected = extract_patches(_layered_volume(mirrored, "big"), [shifted], spec, windowed=False)
    got = extract_patches(
        _layered_volume(hu), [corner], replace(spec, outside="mirror"), windowed=False
    )
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert got.min() >= -300  # no air anywhere
