"""The stages of one harvest round (paper, Sec. III), each a function of the round's state.

Every stage reads what earlier stages committed from the project store and
returns a :class:`~napari_lesion_harvest.store.StageResult` that the round
commits in one transaction, so a round stopped anywhere resumes after its
last committed stage.

=============  =====================================================================
stage          what it does
=============  =====================================================================
``train_lpg``  train (round 1; from the project's self-supervised trunk when it has
               one) or fine-tune with HNSL (later rounds) the LPG
``scan``       detect 2D boxes on every slice of V_M, V_H, V_H_test; stack 3D proposals;
               drop duplicates of one lesion
``verify``     P3D-match proposals to marks: P_RM / P_neg_M in V_M, P_RH in V_H;
               expert verdicts override
``train_lpc``  train the LPC on P_RM, P_neg_M, P_RH (from the project's self-supervised
               trunks when they fit); V_M scores for the threshold
``harvest``    s_c and s_gc of the rest; P_pos_H above the 95%-precision threshold,
               and the false positives V_M lets one expect among them; hard
               negatives P_neg_H; the pool P_i
``evaluate``   Table I rows, PR and FROC on the V_H_test volumes flagged complete
=============  =====================================================================

Under ``torchrun`` (``RoundState.context`` with several ranks) the stages of
:data:`RANK_SHARED_STAGES` run on every rank (DDP training; scanning and scoring
sharded by volume, results gathered on rank 0) and return their result on rank 0
only (None elsewhere); the other stages run on rank 0 alone. Only rank 0 reads
the project's database; the other ranks get what they need from it
(:meth:`RoundState.checkpoint`, the proposals to score).

Every checkpoint a stage loads is checked against the sha256 the project
recorded for it (a changed file raises
:class:`~napari_lesion_harvest.store.ChecksumMismatchError` and is not loaded).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from napari_lesion_harvest.harvest.config import RoundConfig
from napari_lesion_harvest.harvest.distributed import from_main, merged_from_ranks, per_rank_batch
from napari_lesion_harvest.harvest.errors import HarvestInputError
from napari_lesion_harvest.harvest.hard_negatives import select_hard_negatives
from napari_lesion_harvest.harvest.threshold import (
    expected_false_positives,
    threshold_at_precision,
    threshold_sample,
)
from napari_lesion_harvest.harvest.training_sets import (
    lpg_training_slices,
    proposal_polarity,
    usable_marks,
    volume_records,
)
from napari_lesion_harvest.io.sources import open_volume
from napari_lesion_harvest.lpc.options import LPCPlan, LPCTrainOptions
from napari_lesion_harvest.lpg.data import SliceAugmentation
from napari_lesion_harvest.lpg.distributed import DistributedContext, shard
from napari_lesion_harvest.lpg.train import LPGTrainOptions
from napari_lesion_harvest.progress import Progress, check_cancelled
from napari_lesion_harvest.store import (
    CheckpointRef,
    NotFoundError,
    ProposalRow,
    ProposalUpdate,
    StageResult,
)
from napari_lesion_harvest.store.lock import RoundLock
from napari_lesion_harvest.store.rounds import checkpoint_location
from napari_lesion_harvest.tracking.marks import best_slice_boxes
from napari_lesion_harvest.tracking.marks import proposals_hitting_marks as proposals_hitting
from napari_lesion_harvest.vocabulary import Origin, Role, Split, Stage, Verdict

#: The stages of a round, in the order they run.
STAGES = tuple(Stage)
#: Stages every ``torchrun`` rank runs (the others run on rank 0 only).
RANK_SHARED_STAGES = frozenset({Stage.train_lpg, Stage.scan, Stage.harvest})


@dataclass
class RoundState:
    """What every stage of one round needs.

    Attributes
    ----------
    project : HarvestProject or ProjectFolder
        The open project on rank 0; its folder alone on the other ranks.
    number : int
        The round.
    snapshot : RoundSnapshot
        The round's frozen inputs.
    config : RoundConfig
    device : str
        ``"cpu"`` or ``"cuda"``.
    progress : callable
        ``progress(stage, step, total, message, metrics)``.
    cancelled : callable
        True once a stop was requested.
    context : DistributedContext
        This process's rank and the number of ranks (one process by default).
    lock : RoundLock or None
        The held round lock (rank 0 of a running round): training checkpoints
        are recorded in the project as soon as they are on disk. None: they are
        registered only with the stage's result.
    """

    project: object
    number: int
    snapshot: object
    config: RoundConfig
    device: str
    progress: Progress
    cancelled: Callable[[], bool]
    context: DistributedContext = field(default_factory=DistributedContext)
    lock: RoundLock | None = None
    _records: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def folder(self) -> Path:
        """The project folder."""
        return Path(self.project.folder)

    def record(self, volume_id: str):
        """The snapshot's volume record of ``volume_id``."""
        if not self._records:
            self._records = {
                r.volume_id: r for records in self.snapshot.volumes.values() for r in records
            }
        return self._records[volume_id]

    def open(self, volume_id: str):
        """Open a volume lazily (a fresh object: its slice cache goes with it)."""
        return open_volume(self.record(volume_id))

    def split_of(self, volume_id: str) -> str:
        """The volume's split in this round."""
        return self.record(volume_id).split

    def proposals(self, roles=None) -> dict[str, list]:
        """This round's stored proposals by volume, in id order (rank 0 only)."""
        grouped: dict[str, list] = defaultdict(list)
        for stored in self.project.proposals(self.number, roles=roles):
            grouped[stored.volume_id].append(stored)
        return dict(grouped)

    def checkpoint(self, name: str, *, round_number: int | None = None) -> tuple[Path, str]:
        """Checkpoint ``name`` of this round (or of ``round_number``) as the project
        records it (read on rank 0, sent to every rank).

        Returns
        -------
        path : Path
            The file, under this rank's project folder.
        sha256 : str
            What its content must hash to; pass it to the loader.

        Raises
        ------
        NotFoundError
            No such checkpoint is recorded.
        """
        number = self.number if round_number is None else round_number
        ref = from_main(
            lambda: self.project.rounds.checkpoint(name, round_number=number), self.context
        )
        return self.folder / ref.path, ref.sha256

    def pretrained_trunk(self) -> tuple[Path, str] | None:
        """The project's self-supervised LPG weights as recorded (read on rank 0, sent to
        every rank): the file and its sha256, or None when the project has none."""
        weights = from_main(lambda: self.project.pretrained.current(), self.context)
        return None if weights is None else (self.folder / weights.path, weights.sha256)

    def checkpoint_file(self, name: str) -> Path:
        """Where this round writes checkpoint ``name`` (``models/round_NNN/<name>.pt``)."""
        return self.folder / checkpoint_location(self.number, name)

    def record_checkpoint(self, name: str, *, sha256: str, size: int) -> CheckpointRef:
        """The reference of checkpoint ``name`` that this round has just written
        durably; recorded in the project at once when this state holds the lock."""
        ref = CheckpointRef(name, checkpoint_location(self.number, name).as_posix(), sha256, size)
        if self.lock is not None:
            self.project.rounds.record_checkpoint(self.number, ref, lock=self.lock)
        return ref


# ---------------------------------------------------------------------------- train_lpg


def lpg_architecture(config: RoundConfig):
    """The LPG configuration a round trains from scratch (preset, then ``lpg.max_side``
    and ``lpg.hu_window`` where set)."""
    from napari_lesion_harvest.lpg.config import get_config

    lpg = config.lpg
    overrides = {"max_side": lpg.max_side, "hu_window": lpg.hu_window}
    return get_config(lpg.architecture, **{k: v for k, v in overrides.items() if v is not None})


def lpg_training_options(config: RoundConfig, *, steps: int, batch_size: int, seed: int):
    """The LPG's :class:`~napari_lesion_harvest.lpg.train.LPGTrainOptions` of a round
    (section ``lpg``; ``steps`` and ``batch_size`` are this round's and this rank's),
    with a checkpoint every tenth of the steps."""
    return LPGTrainOptions(
        steps=steps,
        batch_size=batch_size,
        learning_rate=config.lpg.learning_rate,
        seed=seed,
        checkpoint_every=max(steps // 10, 1),
        canvas_size=config.lpg.crop_px,
        precision=config.lpg.precision,
        augmentation=SliceAugmentation(
            scale_range=config.lpg.zoom_range,
            flip_probability=config.lpg.flip_probability,
            box_centred_crop=config.lpg.crop_px is not None,
            edge_probability=config.lpg.edge_stack_probability,
        ),
    )


def train_lpg_stage(state: RoundState) -> StageResult:
    """Train the LPG (round 1) or fine-tune the previous round's with HNSL."""
    from napari_lesion_harvest.lpg.data import LPGSample
    from napari_lesion_harvest.lpg.train import train_lpg

    config, snapshot = state.config, state.snapshot
    previous = snapshot.previous_round
    slices = lpg_training_slices(
        snapshot,
        use_pool=previous is not None,
        ignore_known_lesions=state.config.lpg.ignore_known_lesions,
    )
    if not slices:
        raise HarvestInputError(
            "no marks to train the lesion proposal generator on; mark lesions of the fully "
            "annotated volumes (V_M)"
        )
    samples = [
        LPGSample(
            state.open(s.volume_id),
            s.z,
            s.positive_boxes,
            s.hard_negative_boxes,
            ignore_boxes=s.ignore_boxes,
        )
        for s in slices
    ]
    init, init_sha256, trunk = None, None, None
    steps = config.lpg.train_steps
    if previous is not None:
        init, init_sha256 = state.checkpoint("lpg", round_number=previous)
        steps = config.lpg.finetune_steps
    else:
        trunk = state.pretrained_trunk()
    try:  # a training checkpoint recorded before this round stopped: continue from it
        _, resume_sha256 = state.checkpoint("lpg")
    except NotFoundError:
        resume_sha256 = None
    written = []  # references of the checkpoints written (rank 0)
    started = time.monotonic()

    def report(step, total, parts):
        shown = {k: round(float(v), 4) for k, v in parts.items()}
        state.progress(Stage.train_lpg, step, total, f"loss {shown.get('total', 0):.3f}", shown)

    result = train_lpg(
        samples,
        config=lpg_architecture(config),
        options=lpg_training_options(
            config,
            steps=steps,
            batch_size=per_rank_batch(config.lpg.batch_size, state.context),
            seed=config.seed + state.number,
        ),
        init_checkpoint=init,
        init_sha256=init_sha256,
        pretrained_trunk=trunk,
        checkpoint_path=state.checkpoint_file("lpg"),
        resume=resume_sha256 is not None,
        resume_sha256=resume_sha256,
        on_checkpoint=lambda sha256, size: written.append(
            state.record_checkpoint("lpg", sha256=sha256, size=size)
        ),
        device=state.device,
        progress=report,
        should_stop=state.cancelled,
    )
    if result.resume_refused:
        state.progress(
            Stage.train_lpg, 0, steps, f"trained from the first step: {result.resume_refused}"
        )
    check_cancelled(state.cancelled)
    if result.stopped:
        check_cancelled(lambda: True)
    if not state.context.is_main:
        return None
    last = result.history[-1] if result.history else {}
    return StageResult(
        checkpoints=written[-1:],
        metrics={
            "lpg": {
                "steps": result.step,
                "processes": state.context.world_size,
                "fine_tuned_from": previous,
                "initialisation": result.model.pretrained_note,
                "training_slices": len(slices),
                "drawn_slices": len(samples),
                "canvas_px": result.canvas_size,
                "hard_negative_boxes": int(sum(len(s.hard_negative_boxes) for s in slices)),
                "ignore_boxes": int(sum(len(s.ignore_boxes) for s in slices)),
                "final_loss": {k: float(v) for k, v in last.items()},
                "seconds": round(time.monotonic() - started, 2),
            }
        },
    )


# ---------------------------------------------------------------------------- scan


def scan_options(config: RoundConfig) -> dict:
    """The options of :func:`~napari_lesion_harvest.tracking.scan.scan_volume` of a round:
    its section ``scan``."""
    return asdict(config.scan)


def scan_stage(state: RoundState) -> StageResult:
    """Detect on every slice of V_M, V_H, V_H_test and stack 3D proposals."""
    from napari_lesion_harvest.lpg.checkpoint import load_model
    from napari_lesion_harvest.tracking.scan import scan_volume

    path, sha256 = state.checkpoint("lpg")
    model = load_model(path, sha256=sha256).to(state.device)
    options = scan_options(state.config)
    records = volume_records(state.snapshot)
    started = time.monotonic()
    counts = {"volumes": len(records), "slices": 0, "boxes_2d": 0, "proposals": 0}
    rank_records = shard(records, state.context)
    scanned = {}  # volume_id -> (proposals, slices, 2D boxes) of this rank's volumes
    for done, record in enumerate(rank_records):
        check_cancelled(state.cancelled)
        state.progress(Stage.scan, done, len(rank_records), record.volume_id)
        volume = state.open(record.volume_id)
        proposals, boxes_2d = scan_volume(model, volume, **options, device=state.device)
        scanned[record.volume_id] = (proposals, volume.num_slices, boxes_2d)
    state.progress(Stage.scan, len(rank_records), len(rank_records), "done")
    scanned = merged_from_ranks(scanned, state.context)
    if scanned is None:
        return None
    rows: list[ProposalRow] = []
    for record in records:
        proposals, slices, boxes_2d = scanned[record.volume_id]
        counts["slices"] += slices
        counts["boxes_2d"] += boxes_2d
        counts["proposals"] += len(proposals)
        rows.extend(ProposalRow(record.volume_id, p) for p in proposals)
    seconds = time.monotonic() - started
    counts["seconds"] = round(seconds, 2)
    counts["slices_per_second"] = round(counts["slices"] / max(seconds, 1e-9), 2)
    return StageResult(proposals=rows, metrics={"scan": counts})


# ---------------------------------------------------------------------------- verify


def verify_stage(state: RoundState) -> StageResult:
    """Split proposals into P_RM / P_neg_M (V_M) and P_RH (V_H); verdicts override."""
    by_volume = state.proposals()
    proposals = {v: [s.proposal for s in stored] for v, stored in by_volume.items()}
    match_iou = state.config.harvest.match_iou
    hits = proposals_hitting(proposals, usable_marks(state.snapshot), iou_threshold=match_iou)
    accepted, rejected = _judged_targets(state.snapshot)
    hits_accepted = proposals_hitting(proposals, accepted, iou_threshold=match_iou)
    hits_rejected = proposals_hitting(proposals, rejected, iou_threshold=match_iou)
    updates, counts = [], defaultdict(int)
    for volume_id, stored in by_volume.items():
        in_v_m = state.split_of(volume_id) == Split.V_M
        for k, proposal in enumerate(stored):
            if in_v_m:
                role = Role.P_RM if hits[volume_id][k] else Role.P_neg_M
            elif hits_accepted[volume_id][k] or hits[volume_id][k]:
                role = Role.P_RH
            elif hits_rejected[volume_id][k]:
                role = Role.P_neg_H
            else:
                role = Role.candidate
            counts[role] += 1
            if role != proposal.role:
                updates.append(ProposalUpdate(proposal.id, role))
    return StageResult(updates=updates, metrics={"verify": dict(counts)})


def _judged_targets(snapshot):
    """Best-slice boxes of the proposals the expert accepted and rejected, by volume."""
    judged = {True: defaultdict(list), False: defaultdict(list)}
    for stored in snapshot.verdicts:
        judged[stored.verdict.verdict == Verdict.accepted][stored.volume_id].append(
            stored.proposal
        )
    return tuple(
        {v: best_slice_boxes(p) for v, p in judged[polarity].items()} for polarity in (True, False)
    )


# ---------------------------------------------------------------------------- train_lpc


def lpc_training_options(config: RoundConfig, seed: int):
    """The LPC's :class:`~napari_lesion_harvest.lpc.train.LPCTrainOptions` of a round
    (the CNN settings of its section ``lpc``)."""
    return LPCTrainOptions(
        variant=config.lpc.variant,
        width=config.lpc.width,
        patch_size=config.lpc.patch_size,
        pad_px=config.lpc.pad_px,
        outside=config.lpc.outside,
        epochs=config.lpc.epochs,
        seed=seed,
    )


def lpc_plan(config: RoundConfig, seed: int):
    """How a round fits its LPC (:class:`~napari_lesion_harvest.lpc.fitting.LPCPlan`):
    ``lpc.candidates`` (or ``lpc.variant`` alone), the folds, the threshold's V_M
    scores and the V_H scoring of ``config``."""
    return LPCPlan(
        candidates=config.lpc.candidates or (config.lpc.variant,),
        options=lpc_training_options(config, seed),
        folds=config.lpc.folds,
        threshold_mode=config.lpc.threshold_mode,
        v_h_scoring=config.lpc.v_h_scoring,
    )


def lpc_pretrained_trunks(state: RoundState, plan: LPCPlan) -> tuple[dict, str | None]:
    """The project's self-supervised LPC trunks for the plan's candidates.

    Returns
    -------
    trunks : dict name -> (path, sha256)
        For each CNN candidate the trunks fit (:attr:`LPCPlan.pretrained_trunks`).
    unused : str or None
        One line saying why a CNN candidate starts from its usual initialisation
        although the project has pretrained trunks (None: every CNN candidate uses them,
        or the project has none).
    """
    from napari_lesion_harvest.lpc.models import VARIANTS, options_classifier_config
    from napari_lesion_harvest.lpc.pretrain import trunk_misfit

    weights = state.project.pretrained.current("lpc")
    if weights is None:
        return {}, None
    trunks, reasons = {}, []
    for name in (c for c in plan.candidates if c in VARIANTS):
        misfit = trunk_misfit(weights.config, options_classifier_config(plan.options, name))
        if misfit:
            reasons.append(f"the {name} LPC: {misfit}")
        else:
            trunks[name] = (str(state.folder / weights.path), weights.sha256)
    if not reasons:
        return trunks, None
    return trunks, (
        f"pretrained LPC trunks ({weights.architecture}, {weights.path}) not used by "
        + "; ".join(reasons)
        + ": trained from the usual initialisation"
    )


def _verified_sets(state: RoundState):
    """LPC training sets and, per V_M volume, the proposal ids in the sets' order."""
    from napari_lesion_harvest.lpc.train import proposal_sets

    by_volume = state.proposals(roles=(Role.P_RM, Role.P_neg_M, Role.P_RH))
    pools = {Role.P_RM: {}, Role.P_neg_M: {}, Role.P_RH: {}}
    for volume_id, stored in by_volume.items():
        for role in pools:
            chosen = [s for s in stored if s.role == role]
            if chosen:
                pools[role][volume_id] = chosen
    volumes = {volume_id: state.open(volume_id) for volume_id in by_volume}
    sets = proposal_sets(
        volumes,
        **{
            name.lower(): {v: [s.proposal for s in chosen] for v, chosen in pool.items()}
            for name, pool in pools.items()
        },
    )
    ids = {
        v: [s.id for s in pools[Role.P_RM].get(v, []) + pools[Role.P_neg_M].get(v, [])]
        for v in set(pools[Role.P_RM]) | set(pools[Role.P_neg_M])
    }
    return sets, ids


def train_lpc_stage(state: RoundState) -> StageResult:
    """Fit the LPC on P_RM, P_neg_M and P_RH (choosing among ``lpc.candidates`` when
    set); score V_M for the harvest threshold; keep the models that score V_H."""
    from napari_lesion_harvest.lpc.checkpoint import checkpoint_payload
    from napari_lesion_harvest.lpc.fitting import fit_round_lpc
    from napari_lesion_harvest.lpc.score import lesion_scores
    from napari_lesion_harvest.lpc.train import MissingClassError

    config = state.config
    sets, v_m_ids = _verified_sets(state)

    def report(stage, step, total, message="", metrics=None):
        state.progress(stage, step, total, message, metrics)

    started = time.monotonic()
    plan = lpc_plan(config, config.seed + state.number)
    trunks, trunks_unused = lpc_pretrained_trunks(state, plan)
    if trunks_unused:
        state.progress(Stage.train_lpc, 0, 0, trunks_unused)
    try:
        fitted = fit_round_lpc(
            sets,
            replace(plan, pretrained_trunks=trunks),
            device=state.device,
            progress=report,
            cancelled=state.cancelled,
        )
    except MissingClassError as error:
        raise HarvestInputError(
            f"the lesion proposal classifier cannot be trained: {error}. The LPG's proposals "
            "matched too few marks: train it longer (lpg.train_steps) or annotate more volumes "
            "fully (V_M), then run a new round"
        ) from error
    checkpoints = [
        state.project.rounds.save_checkpoint(
            state.number, name, checkpoint_payload(model, meta={"classifier": fitted.chosen})
        )
        for name, model in fitted.stored.items()
    ]
    updates = []
    proposal_of = {s.volume.volume_id: s.proposals for s in sets if s.fully_annotated}
    for volume_id, s_c in fitted.v_m_scores.items():
        labels = next(s.labels for s in sets if s.volume.volume_id == volume_id)
        s_gc = lesion_scores([p.s_g for p in proposal_of[volume_id]], s_c)
        for proposal_id, label, score, lesion_score in zip(
            v_m_ids[volume_id], labels, s_c, s_gc, strict=True
        ):
            role = Role.P_RM if label else Role.P_neg_M
            updates.append(ProposalUpdate(proposal_id, role, float(score), float(lesion_score)))
    return StageResult(
        updates=updates,
        checkpoints=checkpoints,
        metrics={
            "lpc": {
                **fitted.training,
                "classifier": fitted.chosen,
                "candidates": {
                    name: {f"oof_{k}": _number(v) for k, v in figures.items()}
                    for name, figures in fitted.selection.items()
                },
                "v_h_scoring": fitted.v_h_scoring,
                "scorer_checkpoints": sorted(fitted.stored),
                "threshold_mode": fitted.threshold_mode,
                "threshold_mode_note": fitted.note,
                "pretrained_trunks_unused": trunks_unused,
                "folds": fitted.folds,
                "seconds": round(time.monotonic() - started, 2),
            }
        },
    )


# ---------------------------------------------------------------------------- harvest


def harvest_stage(state: RoundState) -> StageResult:
    """Score unverified proposals, harvest P_pos_H, mine P_neg_H, and form the pool P_i."""
    from napari_lesion_harvest.lpc.fitting import probabilities
    from napari_lesion_harvest.lpc.score import lesion_scores

    config = state.config
    scorer = _round_scorer(state)
    todo = {}  # volume_id -> its unverified V_H / V_H_test proposals (rank 0)
    if state.context.is_main:
        stored_by_volume = state.proposals()
        for volume_id, stored in stored_by_volume.items():
            if candidates := [s for s in stored if s.role == Role.candidate]:
                todo[volume_id] = candidates
    to_score = from_main(
        lambda: {v: [s.proposal for s in stored] for v, stored in todo.items()}, state.context
    )
    rank_volumes = shard(list(to_score), state.context)
    classified = {}  # volume_id -> s_c of its unverified proposals, on this rank
    for done, volume_id in enumerate(rank_volumes):
        check_cancelled(state.cancelled)
        state.progress(Stage.harvest, done, len(rank_volumes), volume_id)
        classified[volume_id] = probabilities(
            scorer, state.open(volume_id), to_score[volume_id], device=state.device
        )
    state.progress(Stage.harvest, len(rank_volumes), len(rank_volumes), "done")
    classified = merged_from_ranks(classified, state.context)
    if classified is None:
        return None
    v_m = [
        s
        for stored in stored_by_volume.values()
        for s in stored
        if s.role in (Role.P_RM, Role.P_neg_M) and s.s_gc is not None
    ]
    original = {
        v: [m.mark for m in state.snapshot.marks.get(v, []) if m.origin == Origin.original]
        for v in {s.volume_id for s in v_m}
    }
    threshold, precision = threshold_at_precision(
        *threshold_sample(
            v_m,
            original,
            lesions=config.harvest.threshold_lesions,
            match_iou=config.harvest.match_iou,
        ),
        target_precision=config.harvest.precision,
    )
    scored = []  # (stored, s_c, s_gc) of unverified V_H / V_H_test proposals
    for volume_id, stored in todo.items():
        s_c = classified[volume_id]
        s_gc = lesion_scores([s.s_g for s in stored], s_c)
        scored.extend(zip(stored, map(float, s_c), map(float, s_gc), strict=True))
    harvested = np.array([s_gc >= threshold for _, _, s_gc in scored], dtype=bool)
    v_m_is_lesion = [s.role == Role.P_RM for s in v_m]
    false_positives = expected_false_positives(
        [s.s_gc for s in v_m], v_m_is_lesion, [s_gc for _, _, s_gc in scored], threshold
    )
    hard = select_hard_negatives(
        [s.volume_id for s, _, _ in scored],
        [s.s_g for s, _, _ in scored],
        ~harvested,
        min_objectness=config.harvest.hard_negative_min_objectness,
        per_volume=config.harvest.hard_negatives_per_volume,
    )
    updates = []
    for (stored, s_c, s_gc), is_harvested, is_hard in zip(scored, harvested, hard, strict=True):
        role = Role.P_pos_H if is_harvested else Role.P_neg_H if is_hard else Role.candidate
        updates.append(ProposalUpdate(stored.id, role, s_c, s_gc))
    roles = {u.proposal_id: u.role for u in updates}
    pooled = [
        s.id
        for stored in stored_by_volume.values()
        for s in stored
        if roles.get(s.id, s.role)
        in (Role.P_RM, Role.P_neg_M, Role.P_RH, Role.P_pos_H, Role.P_neg_H)
    ]
    previous_pool = [s.id for s in state.snapshot.previous_pool]
    new_lesions = _count_new_lesions(
        state, [s for (s, _, _), h in zip(scored, harvested, strict=True) if h]
    )
    return StageResult(
        updates=updates,
        pool_carry=previous_pool + pooled,
        metrics={
            "harvest": {
                "threshold": None if np.isinf(threshold) else threshold,
                "threshold_precision_v_m": None if np.isnan(precision) else precision,
                "v_m_non_lesions": int(sum(not lesion for lesion in v_m_is_lesion)),
                "expected_false_positives": _number(false_positives),
                "scored": len(scored),
                Role.P_pos_H: int(harvested.sum()),
                Role.P_neg_H: int((hard & ~harvested).sum()),
                "new_lesions": new_lesions,
                "pool_size": len(set(previous_pool + pooled)),
            }
        },
    )


def _round_scorer(state: RoundState):
    """The model that scores this round's V_H proposals, as ``train_lpc`` recorded it:
    the final model ``lpc``, the mean of the fold models ``lpc_fold_K``, or s_g alone."""
    from napari_lesion_harvest.lpc.checkpoint import load_any_classifier
    from napari_lesion_harvest.lpc.fitting import FoldMean, ObjectnessOnly

    recorded = from_main(
        lambda: state.project.rounds.get(state.number).metrics.get("lpc", {}), state.context
    )
    names = recorded.get("scorer_checkpoints", ["lpc"])  # absent before the field: "lpc"
    models = []
    for name in names:
        path, sha256 = state.checkpoint(name)
        models.append(load_any_classifier(path, sha256=sha256, device=state.device)[0])
    if recorded.get("classifier") == "s_g":
        return ObjectnessOnly()
    if recorded.get("v_h_scoring") == "fold_mean":
        return FoldMean(tuple(models))
    return models[0]


def _count_new_lesions(state: RoundState, harvested) -> int:
    """Harvested proposals that hit no positive of the previous pool (P3D on best slices)."""
    known = defaultdict(list)
    for stored in [*state.snapshot.previous_pool, *state.snapshot.verdicts]:
        if proposal_polarity(stored):
            known[stored.volume_id].append(stored.proposal)
    by_volume = defaultdict(list)
    for stored in harvested:
        by_volume[stored.volume_id].append(stored.proposal)
    targets = {v: best_slice_boxes(p) for v, p in known.items()}
    match_iou = state.config.harvest.match_iou
    hits = proposals_hitting(dict(by_volume), targets, iou_threshold=match_iou)
    return int(sum((~hit).sum() for hit in hits.values()))


# ---------------------------------------------------------------------------- evaluate


def evaluate_stage(state: RoundState) -> StageResult:
    """Table I rows (per round and cumulative), PR and FROC on the fully annotated
    V_H_test volumes (:func:`~napari_lesion_harvest.evaluation.harvest.round_evaluation`)."""
    from napari_lesion_harvest.evaluation.harvest import round_evaluation

    return StageResult(
        metrics=round_evaluation(
            state.snapshot.volumes.get(Split.V_H_test, []),
            marks=state.snapshot.marks,
            proposals=state.proposals(),
            pool=state.snapshot.previous_pool,
            threshold=state.project.rounds.get(state.number).metrics["harvest"]["threshold"],
            match_iou=state.config.harvest.match_iou,
        )
    )


def _number(value: float) -> float | None:
    """A finite float, or None (JSON has no NaN): an undefined AP or AUC is stored as null."""
    return float(value) if np.isfinite(value) else None


STAGE_FUNCTIONS = {
    Stage.train_lpg: train_lpg_stage,
    Stage.scan: scan_stage,
    Stage.verify: verify_stage,
    Stage.train_lpc: train_lpc_stage,
    Stage.harvest: harvest_stage,
    Stage.evaluate: evaluate_stage,
}
