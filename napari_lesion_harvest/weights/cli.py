"""``lesion-harvest weights fetch SET``: download pretrained weights, only on request."""

from __future__ import annotations

import sys
from pathlib import Path

from napari_lesion_harvest.cli import CommandError


def register(subparsers) -> None:
    """Add ``lesion-harvest weights fetch``."""
    from napari_lesion_harvest.weights import fetch

    p = subparsers.add_parser("weights", help="pretrained weights from outside the project")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    f = actions.add_parser(
        "fetch",
        help="download torchvision's pretrained weights into torch's cache and verify them",
        description=(
            "Download the weight files of SET into torch's hub cache "
            "(torch.hub.get_dir()/checkpoints), where the paper configuration looks for "
            "them, and verify each one's sha256. Files already there and verified are not "
            "downloaded again. Nothing else downloads weights."
        ),
    )
    f.add_argument(
        "set",
        metavar="SET",
        choices=sorted(fetch.WEIGHT_SETS),
        help=(
            "imagenet: torchvision's DenseNet-121 (the paper LPG) and ResNet-18 (the paper "
            "LPC); kinetics: its R3D-18 (the 3d LPC variant)"
        ),
    )
    f.add_argument(
        "--url-base",
        default=fetch.DEFAULT_URL_BASE,
        help="URL of the folder holding the files, http(s):// or file:// (default: %(default)s)",
    )
    f.add_argument(
        "--dest", type=Path, help="folder for the files (default: torch's hub checkpoint cache)"
    )
    f.add_argument(
        "--progress-json",
        action="store_true",
        help="download progress as JSON lines on stdout instead of bars on stderr",
    )
    f.set_defaults(func=run_fetch)


def run_fetch(args) -> int:
    from napari_lesion_harvest.progress import JsonLinesProgress, TqdmProgress
    from napari_lesion_harvest.weights.fetch import WEIGHT_SETS, WeightsFetchError, fetch_weights

    bars = None if args.progress_json else TqdmProgress(unit="B", unit_scale=True)
    try:
        fetched = fetch_weights(
            WEIGHT_SETS[args.set],
            url_base=args.url_base,
            dest=args.dest,
            report=print,
            progress=bars or JsonLinesProgress(),
        )
    except WeightsFetchError as error:
        raise CommandError(str(error)) from error
    except KeyboardInterrupt:
        folder = args.dest or "torch's hub cache"
        print(
            f"stopped; nothing was placed in {folder}: run the same command again", file=sys.stderr
        )
        return 130
    finally:
        if bars is not None:
            bars.close()
    new = sum(item.downloaded for item in fetched)
    print(f"{args.set}: {len(fetched)} file(s) verified in {fetched[0].path.parent}, {new} new")
    return 0
