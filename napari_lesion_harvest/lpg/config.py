"""Named configurations of the lesion proposal generator (Multi-Slice CenterNet).

A configuration is a plain dataclass of numbers and strings so that it can be
stored inside a checkpoint as a dict and read back with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class LPGConfig:
    """Architecture, input and loss settings of the MSCN lesion proposal generator.

    Parameters
    ----------
    name : str
        ``"paper"`` or ``"lite"`` (or a custom name for a modified copy).
    growth_rate, num_init_features, bn_size : int
        DenseNet trunk parameters (torchvision's ``DenseNet``).
    block_config : tuple of int
        Layers in dense blocks 1, 2 and 3 (the trunk ends after block 3).
    feature_channels : int
        Channels of the top-down (stride-4) map and of the 3-way fusion.
    head_channels : int
        Hidden channels of each CenterNet head (3x3 conv, ReLU, 1x1 conv).
    num_slices : int
        Slices per input stack (9 = three three-slice images).
    slice_interval_mm : float
        Interval between the stack's slices after linear resampling along z.
    pixel_spacing_mm : float
        In-plane spacing the slices are resampled to.
    max_side : int
        Longest side (pixels) of a resampled slice.
    hu_window : tuple of float
        HU range mapped to [0, 255].
    pixel_mean : float
        Subtracted after windowing.
    stride : int
        Output stride of the heads (4).
    size_divisor : int
        Network inputs are padded to a multiple of this (the trunk's stride 16).
    heatmap_bias : float
        Initial bias of the heatmap head's last conv (CenterNet: -2.19).
    min_overlap : float
        Gaussian radius rule of CenterNet.
    focal_alpha, focal_beta : float
        Penalty-reduced focal loss exponents.
    size_weight, offset_weight : float
        Weights of the L1 size and offset losses.
    top_k : int
        Peaks kept per slice at decoding.
    """

    name: str
    growth_rate: int
    num_init_features: int
    bn_size: int
    block_config: tuple[int, int, int]
    feature_channels: int
    head_channels: int
    num_slices: int = 9
    slice_interval_mm: float = 2.0
    pixel_spacing_mm: float = 0.8
    max_side: int = 512
    hu_window: tuple[float, float] = (-1024.0, 3071.0)
    pixel_mean: float = 50.0
    stride: int = 4
    size_divisor: int = 16
    heatmap_bias: float = -2.19
    min_overlap: float = 0.7
    focal_alpha: float = 2.0
    focal_beta: float = 4.0
    size_weight: float = 0.1
    offset_weight: float = 1.0
    top_k: int = 100

    def __post_init__(self):
        if self.num_slices != 9:
            raise ValueError(
                f"LPG config {self.name!r}: num_slices must be 9 (3 x 3-slice images)"
            )
        if len(self.block_config) != 3:
            raise ValueError(f"LPG config {self.name!r}: block_config needs 3 dense blocks")
        if self.max_side < self.size_divisor:
            raise ValueError(f"LPG config {self.name!r}: max_side {self.max_side} is too small")

    def to_dict(self) -> dict:
        """Plain-Python dict (lists instead of tuples) for checkpoints and JSON."""
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict) -> LPGConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"LPG config: unknown fields {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    def with_options(self, **changes) -> LPGConfig:
        """A copy with some fields changed (e.g. ``max_side=256``)."""
        return replace(self, **changes)


#: The configurations selectable by name.
CONFIGS: dict[str, LPGConfig] = {
    # DenseNet-121 truncated after dense block 3, 512-channel stride-4 map, 512 px.
    "paper": LPGConfig(
        name="paper",
        growth_rate=32,
        num_init_features=64,
        bn_size=4,
        block_config=(6, 12, 24),
        feature_channels=512,
        head_channels=256,
    ),
    # Same architecture, narrower and shallower, for CPU training and inference.
    "lite": LPGConfig(
        name="lite",
        growth_rate=12,
        num_init_features=32,
        bn_size=4,
        block_config=(3, 6, 8),
        feature_channels=64,
        head_channels=64,
        max_side=256,
    ),
}


def get_config(config: str | LPGConfig | dict, **overrides) -> LPGConfig:
    """Resolve a configuration given by name, object or dict, then apply ``overrides``.

    Raises
    ------
    ValueError
        For an unknown name.
    """
    if isinstance(config, LPGConfig):
        resolved = config
    elif isinstance(config, dict):
        resolved = LPGConfig.from_dict(config)
    elif config in CONFIGS:
        resolved = CONFIGS[config]
    else:
        raise ValueError(f"unknown LPG configuration {config!r}; choose one of {sorted(CONFIGS)}")
    return resolved.with_options(**overrides) if overrides else resolved


#: What the LPG trunk's self-supervised pretraining learns from
#: (:mod:`napari_lesion_harvest.lpg.pretrain`): restoring corrupted stacks (what weights
#: recorded without a pretext learnt from), or finding the blobs of each slice.
RESTORATION, BLOBS = PRETEXTS = ("restoration", "blobs")
#: The pretext of a new pretraining: blobs gave the harvest a higher AP than restoration
#: and than no pretraining on the quality benchmark (docs/experiments/pretraining.md).
DEFAULT_PRETEXT = BLOBS

#: Compute precisions of the LPG's training and scan. ``auto``: bfloat16 on CUDA,
#: float32 elsewhere; ``bfloat16`` on a CPU pays off only where the CPU computes in
#: bfloat16 natively (AVX512-BF16 or AMX; docs/performance.md).
PRECISIONS = ("auto", "float32", "bfloat16")
#: The precision of a round's LPG training and scan unless configured.
DEFAULT_PRECISION = "auto"


def uses_bfloat16(precision: str, device_type: str) -> bool:
    """Whether the LPG runs in bfloat16 autocast (with NHWC weights and inputs where it
    trains) for ``precision`` (one of :data:`PRECISIONS`) on a ``device_type`` device
    (``"cpu"``, ``"cuda"``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    return precision == "bfloat16" or (precision == "auto" and device_type == "cuda")
