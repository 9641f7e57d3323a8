"""``lesion-harvest pretrain``: self-supervised pretraining of the project's LPG trunk and
LPC trunks."""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path

from napari_lesion_harvest.cli import positive_int
from napari_lesion_harvest.lpg.config import PRETEXTS

#: ``--network`` choices and the networks each pretrains, in the order they run.
NETWORK_CHOICES = {"lpg": ("lpg",), "lpc": ("lpc",), "both": ("lpg", "lpc")}


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
        help="pretrain the lesion proposal generator's trunk (and with --network, the "
        "classifier's trunks) on the project's own CT (self-supervised, no labels; rounds "
        "start from them); resumable",
    )
    p.add_argument("project", type=Path, help="harvest project folder")
    p.add_argument(
        "--network",
        choices=tuple(NETWORK_CHOICES),
        default="lpg",
        help="lpg (default): the LPG's DenseNet trunk, which round 1 starts from; lpc: the "
        "LPC's ResNet-18 view trunks of the configuration's lpc.variant (multiview or "
        "axial; 3d, features and s_g have none), which every round's LPC starts from when "
        "they fit its lpc settings; both: the LPG's, then the LPC's",
    )
    p.add_argument(
        "--pretext",
        choices=PRETEXTS,
        help="what the LPG's trunk learns from: restoration (restoring corrupted stacks) "
        "or blobs (finding each slice's blobs, the LPG's own task on label-free "
        "pseudo-objects); default: that of the project's weights, else blobs. The "
        "LPC's trunks learn by restoration",
    )
    p.add_argument(
        "--minutes",
        type=_positive_minutes,
        help="stop and save after this much training in all (with --network both, the LPG "
        "gets half and the LPC the rest)",
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        help="planned steps in all, of each network (default 2000, or as before)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--config",
        help="the rounds' configuration whose LPG / LPC to pretrain: lite, paper, or a JSON "
        "file of fields (default: that of the project's weights, else lite)",
    )
    p.add_argument(
        "--progress-json", action="store_true", help="JSON lines on stdout instead of bars"
    )
    p.add_argument(
        "--discard",
        action="store_true",
        help="remove the project's pretrained weights of --network (rounds then start "
        "from random or ImageNet weights) and exit",
    )
    p.add_argument("--author", help="name recorded with the weights (default: login name)")
    p.set_defaults(func=run_pretrain_command)


def run_pretrain_command(args) -> int:
    from napari_lesion_harvest.harvest.cli import _open
    from napari_lesion_harvest.harvest.config import load_config
    from napari_lesion_harvest.harvest.pretraining import (
        pretraining_config,
        pretraining_pretext,
        run_pretraining,
    )
    from napari_lesion_harvest.harvest.round import resolve_device
    from napari_lesion_harvest.progress import CancelToken, JsonLinesProgress, TqdmProgress

    author = args.author or getpass.getuser()
    networks = NETWORK_CHOICES[args.network]
    progress = JsonLinesProgress() if args.progress_json else TqdmProgress()
    with _open(args.project) as project:
        if args.discard:
            with project.pretrained.lock() as lock:
                for network in networks:
                    gone = project.pretrained.discard(network, lock=lock, author=author)
                    print(
                        "discarded " + gone.describe()
                        if gone
                        else f"no pretrained {network.upper()} weights to discard"
                    )
            return 0
        config = load_config(args.config) if args.config else None
        # with --network both, --pretext is the LPG's
        pretext = {n: args.pretext if n == "lpg" or len(networks) == 1 else None for n in networks}
        for network in networks:  # refuse a misfit before anything is trained
            pretraining_config(project, config, network=network)
            pretraining_pretext(project, network, pretext[network])
        device = resolve_device(args.device)
        token = CancelToken()
        restore = token.install_signal_handlers()
        left = args.minutes  # of training, for the networks still to run
        done = {}
        try:
            for rank, network in enumerate(networks):
                share = None if left is None else left / (len(networks) - rank)
                before = project.pretrained.current(network)
                done[network] = run_pretraining(
                    project,
                    network=network,
                    pretext=pretext[network],
                    config=config,
                    steps=args.steps,
                    minutes=share,
                    device=device,
                    author=author,
                    progress=progress,
                    cancelled=token,
                )
                if token():
                    break
                if left is not None:
                    spent = done[network].seconds - (before.seconds if before else 0.0)
                    left = max(left - spent / 60, 0.0)
        finally:
            restore()
            if isinstance(progress, TqdmProgress):
                progress.close()
        weights = {network: project.pretrained.current(network) for network in done}
    summaries, messages = {}, []
    for network, result in done.items():
        recorded = weights[network]
        summaries[network] = {
            "network": network,
            "step": result.step,
            "total_steps": result.total_steps,
            "minutes": round(result.seconds / 60, 2),
            "stopped": result.stopped,
            "path": recorded.path,
            "config": recorded.config["name"] if network == "lpg" else recorded.architecture,
        }
        if result.stopped:
            verb = "stopped and saved"
        else:
            verb = "saved" if result.losses else "already pretrained (--steps plans more)"
        messages.append(f"{verb}: {weights[network].describe()}")
    stopped = any(result.stopped for result in done.values())
    message = "; ".join(messages)
    last = done[list(done)[-1]]
    if args.progress_json:
        metrics = summaries[list(done)[0]] if len(done) == 1 else {"stopped": stopped, **summaries}
        progress("done", last.step, last.total_steps, message, metrics)
    else:
        print(message + ("; run the same command again to continue" if stopped else ""))
    return 0
