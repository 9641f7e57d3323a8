"""Multi-Slice CenterNet (MSCN): 2.5D DenseNet with 3D context fusion and CenterNet heads.

The 9 input slices form 3 three-slice images (slices -4..-2, -1..+1, +2..+4)
that share one DenseNet trunk (conv0 .. denseblock3, torchvision's layers).
After transition2 the three images' features are concatenated and a 1x1 conv
makes the *centre* image's fused features; the side images continue unfused.
Each image then goes through denseblock3 and a top-down path (1x1 laterals,
x2 nearest upsampling, adding denseblock2 and denseblock1) to one stride-4
map; the three maps are concatenated and fused by a 1x1 conv (centre kept),
and the CenterNet heads (heatmap, size, offset) read that map.

The forward pass is split into :meth:`MultiSliceCenterNet.stem`,
:meth:`~MultiSliceCenterNet.fuse_centre`, :meth:`~MultiSliceCenterNet.context_map`
and :meth:`~MultiSliceCenterNet.predict` so that inference can compute the
unfused per-triplet parts once and reuse them for every target slice.

This module imports torch at import time; import it only where torch is needed.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from napari_lesion_harvest.lpg.config import LPGConfig, get_config
from napari_lesion_harvest.lpg.pooling import with_fast_max_pools

logger = logging.getLogger(__name__)

#: File name of torchvision's ImageNet DenseNet-121 weights in its cache.
DENSENET121_FILE = "densenet121-a639ec97.pth"
#: Environment variable that may name a local copy of those weights.
DENSENET121_ENV = "LESION_HARVEST_DENSENET121"

_TRUNK_LAYERS = (
    "conv0",
    "norm0",
    "relu0",
    "pool0",
    "denseblock1",
    "transition1",
    "denseblock2",
    "transition2",
    "denseblock3",
)
# Old torchvision checkpoints name dense-layer parts "norm.1"; current modules use "norm1".
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


@dataclass
class StemFeatures:
    """Unfused per-image trunk features (``N`` three-slice images).

    Attributes
    ----------
    block1 : Tensor, shape (N, C1, H/4, W/4)
        denseblock1 output.
    block2 : Tensor, shape (N, C2, H/8, W/8)
        denseblock2 output.
    transition2 : Tensor, shape (N, C2 // 2, H/16, W/16)
        transition2 output (the 3D fusion point).
    """

    block1: torch.Tensor
    block2: torch.Tensor
    transition2: torch.Tensor

    def select(self, index) -> StemFeatures:
        """Rows ``index`` of every tensor."""
        return StemFeatures(self.block1[index], self.block2[index], self.transition2[index])

    @staticmethod
    def cat(parts: list[StemFeatures]) -> StemFeatures:
        """Concatenate along the batch axis."""
        return StemFeatures(
            torch.cat([p.block1 for p in parts]),
            torch.cat([p.block2 for p in parts]),
            torch.cat([p.transition2 for p in parts]),
        )


def trunk_channels(config: LPGConfig) -> tuple[int, int, int, int]:
    """Channels of denseblock1, denseblock2, transition2 and denseblock3."""
    growth, (b1, b2, b3) = config.growth_rate, config.block_config
    block1 = config.num_init_features + b1 * growth
    block2 = block1 // 2 + b2 * growth
    transition2 = block2 // 2
    return block1, block2, transition2, transition2 + b3 * growth


def _head(in_channels: int, hidden: int, out_channels: int, bias: float) -> nn.Sequential:
    head = nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, out_channels, 1),
    )
    nn.init.constant_(head[-1].bias, bias)
    return head


def _head_on_windows(head: nn.Sequential, windows: torch.Tensor) -> torch.Tensor:
    """A :func:`_head` applied to flattened 3x3 windows ``(N, K, F * 9)``: ``(N, out, K)``."""
    conv3, _, conv1 = head
    hidden = F.linear(windows, conv3.weight.flatten(1), conv3.bias).relu()
    return F.linear(hidden, conv1.weight.flatten(1), conv1.bias).transpose(1, 2)


class MultiSliceCenterNet(nn.Module):
    """MSCN lesion proposal generator.

    Parameters
    ----------
    config : LPGConfig

    Notes
    -----
    ``forward(x)`` takes ``x`` of shape ``(B, 9, H, W)`` (``H, W`` multiples of 16)
    and returns a dict of ``heatmap`` logits ``(B, 1, H/4, W/4)``, ``size``
    ``(B, 2, H/4, W/4)`` (box width, height in stride-4 cells) and ``offset``
    ``(B, 2, H/4, W/4)`` (sub-cell centre x, y).
    """

    def __init__(self, config: LPGConfig):
        super().__init__()
        import torchvision

        self.config = config
        densenet = torchvision.models.DenseNet(
            growth_rate=config.growth_rate,
            block_config=(*config.block_config, 1),
            num_init_features=config.num_init_features,
            bn_size=config.bn_size,
        )
        self.trunk = with_fast_max_pools(
            nn.ModuleDict({name: getattr(densenet.features, name) for name in _TRUNK_LAYERS})
        )
        block1, block2, transition2, block3 = trunk_channels(config)
        features = config.feature_channels
        self.fuse_transition2 = nn.Conv2d(3 * transition2, transition2, 1)
        self.lateral3 = nn.Conv2d(block3, features, 1)
        self.lateral2 = nn.Conv2d(block2, features, 1)
        self.lateral1 = nn.Conv2d(block1, features, 1)
        self.fuse_maps = nn.Conv2d(3 * features, features, 1)
        hidden = config.head_channels
        self.heatmap_head = _head(features, hidden, 1, config.heatmap_bias)
        self.size_head = _head(features, hidden, 2, 0.0)
        self.offset_head = _head(features, hidden, 2, 0.0)
        self.pretrained_note = "random initialisation"

    # ------------------------------------------------------------------ pieces

    def stem(self, images: torch.Tensor) -> StemFeatures:
        """Trunk up to the fusion point for three-slice images ``(N, 3, H, W)``."""
        t = self.trunk
        x = t["pool0"](t["relu0"](t["norm0"](t["conv0"](images))))
        block1 = t["denseblock1"](x)
        block2 = t["denseblock2"](t["transition1"](block1))
        return StemFeatures(block1, block2, t["transition2"](block2))

    def fuse_centre(
        self, previous: torch.Tensor, centre: torch.Tensor, following: torch.Tensor
    ) -> torch.Tensor:
        """Fused transition2 features of the centre image, each input ``(N, C, h, w)``."""
        return self.fuse_transition2(torch.cat([previous, centre, following], dim=1))

    def context_map(
        self, block1: torch.Tensor, block2: torch.Tensor, transition2: torch.Tensor
    ) -> torch.Tensor:
        """denseblock3 and the top-down path: the stride-4 map ``(N, F, H/4, W/4)``."""
        x = self.lateral3(self.trunk["denseblock3"](transition2))
        x = F.interpolate(x, scale_factor=2, mode="nearest") + self.lateral2(block2)
        return F.interpolate(x, scale_factor=2, mode="nearest") + self.lateral1(block1)

    def fused_map(
        self, previous: torch.Tensor, centre: torch.Tensor, following: torch.Tensor
    ) -> torch.Tensor:
        """3-way fusion of the stride-4 maps ``(N, F, H/4, W/4)`` (centre kept)."""
        return self.fuse_maps(torch.cat([previous, centre, following], dim=1))

    def predict(
        self, previous: torch.Tensor, centre: torch.Tensor, following: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The CenterNet heads on every cell of the fused stride-4 map."""
        fused = self.fused_map(previous, centre, following)
        return {
            "heatmap": self.heatmap_head(fused),
            "size": self.size_head(fused),
            "offset": self.offset_head(fused),
        }

    def box_heads_at(
        self, fused: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The size and offset heads at chosen cells only (the heatmap's peaks).

        Equal to :meth:`predict`'s ``size`` and ``offset`` at those cells: each head's
        3x3 convolution (zero padding) becomes a product of the cells' 3x3 windows
        with its weights, so a scan pays for K cells instead of the whole map.

        Parameters
        ----------
        fused : Tensor, shape (N, F, h, w)
            :meth:`fused_map`'s output.
        index : Tensor of int64, shape (N, K)
            Flat cell indices ``y * w + x``.

        Returns
        -------
        size, offset : Tensor, shape (N, 2, K)
        """
        batch, channels, height, width = fused.shape
        padded = F.pad(fused, (1, 1, 1, 1)).reshape(batch, channels, -1)
        window = torch.arange(3, device=index.device)
        rows = (index // width)[:, :, None, None] + window[:, None]
        cols = (index % width)[:, :, None, None] + window[None, :]
        cells = (rows * (width + 2) + cols).reshape(batch, 1, -1).expand(-1, channels, -1)
        # (N, F, K * 9) -> (N, K, F * 9): the order of a 3x3 weight's (F, 3, 3) values.
        windows = padded.gather(2, cells).reshape(batch, channels, index.shape[1], 9)
        windows = windows.permute(0, 2, 1, 3).reshape(batch, index.shape[1], channels * 9)
        heads = (self.size_head, self.offset_head)
        return tuple(_head_on_windows(head, windows) for head in heads)

    def centre_map(self, centre: StemFeatures, fused_transition2: torch.Tensor) -> torch.Tensor:
        """Stride-4 map of the centre image from its fused transition2 features."""
        return self.context_map(centre.block1, centre.block2, fused_transition2)

    def side_map(self, side: StemFeatures) -> torch.Tensor:
        """Stride-4 map of a side image (unfused, reusable across targets)."""
        return self.context_map(side.block1, side.block2, side.transition2)

    # ------------------------------------------------------------------ forward

    def image_maps(self, stacks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stride-4 maps of the previous, centre and following three-slice images of
        9-slice stacks ``(B, 9, H, W)``, each ``(B, F, H/4, W/4)``."""
        batch, slices, height, width = stacks.shape
        if slices != 9:
            raise ValueError(f"MSCN expects 9-slice stacks, got {slices} slices")
        stem = self.stem(stacks.reshape(batch * 3, 3, height, width))
        index = torch.arange(batch, device=stacks.device) * 3
        previous, centre, following = (stem.select(index + k) for k in range(3))
        fused = self.fuse_centre(previous.transition2, centre.transition2, following.transition2)
        sides = self.side_map(StemFeatures.cat([previous, following]))
        return sides[:batch], self.centre_map(centre, fused), sides[batch:]

    def forward(self, stacks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict heads for 9-slice stacks ``(B, 9, H, W)``."""
        return self.predict(*self.image_maps(stacks))


# ---------------------------------------------------------------------- weights


def find_imagenet_weights(path: str | os.PathLike | None = None) -> Path | None:
    """Locate ImageNet DenseNet-121 weights on disk; never downloads.

    Looks at ``path``, then ``$LESION_HARVEST_DENSENET121``, then torchvision's cache
    (``torch.hub.get_dir()/checkpoints/densenet121-a639ec97.pth``).
    """
    candidates = [path, os.environ.get(DENSENET121_ENV)]
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / DENSENET121_FILE)
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def load_imagenet_trunk(model: MultiSliceCenterNet, path: str | os.PathLike) -> None:
    """Copy torchvision ImageNet DenseNet-121 weights into the trunk (``paper`` config)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    trunk_state = {}
    for key, value in state.items():
        key = _LEGACY_KEY.sub(r"\1\2", key)
        if key.startswith("features."):
            name = key[len("features.") :]
            if name.split(".")[0] in _TRUNK_LAYERS:
                trunk_state[name] = value
    model.trunk.load_state_dict(trunk_state, strict=True)


def build_model(
    config: str | LPGConfig | dict = "paper",
    *,
    pretrained: bool = True,
    weights_path: str | os.PathLike | None = None,
) -> MultiSliceCenterNet:
    """Build an MSCN model, with ImageNet trunk weights when they are on disk.

    Parameters
    ----------
    config : str, LPGConfig or dict
        ``"paper"``, ``"lite"`` or a configuration.
    pretrained : bool
        Look for ImageNet DenseNet-121 weights (only the ``paper`` trunk has
        DenseNet-121's shape). Absent weights give a logged note and random
        initialisation; nothing is downloaded.
    weights_path : path, optional
        Explicit weights file (see :func:`find_imagenet_weights`).

    Returns
    -------
    MultiSliceCenterNet
        ``model.pretrained_note`` says where the trunk weights came from.
    """
    config = get_config(config)
    model = MultiSliceCenterNet(config)
    is_densenet121 = (
        config.growth_rate,
        config.num_init_features,
        config.bn_size,
        config.block_config,
    ) == (32, 64, 4, (6, 12, 24))
    if pretrained and is_densenet121:
        found = find_imagenet_weights(weights_path)
        if found is None:
            model.pretrained_note = (
                f"ImageNet DenseNet-121 weights not found (looked for {DENSENET121_FILE} in "
                f"torchvision's cache and ${DENSENET121_ENV}); using random initialisation"
            )
            logger.warning(model.pretrained_note)
        else:
            load_imagenet_trunk(model, found)
            model.pretrained_note = f"ImageNet DenseNet-121 trunk from {found}"
    elif pretrained:
        model.pretrained_note = (
            f"config {config.name!r} is not DenseNet-121 shaped; random initialisation"
        )
    return model


# ------------------------------------------------------------- pretrained trunk

#: Parameter-name prefixes of the CenterNet heads. Everything else (the trunk, the
#: 3D fusion and the top-down path) is what self-supervised pretraining learns.
HEAD_PREFIXES = ("heatmap_head.", "size_head.", "offset_head.")


def trunk_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of ``model`` without its CenterNet heads (on the CPU)."""
    return {
        key: value.detach().cpu()
        for key, value in model.state_dict().items()
        if not key.startswith(HEAD_PREFIXES)
    }


def load_trunk_state(
    model: MultiSliceCenterNet, state: dict[str, torch.Tensor], *, source: str
) -> None:
    """Load a :func:`trunk_state` into ``model``; its heads keep their initialisation.

    Raises
    ------
    ValueError
        The names or shapes of ``state`` differ from the model's (the message
        starts with ``source``); nothing was loaded.
    """
    expected = trunk_state(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(
        key
        for key in set(expected) & set(state)
        if tuple(state[key].shape) != tuple(expected[key].shape)
    )
    if missing or unexpected or reshaped:
        found = [
            f"{len(keys)} {what} (e.g. {keys[0]})"
            for keys, what in (
                (missing, "missing"),
                (unexpected, "unexpected"),
                (reshaped, "of another shape"),
            )
            if keys
        ]
        raise ValueError(f"{source}: its trunk weights do not fit this LPG: {', '.join(found)}")
    model.load_state_dict(state, strict=False)
