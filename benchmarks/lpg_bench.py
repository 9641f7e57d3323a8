"""LPG speed: whole-volume inference (naive vs shared features) and training steps.

Inference: slices/s over the same random volumes for both paths, at 2 mm and
5 mm slice intervals, for the ``lite`` and ``paper`` configurations at 256 and
512 px. Training: steps/s and peak resident memory (each measured in a fresh
subprocess so the peak belongs to that configuration alone).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lpg_bench.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def _volume(slices: int, side: int, slice_mm: float, seed: int = 0):
    from napari_lesion_harvest.io.volume import CTVolume

    rng = np.random.default_rng(seed)
    hu = rng.normal(0, 300, (slices, side, side)).astype(np.int16)
    # 0.8 mm pixels: the side after spacing normalisation equals the array side.
    return CTVolume.from_array(f"bench{side}_{slice_mm}", hu, (slice_mm, 0.8, 0.8))


def bench_inference(config_name: str, side: int, slice_mm: float, slices: int, batch: int):
    """Slices/s of the naive and shared paths on one volume (same model, same run)."""
    import torch

    from napari_lesion_harvest.lpg.config import get_config
    from napari_lesion_harvest.lpg.infer import predict_volume
    from napari_lesion_harvest.lpg.model import build_model

    torch.manual_seed(0)
    model = build_model(get_config(config_name, max_side=side), pretrained=False).eval()
    volume = _volume(slices, side, slice_mm)
    rates = {}
    for shared in (False, True):
        list(predict_volume(model, volume, shared=shared, batch_size=batch, slices=[0, 1]))
        start = time.perf_counter()
        for _ in predict_volume(model, volume, shared=shared, batch_size=batch):
            pass
        rates["shared" if shared else "naive"] = slices / (time.perf_counter() - start)
    return rates


def bench_training(config_name: str, side: int, steps: int, batch: int) -> dict:
    """Steps/s of training on random slices; peak RSS of this process."""
    import torch

    from napari_lesion_harvest.lpg.config import get_config
    from napari_lesion_harvest.lpg.data import LPGSample
    from napari_lesion_harvest.lpg.train import LPGTrainOptions, train_lpg

    volume = _volume(12, side, 2.0)
    box = np.array([[side * 0.4, side * 0.4, side * 0.5, side * 0.55]])
    samples = [LPGSample(volume, z, box) for z in range(2, 10)]
    config = get_config(config_name, max_side=side)
    options = LPGTrainOptions(steps=1, batch_size=batch, warmup_steps=1)
    train_lpg(samples, config=config, options=options, pretrained=False)  # warm-up
    times = []
    options = LPGTrainOptions(steps=steps, batch_size=batch, warmup_steps=1)
    train_lpg(
        samples,
        config=config,
        options=options,
        pretrained=False,
        progress=lambda step, total, parts: times.append(time.perf_counter()),
    )
    rate = (len(times) - 1) / (times[-1] - times[0])
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"steps_per_s": rate, "peak_rss_mib": peak_mib, "torch": torch.__version__}


def _inference_table(configs: list[str], sides: list[int], args) -> None:
    print(f"threads={args.threads} slices/volume={args.slices} batch={args.batch}")
    print("| config | px | slice mm | naive slices/s | shared slices/s | ratio |")
    print("|---|---|---|---|---|---|")
    for name in configs:
        for side in sides:
            for slice_mm in (2.0, 5.0):
                rates = bench_inference(name, side, slice_mm, args.slices, args.batch)
                ratio = rates["shared"] / rates["naive"]
                print(
                    f"| {name} | {side} | {slice_mm:g} | {rates['naive']:.2f} | "
                    f"{rates['shared']:.2f} | {ratio:.2f}x |",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--slices", type=int, default=12, help="slices per volume")
    parser.add_argument("--batch", type=int, default=4, help="targets per forward pass")
    parser.add_argument("--train-steps", type=int, default=4)
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--configs", default="lite,paper")
    parser.add_argument("--sides", default="256,512")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--training-child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.training_child:
        name, side = args.training_child.split(":")
        print(json.dumps(bench_training(name, int(side), args.train_steps, args.train_batch)))
        return

    configs, sides = args.configs.split(","), [int(s) for s in args.sides.split(",")]
    if not args.skip_inference:
        _inference_table(configs, sides, args)
    if args.skip_training:
        return
    print(f"\ntraining: batch {args.train_batch}, {args.train_steps} timed steps")
    print("| config | px | steps/s | peak RSS MiB |")
    print("|---|---|---|---|")
    for name in configs:
        for side in sides:
            child = [
                sys.executable,
                __file__,
                "--threads",
                str(args.threads),
                "--train-steps",
                str(args.train_steps),
                "--train-batch",
                str(args.train_batch),
                "--training-child",
                f"{name}:{side}",
            ]
            out = subprocess.run(child, capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(
                f"| {name} | {side} | {result['steps_per_s']:.3f} | "
                f"{result['peak_rss_mib']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
