"""The CT phantom: anatomy in HU, lesion ground truth, RECIST measurement, original marks."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import ellipse

from napari_lesion_harvest.geometry import RECIST_BOX_PADDING
from napari_lesion_harvest.synthetic.anatomy import Patient, build_anatomy
from napari_lesion_harvest.synthetic.canvas import Canvas, Tissue
from napari_lesion_harvest.synthetic.dataset import series_identities, volume_rng
from napari_lesion_harvest.synthetic.marks import (
    choose_marked,
    expected_mark_fraction,
    mark_probability,
)
from napari_lesion_harvest.synthetic.phantom import PhantomConfig, generate_volume
from napari_lesion_harvest.synthetic.truth import recist_from_mask

SMALL = PhantomConfig(size=96, slices=(10, 16))


def _anatomy(z_start_mm: float, seed: int = 0) -> Canvas:
    rng = np.random.default_rng(seed)
    canvas = Canvas.empty((12, 128, 128), (5.0, 3.2, 3.2), z_start_mm=z_start_mm, y_offset_mm=10)
    build_anatomy(canvas, Patient.sample(rng), rng)
    return canvas


def _mean_hu(canvas: Canvas, tissue: Tissue) -> float:
    values = canvas.hu[canvas.labels == tissue]
    assert values.size > 0, f"no {tissue.name} in the phantom"
    return float(values.mean())


def test_chest_anatomy_has_lungs_heart_and_spine_in_plausible_hu():
    canvas = _anatomy(130.0)
    assert -900 < _mean_hu(canvas, Tissue.LUNG) < -750
    assert _mean_hu(canvas, Tissue.VERTEBRA) > 200
    assert 40 <= _mean_hu(canvas, Tissue.HEART) <= 350
    assert -130 < _mean_hu(canvas, Tissue.SUBCUTANEOUS_FAT) < -70
    # lungs lie on both sides of the midline, the spine is posterior (y > 0)
    lung_x = canvas.x[np.nonzero(canvas.labels == Tissue.LUNG)[2]]
    assert (lung_x < -30).any() and (lung_x > 30).any()
    spine_y = canvas.y[np.nonzero(canvas.labels == Tissue.VERTEBRA)[1]]
    assert spine_y.mean() > 0


def test_abdomen_anatomy_has_liver_left_of_image_and_spleen_right():
    canvas = _anatomy(290.0, seed=3)
    for tissue in (Tissue.LIVER, Tissue.SPLEEN, Tissue.KIDNEY, Tissue.BOWEL):
        assert (canvas.labels == tissue).sum() > 50, tissue.name
    liver_x = canvas.x[np.nonzero(canvas.labels == Tissue.LIVER)[2]].mean()
    spleen_x = canvas.x[np.nonzero(canvas.labels == Tissue.SPLEEN)[2]].mean()
    assert liver_x < 0 < spleen_x  # radiological view: the patient's right on image left
    assert 30 < _mean_hu(canvas, Tissue.LIVER) < 140


def test_recist_from_mask_measures_a_rotated_ellipse():
    mask = np.zeros((80, 80), dtype=bool)
    rr, cc = ellipse(40, 40, 12, 24, rotation=np.radians(30))
    mask[rr, cc] = True
    mark = recist_from_mask(mask, 3, offset_xy=(100, 200))
    long_px, short_px = mark.diameters_px()
    assert mark.z == 3
    assert 47 <= long_px <= 50  # 2 x 24 semi-axis, edge to edge
    assert 23 <= short_px <= 26
    assert mark.axis_angle_deg() == pytest.approx(90.0, abs=0.01)  # endpoints rounded
    centre = mark.long_axis.mean(axis=0)
    assert centre == pytest.approx([140.0, 240.0], abs=1.5)
    # the long axis runs along the ellipse's major axis (30 degrees from the x axis, either way)
    direction = mark.long_axis[1] - mark.long_axis[0]
    angle = np.degrees(np.arctan2(abs(direction[1]), abs(direction[0])))
    assert angle == pytest.approx(30.0, abs=6.0)


def test_recist_from_single_pixel_is_one_pixel_long():
    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 2] = True
    mark = recist_from_mask(mask, 0)
    assert mark.diameters_px() == pytest.approx((1.0, 1.0))
    assert mark.box(padding=0).tolist() == pytest.approx([1.5, 1.5, 2.5, 2.5])


@pytest.fixture(scope="module")
def volumes():
    identities = series_identities(4, 11)
    return [generate_volume(volume_rng(11, i), identities[i], config=SMALL) for i in range(4)]


def test_volume_is_int16_hu_with_deeplesion_id(volumes):
    for sample in volumes:
        hu = sample.volume.array()
        assert hu.dtype == np.int16
        assert hu.shape[1:] == (96, 96) and 10 <= hu.shape[0] <= 16
        assert hu.min() >= -1024 and hu.max() <= 3071
        first, last = sample.volume.attributes["slice_range"]
        assert sample.volume_id == f"{sample.identity.series}_{first:03d}-{last:03d}"
        assert last - first + 1 == hu.shape[0]
        sz, sy, sx = sample.volume.spacing
        assert sz in (1.0, 2.0, 2.5, 5.0) and sy == sx
        assert 0.6 * 512 / 96 <= sx <= 0.98 * 512 / 96 + 1e-9
        # noise: a flat region (outside the body, inside the field of view) is not flat
        assert hu[:, 48, 2:6].std() > 1


def test_every_lesion_has_consistent_truth(volumes):
    lesions = [lesion for sample in volumes for lesion in sample.lesions]
    assert len(lesions) >= 8
    for sample in volumes:
        for lesion in sample.lesions:
            mark, extent = lesion.recist, lesion.extent
            assert mark.is_perpendicular(min_angle_deg=89.9)
            assert extent.slices[0] <= mark.z <= extent.slices[-1]
            assert np.array_equal(
                extent.slices, np.arange(extent.slices[0], extent.slices[-1] + 1)
            )
            # on the key slice the padded lesion box and the padded RECIST box agree
            box = extent.box_on_slice(mark.z)
            assert np.abs(box - mark.box()).max() <= 1.5
            # the key slice is the one with the widest lesion (boxes are padded equally)
            widths = np.hypot(*(extent.boxes[:, 2:] - extent.boxes[:, :2]).T)
            assert widths[list(extent.slices).index(mark.z)] >= widths.max() - 2.0
            # the mark lies on lesion voxels
            cx, cy = np.rint(mark.long_axis.mean(axis=0)).astype(int)
            patch = sample.labels[mark.z, cy - 1 : cy + 2, cx - 1 : cx + 2]
            assert (patch == Tissue.LESION).any()
            assert 1 <= lesion.coarse_type <= 8
            assert np.all(np.asarray(lesion.meta["normalized_location"]) >= 0)
            assert np.all(np.asarray(lesion.meta["normalized_location"]) <= 1)
            assert np.all(extent.scores == 1.0)
            assert lesion.box_3d.tolist() == extent.box_3d.tolist()
    assert RECIST_BOX_PADDING == 5.0


def test_lesions_differ_from_their_surroundings(volumes):
    contrasts = [abs(lesion.contrast_hu) for s in volumes for lesion in s.lesions]
    assert min(contrasts) >= 10.0
    kinds = {lesion.kind for s in volumes for lesion in s.lesions}
    assert len(kinds) >= 3


def test_each_volume_has_at_least_one_original_mark(volumes):
    for sample in volumes:
        if sample.lesions:
            assert 1 <= len(sample.original_marks) <= len(sample.lesions)
            marked = [lesion.recist for lesion in sample.lesions if lesion.marked]
            assert sample.original_marks == marked


def test_same_generator_state_gives_identical_volume():
    identity = series_identities(1, 5)[0]
    a = generate_volume(volume_rng(5, 0), identity, config=SMALL)
    b = generate_volume(volume_rng(5, 0), identity, config=SMALL)
    c = generate_volume(volume_rng(6, 0), identity, config=SMALL)
    assert np.array_equal(a.volume.array(), b.volume.array())
    assert [m.measurement_coordinates().tolist() for m in a.all_marks] == [
        m.measurement_coordinates().tolist() for m in b.all_marks
    ]
    assert a.volume.shape != c.volume.shape or not np.array_equal(
        a.volume.array(), c.volume.array()
    )


@pytest.mark.parametrize("fraction", [0.45, 0.3, 0.7])
def test_marked_fraction_matches_request_over_many_volumes(fraction):
    rng = np.random.default_rng(0)
    marked = total = 0
    counts = rng.integers(2, 8, size=4000)
    probability = mark_probability(fraction, range(2, 8))
    assert probability < fraction  # forced marks on small volumes are compensated
    for n in counts:
        chosen = choose_marked(rng.uniform(5, 60, size=n), rng, probability=probability)
        assert chosen.sum() >= 1
        marked += int(chosen.sum())
        total += int(n)
    assert marked / total == pytest.approx(fraction, abs=0.015)
    assert expected_mark_fraction(range(2, 8), probability) == pytest.approx(fraction, abs=1e-6)


def test_marks_favour_conspicuous_lesions():
    rng = np.random.default_rng(1)
    conspicuity = np.array([5.0, 10.0, 20.0, 40.0, 80.0])
    hits = np.zeros(5)
    for _ in range(3000):
        hits += choose_marked(conspicuity, rng, probability=0.45)
    assert np.all(np.diff(hits) > 0)


def test_single_lesion_volumes_are_always_marked_and_bad_fraction_is_refused():
    rng = np.random.default_rng(2)
    assert choose_marked([3.0], rng, probability=0.0).tolist() == [True]
    assert choose_marked([], rng, probability=0.5).tolist() == []
    with pytest.raises(ValueError, match="mark fraction"):
        mark_probability(0.0, [2, 3])
    with pytest.raises(ValueError, match="mark probability"):
        choose_marked([1.0, 2.0], rng, probability=1.5)


def test_config_rejects_bad_ranges():
    with pytest.raises(ValueError, match="size"):
        PhantomConfig(size=8)
    with pytest.raises(ValueError, match="slices"):
        PhantomConfig(slices=(10, 5))
    with pytest.raises(ValueError, match="mark_fraction"):
        PhantomConfig(mark_fraction=1.5)


def test_orthogonal_views_montage_draws_marks_on_the_axial_plane(volumes):
    from napari_lesion_harvest.synthetic.preview import MARKED_RGB, orthogonal_views

    sample = next(s for s in volumes if s.lesions)
    mark = sample.lesions[0].recist
    cx, cy = np.rint(mark.long_axis.mean(axis=0)).astype(int)
    hu = sample.volume.array()
    image = orthogonal_views(
        hu,
        sample.volume.spacing,
        (mark.z, cy, cx),
        window=(-160, 240),
        marks=((mark, MARKED_RGB),),
    )
    assert image.dtype == np.uint8 and image.shape[0] == 96 and image.shape[2] == 3
    axial = image[:, :96]
    assert (axial == MARKED_RGB).all(axis=-1).sum() >= 2
    assert not (image[:, 96:] == MARKED_RGB).all(axis=-1).any()


def test_generated_volumes_mark_about_the_requested_fraction():
    config = PhantomConfig(size=96, slices=(6, 8), mark_fraction=0.45)
    identities = series_identities(60, 21)
    marked = total = 0
    for index, identity in enumerate(identities):
        sample = generate_volume(volume_rng(21, index), identity, config=config)
        marked += len(sample.original_marks)
        total += len(sample.lesions)
    assert total > 150
    assert marked / total == pytest.approx(0.45, abs=0.08)
