"""Running harvest rounds on a project: checks, the stage loop, resume, and the iteration."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict

from napari_lesion_harvest.harvest.config import RoundConfig, stored_config
from napari_lesion_harvest.harvest.distributed import from_main, joined_ranks
from napari_lesion_harvest.harvest.errors import USER_ERRORS, HarvestInputError, one_line
from napari_lesion_harvest.harvest.report import summary_metrics
from napari_lesion_harvest.harvest.stages import (
    RANK_SHARED_STAGES,
    STAGE_FUNCTIONS,
    STAGES,
    RoundState,
)
from napari_lesion_harvest.lpg.distributed import DistributedContext
from napari_lesion_harvest.progress import Cancelled, Progress, no_progress
from napari_lesion_harvest.vocabulary import RoundStatus, Split


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
    v_m = [s for s in summaries if s.split == Split.V_M]
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
    if not any(s.split in (Split.V_H, Split.V_H_test) for s in summaries):
        raise HarvestInputError("no volumes to harvest (V_H): every volume is V_M or held out")


def run_round(
    project,
    number: int,
    *,
    device: str,
    config: RoundConfig | None = None,
    progress: Progress = no_progress,
    cancelled: Callable[[], bool] = lambda: False,
    context: DistributedContext | None = None,
):
    """Run (or resume) round ``number`` to the end, stage by stage.

    Each stage's results are committed in one transaction. A stop request
    (``cancelled()``) or an error leaves the round ``failed`` after its last
    committed stage; calling this again resumes it. A
    :class:`~napari_lesion_harvest.harvest.errors.HarvestInputError` (inputs
    that cannot give a result, which a resume would meet again) ends it
    ``cancelled`` with the message instead.

    Under ``torchrun`` (``context`` with several ranks) every rank calls this;
    rank 0 alone holds the lock and uses the project's database; the other
    ranks pass a :class:`~napari_lesion_harvest.harvest.distributed.ProjectFolder`
    (see :mod:`napari_lesion_harvest.harvest.distributed`).

    Parameters
    ----------
    project : HarvestProject or ProjectFolder
    number : int
        An existing round, or with ``config`` the next one
        (:meth:`~napari_lesion_harvest.store.rounds.RoundStore.next_number`),
        created once the round lock is held: a process refused the lock leaves
        no round behind.
    config : RoundConfig, optional
        The new round's configuration.

    Returns
    -------
    RoundRecord
        The finished round.

    Raises
    ------
    Cancelled
        When stopped on request (the round stays resumable).
    RoundLockedError
        Another live process runs a round on the project.
    """
    context = context or DistributedContext(device=device)

    def on_main(compute, *, shared=True):
        return from_main(compute, context, shared=shared)

    with ExitStack() as held:
        lock = on_main(lambda: held.enter_context(project.rounds.lock(number)), shared=False)
        if config is not None:
            on_main(lambda: project.rounds.create(asdict(config), lock=lock), shared=False)
        snapshot = on_main(lambda: project.rounds.start(number, lock=lock))
        try:
            stored = on_main(lambda: stored_config(number, project.rounds.get(number).config))
            state = RoundState(
                project,
                number,
                snapshot,
                stored,
                device,
                progress,
                cancelled,
                context=context,
                lock=lock,
            )

            def commit(stage, result):
                project.rounds.write_stage(number, stage, result, lock=lock)
                lock.heartbeat()

            for stage in STAGES:
                if stage in snapshot.completed_stages:
                    continue
                progress(stage, 0, 1, f"round {number}: {stage}")
                _run_stage(stage, state, commit)
            return on_main(lambda: _finish(project.rounds, number, lock))
        except Cancelled:
            if context.is_main:
                project.rounds.fail(number, "stopped on request; run the round again to resume")
            raise
        except BaseException as error:
            if context.is_main:
                project.rounds.fail(
                    number,
                    _failure_message(error),
                    resumable=not isinstance(error, HarvestInputError),
                )
            raise


def _failure_message(error: BaseException) -> str:
    """What a failed round records: a typed error's own line (it names the file,
    field or missing input, as the command line prints it), or the type and
    message of an unexpected one."""
    if isinstance(error, USER_ERRORS):
        return one_line(error)
    return f"{type(error).__name__}: {one_line(error)}"


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

    An unfinished round (failed, or queued and never started) is resumed first,
    with the configuration it was created with. ``config.max_rounds`` bounds the
    total number of done rounds. Launched by ``torchrun`` with several
    processes, the ranks share the work
    (:mod:`napari_lesion_harvest.harvest.distributed`); only rank 0 reports
    progress.

    Parameters
    ----------
    project : HarvestProject or ProjectFolder
        The open project on rank 0 (and in one process); its folder on the
        other ranks, which never open the project's database.

    Returns
    -------
    list of RoundRecord
        The rounds finished by this call (on every rank).

    Raises
    ------
    HarvestInputError
        The project cannot run a round (checked before any round is created).
    """
    device = resolve_device(device)
    with joined_ranks(device) as context:
        if not context.is_main:
            progress = no_progress

        def on_main(compute):
            return from_main(compute, context)

        on_main(lambda: check_inputs(project))
        hooks = {"progress": progress, "cancelled": cancelled, "context": context}
        finished = [
            run_round(project, number, device=context.device, **hooks)
            for number in on_main(lambda: _unfinished_rounds(project.rounds))
        ]
        limit = config.max_rounds if rounds is None else rounds
        while len(finished) < limit:
            number = on_main(lambda: _next_round(project.rounds, config, rounds, progress))
            if number is None:
                break
            finished.append(
                run_round(project, number, device=context.device, config=config, **hooks)
            )
        return finished


def _unfinished_rounds(store) -> list[int]:
    """Rounds to resume first: failed ones (after marking interrupted ones so), and
    queued ones that never started.

    Raises
    ------
    RoundConfigError
        One of them holds a configuration this version refuses (checked before any
        round resumes, so none of them changes).
    """
    store.recover_interrupted()
    unfinished = [r for r in store.list() if r.status in (RoundStatus.failed, RoundStatus.queued)]
    for record in unfinished:
        stored_config(record.number, record.config)
    return [r.number for r in unfinished]


def _next_round(store, config: RoundConfig, rounds: int | None, progress) -> int | None:
    """The number the next round gets, or None when the rounds are over."""
    done = [r for r in store.list() if r.status == RoundStatus.done]
    if len(done) >= config.max_rounds and rounds is None:
        return None
    if done and done[-1].metrics.get("harvest", {}).get("new_lesions") == 0:
        progress("rounds", len(done), len(done), "the last round harvested nothing new")
        return None
    return store.next_number()
