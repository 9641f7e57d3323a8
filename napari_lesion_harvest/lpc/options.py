"""The LPC's training settings: patch augmentation, CNN training options and the plan of
a round's fit.

Torch-free, so that a round's configuration (:mod:`napari_lesion_harvest.harvest.config`)
takes its ``lpc`` defaults from here without loading torch. The defaults are the
``paper`` preset's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from napari_lesion_harvest.lpc.choices import CLASSIFIER_NAMES, V_H_SCORINGS, V_M_SCORE_MODES
from napari_lesion_harvest.lpc.feature_model import DEFAULT_L2
from napari_lesion_harvest.lpc.patches import DEFAULT_PAD_PX, DEFAULT_PATCH_SIZE


@dataclass(frozen=True)
class PatchAugmentation:
    """Ranges of the random transforms.

    Attributes
    ----------
    flips : bool
        Random flips along z, y, x and x/y exchange.
    max_rotation_deg : float
        Rotation about z, uniform in +-this.
    max_shift : float
        Centre translation, uniform in +-this fraction of the patch half-width.
    intensity_offset : float
        Standard deviation of an added offset (windowed units, 0..255 scale).
    intensity_gain : float
        Standard deviation of a multiplicative gain around 1.
    """

    flips: bool = True
    max_rotation_deg: float = 15.0
    max_shift: float = 0.08
    intensity_offset: float = 3.0
    intensity_gain: float = 0.05


@dataclass(frozen=True)
class LPCTrainOptions:
    """Hyper-parameters of LPC training.

    Attributes
    ----------
    variant, width, patch_size, pad_px, hu_window, outside, pretrained
        The classifier trained, as the parameters of
        :func:`~napari_lesion_harvest.lpc.models.build_classifier`
        (:func:`~napari_lesion_harvest.lpc.models.options_classifier_config`).
    epochs : int
        Maximum epochs; an epoch draws as many balanced samples as there are
        training proposals (at least one batch).
    batch_size : int
    learning_rate : float
        AdamW peak rate, cosine-decayed over all steps.
    weight_decay : float
    holdout_fraction : float
        Part of the V_M volumes held out for early stopping (0 disables it).
    patience : int
        Epochs without a better held-out loss before stopping.
    augmentation : PatchAugmentation
    seed : int
    """

    variant: str = "multiview"
    width: str = "paper"
    patch_size: int = DEFAULT_PATCH_SIZE
    pad_px: float = DEFAULT_PAD_PX
    hu_window: tuple[float, float] | None = None
    outside: str = "air"
    pretrained: object = True
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    holdout_fraction: float = 0.2
    patience: int = 5
    augmentation: PatchAugmentation = field(default_factory=PatchAugmentation)
    seed: int = 0


@dataclass(frozen=True)
class LPCPlan:
    """How a round fits its LPC.

    Attributes
    ----------
    candidates : tuple of str
        Classifiers to compare (:data:`CLASSIFIER_NAMES`); one: no comparison.
    options : LPCTrainOptions
        CNN training settings and the seed of everything.
    folds : int
        Out-of-fold folds (fewer when V_M has fewer volumes with proposals).
    threshold_mode : {"out_of_fold", "in_sample"}
        Which V_M scores set the harvest threshold.
    v_h_scoring : {"final_model", "fold_mean"}
    feature_l2 : float
    pretrained_trunks : mapping name -> (path, sha256)
        The project's self-supervised trunks (:mod:`~napari_lesion_harvest.lpc.pretrain`)
        for each CNN candidate they fit; every model of that candidate (folds and final)
        starts from them.
    """

    candidates: tuple[str, ...]
    options: LPCTrainOptions
    folds: int = 5
    threshold_mode: str = "out_of_fold"
    v_h_scoring: str = "final_model"
    feature_l2: float = DEFAULT_L2
    pretrained_trunks: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self):
        unknown = [c for c in self.candidates if c not in CLASSIFIER_NAMES]
        if not self.candidates or unknown:
            raise ValueError(
                f"LPC candidates must be a non-empty subset of {CLASSIFIER_NAMES}, got "
                f"{self.candidates}"
            )
        if self.threshold_mode not in V_M_SCORE_MODES:
            raise ValueError(
                f"V_M score mode must be one of {V_M_SCORE_MODES}, got {self.threshold_mode!r}"
            )
        if self.v_h_scoring not in V_H_SCORINGS:
            raise ValueError(
                f"V_H scoring must be one of {V_H_SCORINGS}, got {self.v_h_scoring!r}"
            )
