"""LPC throughput: proposals scored per second (patch extraction + model) and extraction's share.

Usage::

    .venv/bin/python benchmarks/lpc_bench.py [--proposals 64] [--threads 2] [--device cpu]
        [--patch-size 128]

A DeepLesion-like volume (60 slices of 512 x 512, spacing 2.5 x 0.8 x 0.8 mm)
held in memory (no PNG decoding: reading cost is the readers' benchmark), and
random lesion-sized proposals (10 to 60 px, 3 to 9 slices). For each variant at
the `paper` preset's width and, unless ``--patch-size`` says otherwise, its patch size
(128 px views; a 64 voxel cube for ``3d``), extraction and the forward pass are timed
separately on the same proposals.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from napari_lesion_harvest.geometry import Proposal3D
from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpc.models import build_classifier
from napari_lesion_harvest.lpc.patches import DEFAULT_PATCH_SIZE, extract_patches
from napari_lesion_harvest.lpc.train import predict_logits


def make_volume(rng) -> CTVolume:
    hu = rng.normal(40, 30, size=(60, 512, 512)).astype(np.int16)
    return CTVolume.from_array("bench", hu, (2.5, 0.8, 0.8))


def make_proposals(rng, count: int) -> list[Proposal3D]:
    proposals = []
    for _ in range(count):
        size = rng.uniform(10, 60)
        x, y = rng.uniform(60, 450, size=2)
        depth = int(rng.integers(3, 10))
        z0 = int(rng.integers(0, 60 - depth))
        boxes = np.tile([x, y, x + size, y + size], (depth, 1))
        proposals.append(Proposal3D(np.arange(z0, z0 + depth), boxes, rng.uniform(0.1, 1, depth)))
    return proposals


def bench_variant(variant, volume, proposals, *, device, batch_size, patch_size) -> dict:
    model = build_classifier(variant, patch_size=patch_size, pretrained=False).to(device).eval()
    extract_patches(volume, proposals[:2], model.spec)  # warm-up
    predict_logits(
        model,
        torch.from_numpy(extract_patches(volume, proposals[:2], model.spec)),
        batch_size=batch_size,
        device=device,
    )
    volume.clear_cache()
    start = time.perf_counter()
    patches = torch.from_numpy(extract_patches(volume, proposals, model.spec))
    extract_s = time.perf_counter() - start
    start = time.perf_counter()
    predict_logits(model, patches, batch_size=batch_size, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    model_s = time.perf_counter() - start
    total = extract_s + model_s
    return {
        "variant": variant,
        "proposals": len(proposals),
        "patch": "x".join(map(str, model.spec.shape)),
        "extract_per_s": len(proposals) / extract_s,
        "scored_per_s": len(proposals) / total,
        "extract_share": extract_s / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proposals", type=int, default=64)
    parser.add_argument("--proposals-3d", type=int, default=8, help="fewer: r3d_18 is slow on CPU")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=DEFAULT_PATCH_SIZE, help="view side, px")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", nargs="+", default=["multiview", "axial", "3d"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    volume = make_volume(rng)
    proposals = make_proposals(rng, max(args.proposals, args.proposals_3d))
    print(
        f"# {platform.machine()}, {torch.get_num_threads()} torch threads, device {device}, "
        f"torch {torch.__version__}"
    )
    print("| variant | proposals | patch | extraction / s | scored / s | extraction share |")
    print("|---|---|---|---|---|---|")
    for variant in args.variants:
        count = args.proposals_3d if variant == "3d" else args.proposals
        r = bench_variant(
            variant,
            volume,
            proposals[:count],
            device=device,
            batch_size=args.batch_size,
            patch_size=args.patch_size,
        )
        print(
            f"| {r['variant']} | {r['proposals']} | {r['patch']} | {r['extract_per_s']:.1f} | "
            f"{r['scored_per_s']:.1f} | {100 * r['extract_share']:.0f}% |"
        )


if __name__ == "__main__":
    main()
