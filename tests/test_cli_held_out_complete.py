"""``annotate --complete`` on held-out volumes: they are flagged fully annotated (the
evaluation's truth) and stay out of training, on a real project through the CLI."""

from __future__ import annotations

import json

from napari_lesion_harvest.cli import main
from napari_lesion_harvest.io.annotations import read_marks
from tests.data_entry import project_state


def _run(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().out


def test_complete_flags_held_out_volumes_without_moving_them(capsys, dataset, tmp_path):
    project = tmp_path / "proj"
    assert main(["init", str(project)]) == 0
    assert main(["import", str(project), str(dataset.root)]) == 0
    held_out, training = dataset.volume_ids[:2], dataset.volume_ids[2:]
    ids = tmp_path / "test_ids.txt"
    ids.write_text("\n".join(held_out) + "\n")
    assert main(["split", str(project), "--volumes", str(ids), "--as", "V_H_test"]) == 0
    code, out = _run(capsys, "status", project)
    assert code == 0 and "0 complete volumes (0 of them in V_H_test" in out

    truth = dataset.truth_marks
    argv = ("annotate", project, "--marks", truth, "--complete")
    code, out = _run(capsys, *argv)
    n_marks = len(read_marks(truth)[0])
    assert code == 0
    assert out == (
        f"expert marks: {n_marks} new mark(s), 0 already present\n"
        f"{len(training)} volume(s) now fully annotated (V_M), 0 already were\n"
        f"{len(held_out)} held-out volume(s) now fully annotated: they keep their split, and "
        "their marks (hidden from rounds) are the evaluation's truth\n"
    )
    volumes = project_state(project)["volumes"]
    assert {v: volumes[v][:2] for v in held_out} == dict.fromkeys(held_out, ("V_H_test", True))
    assert {v: volumes[v][:2] for v in training} == dict.fromkeys(training, ("V_M", True))
    code, out = _run(capsys, "status", project, "--json")
    status = json.loads(out)
    assert status["splits"] == {"V_H_test": len(held_out), "V_M": len(training)}
    assert (status["complete_volumes"], status["complete_v_h_test"]) == (3, 2)

    before = project_state(project)
    code, out = _run(capsys, *argv)  # re-run: nothing changes
    assert code == 0 and out.endswith("0 volume(s) now fully annotated (V_M), 3 already were\n")
    assert project_state(project) == before
