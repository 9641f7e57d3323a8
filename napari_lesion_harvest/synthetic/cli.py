"""``lesion-harvest synth``: write a synthetic CT dataset in DeepLesion's layout."""

from __future__ import annotations

import argparse
import sys
import time

from napari_lesion_harvest.cli import CommandError


def register(subparsers) -> None:
    """Add the ``synth`` subcommand."""
    parser = subparsers.add_parser(
        "synth",
        help="generate a synthetic CT dataset (DeepLesion layout, full truth, incomplete marks)",
        description=(
            "Generate CT phantom sub-volumes with lesions and write them as "
            "Images_png/ + DL_info.csv (original, incomplete marks), truth/ (every lesion), "
            "split.json and synth.json."
        ),
    )
    parser.add_argument("out_dir", help="output folder (created)")
    parser.add_argument("--volumes", type=int, default=40, help="number of sub-volumes (40)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--size", type=int, default=512, help="in-plane size in pixels (512)")
    parser.add_argument(
        "--slices", type=int, nargs=2, metavar=("MIN", "MAX"), default=(28, 52),
        help="range of slices per sub-volume (28 52)",
    )  # fmt: skip
    parser.add_argument(
        "--lesions", type=int, nargs=2, metavar=("MIN", "MAX"), default=(2, 7),
        help="range of lesions per sub-volume (2 7)",
    )  # fmt: skip
    parser.add_argument(
        "--mark-fraction", type=float, default=0.45,
        help="mean fraction of lesions with an original mark (0.45)",
    )  # fmt: skip
    parser.add_argument("--nifti", action="store_true", help="also write nifti/<id>.nii.gz")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (1)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the dataset; print a summary."""
    from napari_lesion_harvest.synthetic.dataset import generate_dataset
    from napari_lesion_harvest.synthetic.phantom import PhantomConfig

    if args.volumes < 1:
        raise CommandError(f"--volumes must be at least 1, got {args.volumes}")
    if args.workers < 1:
        raise CommandError(f"--workers must be at least 1, got {args.workers}")
    try:
        config = PhantomConfig(
            size=args.size,
            slices=tuple(args.slices),
            lesions=tuple(args.lesions),
            mark_fraction=args.mark_fraction,
        )
    except ValueError as error:
        raise CommandError(str(error)) from error
    from tqdm import tqdm

    start = time.perf_counter()
    with tqdm(total=args.volumes, unit="volume", file=sys.stderr, disable=None) as bar:
        dataset = generate_dataset(
            args.out_dir,
            volumes=args.volumes,
            seed=args.seed,
            config=config,
            write_nifti=args.nifti,
            workers=args.workers,
            progress=lambda done, total: bar.update(done - bar.n),
        )
    elapsed = time.perf_counter() - start
    share = dataset.mark_count / max(dataset.lesion_count, 1)
    print(
        f"{len(dataset.volume_ids)} volumes, {dataset.lesion_count} lesions, "
        f"{dataset.mark_count} original marks ({share:.0%})"
        f" written to {dataset.root} in {elapsed:.1f} s"
    )
    return 0
