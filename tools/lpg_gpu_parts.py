"""Where the LPG's GPU scanning time goes: network pieces alone versus the whole pipeline.

Times, for the ``paper`` MSCN at 512 px in bfloat16 on CUDA, each piece of the
shared-feature path on a batch of B images or targets (stem, side map, centre
fusion + centre map, 3-way fusion + heads), so that their per-target sum is the
network-only ceiling of the shared path, and prints torch's profiler table of
the top CUDA kernels of one shared-path batch.

    python tools/lpg_gpu_parts.py [--batch 64]
"""

from __future__ import annotations

import argparse
import time


def timed(function, repeats: int = 5) -> float:
    """Median seconds of ``function()`` on the GPU (after one warm-up)."""
    import torch

    function()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile'd stem and heads"
    )
    args = parser.parse_args()

    import torch

    from napari_lesion_harvest.lpg.config import get_config
    from napari_lesion_harvest.lpg.model import build_model

    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = build_model(get_config("paper", max_side=args.side), pretrained=False)
    model = model.cuda().eval()
    batch, side = args.batch, args.side
    images = torch.randn(batch, 3, side, side, device="cuda")
    stacks = torch.randn(batch, 9, side, side, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16):
        stem = model.stem(images)
        side_map = model.side_map(stem)
        fused = model.fuse_centre(stem.transition2, stem.transition2, stem.transition2)
        pieces = {
            "stem (1 image)": lambda: model.stem(images),
            "side map (1 image)": lambda: model.side_map(stem),
            "centre fusion + map": lambda: model.centre_map(
                stem, model.fuse_centre(stem.transition2, stem.transition2, stem.transition2)
            ),
            "3-way fusion + heads": lambda: model.predict(side_map, side_map, side_map),
            "whole forward (naive)": lambda: model(stacks),
        }
        print(f"paper {side} px, bf16, batch {batch}: ms per batch, per-target ms")
        shared_total = 0.0
        for name, function in pieces.items():
            seconds = timed(function)
            if name != "whole forward (naive)":
                shared_total += seconds
            print(f"  {name:<24} {1000 * seconds:8.1f} ms  {1000 * seconds / batch:6.2f}")
        print(f"network-only shared path: {batch / shared_total:.0f} slices/s")
        del fused
        if args.compile:
            for name, piece, inputs in (
                ("stem", model.stem, (images,)),
                ("3-way fusion + heads", model.predict, (side_map, side_map, side_map)),
            ):
                started = time.perf_counter()
                compiled = torch.compile(piece)
                compiled(*inputs)
                torch.cuda.synchronize()
                compile_s = time.perf_counter() - started
                seconds = timed(lambda c=compiled, i=inputs: c(*i))
                print(
                    f"  compiled {name:<22} {1000 * seconds:8.1f} ms (compile {compile_s:.0f} s)",
                    flush=True,
                )
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model.predict(
                side_map,
                model.centre_map(
                    stem, model.fuse_centre(stem.transition2, stem.transition2, stem.transition2)
                ),
                side_map,
            )
            model.side_map(model.stem(images))
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15))


if __name__ == "__main__":
    main()
