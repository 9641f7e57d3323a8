"""What an expert verdict means for each proposal role, enforced by the store.

A verdict settles what the classifier decided (candidate, P_pos_H, P_neg_H);
a RECIST mark decides the other roles (P_RM, P_neg_M, P_RH), so they take
none, and export never counts a hard negative of a fully annotated volume as
a harvested lesion.
"""

from __future__ import annotations

import pytest

from napari_lesion_harvest.geometry import Proposal3D, RecistMark
from napari_lesion_harvest.store import (
    InvalidValueError,
    ProposalRow,
    StageResult,
)
from napari_lesion_harvest.store.export import export_annotations
from napari_lesion_harvest.store.project import MARK_DECIDED_ROLES
from tests.builders import new_project, synthetic_volume, writing_round

#: Role -> volume the proposal lies in.
ROLE_VOLUMES = {
    "P_RM": "m1",
    "P_neg_M": "m1",
    "P_RH": "h1",
    "P_pos_H": "h1",
    "P_neg_H": "h1",
    "candidate": "h1",
}


def _box_proposal(x: float) -> Proposal3D:
    return Proposal3D([3, 4], [[x, 10, x + 12, 22], [x, 10, x + 12, 22]], [0.6, 0.8])


@pytest.fixture
def project_and_ids(tmp_path):
    volumes = [synthetic_volume(v, shape=(8, 64, 64)) for v in ("m1", "h1")]
    with new_project(tmp_path / "proj", volumes) as project:
        mark = RecistMark.from_measurement_coordinates([10, 16, 20, 16, 15, 12, 15, 20], z=4)
        project.add_mark("m1", mark, author="rad")
        project.set_volume_complete("m1", author="rad")
        rows = [
            ProposalRow(volume, _box_proposal(4.0 + 8 * k), role=role, s_c=0.5, s_gc=0.4)
            for k, (role, volume) in enumerate(ROLE_VOLUMES.items())
        ]
        with writing_round(project) as round_:
            ids = round_.write("harvest", StageResult(rows))
        yield project, dict(zip(ROLE_VOLUMES, ids, strict=True))


@pytest.mark.parametrize("role", sorted(MARK_DECIDED_ROLES))
@pytest.mark.parametrize("verdict", ["accepted", "rejected"])
def test_a_role_a_mark_decides_takes_no_verdict(project_and_ids, role, verdict):
    project, ids = project_and_ids
    audit_before = len(project.audit_log())
    with pytest.raises(InvalidValueError) as refused:
        project.set_verdict(ids[role], verdict, author="rad")
    message = str(refused.value)
    assert message.startswith(
        f"proposal {ids[role]} of volume {ROLE_VOLUMES[role]!r} cannot be {verdict}: it is "
    )
    assert f"({role}" in message and "mark" in message
    assert project.proposal(ids[role]).verdict is None
    assert len(project.audit_log()) == audit_before  # nothing written
    project.set_verdict(ids[role], None, author="rad")  # clearing is always allowed


@pytest.mark.parametrize("role", ["candidate", "P_pos_H", "P_neg_H"])
def test_the_classifiers_roles_take_both_verdicts(project_and_ids, role):
    project, ids = project_and_ids
    for verdict in ("accepted", "rejected"):
        assert project.set_verdict(ids[role], verdict, author="rad").verdict == verdict
        assert project.proposal(ids[role]).verdict.verdict == verdict


def test_export_counts_only_lesions_the_classifier_or_an_expert_made(project_and_ids, tmp_path):
    project, ids = project_and_ids
    with pytest.raises(InvalidValueError):
        project.set_verdict(ids["P_neg_M"], "accepted", author="rad")
    project.set_verdict(ids["P_neg_H"], "accepted", author="rad")
    project.set_verdict(ids["P_pos_H"], "rejected", author="rad")
    result = export_annotations(project, tmp_path / "out", formats=["json"])
    assert result.n_lesions == 1
    assert [p.id for p in project.rounds.harvested_lesions()] == [ids["P_neg_H"]]
    summary = {s.volume_id: s for s in project.volume_summaries()}
    assert (summary["m1"].n_harvested, summary["h1"].n_harvested) == (0, 1)
