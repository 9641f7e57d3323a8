"""Lesion proposal classifiers: multi-view, axial-only and 3D ResNet-18 behind one interface.

Every variant maps the patches of :mod:`napari_lesion_harvest.lpc.patches` to one
logit per proposal; ``sigmoid(logit)`` is the paper's s_c.

``multiview`` (paper)
    One torchvision ResNet-18 per view (axial, coronal, sagittal), global
    average pooled features concatenated, one fully connected layer.
``axial``
    The same with the axial view only (the paper's 2D alternative).
``3d``
    torchvision's ``r3d_18`` on a cubic sub-volume (the paper's 3D alternative).

Widths: ``"paper"`` is torchvision's ResNet-18 exactly (64 to 512 channels) and
can start from pretrained weights; ``"lite"`` builds the same layers with a
quarter of the channels (16 to 128) for CPU tests and the phantom.

Pretrained weights are read only from local files, never downloaded: the
torchvision file names (``resnet18-f37072fd.pth``, ImageNet; ``r3d_18-b3b3357e.pth``,
Kinetics-400) in ``$LESION_HARVEST_WEIGHTS`` or in torch's hub cache
(``~/.cache/torch/hub/checkpoints``). The first convolution is reduced to one
input channel by summing its pretrained kernels over RGB.

This module imports torch: import it from the engine (workers, CLI), not at napari start.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from napari_lesion_harvest.lpc.patches import (
    DEFAULT_PAD_PX,
    DEFAULT_PATCH_SIZE,
    PAPER_HU_WINDOW,
    PatchSpec,
)
from napari_lesion_harvest.lpg.pooling import with_fast_max_pools

logger = logging.getLogger(__name__)

#: Classifier variants, the paper's first.
VARIANTS = ("multiview", "axial", "3d")
#: Channels of the first ResNet stage for each width name.
WIDTHS = {"paper": 64, "lite": 16}
#: torchvision's file names of the pretrained weights, per variant family.
PRETRAINED_FILES = {"2d": "resnet18-f37072fd.pth", "3d": "r3d_18-b3b3357e.pth"}
#: Environment variable naming a folder with pretrained weight files.
WEIGHTS_ENV = "LESION_HARVEST_WEIGHTS"


def find_pretrained(family: str) -> Path | None:
    """Local pretrained weights for ``family`` (``"2d"`` or ``"3d"``), or ``None``.

    Looks in ``$LESION_HARVEST_WEIGHTS`` then in torch's hub checkpoint cache;
    never downloads.
    """
    name = PRETRAINED_FILES[family]
    folders = [os.environ.get(WEIGHTS_ENV), Path(torch.hub.get_dir()) / "checkpoints"]
    for folder in folders:
        if folder and (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def _resolve_weights(pretrained, family: str, width: str) -> Path | None:
    """The weight file to load: ``pretrained`` is True (look up), False, or a path."""
    if pretrained is False or pretrained is None:
        return None
    if width != "paper":
        if pretrained is True:
            return None
        raise ValueError(f"pretrained weights fit only width 'paper', not {width!r}")
    if pretrained is True:
        path = find_pretrained(family)
        if path is None:
            logger.warning(
                "no local %s weights (%s in $%s or %s); the LPC starts from random weights",
                family,
                PRETRAINED_FILES[family],
                WEIGHTS_ENV,
                "torch's hub cache",
            )
        return path
    path = Path(pretrained)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weight file {path} does not exist")
    return path


def _single_channel(conv):
    """A copy of ``conv`` (Conv2d or Conv3d) taking 1 input channel: kernels summed over RGB."""
    new = type(conv)(
        1,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=False,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
    return new


def _kaiming_init(module) -> None:
    """torchvision's ResNet initialisation for rebuilt (narrower) layers."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def _load_state(net, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    logger.info("LPC trunk initialised from %s", path)


def resnet18_trunk(*, width: str = "paper", pretrained=True):
    """A 2D ResNet-18 feature extractor on one-channel images.

    Parameters
    ----------
    width : {"paper", "lite"}
    pretrained : bool or path
        True: ImageNet weights when a local file exists; a path: that file.

    Returns
    -------
    trunk : torch.nn.Module
        ``(N, 1, H, W) -> (N, F)`` globally average pooled features.
    features : int
        ``F`` (512 for ``paper``).
    source : str
        Where the initial weights came from (``"random"`` or the file).
    """
    from torchvision.models import resnet18
    from torchvision.models.resnet import BasicBlock

    base = WIDTHS[width]
    weights = _resolve_weights(pretrained, "2d", width)
    net = resnet18()
    if weights is not None:
        _load_state(net, weights)
    if base != 64:
        net.inplanes = base
        net.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        net.bn1 = nn.BatchNorm2d(base)
        for stage in range(4):
            layer = net._make_layer(BasicBlock, base * 2**stage, 2, stride=1 if stage == 0 else 2)
            setattr(net, f"layer{stage + 1}", layer)
        _kaiming_init(net)
    net.conv1 = _single_channel(net.conv1)
    net.fc = nn.Identity()
    return with_fast_max_pools(net), 8 * base, str(weights) if weights else "random"


def r3d18_trunk(*, width: str = "paper", pretrained=True):
    """A 3D ResNet-18 (torchvision ``r3d_18``) feature extractor on one-channel volumes.

    Returns
    -------
    trunk : torch.nn.Module
        ``(N, 1, D, H, W) -> (N, F)`` globally average pooled features.
    features : int
    source : str
    """
    from torchvision.models.video import r3d_18
    from torchvision.models.video.resnet import BasicBlock, Conv3DSimple

    base = WIDTHS[width]
    weights = _resolve_weights(pretrained, "3d", width)
    net = r3d_18()
    if weights is not None:
        _load_state(net, weights)
    if base != 64:
        net.inplanes = base
        net.stem = nn.Sequential(
            nn.Conv3d(3, base, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(base),
            nn.ReLU(inplace=True),
        )
        for stage in range(4):
            layer = net._make_layer(
                BasicBlock, Conv3DSimple, base * 2**stage, 2, stride=1 if stage == 0 else 2
            )
            setattr(net, f"layer{stage + 1}", layer)
        _kaiming_init(net)
    net.stem[0] = _single_channel(net.stem[0])
    net.fc = nn.Identity()
    return net, 8 * base, str(weights) if weights else "random"


def default_cube_size(patch_size: int) -> int:
    """Side of the 3D variant's sub-volume for a 2D ``patch_size`` (half, at least 16)."""
    return max(int(patch_size) // 2, 16)


def build_classifier(
    variant: str = "multiview",
    *,
    width: str = "paper",
    patch_size: int = DEFAULT_PATCH_SIZE,
    pad_px: float = DEFAULT_PAD_PX,
    hu_window: tuple[float, float] | None = None,
    outside: str = "air",
    pretrained=True,
):
    """Build a lesion proposal classifier.

    Parameters
    ----------
    variant : {"multiview", "axial", "3d"}
    width : {"paper", "lite"}
    patch_size : int
        Side of each 2D view patch; the ``3d`` variant uses a cube of
        :func:`default_cube_size` (``patch_size // 2``) voxels per side.
    pad_px : float
        Context around the proposal in in-plane pixels (paper: 64).
    hu_window : (float, float), optional
        HU window of the patches; None: the paper's [-1024, 3071].
    outside : {"air", "mirror"}
        What the patches show outside the volume (:class:`PatchSpec`).
    pretrained : bool or path
        Local pretrained trunk weights (see the module docstring).

    Returns
    -------
    ProposalClassifier
    """
    config = classifier_config(
        variant,
        width=width,
        patch_size=patch_size,
        pad_px=pad_px,
        hu_window=hu_window,
        outside=outside,
    )
    return ProposalClassifier(config, pretrained=pretrained)


def classifier_config(
    variant: str,
    *,
    width: str,
    patch_size: int,
    pad_px: float,
    hu_window: tuple[float, float] | None,
    outside: str,
) -> dict:
    """The configuration dict of a classifier (:attr:`ProposalClassifier.config`), checked.

    Parameters are those of :func:`build_classifier`.

    Raises
    ------
    ValueError
        Unknown ``variant`` or ``width``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"LPC variant must be one of {VARIANTS}, got {variant!r}")
    if width not in WIDTHS:
        raise ValueError(f"LPC width must be one of {tuple(WIDTHS)}, got {width!r}")
    return {
        "variant": variant,
        "width": width,
        "patch_size": int(patch_size),
        "pad_px": float(pad_px),
        "hu_window": [float(v) for v in (hu_window or PAPER_HU_WINDOW)],
        "outside": outside,
    }


def options_classifier_config(options, variant: str | None = None) -> dict:
    """The configuration of the classifier that ``options`` (an
    :class:`~napari_lesion_harvest.lpc.options.LPCTrainOptions`) trains: of ``variant``
    when given, else of ``options.variant``."""
    return classifier_config(
        variant or options.variant,
        width=options.width,
        patch_size=options.patch_size,
        pad_px=options.pad_px,
        hu_window=options.hu_window,
        outside=options.outside,
    )


def patch_spec_for(config: dict) -> PatchSpec:
    """The :class:`PatchSpec` a classifier configuration reads."""
    variant, size = config["variant"], config["patch_size"]
    common = {
        "pad_px": config["pad_px"],
        "hu_window": tuple(config["hu_window"]),
        "outside": config.get("outside", "air"),  # absent before the field: the paper's air
    }
    if variant == "3d":
        return PatchSpec(kind="cube", size=default_cube_size(size), **common)
    views = ("axial",) if variant == "axial" else ("axial", "coronal", "sagittal")
    return PatchSpec(kind="views", views=views, size=size, **common)


class ProposalClassifier(nn.Module):
    """Patches of one proposal -> one logit (``sigmoid`` gives s_c).

    Attributes
    ----------
    config : dict
        ``variant``, ``width``, ``patch_size``, ``pad_px``, ``hu_window``, ``outside``
        (stored in checkpoints).
    spec : PatchSpec
        What :func:`~napari_lesion_harvest.lpc.patches.extract_patches` must produce.
    pretrained_source : str
        ``"random"`` or the file the trunk weights came from.
    """

    def __init__(self, config: dict, *, pretrained=True):
        super().__init__()
        self.config = dict(config)
        self.spec = patch_spec_for(self.config)
        width = self.config["width"]
        if self.spec.kind == "cube":
            trunk, features, source = r3d18_trunk(width=width, pretrained=pretrained)
            self.trunks = nn.ModuleList([trunk])
        else:
            built = [resnet18_trunk(width=width, pretrained=pretrained) for _ in self.spec.views]
            self.trunks = nn.ModuleList([b[0] for b in built])
            features, source = built[0][1] * len(built), built[0][2]
        self.pretrained_source = source
        self.fc = nn.Linear(features, 1)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Logits of a batch.

        Parameters
        ----------
        patches : Tensor, shape (N, V, S, S) for views or (N, S, S, S) for a cube
            Windowed patches as made by ``extract_patches(volume, proposals, self.spec)``.

        Returns
        -------
        Tensor, shape (N,)
        """
        if patches.shape[1:] != self.spec.shape:
            raise ValueError(
                f"LPC {self.config['variant']} expects patches of shape (N, "
                f"{', '.join(map(str, self.spec.shape))}), got {tuple(patches.shape)}"
            )
        if self.spec.kind == "cube":
            features = self.trunks[0](patches.unsqueeze(1))
        else:
            features = torch.cat(
                [trunk(patches[:, v : v + 1]) for v, trunk in enumerate(self.trunks)], dim=1
            )
        return self.fc(features).squeeze(1)
