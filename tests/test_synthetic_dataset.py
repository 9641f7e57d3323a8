"""Synthetic datasets on disk: DeepLesion layout read back by our readers, truth, split, CLI."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_lesion_harvest.cli import main
from napari_lesion_harvest.geometry import RecistMark
from napari_lesion_harvest.io.annotations import read_lesions, read_marks
from napari_lesion_harvest.io.deeplesion import DeepLesionDataset, read_dl_info
from napari_lesion_harvest.io.deeplesion_writer import (
    dl_info_row,
    format_number,
    write_series_pngs,
)
from napari_lesion_harvest.io.sitk_reader import read_sitk_volume
from napari_lesion_harvest.synthetic.dataset import (
    TRUTH_ORIGIN,
    generate_dataset,
    series_identities,
    volume_rng,
)
from napari_lesion_harvest.synthetic.phantom import PhantomConfig, generate_volume
from napari_lesion_harvest.synthetic.split import DatasetSplit, split_volumes

TINY = PhantomConfig(size=64, slices=(8, 12))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_dataset(
        tmp_path_factory.mktemp("synth"), volumes=5, seed=3, config=TINY, write_nifti=True
    )


def _all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_dl_info_reads_back_with_identical_marks(dataset):
    info = read_dl_info(dataset.dl_info, strict=True)
    assert not info.report.skipped
    lesions, _ = read_lesions(dataset.truth_lesions, strict=True)
    expected = {
        vid: [
            RecistMark(p.meta["recist_z"], p.meta["recist_long_axis"], p.meta["recist_short_axis"])
            for p in proposals
            if p.meta["marked"]
        ]
        for vid, proposals in lesions.items()
    }
    read_back = info.marks_by_volume()
    assert set(read_back) == set(dataset.volume_ids)
    for volume_id, marks in read_back.items():
        assert [m.z for m in marks] == [m.z for m in expected[volume_id]]
        for got, want in zip(marks, expected[volume_id], strict=True):
            assert np.array_equal(got.long_axis, want.long_axis)
            assert np.array_equal(got.short_axis, want.short_axis)
    assert dataset.mark_count == len(info.rows)


def test_dl_info_rows_are_consistent(dataset, dl_info_rows_csv):
    info = read_dl_info(dataset.dl_info, strict=True)
    for row in info.rows:
        mark = row.mark
        assert row.bounding_box == pytest.approx(mark.box().tolist(), abs=1e-9)
        assert row.diameters_px == pytest.approx(mark.diameters_px(), rel=1e-5)
        first, last = row.slice_range
        assert first <= row.key_slice <= last
        assert row.file_name == f"{row.series}_{row.key_slice:03d}.png"
        assert row.image_size == (64, 64)
        sz, sy, sx = row.spacing_zyx
        assert sz in (1.0, 2.0, 2.5, 5.0) and sx == sy
        assert all(0.0 <= v <= 1.0 for v in row.normalized_location)
        assert 1 <= row.lesion_type <= 8 and row.train_val_test in (1, 2, 3)
        assert row.gender in ("M", "F") and 18 <= row.age <= 100
        assert row.dicom_window[0] < row.dicom_window[1]
    # same header as the real file, and multi-number cells quoted like it
    real_header = dl_info_rows_csv.read_text().splitlines()[0]
    ours = dataset.dl_info.read_text().splitlines()
    assert ours[0] == real_header
    with open(dataset.dl_info, newline="") as handle:
        first_row = next(iter(csv.DictReader(handle)))
    assert first_row["Slice_range"].count(", ") == 1
    assert f'"{first_row["Measurement_coordinates"]}"' in ours[1]


def test_original_marks_are_true_lesions_and_truth_is_complete(dataset):
    truth, report = read_marks(dataset.truth_marks, strict=True)
    assert not report.skipped and all(r.origin == TRUTH_ORIGIN for r in truth)
    assert len(truth) == dataset.lesion_count
    truth_keys = {(r.volume_id, r.mark.z, tuple(r.mark.measurement_coordinates())) for r in truth}
    info = read_dl_info(dataset.dl_info, strict=True)
    for row in info.rows:
        assert (row.volume_id, row.z, tuple(row.mark.measurement_coordinates())) in truth_keys
    lesions, _ = read_lesions(dataset.truth_lesions, strict=True)
    assert sum(len(v) for v in lesions.values()) == dataset.lesion_count
    for proposals in lesions.values():
        for proposal in proposals:
            assert proposal.meta["recist_z"] in proposal.slices.tolist()
            assert 1 <= proposal.meta["coarse_type"] <= 8


def test_images_read_back_as_generated_and_as_nifti(dataset):
    reader = DeepLesionDataset(dataset.root / "Images_png", dataset.dl_info)
    identities = series_identities(5, 3)
    for index in (0, 4):
        expected = generate_volume(volume_rng(3, index), identities[index], config=TINY)
        volume = reader.open(expected.volume_id)
        assert volume.spacing == pytest.approx(expected.volume.spacing)
        assert np.array_equal(volume.array(), expected.volume.array())
        nifti = read_sitk_volume(dataset.root / "nifti" / f"{expected.volume_id}.nii.gz")
        assert np.array_equal(nifti.array(), expected.volume.array())
        assert nifti.spacing == pytest.approx(expected.volume.spacing)


def test_split_file_partitions_the_volumes(dataset):
    split = DatasetSplit.read(dataset.root / "split.json")
    assert split == dataset.split
    parts = split.as_dict()
    everything = [v for ids in parts.values() for v in ids]
    assert sorted(everything) == sorted(dataset.volume_ids)
    assert all(len(parts[name]) >= 1 for name in ("V_M", "V_H", "V_H_test", "V_D_test"))


def test_same_seed_gives_byte_identical_files_in_parallel_too(tmp_path):
    a = generate_dataset(tmp_path / "a", volumes=3, seed=8, config=TINY)
    b = generate_dataset(tmp_path / "b", volumes=3, seed=8, config=TINY, workers=2)
    c = generate_dataset(tmp_path / "c", volumes=3, seed=9, config=TINY)
    files_a, files_b = _all_files(a.root), _all_files(b.root)
    assert len(files_a) > 3 * 8
    assert files_a == files_b
    assert _all_files(c.root) != files_a


def test_split_keeps_test_patients_whole_and_honours_fractions():
    ids = [f"{p:06d}_{s:02d}_01_001-010" for p in range(1, 41) for s in (1, 2)]
    split = split_volumes(ids, seed=1, fraction_m=0.05, fraction_h_test=0.1, fraction_d_test=0.2)
    assert len(split.v_m) == 4 and len(split.v_h_test) == 8
    assert 16 <= len(split.v_d_test) <= 17
    test_patients = {v.split("_")[0] for v in split.v_d_test}
    train_patients = {v.split("_")[0] for v in split.v_m + split.v_h + split.v_h_test}
    assert not test_patients & train_patients
    assert split == split_volumes(ids, seed=1, fraction_m=0.05, fraction_h_test=0.1,
                                  fraction_d_test=0.2)  # fmt: skip
    with pytest.raises(ValueError, match="too few"):
        split_volumes(ids[:2], fraction_m=0.5, fraction_h_test=0.4, fraction_d_test=0.0)
    with pytest.raises(ValueError, match="fraction_m"):
        split_volumes(ids, fraction_m=1.2)


def test_split_file_with_a_volume_in_two_parts_is_refused(tmp_path):
    path = tmp_path / "split.json"
    path.write_text('{"V_M": ["a"], "V_H": ["a"], "V_H_test": [], "V_D_test": []}')
    with pytest.raises(ValueError, match="two parts"):
        DatasetSplit.read(path)
    path.write_text('{"V_M": []}')
    with pytest.raises(ValueError, match="lacks"):
        DatasetSplit.read(path)


def test_writer_formats_numbers_like_deeplesion_and_refuses_bad_input(tmp_path):
    assert format_number(5.0) == "5"
    assert format_number(-175) == "-175"
    assert format_number(0.859375) == "0.859375"
    assert format_number(154.273) == "154.273"
    assert float(format_number(0.8613281250)) == 0.861328125  # more digits when needed
    with pytest.raises(ValueError, match="non-finite"):
        format_number(float("nan"))
    mark = RecistMark(z=12, long_axis=[[1, 1], [5, 5]], short_axis=[[1, 5], [5, 1]])
    with pytest.raises(ValueError, match="outside the sub-volume"):
        dl_info_row(
            mark,
            series="000001_01_01",
            slice_range=(1, 10),
            spacing_zyx=(5, 1, 1),
            image_size_yx=(64, 64),
            normalized_location=(0.5, 0.5, 0.5),
        )
    with pytest.raises(ValueError, match="16-bit"):
        write_series_pngs(tmp_path, "000001_01_01", np.full((1, 4, 4), 40000), 1)


def test_cli_synth_writes_a_dataset_and_reports_bad_options(tmp_path, capsys):
    out = tmp_path / "cli"
    status = main(
        ["synth", str(out), "--volumes", "2", "--seed", "4", "--size", "64",
         "--slices", "6", "8", "--lesions", "1", "3"]
    )  # fmt: skip
    assert status == 0
    assert "2 volumes" in capsys.readouterr().out
    assert (out / "DL_info.csv").is_file() and (out / "truth" / "lesions.json").is_file()
    assert len(read_dl_info(out / "DL_info.csv").by_volume()) == 2
    assert main(["synth", str(out), "--volumes", "0"]) == 2
    assert main(["synth", str(out), "--size", "8"]) == 2
    assert "size" in capsys.readouterr().err


def test_sample_data_layers_without_importing_napari_or_torch():
    code = (
        "import sys\n"
        "from napari_lesion_harvest.synthetic.sample import make_sample_data\n"
        "layers = make_sample_data()\n"
        "assert 'napari' not in sys.modules and 'torch' not in sys.modules\n"
        "image, kwargs, kind = layers[0]\n"
        "assert kind == 'image' and image.ndim == 3 and image.dtype.name == 'int16'\n"
        "assert kwargs['scale'][1] == kwargs['scale'][2]\n"
        "names = [k['name'] for _, k, t in layers if t == 'shapes']\n"
        "assert names[0] == 'original marks', names\n"
        "for lines, k, t in layers[1:]:\n"
        "    for line in lines:\n"
        "        assert line.shape == (2, 3) and line[0, 0] == line[1, 0]\n"
        "        assert 0 <= line[0, 0] < image.shape[0]\n"
        "print(len(layers))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 2
