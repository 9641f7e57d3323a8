"""``lesion-harvest pretrain``: self-supervised pretraining of the project's LPG trunk."""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path

from napari_lesion_harvest.cli import positive_int


def _positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected minutes, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def register(subparsers) -> None:
    """Add the ``pretrain`` subcommand."""
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain the lesion proposal generator's trunk on the project's own CT "
        "(self-supervised, no labels; round 1 starts from it); resumable",
    )
    p.add_argument("project", type=Path, help="harvest project folder")
    p.add_argument(
        "--minutes", type=_positive_minutes, help="stop and save after this much training"
    )
    p.add_argument(
        "--steps", type=positive_int, help="planned steps in all (default 2000, or as before)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--config",
        help="the rounds' configuration whose LPG to pretrain: lite, paper, or a JSON file "
        "of fields (default: that of the project's weights, else lite)",
    )
    p.add_argument(
        "--progress-json", action="store_true", help="JSON lines on stdout instead of bars"
    )
    p.add_argument(
        "--discard",
        action="store_true",
        help="remove the project's pretrained weights (rounds then start from random or "
        "ImageNet weights) and exit",
    )
    p.add_argument("--author", help="name recorded with the weights (default: login name)")
    p.set_defaults(func=run_pretrain_command)


def run_pretrain_command(args) -> int:
    from napari_lesion_harvest.harvest.cli import _open
    from napari_lesion_harvest.harvest.pretraining import run_pretraining
    from napari_lesion_harvest.harvest.round import resolve_device
    from napari_lesion_harvest.progress import CancelToken, JsonLinesProgress, TqdmProgress

    author = args.author or getpass.getuser()
    progress = JsonLinesProgress() if args.progress_json else TqdmProgress()
    with _open(args.project) as project:
        if args.discard:
            with project.pretrained.lock() as lock:
                gone = project.pretrained.discard(lock=lock, author=author)
            print("discarded " + gone.describe() if gone else "no pretrained weights to discard")
            return 0
        device = resolve_device(args.device)
        token = CancelToken()
        restore = token.install_signal_handlers()
        try:
            result = run_pretraining(
                project,
                config=args.config,
                steps=args.steps,
                minutes=args.minutes,
                device=device,
                author=author,
                progress=progress,
                cancelled=token,
            )
        finally:
            restore()
            if isinstance(progress, TqdmProgress):
                progress.close()
        weights = project.pretrained.current()
    summary = {
        "step": result.step,
        "total_steps": result.total_steps,
        "minutes": round(result.seconds / 60, 2),
        "stopped": result.stopped,
        "path": weights.path,
        "config": weights.config["name"],
    }
    if result.stopped:
        verb = "stopped and saved"
    else:
        verb = "saved" if result.losses else "already pretrained (--steps plans more)"
    message = f"{verb}: {weights.describe()}"
    if args.progress_json:
        progress("done", result.step, result.total_steps, message, summary)
    else:
        print(message + ("; run the same command again to continue" if result.stopped else ""))
    return 0
