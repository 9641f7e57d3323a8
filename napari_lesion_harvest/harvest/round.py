"""Running harvest rounds on a project: checks, the stage loop, resume, and the iteration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from napari_lesion_harvest.harvest.config import RoundConfig
from napari_lesion_harvest.harvest.report import summary_metrics
from napari_lesion_harvest.harvest.stages import STAGE_FUNCTIONS, STAGES, RoundState
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
):
    """Run (or resume) round ``number`` to the end, stage by stage.

    Each stage's results are committed in one transaction. A stop request
    (``cancelled()``) or an error leaves the round ``failed`` after its last
    committed stage; calling this again resumes it.

    Returns
    -------
    RoundRecord
        The finished round.

    Raises
    ------
    Cancelled
        When stopped on request (the round stays resumable).
    """
    rounds = project.rounds
    config = RoundConfig(**rounds.get(number).config)
    with rounds.lock(number) as lock:
        snapshot = rounds.start(number, lock=lock)
        state = RoundState(project, number, snapshot, config, device, progress, cancelled)
        try:
            for stage in STAGES:
                if stage in snapshot.completed_stages:
                    continue
                progress(stage, 0, 1, f"round {number}: {stage}")
                result = STAGE_FUNCTIONS[stage](state)
                rounds.write_stage(number, stage, result, lock=lock)
                lock.heartbeat()
            metrics = rounds.get(number).metrics
            return rounds.finish(number, lock=lock, metrics=summary_metrics(number, metrics))
        except Cancelled:
            rounds.fail(number, "stopped on request; run the round again to resume")
            raise
        except BaseException as error:
            rounds.fail(number, f"{type(error).__name__}: {error}")
            raise


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

    Returns
    -------
    list of RoundRecord
        The rounds finished by this call.
    """
    check_inputs(project)
    device = resolve_device(device)
    store = project.rounds
    store.recover_interrupted()
    finished = []
    limit = config.max_rounds if rounds is None else rounds
    for record in store.list():
        if record.status == "failed":
            finished.append(
                run_round(project, record.number, device=device, **_hooks(progress, cancelled))
            )
    while len(finished) < limit:
        done = [r for r in store.list() if r.status == "done"]
        if len(done) >= config.max_rounds and rounds is None:
            break
        if done and done[-1].metrics.get("harvest", {}).get("new_lesions") == 0:
            progress("rounds", len(done), len(done), "the last round harvested nothing new")
            break
        number = store.create(asdict(config)).number
        finished.append(run_round(project, number, device=device, **_hooks(progress, cancelled)))
    return finished


def _hooks(progress, cancelled) -> dict:
    return {"progress": progress, "cancelled": cancelled}
