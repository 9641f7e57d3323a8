"""What the round panel's process runs (a round or pretraining) and the round that Run
would run now: a stopped round resumed with its own configuration, or the next one
(Qt-free).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from napari_lesion_harvest.vocabulary import RoundStatus


@dataclass(frozen=True)
class Job:
    """What the panel's process runs: a round or pretraining.

    Attributes
    ----------
    command : str
        The ``lesion-harvest`` subcommand (names its log files and error lines).
    name : str
        In refusals: "... is already running".
    title : str
        Starts the panel's sentences about it.
    the : str
        Names it inside a sentence: "Stopping ... at its next step".
    """

    command: str
    name: str
    title: str
    the: str

    @property
    def error_prefix(self) -> str:
        """The prefix of the command's one-line errors."""
        return f"lesion-harvest {self.command}: error: "


ROUND_JOB = Job("round", "a harvest round", "Round", "the round")
PRETRAIN_JOB = Job("pretrain", "pretraining", "Pretraining", "pretraining")


@dataclass(frozen=True)
class RoundPlan:
    """The round that Run would run now.

    Attributes
    ----------
    config : RoundConfig
        Its configuration (a resumed round's own).
    number : int
    resume : RoundRecord or None
        The stopped round it resumes.
    first_round : bool
        No round finished before it.
    """

    config: object
    number: int
    resume: object = None
    first_round: bool = True

    @property
    def done_stages(self) -> tuple[str, ...]:
        """Stages the resumed round committed already."""
        return () if self.resume is None else tuple(self.resume.completed_stages)


def config_differences(config, stored: dict, *, shown: int = 4) -> str:
    """The stored configuration's fields that ``config`` changes, as the panel says them.

    Parameters
    ----------
    config : RoundConfig
        The chosen configuration.
    stored : dict
        A round's stored configuration, in sections or (stored by an earlier
        version) flat.
    shown : int
        Fields named; the rest are counted.

    Returns
    -------
    str
        ``"lpg.train_steps 600 -> 20000, ..., and 3 more"``.
    """
    from napari_lesion_harvest.harvest.config_migration import dotted_fields

    new, stored = dotted_fields(json.loads(config.to_json())), dotted_fields(stored)
    changed = [f"{k} {stored.get(k)} -> {v}" for k, v in sorted(new.items()) if stored.get(k) != v]
    more = f", and {len(changed) - shown} more" if len(changed) > shown else ""
    return ", ".join(changed[:shown]) + more


def round_plan(project, config, *, discard: bool = False) -> RoundPlan:
    """What Run would do on ``project``.

    Parameters
    ----------
    project : HarvestProject
    config : RoundConfig
        The chosen configuration, used when no stopped round is resumed.
    discard : bool
        Start the next round even when a stopped round could be resumed.

    Returns
    -------
    RoundPlan
        The stopped round resumed with its own stored configuration (unless
        ``discard``), or the next round with ``config``.

    Raises
    ------
    RoundConfigError
        The stopped round's stored configuration cannot be read by this version.
    """
    from napari_lesion_harvest.harvest.config import stored_config

    records = project.rounds.list()
    stopped = [r for r in records if r.status in (RoundStatus.failed, RoundStatus.queued)]
    if stopped and not discard:
        record = stopped[0]
        earlier_done = any(
            r.status == RoundStatus.done and r.number < record.number for r in records
        )
        return RoundPlan(
            stored_config(record.number, record.config),
            record.number,
            resume=record,
            first_round=not earlier_done,
        )
    return RoundPlan(
        config,
        project.rounds.next_number(),
        first_round=not any(r.status == RoundStatus.done for r in records),
    )
