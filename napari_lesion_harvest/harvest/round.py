"""Running harvest rounds on a project: checks, the stage loop, resume, and the iteration."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict

from napari_lesion_harvest.harvest.config import RoundConfig
from napari_lesion_harvest.harvest.distributed import from_main, joined_ranks
from napari_lesion_harvest.harvest.report import summary_metrics
from napari_lesion_harvest.harvest.stages import (
    RANK_SHARED_STAGES,
    STAGE_FUNCTIONS,
    STAGES,
    RoundState,
)
from napari_lesion_harvest.lpg.distributed import DistributedContext
from napari_lesion_harvest.workers.progress import Cancelled, Progress, no_progress


class HarvestInputError(ValueError):
    """The project cannot run a round yet; the message says what is missing."""


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``.

    Raises
    ------
    HarvestInputError
        ``cuda`` asked for on a machine without a usable GPU.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HarvestInputError(
            f"--device {device} was asked for, but torch sees no usable CUDA GPU on this "
            "machine; use --device cpu or auto"
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise HarvestInputError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def check_inputs(project) -> None:
    """Refuse, before any work, a project that cannot be harvested.

    Raises
    ------
    HarvestInputError
        No volumes, no fully annotated volume (V_M), V_M without marks, or no
        volume to harvest.
    """
    summaries = project.volume_summaries()
    if not summaries:
        raise HarvestInputError("the project has no volumes; import a dataset first")
    v_m = [s for s in summaries if s.split == "V_M"]
    if not v_m:
        raise HarvestInputError(
            "no fully annotated volumes (V_M): mark every lesion of a few volumes and mark "
            "them complete (or `lesion-harvest annotate PROJECT --marks FILE --complete`)"
        )
    if not any(s.n_marks for s in v_m):
        raise HarvestInputError(
            f"the {len(v_m)} fully annotated volume(s) (V_M) have no marks; a round learns "
            "what a lesion is from them"
        )
    if not any(s.split in ("V_H", "V_H_test") for s in summaries):
        raise HarvestInputError("no volumes to harvest (V_H): every volume is V_M or held out")


def run_round(
    project,
    number: int,
    *,
    device: str,
    progress: Progress = no_progress,
    cancelled: Callable[[], bool] = lambda: False,
    context: DistributedContext | None = None,
):
    """Run (or resume) round ``number`` to the end, stage by stage.

    Each stage's results are committed in one transaction. A stop request
    (``cancelled()``) or an error leaves the round ``failed`` after its last
    committed stage; calling this again resumes it.

    Under ``torchrun`` (``context`` with several ranks) every rank calls this;
    rank 0 alone holds the lock and writes (see
    :mod:`napari_lesion_harvest.harvest.distributed`).

    Returns
    -------
    RoundRecord
        The finished round.

    Raises
    ------
    Cancelled
        When stopped on request (the round stays resumable).
    """
    context = context or DistributedContext(device=device)
    rounds = project.rounds
    config = RoundConfig(**rounds.get(number).config)
    with ExitStack() as held:
        lock = from_main(lambda: held.enter_context(rounds.lock(number)), context, shared=False)
        snapshot = from_main(lambda: rounds.start(number, lock=lock), context)
        state = RoundState(
            project, number, snapshot, config, device, progress, cancelled, context=context
        )

        def commit(stage, result):
            rounds.write_stage(number, stage, result, lock=lock)
            lock.heartbeat()

        try:
            for stage in STAGES:
                if stage in snapshot.completed_stages:
                    continue
                progress(stage, 0, 1, f"round {number}: {stage}")
                _run_stage(stage, state, commit)
            return from_main(lambda: _finish(rounds, number, lock), context)
        except Cancelled:
            if context.is_main:
                rounds.fail(number, "stopped on request; run the round again to resume")
            raise
        except BaseException as error:
            if context.is_main:
                rounds.fail(number, f"{type(error).__name__}: {error}")
            raise


def _run_stage(stage: str, state: RoundState, commit: Callable) -> None:
    """Run ``stage`` on the ranks that run it; ``commit(stage, result)`` on rank 0."""
    run = STAGE_FUNCTIONS[stage]
    if stage in RANK_SHARED_STAGES:
        result = run(state)
        from_main(lambda: commit(stage, result), state.context, shared=False)
    else:
        from_main(lambda: commit(stage, run(state)), state.context, shared=False)


def _finish(rounds, number: int, lock):
    metrics = rounds.get(number).metrics
    return rounds.finish(number, lock=lock, metrics=summary_metrics(number, metrics))


def run_rounds(
    project,
    config: RoundConfig,
    *,
    rounds: int | None = None,
    device: str = "auto",
    progress: Progress = no_progress,
    cancelled: Callable[[], bool] = lambda: False,
) -> list:
    """Run harvest rounds until one harvests no new lesion or ``rounds`` more have run.

    A failed (interrupted) round is resumed first, with the configuration it
    started with. ``config.max_rounds`` bounds the total number of done rounds.
    Launched by ``torchrun`` with several processes, the ranks share the work
    (:mod:`napari_lesion_harvest.harvest.distributed`); only rank 0 reports progress.

    Returns
    -------
    list of RoundRecord
        The rounds finished by this call (on every rank).
    """
    check_inputs(project)
    device = resolve_device(device)
    store = project.rounds
    with joined_ranks(device) as context:
        if not context.is_main:
            progress = no_progress
        hooks = {"progress": progress, "cancelled": cancelled, "context": context}
        finished = [
            run_round(project, number, device=context.device, **hooks)
            for number in from_main(lambda: _failed_rounds(store), context)
        ]
        limit = config.max_rounds if rounds is None else rounds
        while len(finished) < limit:
            number = from_main(lambda: _next_round(store, config, rounds, progress), context)
            if number is None:
                break
            finished.append(run_round(project, number, device=context.device, **hooks))
        return finished


def _failed_rounds(store) -> list[int]:
    """Rounds left failed (after marking interrupted ones so), to resume first."""
    store.recover_interrupted()
    return [record.number for record in store.list() if record.status == "failed"]


def _next_round(store, config: RoundConfig, rounds: int | None, progress) -> int | None:
    """Create the next round and return its number, or None when the rounds are over."""
    done = [r for r in store.list() if r.status == "done"]
    if len(done) >= config.max_rounds and rounds is None:
        return None
    if done and done[-1].metrics.get("harvest", {}).get("new_lesions") == 0:
        progress("rounds", len(done), len(done), "the last round harvested nothing new")
        return None
    return store.create(asdict(config)).number
