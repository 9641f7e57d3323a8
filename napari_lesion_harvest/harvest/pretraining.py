"""Self-supervised pretraining of a project's LPG on the project's own training CT.

:func:`run_pretraining` holds the project's round lock (so a round and
pretraining never run at once), draws slices from the training volumes only
(:data:`PRETRAINING_SPLITS`: never a volume held out for evaluation, and never a
mark), continues the project's weights where a previous run stopped, and records
every checkpoint it writes (:mod:`napari_lesion_harvest.store.pretrained`). Round
1 then starts its LPG from these weights (``train_lpg`` stage).
"""

from __future__ import annotations

from dataclasses import replace

from napari_lesion_harvest.harvest.errors import HarvestInputError
from napari_lesion_harvest.progress import Progress
from napari_lesion_harvest.vocabulary import Split

#: The splits whose volumes pretraining learns from (the evaluation's are left out).
PRETRAINING_SPLITS = (Split.V_M, Split.V_H)


def pretraining_volumes(project) -> list:
    """The volume records of :data:`PRETRAINING_SPLITS`, in id order."""
    records = [r for split in PRETRAINING_SPLITS for r in project.volumes(split=split)]
    return sorted(records, key=lambda r: r.volume_id)


def pretraining_config(project, config):
    """The LPG configuration to pretrain: that of ``config`` (a RoundConfig, or a round
    preset or JSON round-config file as ``lesion-harvest round --config`` takes), else
    that of the project's weights, else the ``lite`` preset's.

    Raises
    ------
    HarvestInputError
        ``config`` differs from the configuration of the project's weights.
    """
    from napari_lesion_harvest.harvest.config import load_config
    from napari_lesion_harvest.harvest.stages import lpg_architecture
    from napari_lesion_harvest.lpg.config import get_config

    current = project.pretrained.current()
    if config is None:
        return get_config(current.config) if current else lpg_architecture(load_config("lite"))
    wanted = lpg_architecture(load_config(config) if isinstance(config, str) else config)
    if current is not None and get_config(current.config) != wanted:
        raise HarvestInputError(
            f"the project's pretrained weights ({current.describe()}) are for another LPG "
            f"configuration than the one asked for; continue them without --config, or "
            "discard them first (lesion-harvest pretrain PROJECT --discard)"
        )
    return wanted


def run_pretraining(
    project,
    *,
    config=None,
    steps: int | None = None,
    minutes: float | None = None,
    device: str = "cpu",
    author: str,
    progress: Progress,
    cancelled=None,
    options=None,
):
    """Pretrain (or continue pretraining) the project's LPG trunk.

    Parameters
    ----------
    project : HarvestProject
    config : RoundConfig or str, optional
        See :func:`pretraining_config`.
    steps : int, optional
        Planned total steps (default: those of the project's weights, else
        ``options.steps``).
    minutes : float, optional
        Time budget of this run.
    device : str
        Resolved device (``cpu``, ``cuda``).
    author : str
        Recorded with the weights.
    progress : callable
        ``progress("pretrain", step, total, "loss ...", {"loss", "lr"})``.
    cancelled : callable, optional
        True once a stop was requested: the run saves and returns.
    options : LPGTrainOptions, optional
        Default :data:`~napari_lesion_harvest.lpg.pretrain.DEFAULT_OPTIONS`.

    Returns
    -------
    PretrainResult

    Raises
    ------
    RoundLockedError
        A round (or another pretraining) is running.
    HarvestInputError
        No training volume, or ``config`` does not fit the project's weights.
    ChecksumMismatchError
        The weights file is not the one the project recorded.
    """
    from napari_lesion_harvest.io.sources import open_volume
    from napari_lesion_harvest.lpg.pretrain import DEFAULT_OPTIONS, PretrainSlices, pretrain_trunk
    from napari_lesion_harvest.store.pretrained import PretrainedWeights

    options = options or DEFAULT_OPTIONS
    with project.pretrained.lock() as lock:
        project.pretrained.prune(lock=lock)
        lpg_config = pretraining_config(project, config)
        current = project.pretrained.current()
        records = pretraining_volumes(project)
        if not records:
            raise HarvestInputError(
                "no training volume (V_M or V_H) to pretrain on; import volumes first"
            )
        total = steps or (current.total_steps if current else options.steps)

        def record(path, sha256: str, size: int, step: int, seconds: float) -> None:
            where = path.relative_to(project.folder).as_posix()
            weights = PretrainedWeights(
                where, sha256, size, step, total, seconds, lpg_config.to_dict()
            )
            project.pretrained.record(weights, lock=lock, author=author)

        def report(step: int, total_steps: int, parts: dict) -> None:
            shown = {k: round(float(v), 6) for k, v in parts.items()}
            progress("pretrain", step, total_steps, f"loss {shown['loss']:.4f}", shown)

        return pretrain_trunk(
            PretrainSlices([open_volume(r) for r in records]),
            project.pretrained.file_for,
            config=lpg_config,
            options=replace(options, steps=total),
            resume_from=(project.folder / current.path, current.sha256) if current else None,
            minutes=minutes,
            on_checkpoint=record,
            device=device,
            progress=report,
            should_stop=cancelled,
        )
