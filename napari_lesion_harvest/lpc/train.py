"""Training the lesion proposal classifier on verified proposals.

Positives are P_RM (V_M proposals that hit a mark) and P_RH (V_H proposals that
hit an original mark); negatives are P_neg_M (the other V_M proposals). Each
epoch samples both classes equally often; patches are augmented on the fly
(:mod:`napari_lesion_harvest.lpc.augment`). A part of the V_M volumes is held out:
training stops when its class-balanced loss has not improved for ``patience``
epochs and the best epoch's weights are kept (and written to ``checkpoint``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpc.augment import augment_patches
from napari_lesion_harvest.lpc.checkpoint import save_checkpoint
from napari_lesion_harvest.lpc.features import proposal_features
from napari_lesion_harvest.lpc.metrics import roc_auc
from napari_lesion_harvest.lpc.models import ProposalClassifier, options_classifier_config
from napari_lesion_harvest.lpc.options import LPCTrainOptions
from napari_lesion_harvest.lpc.patches import (
    PatchSpec,
    extract_patches,
)
from napari_lesion_harvest.lpc.pretrain import load_pretrained_trunks
from napari_lesion_harvest.progress import Progress, check_cancelled, no_progress


class MissingClassError(ValueError):
    """The training part has no positive or no negative proposal."""


@dataclass
class ProposalSet:
    """The verified proposals of one volume.

    Attributes
    ----------
    volume : CTVolume
    proposals : list of Proposal3D
    labels : ndarray of int, shape (K,)
        1: lesion (P_RM, P_RH), 0: not a lesion (P_neg_M).
    fully_annotated : bool
        True for a V_M volume (used for hold-out and folds), False for V_H.

    Notes
    -----
    :meth:`patches` and :meth:`features` keep what they extract, so the
    out-of-fold models of a round read each volume once.
    """

    volume: CTVolume
    proposals: list[Proposal3D]
    labels: np.ndarray
    fully_annotated: bool = True
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.proposals = list(self.proposals)
        self.labels = np.asarray(self.labels, dtype=np.int64).ravel()
        if self.labels.shape[0] != len(self.proposals):
            raise ValueError(
                f"volume {self.volume.volume_id}: {len(self.proposals)} proposals but "
                f"{self.labels.shape[0]} labels"
            )
        if not np.isin(self.labels, (0, 1)).all():
            raise ValueError(f"volume {self.volume.volume_id}: labels must be 0 or 1")

    def patches(self, spec: PatchSpec) -> torch.Tensor:
        """Windowed patches of the proposals (extracted once per ``spec``).

        Returns
        -------
        Tensor, float16, shape (K, *spec.shape)
        """
        if spec not in self._cache:
            extracted = extract_patches(self.volume, self.proposals, spec)
            self._cache[spec] = torch.from_numpy(extracted).to(torch.float16)
        return self._cache[spec]

    def features(self) -> np.ndarray:
        """The proposals' :func:`~napari_lesion_harvest.lpc.features.proposal_features`
        (extracted once).

        Returns
        -------
        ndarray, float64, shape (K, F)
        """
        if "features" not in self._cache:
            self._cache["features"] = proposal_features(self.volume, self.proposals)
        return self._cache["features"]


def proposal_sets(
    volumes: Mapping[str, CTVolume],
    *,
    p_rm: Mapping[str, Sequence[Proposal3D]],
    p_neg_m: Mapping[str, Sequence[Proposal3D]],
    p_rh: Mapping[str, Sequence[Proposal3D]],
) -> list[ProposalSet]:
    """Group the verified proposal pools per volume.

    Parameters
    ----------
    volumes : mapping volume_id -> CTVolume
    p_rm, p_neg_m : mapping volume_id -> proposals
        V_M positives and negatives.
    p_rh : mapping volume_id -> proposals
        V_H positives (proposals matching an original mark).

    Returns
    -------
    list of ProposalSet
        One per V_M volume (both pools) and one per V_H volume with P_RH.
    """
    sets = []
    for volume_id in sorted(set(p_rm) | set(p_neg_m)):
        if volume_id in p_rh:
            raise ValueError(f"volume {volume_id} is in both V_M (P_RM/P_neg_M) and V_H (P_RH)")
        pos, neg = list(p_rm.get(volume_id, ())), list(p_neg_m.get(volume_id, ()))
        labels = np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]
        sets.append(ProposalSet(_volume(volumes, volume_id), pos + neg, labels, True))
    for volume_id in sorted(p_rh):
        pos = list(p_rh[volume_id])
        sets.append(ProposalSet(_volume(volumes, volume_id), pos, np.ones(len(pos), int), False))
    return [s for s in sets if s.proposals]


def _volume(volumes, volume_id) -> CTVolume:
    try:
        return volumes[volume_id]
    except KeyError:
        raise KeyError(f"proposals refer to volume {volume_id!r}, which was not given") from None


@dataclass
class LPCTrainResult:
    """What :func:`train_lpc` returns.

    Attributes
    ----------
    model : ProposalClassifier
        Best-epoch weights, eval mode.
    history : list of dict
        Per epoch: ``epoch``, ``train_loss``, and ``val_loss`` / ``val_auc`` when held out.
    best_epoch : int
    stopped_early : bool
    counts : dict
        ``train_pos``, ``train_neg``, ``val_pos``, ``val_neg``, ``val_volumes``.
    """

    model: ProposalClassifier
    history: list[dict]
    best_epoch: int
    stopped_early: bool
    counts: dict


def split_holdout(
    sets: Sequence[ProposalSet], fraction: float, rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """Indices of training and held-out sets: ``fraction`` of the V_M volumes, by volume.

    At least one V_M volume stays in training; no hold-out with fewer than 2 V_M volumes.
    """
    v_m = [i for i, s in enumerate(sets) if s.fully_annotated]
    count = min(int(round(fraction * len(v_m))), len(v_m) - 1) if fraction > 0 else 0
    if fraction > 0 and len(v_m) >= 2:
        count = max(count, 1)
    held = set(rng.permutation(v_m)[:count].tolist()) if count > 0 else set()
    return [i for i in range(len(sets)) if i not in held], sorted(held)


def _patches_and_labels(sets, indices, spec, progress, cancelled, stage):
    """Windowed patches (float16 tensor, proposal order) and labels of the chosen sets."""
    chunks, labels = [], []
    for step, i in enumerate(indices):
        check_cancelled(cancelled)
        progress(stage, step, len(indices), sets[i].volume.volume_id)
        chunks.append(sets[i].patches(spec))
        labels.append(sets[i].labels)
    progress(stage, len(indices), len(indices))
    if not chunks:
        return torch.zeros((0,) + spec.shape, dtype=torch.float16), np.zeros(0, int)
    return torch.cat(chunks), np.concatenate(labels)


def _balanced_loss(logits, targets):
    """Binary cross-entropy with both classes weighted equally."""
    pos = targets > 0.5
    weights = torch.where(pos, 0.5 / pos.sum().clamp(min=1), 0.5 / (~pos).sum().clamp(min=1))
    return (F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * weights).sum()


def predict_logits(model, patches: torch.Tensor, *, batch_size: int, device) -> np.ndarray:
    """Logits of stored patches, shape ``(N,)`` float64 (bf16 autocast on CUDA)."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, patches.shape[0], batch_size):
            batch = patches[start : start + batch_size].to(device, torch.float32)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out.append(model(batch).float().cpu())
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def train_lpc(
    sets: Sequence[ProposalSet],
    options: LPCTrainOptions | None = None,
    *,
    model: ProposalClassifier | None = None,
    pretrained_trunks: tuple[str, str | None] | None = None,
    checkpoint=None,
    device=None,
    progress: Progress = no_progress,
    cancelled: Callable[[], bool] | None = None,
) -> LPCTrainResult:
    """Train an LPC on verified proposals.

    Parameters
    ----------
    sets : sequence of ProposalSet
        V_M volumes (P_RM and P_neg_M) and V_H volumes (P_RH); see :func:`proposal_sets`.
    options : LPCTrainOptions, optional
        Default: ``LPCTrainOptions()`` (the paper's multi-view ResNet-18).
    model : ProposalClassifier, optional
        Start from this model (fine-tuning); ``options``' architecture fields are ignored.
    pretrained_trunks : (path, sha256), optional
        Without ``model``: start the trunks from these self-supervised weights
        (:func:`~napari_lesion_harvest.lpc.pretrain.load_pretrained_trunks`; a file that
        is not the recorded one, or whose trunks do not fit, raises ``CheckpointError``).
    checkpoint : path, optional
        Written atomically at every held-out improvement (or at the end without hold-out).
    device : str or torch.device, optional
        Default: CUDA when available.
    progress : callable
        ``progress(stage, step, total, message, metrics)`` (stages ``lpc-patches``,
        ``lpc-train``; ``metrics`` carries the running losses).
    cancelled : callable, optional
        Polled every step; when true, raises
        :class:`~napari_lesion_harvest.progress.Cancelled`.

    Returns
    -------
    LPCTrainResult

    Raises
    ------
    MissingClassError
        When the training part lacks positives or negatives.
    """
    options = options or LPCTrainOptions()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rng = np.random.default_rng(options.seed)
    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    if model is None:
        model = ProposalClassifier(
            options_classifier_config(options), pretrained=options.pretrained
        )
        if pretrained_trunks is not None:
            load_pretrained_trunks(model, pretrained_trunks[0], sha256=pretrained_trunks[1])
    model = model.to(device)
    spec = model.spec

    train_idx, val_idx = split_holdout(sets, options.holdout_fraction, rng)
    train_x, train_y = _patches_and_labels(
        sets, train_idx, spec, progress, cancelled, "lpc-patches"
    )
    val_x, val_y = _patches_and_labels(sets, val_idx, spec, progress, cancelled, "lpc-patches")
    n_pos, n_neg = int(train_y.sum()), int((train_y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise MissingClassError(
            f"LPC training needs positive and negative proposals; got {n_pos} positives and "
            f"{n_neg} negatives in {len(train_idx)} training volumes"
        )
    counts = {
        "train_pos": n_pos,
        "train_neg": n_neg,
        "val_pos": int(val_y.sum()),
        "val_neg": int((val_y == 0).sum()),
        "val_volumes": len(val_idx),
    }

    batch_size = max(2, int(options.batch_size))  # BatchNorm needs two samples
    steps_per_epoch = max(1, math.ceil(len(train_y) / batch_size))
    total_steps = steps_per_epoch * options.epochs
    weights = np.where(train_y == 1, 0.5 / n_pos, 0.5 / n_neg)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(total_steps, 1))
    targets_all = torch.from_numpy(train_y).float()
    use_bf16 = device.type == "cuda"

    history: list[dict] = []
    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    stopped_early = False
    step = 0
    for epoch in range(1, options.epochs + 1):
        model.train()
        running = 0.0
        for _ in range(steps_per_epoch):
            check_cancelled(cancelled)
            chosen = torch.from_numpy(rng.choice(len(train_y), batch_size, p=weights))
            batch = train_x[chosen].to(device, torch.float32)
            batch = augment_patches(
                batch, spec, augmentation=options.augmentation, generator=generator
            )
            targets = targets_all[chosen].to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(batch)
            loss = F.binary_cross_entropy_with_logits(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            running += loss.item()
            progress("lpc-train", step, total_steps, f"epoch {epoch}", {"loss": loss.item()})
        record = {"epoch": epoch, "train_loss": running / steps_per_epoch}
        if len(val_y):
            logits = predict_logits(model, val_x, batch_size=batch_size, device=device)
            val_loss = float(
                _balanced_loss(torch.from_numpy(logits), torch.from_numpy(val_y).double())
            )
            record.update(val_loss=val_loss, val_auc=roc_auc(logits, val_y))
            if val_loss < best[0]:
                best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
                if checkpoint is not None:
                    save_checkpoint(model, checkpoint, meta={"epoch": epoch, **record, **counts})
        else:
            best = (math.nan, epoch, None)
        history.append(record)
        progress("lpc-train", step, total_steps, f"epoch {epoch} done", record)
        if len(val_y) and epoch - best[1] >= options.patience:
            stopped_early = True
            break

    if best[2] is not None:
        model.load_state_dict(best[2])
    elif checkpoint is not None:
        save_checkpoint(model, checkpoint, meta={"epoch": best[1], **history[-1], **counts})
    return LPCTrainResult(model.eval(), history, best[1], stopped_early, counts)
