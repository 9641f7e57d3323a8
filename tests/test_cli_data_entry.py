"""``import``, ``annotate``, ``split`` and ``marks`` on real files: one transaction each, safe
to re-run, and bad input gets one line naming it, exit 2 and an unchanged project."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from napari_lesion_harvest.cli import main
from napari_lesion_harvest.io.annotations import read_marks
from tests.data_entry import project_state, rewrite_csv


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "proj"
    assert main(["init", str(folder)]) == 0
    return folder


def _run(capsys, *argv) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of one command (earlier output dropped)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _refused(capsys, *argv) -> str:
    """Run a command that must fail; returns its one error line."""
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"lesion-harvest {argv[0]}: error: ")
    return line


def test_import_of_a_deeplesion_folder_twice_adds_nothing_the_second_time(
    capsys, dataset, project
):
    n_volumes, n_marks = len(dataset.volume_ids), dataset.mark_count
    code, out, err = _run(capsys, "import", project, dataset.root, "--author", "dl")
    assert code == 0
    assert out == (
        f"imported {n_volumes} new volume(s), 0 already in the project; "
        f"{n_marks} new mark(s), 0 already present\n"
    )
    assert (
        err == f"checked {n_volumes} volume(s) and {n_marks} mark(s); writing in one transaction\n"
    )
    state = project_state(project)
    assert state["audit"] == ["volume.import", "mark.import"]  # one transaction, one import

    code, out, _ = _run(capsys, "import", project, dataset.root)
    assert code == 0
    assert out == (
        f"imported 0 new volume(s), {n_volumes} already in the project; "
        f"0 new mark(s), {n_marks} already present\n"
    )
    assert project_state(project) == state


def test_a_several_source_import_is_one_transaction(capsys, dataset, project):
    nifti = sorted((dataset.root / "nifti").glob("*.nii.gz"))
    truth = read_marks(dataset.truth_marks)[0]
    code, out, _ = _run(capsys, "import", project, *nifti, dataset.truth_marks)
    assert code == 0
    assert out.startswith(f"imported {len(nifti)} new volume(s), 0 already in the project; ")
    state = project_state(project)
    assert len(state["marks"]) + int(re.search(r"(\d+) already present", out)[1]) == len(truth)

    # the DeepLesion copy of those volumes: the same ids with other data, nothing is written
    line = _refused(capsys, "import", project, dataset.root)
    assert "volume '" in line and "already in the project with other data" in line
    assert "reader 'simpleitk' in the project, 'deeplesion_png' now" in line
    assert project_state(project) == state


def _broken_dataset(dataset, folder):
    """The dataset with a DL_info row whose coordinates do not parse and one slice file gone."""
    shutil.copytree(dataset.root, folder, ignore=shutil.ignore_patterns("nifti"))

    def break_a_row(rows):
        rows[1]["Measurement_coordinates"] = "x, y"
        return rows

    rewrite_csv(folder / "DL_info.csv", folder / "DL_info.csv", break_a_row)
    volume = sorted((folder / "Images_png").iterdir())[-1]
    sorted(volume.glob("*.png"))[2].unlink()
    return folder


def test_bad_rows_and_volumes_stop_the_import_unless_skipped(capsys, dataset, project, tmp_path):
    broken = _broken_dataset(dataset, tmp_path / "broken")
    line = _refused(capsys, "import", project, broken)
    assert re.search(r"DL_info\.csv, line 3, column 'Measurement_coordinates'", line)
    assert project_state(project)["volumes"] == {}

    shutil.copy(dataset.root / "DL_info.csv", broken / "DL_info.csv")  # only the slice is gone
    line = _refused(capsys, "import", project, broken)
    assert re.search(r"volume \S+ \(\d+ mark\(s\)\): .*Images_png/\S+: 1 slice file", line)
    assert project_state(project)["volumes"] == {}

    broken = _broken_dataset(dataset, tmp_path / "broken2")
    code, out, err = _run(capsys, "import", project, broken, "--skip-invalid")
    assert code == 0
    skipped = [line for line in err.splitlines() if line.startswith("  skipped: ")]
    assert len(skipped) == 2
    assert "line 3, column 'Measurement_coordinates'" in skipped[0]
    assert "1 slice file(s)" in skipped[1]
    imported = project_state(project)
    # every volume but the one with a missing slice and the one whose only row is broken
    assert len(imported["volumes"]) == len(dataset.volume_ids) - 2
    code, out, err = _run(capsys, "import", project, broken, "--skip-invalid")
    assert code == 0 and out.startswith("imported 0 new volume(s)") and "0 new mark(s)" in out
    assert project_state(project) == imported


def test_annotate_complete_re_run_adds_no_duplicate(capsys, dataset, project):
    assert main(["import", str(project), str(dataset.root)]) == 0
    truth = read_marks(dataset.truth_marks)[0]
    n_volumes = len({r.volume_id for r in truth})
    argv = ("annotate", project, "--marks", dataset.truth_marks, "--complete")
    code, out, _ = _run(capsys, *argv)
    assert code == 0
    assert out == (
        f"expert marks: {len(truth)} new mark(s), 0 already present\n"
        f"{n_volumes} volume(s) now fully annotated (V_M), 0 already were\n"
    )
    state = project_state(project)
    assert state["audit"].count("mark.import") == 2  # the import's and the annotation's
    for _ in range(2):
        code, out, _ = _run(capsys, *argv)
        assert code == 0
        assert out == (
            f"expert marks: 0 new mark(s), {len(truth)} already present\n"
            f"0 volume(s) now fully annotated (V_M), {n_volumes} already were\n"
        )
        assert project_state(project) == state


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("z", "9999", r"field z = 9999 is outside its \d+ slices"),
        (
            "long_x1",
            "1e12",
            r"field long_x1 = 1e\+12 is outside the image \(x from -0.5 to 63.5\)",
        ),
        ("volume_id", "no_such_volume", r"volume 'no_such_volume'.* not in the project"),
    ],
)
def test_annotate_refuses_marks_outside_their_volume(
    capsys, dataset, project, tmp_path, column, value, message
):
    assert main(["import", str(project), str(dataset.root)]) == 0
    state = project_state(project)
    marks = tmp_path / "marks.csv"

    def spoil_row_4(rows):
        rows[2][column] = value
        return rows

    rewrite_csv(dataset.truth_marks, marks, spoil_row_4)
    line = _refused(capsys, "annotate", project, "--marks", marks, "--complete")
    assert re.search(f"{re.escape(str(marks))}, line 4: .*{message}", line), line
    assert project_state(project) == state

    code, out, err = _run(capsys, "annotate", project, "--marks", marks, "--skip-invalid")
    assert code == 0
    (skipped,) = [line for line in err.splitlines() if line.startswith("  skipped: ")]
    assert re.search(message, skipped)
    n_marks = len(read_marks(dataset.truth_marks)[0])
    assert out == f"expert marks: {n_marks - 1} new mark(s), 0 already present\n"


def test_a_deleted_mark_stays_deleted_when_its_file_is_annotated_again(capsys, dataset, project):
    assert main(["import", str(project), str(dataset.root)]) == 0
    argv = ("annotate", project, "--marks", dataset.truth_marks)
    assert _run(capsys, *argv)[0] == 0
    code, out, _ = _run(capsys, "marks", project, "--json")
    expert = [m["id"] for m in json.loads(out) if m["origin"] == "expert"]
    code, out, _ = _run(
        capsys, "marks", project, "--delete", expert[0], expert[1], "--author", "rad"
    )
    assert code == 0 and out.startswith(f"deleted 2 mark(s): {expert[0]} {expert[1]}\n")
    assert f"--restore {expert[0]} {expert[1]}" in out

    code, out, _ = _run(capsys, *argv)
    assert code == 0
    assert f"0 new mark(s), {len(expert) - 2} already present, 2 deleted in the project" in out
    assert f"(ids {expert[0]} {expert[1]};" in out
    code, out, _ = _run(capsys, "marks", project, "--restore", expert[0], "--author", "rad")
    assert out.startswith(f"restored 1 mark(s): {expert[0]}\n")
    code, out, _ = _run(capsys, *argv)
    assert f"0 new mark(s), {len(expert) - 1} already present, 1 deleted" in out


def test_marks_lists_and_an_unknown_id_deletes_nothing(capsys, dataset, project):
    assert main(["import", str(project), str(dataset.root), "--author", "dl"]) == 0
    volume_id = dataset.volume_ids[0]
    code, out, _ = _run(capsys, "marks", project, "--volume", volume_id)
    header, *lines = out.splitlines()
    assert header == "id\tvolume\tz\torigin\tauthor\tlong_px\tshort_px\tdeleted"
    assert lines and all(line.split("\t")[1:2] == [volume_id] for line in lines)
    first = int(lines[0].split("\t")[0])
    state = project_state(project)
    line = _refused(capsys, "marks", project, "--delete", first, 99999)
    assert line.endswith("the project has no mark with id 99999")
    assert project_state(project) == state
    assert "no volume 'nope'" in _refused(capsys, "marks", project, "--volume", "nope")
    _run(capsys, "marks", project, "--delete", first)
    code, out, _ = _run(capsys, "marks", project, "--delete", first)
    assert out.startswith("deleted 0 mark(s)\n  already deleted: ")
    code, out, _ = _run(capsys, "marks", project, "--volume", volume_id, "--deleted")
    assert out.splitlines()[1].endswith("\tyes")


def test_split_is_one_transaction_and_safe_to_re_run(capsys, dataset, project, tmp_path):
    assert main(["import", str(project), str(dataset.root)]) == 0
    ids = tmp_path / "ids.txt"
    ids.write_text("# held out\n" + "\n".join(dataset.volume_ids[:2]) + "\n")
    state = project_state(project)
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{dataset.volume_ids[0]}\nnot_a_volume\n")
    assert "not_a_volume" in _refused(
        capsys, "split", project, "--volumes", bad, "--as", "V_H_test"
    )
    assert project_state(project) == state

    code, out, _ = _run(capsys, "split", project, "--volumes", ids, "--as", "V_H_test")
    assert out == "2 volume(s) moved to V_H_test, 0 already there\n"
    state = project_state(project)
    assert [state["volumes"][v][0] for v in dataset.volume_ids[:2]] == ["V_H_test"] * 2
    code, out, _ = _run(capsys, "split", project, "--volumes", ids, "--as", "V_H_test")
    assert out == "0 volume(s) moved to V_H_test, 2 already there\n"
    assert project_state(project) == state
