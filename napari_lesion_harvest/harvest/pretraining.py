"""Self-supervised pretraining of a project's networks on the project's own training CT.

:func:`run_pretraining` pretrains one network (:data:`~napari_lesion_harvest.store.
pretrained.NETWORKS`): the LPG's trunk (:mod:`napari_lesion_harvest.lpg.pretrain`)
or the LPC's view trunks (:mod:`napari_lesion_harvest.lpc.pretrain`). It holds the
project's round lock (so a round and pretraining never run at once), draws from the
training volumes only (:data:`PRETRAINING_SPLITS`: never a volume held out for
evaluation, and never a mark), continues the project's weights where a previous run
stopped, and records every checkpoint it writes
(:mod:`napari_lesion_harvest.store.pretrained`). Round 1 then starts its LPG from the
LPG's weights (``train_lpg`` stage), and every round starts its LPC from the LPC's
when they fit (``train_lpc`` stage).
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


def lpc_architecture(config) -> dict:
    """The classifier configuration (``ProposalClassifier.config``) of a round's
    ``lpc.variant``: that of the LPC the round trains (a RoundConfig's section ``lpc``)."""
    from napari_lesion_harvest.harvest.stages import lpc_training_options
    from napari_lesion_harvest.lpc.models import options_classifier_config

    return options_classifier_config(lpc_training_options(config, seed=config.seed))


def _architecture(network: str, round_config):
    """What ``network`` pretrains for a RoundConfig: an LPGConfig or a classifier config.

    Raises
    ------
    HarvestInputError
        The round's LPC has no 2D trunk.
    """
    if network == "lpg":
        from napari_lesion_harvest.harvest.stages import lpg_architecture

        return lpg_architecture(round_config)
    from napari_lesion_harvest.lpc.pretrain import no_trunk_reason

    reason = no_trunk_reason(round_config.lpc.variant)
    if reason:
        raise HarvestInputError(
            f"lpc.variant {round_config.lpc.variant}: {reason}, so there is nothing to "
            "pretrain for it; pretrain the LPG alone (--network lpg)"
        )
    return lpc_architecture(round_config)


def _from_record(network: str, config: dict):
    """The configuration a weights record holds, as :func:`_architecture` gives it."""
    if network == "lpg":
        from napari_lesion_harvest.lpg.config import get_config

        return get_config(config)
    return dict(config)


def pretraining_config(project, config, *, network: str = "lpg"):
    """The configuration of ``network`` to pretrain: that of ``config`` (a RoundConfig,
    or a round preset or JSON round-config file as ``lesion-harvest round --config``
    takes), else that of the project's weights, else the ``lite`` preset's.

    Returns
    -------
    LPGConfig (``network="lpg"``) or dict (``"lpc"``: a classifier configuration)

    Raises
    ------
    HarvestInputError
        ``config`` differs from the configuration of the project's weights, or its LPC
        has no 2D trunk.
    """
    from napari_lesion_harvest.harvest.config import load_config

    current = project.pretrained.current(network)
    if config is None:
        if current is not None:
            return _from_record(network, current.config)
        return _architecture(network, load_config("lite"))
    wanted = _architecture(network, load_config(config) if isinstance(config, str) else config)
    if current is not None and _from_record(network, current.config) != wanted:
        raise HarvestInputError(
            f"the project's pretrained weights ({current.describe()}) are for another "
            f"{network.upper()} configuration than the one asked for; continue them without "
            f"--config, or discard them first (lesion-harvest pretrain PROJECT --network "
            f"{network} --discard)"
        )
    return wanted


def pretraining_pretext(project, network: str, pretext: str | None) -> str:
    """What ``network``'s pretraining learns from: ``pretext``, else that of the project's
    weights, else :data:`~napari_lesion_harvest.lpg.config.DEFAULT_PRETEXT` (the LPC's:
    restoration).

    Raises
    ------
    HarvestInputError
        ``pretext`` is not the project's weights' (they continue only as they began),
        or is not ``restoration`` for the LPC.
    """
    from napari_lesion_harvest.lpg.config import DEFAULT_PRETEXT, RESTORATION

    if network != "lpg":
        if pretext not in (None, RESTORATION):
            raise HarvestInputError(
                f"--pretext {pretext} is the LPG's; the LPC's trunks pretrain by {RESTORATION}"
            )
        return RESTORATION
    current = project.pretrained.current(network)
    if current is not None and pretext not in (None, current.pretext):
        raise HarvestInputError(
            f"the project's pretrained LPG weights ({current.describe()}) continue only "
            f"with their own pretext, not {pretext}; continue them without --pretext, or "
            "discard them first (lesion-harvest pretrain PROJECT --network lpg --discard)"
        )
    return pretext or (current.pretext if current is not None else DEFAULT_PRETEXT)


def run_pretraining(
    project,
    *,
    network: str = "lpg",
    pretext: str | None = None,
    config=None,
    steps: int | None = None,
    minutes: float | None = None,
    device: str = "cpu",
    author: str,
    progress: Progress,
    cancelled=None,
    options=None,
):
    """Pretrain (or continue pretraining) one of the project's networks.

    Parameters
    ----------
    project : HarvestProject
    network : {"lpg", "lpc"}
        The LPG's trunk, or the LPC's view trunks (of the round configuration's
        ``lpc.variant``).
    pretext : str, optional
        See :func:`pretraining_pretext`.
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
        ``progress(stage, step, total, "loss ...", {"loss", "lr"})``, stage ``pretrain``
        (the LPG) or ``pretrain-lpc``.
    cancelled : callable, optional
        True once a stop was requested: the run saves and returns.
    options : LPGTrainOptions or LPCPretrainOptions, optional
        Default: the network's ``DEFAULT_OPTIONS``
        (:mod:`~napari_lesion_harvest.lpg.pretrain`, :mod:`~napari_lesion_harvest.lpc.pretrain`).

    Returns
    -------
    PretrainResult

    Raises
    ------
    RoundLockedError
        A round (or another pretraining) is running.
    HarvestInputError
        No training volume, ``config`` or ``pretext`` does not fit the project's weights,
        or the LPC asked for has no 2D trunk.
    ChecksumMismatchError
        The weights file is not the one the project recorded.
    """
    from napari_lesion_harvest.io.sources import open_volume
    from napari_lesion_harvest.lpg.pretrain import PretrainSlices
    from napari_lesion_harvest.store.pretrained import PretrainedWeights

    if network == "lpg":
        from napari_lesion_harvest.lpg import pretrain as module

        pretrain = module.pretrain_trunk
    else:
        from napari_lesion_harvest.lpc import pretrain as module

        pretrain = module.pretrain_trunks
    options = options or module.DEFAULT_OPTIONS
    stage = "pretrain" if network == "lpg" else f"pretrain-{network}"
    with project.pretrained.lock() as lock:
        project.pretrained.prune(lock=lock)
        wanted = pretraining_config(project, config, network=network)
        pretext = pretraining_pretext(project, network, pretext)
        current = project.pretrained.current(network)
        records = pretraining_volumes(project)
        if not records:
            raise HarvestInputError(
                "no training volume (V_M or V_H) to pretrain on; import volumes first"
            )
        total = steps or (current.total_steps if current else options.steps)
        as_dict = wanted.to_dict() if network == "lpg" else dict(wanted)

        def record(path, sha256: str, size: int, step: int, seconds: float) -> None:
            where = path.relative_to(project.folder).as_posix()
            weights = PretrainedWeights(
                where, sha256, size, step, total, seconds, as_dict, network, pretext
            )
            project.pretrained.record(weights, lock=lock, author=author)

        def report(step: int, total_steps: int, parts: dict) -> None:
            shown = {k: round(float(v), 6) for k, v in parts.items()}
            progress(stage, step, total_steps, f"loss {shown['loss']:.4f}", shown)

        extra = {"pretext": pretext} if network == "lpg" else {}
        return pretrain(
            PretrainSlices([open_volume(r) for r in records]),
            lambda step: project.pretrained.file_for(step, network),
            config=wanted,
            options=replace(options, steps=total),
            resume_from=(project.folder / current.path, current.sha256) if current else None,
            minutes=minutes,
            on_checkpoint=record,
            device=device,
            progress=report,
            should_stop=cancelled,
            **extra,
        )
