"""The vocabulary enums: the schema allows exactly their values, and a member is its string
wherever the project writes it (SQLite, JSON, text)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from napari_lesion_harvest.geometry import Proposal3D, RecistMark
from napari_lesion_harvest.harvest.stages import STAGE_FUNCTIONS, STAGES
from napari_lesion_harvest.store import ProposalRow, StageResult
from napari_lesion_harvest.store.project import DATABASE_NAME
from napari_lesion_harvest.store.schema import ORIGINS, ROLES, ROUND_STATUSES, SPLITS, VERDICTS
from napari_lesion_harvest.vocabulary import Origin, Role, RoundStatus, Split, Stage, Verdict
from tests.builders import new_project, synthetic_volume, writing_round


@pytest.mark.parametrize(
    ("schema_values", "enum"),
    [
        (SPLITS, Split),
        (ORIGINS, Origin),
        (ROLES, Role),
        (VERDICTS, Verdict),
        (ROUND_STATUSES, RoundStatus),
    ],
)
def test_schema_allows_exactly_the_enum_values(schema_values, enum):
    assert schema_values == tuple(member.value for member in enum)
    assert all(member.name == member.value for member in enum)


def test_a_round_runs_the_stages_in_their_order():
    assert STAGES == tuple(Stage) == tuple(STAGE_FUNCTIONS)
    assert [stage.value for stage in STAGES] == [
        "train_lpg", "scan", "verify", "train_lpc", "harvest", "evaluate"
    ]  # fmt: skip


@pytest.mark.parametrize("member", [*Split, *Origin, *Role, *Verdict, *RoundStatus, *Stage])
def test_member_is_its_string_in_text_and_json(member):
    assert member == member.value
    assert str(member) == f"{member}" == member.value
    assert f"{member:>12}" == f"{member.value:>12}"
    assert json.dumps({member: [member]}) == json.dumps({member.value: [member.value]})


def test_members_are_stored_as_their_strings(tmp_path):
    """Members are written as plain strings; read back, the strings equal the members."""
    volumes = [synthetic_volume("h1", Split.V_H, shape=(8, 64, 64))]
    with new_project(tmp_path / "proj", volumes, author="me") as project:
        mark = RecistMark.from_measurement_coordinates([10, 16, 20, 16, 15, 12, 15, 20], z=4)
        project.add_mark("h1", mark, author="me", origin=Origin.expert)
        proposal = Proposal3D([3, 4], [[4, 10, 16, 22], [4, 10, 16, 22]], [0.6, 0.8])
        with writing_round(project) as round_:
            rows = [ProposalRow("h1", proposal, role=Role.P_pos_H)]
            (proposal_id,) = round_.write(Stage.harvest, StageResult(rows))
        project.set_verdict(proposal_id, Verdict.accepted, author="me")
        (stored,) = project.proposals(round_.number)
        assert (stored.role, stored.verdict.verdict) == (Role.P_pos_H, Verdict.accepted)
        assert project.volume("h1").split == Split.V_H
        assert project.rounds.get(round_.number).status == RoundStatus.done
    with sqlite3.connect(tmp_path / "proj" / DATABASE_NAME) as conn:
        found = conn.execute(
            "SELECT v.split, typeof(v.split), m.origin, p.role, d.verdict FROM volumes v "
            "JOIN marks m ON m.volume_id = v.id JOIN proposals p ON p.volume_id = v.id "
            "JOIN verdicts d ON d.proposal_id = p.id"
        ).fetchall()
        rounds = conn.execute("SELECT status, stage, typeof(stage) FROM rounds").fetchall()
    assert found == [("V_H", "text", "expert", "P_pos_H", "accepted")]
    assert rounds == [("done", "harvest", "text")]
