"""A round's time as the round panel tells it: the expected duration before Run, and
while the round runs its stage clock and this machine's rate of each stage it runs whole,
recorded for later estimates (Qt-free).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from napari_lesion_harvest.ui.round_estimate import (
    ProjectSize,
    RateBook,
    RoundEstimate,
    StageClock,
    format_duration,
    rate_model,
    stage_work,
)
from napari_lesion_harvest.ui.round_plan import RoundPlan


def estimate_text(
    plan: RoundPlan, estimate: RoundEstimate, device: str, *, note: str = ""
) -> tuple[str, str]:
    """The panel's sentence about how long Run would take, and its stage by stage detail.

    Parameters
    ----------
    plan : RoundPlan
        The round Run would run.
    estimate : RoundEstimate
        Its expected stage times on ``device``.
    device : str
        Where it runs, as the sentence names it.
    note : str
        Ends the parenthesis, e.g. ``"; auto: a CPU until Run finds a GPU"``.

    Returns
    -------
    text : str
        ``"Round 2: about 11 min on cpu (measured on this machine)."``
    detail : str
        One ``"stage: duration"`` line per stage.
    """
    if len(estimate.measured) == len(estimate.seconds):
        basis = "measured on this machine"
    elif estimate.measured:
        basis = f"{len(estimate.measured)} of {len(estimate.seconds)} stages measured here"
    else:
        basis = "an estimate until a round has run here"
    what = f"Round {plan.number}"
    if plan.resume is not None:
        what += f" (resumes after {plan.resume.stage or 'its start'})"
    detail = "\n".join(f"{stage}: {format_duration(s)}" for stage, s in estimate.seconds.items())
    return f"{what}: about {format_duration(estimate.total)} on {device} ({basis}{note}).", detail


class RoundTiming:
    """Time one running round and record its stages' rates.

    Parameters
    ----------
    estimate : RoundEstimate
        The round's expected stage times (empty: unknown).
    measured : tuple of (RoundPlan, ProjectSize, str), optional
        The plan, project size and device whose stage rates are recorded in
        ``rates_path``; None records nothing (a round of unknown work).
    rates_path : path, optional
        This machine's rate file (see :class:`RateBook`); needed with ``measured``.

    Attributes
    ----------
    clock : StageClock
        The round's stage and time left, from its progress events.
    """

    def __init__(
        self,
        estimate: RoundEstimate,
        *,
        measured: tuple[RoundPlan, ProjectSize, str] | None = None,
        rates_path: str | Path | None = None,
    ):
        self.clock = StageClock(estimate)
        self._measured = measured
        self._rates_path = rates_path
        self._first_stage: str | None = None

    def event(self, event: Mapping) -> None:
        """Take one progress event; a stage that ended records its rate."""
        ended = self.clock.event(event)
        if ended is not None:
            self._record_rate(*ended)
        if self._first_stage is None:
            self._first_stage = self.clock.stage

    def _record_rate(self, stage: str, seconds: float) -> None:
        """Keep this machine's rate of a stage that ran whole (not the first stage of a
        resumed round, which may have restarted from a checkpoint)."""
        if self._measured is None:
            return
        plan, size, device = self._measured
        if plan.resume is not None and stage == self._first_stage:
            return
        work = stage_work(stage, plan.config, size, first_round=plan.first_round)
        if work > 0 and seconds > 0:
            try:
                RateBook(self._rates_path).record(
                    device, stage, rate_model(stage, plan.config), seconds / work
                )
            except OSError:
                pass  # an unwritable settings folder only loses this measurement
