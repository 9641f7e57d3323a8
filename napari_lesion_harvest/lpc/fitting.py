"""A round's LPC: the candidate classifiers, their out-of-fold V_M scores, the choice
among them, and the scorer of the V_H proposals.

Candidates (:data:`CLASSIFIER_NAMES`):

``multiview``, ``axial``, ``3d``
    The CNN classifiers of :mod:`~napari_lesion_harvest.lpc.models` (the paper's first).
``features``
    Logistic regression on proposal features (:mod:`~napari_lesion_harvest.lpc.feature_model`).
``s_g``
    No classifier: s_c = 1, so the lesion score is the LPG's objectness alone.

Out-of-fold scores: the V_M volumes are split into folds; each fold's proposals are
scored by a model trained without that fold (V_H positives always in training). With
several candidates, each is scored on the same folds and the one whose lesion scores
s_gc = s_g * s_c rank V_M best (proposal-level average precision) is chosen; ties go
to the earlier candidate.

V_H scoring (``v_h_scoring``): ``final_model`` trains the chosen classifier once more on
every verified proposal (the paper); ``fold_mean`` scores with the mean s_c of the
out-of-fold models themselves, so that V_H's scores come from the same models, on the
same scale, as the V_M scores that set the harvest threshold.

This module imports torch (through the CNN trainer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpc.feature_model import DEFAULT_L2, fit_feature_classifier
from napari_lesion_harvest.lpc.metrics import average_precision, roc_auc
from napari_lesion_harvest.lpc.options import LPCPlan, LPCTrainOptions
from napari_lesion_harvest.lpc.score import classify_proposals, fold_of_volumes, lesion_scores
from napari_lesion_harvest.lpc.train import MissingClassError, ProposalSet, train_lpc
from napari_lesion_harvest.progress import Progress, check_cancelled, no_progress


class ObjectnessOnly:
    """The ``s_g`` candidate: s_c = 1 for every proposal."""

    def probabilities(self, volume: CTVolume, proposals: Sequence[Proposal3D]) -> np.ndarray:
        """Ones, shape ``(N,)``."""
        return np.ones(len(proposals))


@dataclass(frozen=True)
class FoldMean:
    """The mean s_c of several models (the out-of-fold models of one candidate)."""

    members: tuple

    def probabilities(self, volume: CTVolume, proposals: Sequence[Proposal3D], *, device=None):
        """Mean of the members' s_c, shape ``(N,)``."""
        scores = [probabilities(m, volume, proposals, device=device) for m in self.members]
        return np.mean(scores, axis=0) if scores else np.zeros(len(proposals))


def probabilities(model, volume: CTVolume, proposals: Sequence[Proposal3D], *, device=None):
    """s_c of the proposals of one volume from any candidate's model.

    Parameters
    ----------
    model : ProposalClassifier, FeatureClassifier, ObjectnessOnly or FoldMean
    volume : CTVolume
    proposals : sequence of Proposal3D
    device : str or torch.device, optional
        For CNN classifiers (default: the model's device).

    Returns
    -------
    ndarray, float64, shape (N,)
    """
    if isinstance(model, FoldMean):
        return model.probabilities(volume, proposals, device=device)
    if hasattr(model, "probabilities"):
        return model.probabilities(volume, proposals)
    return classify_proposals(model, volume, proposals, device=device)


@dataclass
class Trained:
    """What training one candidate on some sets gives.

    Attributes
    ----------
    model : ProposalClassifier, FeatureClassifier or ObjectnessOnly
    info : dict
        Plain values for the round's metrics (CNN: counts, best epoch, early stop, and
        ``initialisation``: where the trunks' initial weights came from).
    """

    model: object
    info: dict = field(default_factory=dict)


def train_candidate(
    name: str,
    sets: Sequence[ProposalSet],
    options: LPCTrainOptions,
    *,
    feature_l2: float = DEFAULT_L2,
    pretrained_trunks: tuple[str, str] | None = None,
    device=None,
    progress: Progress = no_progress,
    cancelled: Callable[[], bool] | None = None,
) -> Trained:
    """Train candidate ``name`` on ``sets``.

    Parameters
    ----------
    name : str
        One of :data:`CLASSIFIER_NAMES`.
    sets : sequence of ProposalSet
    options : LPCTrainOptions
        CNN training settings (``variant`` is replaced by ``name``); ``seed`` too.
    feature_l2 : float
        L2 penalty of the feature model.
    pretrained_trunks, device, progress, cancelled
        As for :func:`~napari_lesion_harvest.lpc.train.train_lpc` (CNN candidates).

    Raises
    ------
    MissingClassError
        The sets lack positives or negatives (for every candidate but ``s_g``).
    """
    check_cancelled(cancelled)
    if name == "s_g":
        return Trained(ObjectnessOnly())
    if name == "features":
        rows = [s.features() for s in sets]
        labels = np.concatenate([s.labels for s in sets]) if sets else np.zeros(0, int)
        n_pos, n_neg = int(labels.sum()), int((labels == 0).sum())
        if n_pos == 0 or n_neg == 0:
            raise MissingClassError(
                f"the feature model needs positive and negative proposals; got {n_pos} "
                f"positives and {n_neg} negatives"
            )
        model = fit_feature_classifier(np.concatenate(rows), labels, l2=feature_l2)
        return Trained(model, {"train_pos": n_pos, "train_neg": n_neg})
    result = train_lpc(
        sets,
        replace(options, variant=name),
        pretrained_trunks=pretrained_trunks,
        device=device,
        progress=progress,
        cancelled=cancelled,
    )
    info = {
        **result.counts,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "initialisation": result.model.pretrained_source,
    }
    return Trained(result.model, info)


@dataclass
class OutOfFold:
    """A candidate's out-of-fold V_M scores and its fold models.

    Attributes
    ----------
    scores : dict volume_id -> ndarray, shape (K,)
        s_c of each V_M set's proposals, in the set's order.
    models : list
        The fold models, fold 0 first.
    infos : list of dict
        Each fold model's :attr:`Trained.info`.
    """

    scores: dict[str, np.ndarray]
    models: list
    infos: list[dict]


def out_of_fold(
    name: str,
    sets: Sequence[ProposalSet],
    options: LPCTrainOptions,
    *,
    folds: int,
    feature_l2: float = DEFAULT_L2,
    pretrained_trunks: tuple[str, str] | None = None,
    device=None,
    progress: Progress = no_progress,
    cancelled: Callable[[], bool] | None = None,
) -> OutOfFold:
    """Score every V_M proposal with a model of candidate ``name`` that did not see its volume.

    The folds come from :func:`~napari_lesion_harvest.lpc.score.fold_of_volumes` with
    ``options.seed``; fold ``k``'s model trains with seed ``options.seed + k`` (from
    ``pretrained_trunks`` when given, as in :func:`train_candidate`).

    Raises
    ------
    ValueError
        Fewer V_M volumes than folds, or fewer than 2 folds.
    MissingClassError
        A fold's training part lacks a class.
    """
    assignment = fold_of_volumes(sets, folds, options.seed)
    scores: dict[str, np.ndarray] = {}
    models, infos = [], []
    for fold in range(folds):
        progress("lpc-fold", fold, folds, f"{name}: fold {fold + 1} of {folds}")
        training = [s for s, f in zip(sets, assignment, strict=True) if f != fold]
        trained = train_candidate(
            name,
            training,
            replace(options, seed=options.seed + fold),
            feature_l2=feature_l2,
            pretrained_trunks=pretrained_trunks,
            device=device,
            progress=progress,
            cancelled=cancelled,
        )
        models.append(trained.model)
        infos.append(trained.info)
        for s, f in zip(sets, assignment, strict=True):
            if f == fold:
                scores[s.volume.volume_id] = probabilities(
                    trained.model, s.volume, s.proposals, device=device
                )
    progress("lpc-fold", folds, folds, name)
    return OutOfFold(scores, models, infos)


def v_m_ranking(sets: Sequence[ProposalSet], scores: dict[str, np.ndarray]) -> dict:
    """How the lesion scores s_gc = s_g * s_c of V_M rank its proposals.

    Returns
    -------
    dict
        ``ap`` (proposal-level average precision) and ``auc`` (ROC AUC), floats.
    """
    v_m = [s for s in sets if s.fully_annotated and s.volume.volume_id in scores]
    s_gc = np.concatenate(
        [lesion_scores([p.s_g for p in s.proposals], scores[s.volume.volume_id]) for s in v_m]
    )
    labels = np.concatenate([s.labels for s in v_m])
    return {"ap": average_precision(s_gc, labels), "auc": roc_auc(s_gc, labels)}


@dataclass
class FittedLPC:
    """A round's fitted LPC.

    Attributes
    ----------
    chosen : str
        The candidate used.
    v_m_scores : dict volume_id -> ndarray
        s_c of each V_M set's proposals that sets the harvest threshold.
    scorer : model
        What scores the V_H proposals (:func:`probabilities` takes it).
    stored : dict name -> model
        The models to keep as checkpoints: ``lpc`` (final model) or ``lpc_fold_1``, ...
        (fold mean); empty for ``s_g``.
    threshold_mode, v_h_scoring : str
        What was done (``in_sample`` / ``final_model`` when out-of-fold scores were
        impossible).
    folds : int or None
        Folds of the out-of-fold scores (None without them).
    note : str or None
        Why the plan could not be followed as asked.
    selection : dict name -> dict
        Each compared candidate's out-of-fold ``ap`` and ``auc`` on V_M (empty
        without out-of-fold scores).
    training : dict
        The chosen final model's :attr:`Trained.info` and, for a CNN, the fold
        models' best epochs (``fold_best_epochs``) and initial weights
        (``initialisation``).
    """

    chosen: str
    v_m_scores: dict[str, np.ndarray]
    scorer: object
    stored: dict
    threshold_mode: str
    v_h_scoring: str
    folds: int | None
    note: str | None
    selection: dict
    training: dict


def fit_round_lpc(
    sets: Sequence[ProposalSet],
    plan: LPCPlan,
    *,
    device=None,
    progress: Progress = no_progress,
    cancelled: Callable[[], bool] | None = None,
) -> FittedLPC:
    """Fit a round's LPC as ``plan`` says (module docstring).

    Out-of-fold scores are computed when the threshold needs them, when V_H is
    scored by the fold mean, or when candidates are compared. When they are
    impossible (fewer than 2 V_M volumes with proposals, or a fold's training
    part without a class) the round falls back to the plan's first candidate,
    in-sample V_M scores and a final model, and ``note`` says why.

    Raises
    ------
    MissingClassError
        The verified proposals as a whole lack positives or negatives.
    """
    n_v_m = sum(s.fully_annotated for s in sets)
    folds = min(plan.folds, n_v_m)
    threshold_mode, v_h_scoring = plan.threshold_mode, plan.v_h_scoring
    candidates = plan.candidates
    note = None
    oof: dict[str, OutOfFold] = {}
    wants_folds = (
        threshold_mode == "out_of_fold" or v_h_scoring == "fold_mean" or len(candidates) > 1
    )
    if wants_folds and folds < 2:
        note = f"only {n_v_m} V_M volume(s) with proposals"
    elif wants_folds:
        try:
            for name in candidates:
                oof[name] = out_of_fold(
                    name,
                    sets,
                    plan.options,
                    folds=folds,
                    feature_l2=plan.feature_l2,
                    pretrained_trunks=plan.pretrained_trunks.get(name),
                    device=device,
                    progress=progress,
                    cancelled=cancelled,
                )
        except MissingClassError as error:
            oof, note = {}, f"out-of-fold scoring impossible: {error}"
    if wants_folds and not oof:
        candidates, threshold_mode, v_h_scoring = candidates[:1], "in_sample", "final_model"
    selection = {name: v_m_ranking(sets, o.scores) for name, o in oof.items()}
    chosen = chosen_candidate(candidates, selection)
    training = {}
    if oof and any("best_epoch" in info for info in oof[chosen].infos):
        training["fold_best_epochs"] = [info["best_epoch"] for info in oof[chosen].infos]
        training["initialisation"] = oof[chosen].infos[0]["initialisation"]
    final = None
    if threshold_mode == "in_sample" or v_h_scoring == "final_model":
        trained = train_candidate(
            chosen,
            sets,
            plan.options,
            feature_l2=plan.feature_l2,
            pretrained_trunks=plan.pretrained_trunks.get(chosen),
            device=device,
            progress=progress,
            cancelled=cancelled,
        )
        final, training = trained.model, {**training, **trained.info}
    if threshold_mode == "out_of_fold":
        v_m_scores = oof[chosen].scores
    else:
        v_m_scores = {
            s.volume.volume_id: probabilities(final, s.volume, s.proposals, device=device)
            for s in sets
            if s.fully_annotated
        }
    if v_h_scoring == "final_model":
        scorer, stored = final, {"lpc": final}
    else:
        members = oof[chosen].models
        scorer = FoldMean(tuple(members))
        stored = {f"lpc_fold_{k + 1}": m for k, m in enumerate(members)}
    if chosen == "s_g":
        stored = {}
    return FittedLPC(
        chosen=chosen,
        v_m_scores=v_m_scores,
        scorer=scorer,
        stored=stored,
        threshold_mode=threshold_mode,
        v_h_scoring=v_h_scoring,
        folds=folds if oof else None,
        note=note,
        selection=selection,
        training=training,
    )


def chosen_candidate(candidates: Sequence[str], selection: dict) -> str:
    """The candidate with the highest out-of-fold ``ap`` in ``selection`` (the first of
    ``candidates`` on a tie; a candidate without a figure ranks last)."""

    def ranked(name) -> float:
        ap = selection.get(name, {}).get("ap")
        return -np.inf if ap is None or not np.isfinite(ap) else float(ap)

    return max(candidates, key=ranked)
