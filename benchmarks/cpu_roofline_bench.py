"""CPU efficiency: the harvest's networks against this machine's own attainable rate.

In one run, at one thread count, it measures

* the attainable rate: a dense matrix product (2048 x 2048) and a reference
  convolution (3 x 3, 64 -> 64 channels, 8 x 64 x 64 maps, both memory formats),
  in float32 and, where the CPU has native bfloat16 (AVX512-BF16 / AMX), bfloat16;
* the achieved rate of the ``lite`` LPG's training step (batch 8, 256 px, forward
  and backward), its whole-volume scan (:func:`~napari_lesion_harvest.lpg.infer.predict_volume`,
  shared features) and the ``lite`` multi-view LPC's training step (batch 32, 64 px),
  each in the layout and precision a round uses on the CPU and in the alternatives;

and prints each achieved rate as a fraction of the matrix product and of the
reference convolution in the same precision. FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products;
normalisation and element-wise work count zero, so the fractions are of useful
arithmetic). ``--profile`` adds torch's profiler table (self CPU time per
operator) for each network in the round's setting.

    .venv/bin/python benchmarks/cpu_roofline_bench.py --threads 2 [--profile] [--clock process]
"""

from __future__ import annotations

import argparse
import platform
import time
from contextlib import nullcontext
from functools import partial

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from napari_lesion_harvest.io.volume import CTVolume
from napari_lesion_harvest.lpc.models import build_classifier
from napari_lesion_harvest.lpg.config import get_config
from napari_lesion_harvest.lpg.infer import predict_volume
from napari_lesion_harvest.lpg.model import build_model

#: The clocks that can time the calls: wall time, or this process's CPU time
#: (steadier on a shared machine; the same as wall time at one thread on an idle one).
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def _seconds(run, *, repeats: int, clock, warmup: int = 1) -> float:
    """Median time on ``clock`` of ``run()`` over ``repeats`` calls after ``warmup``
    calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = clock()
        run()
        times.append(clock() - start)
    return float(np.median(times))


def _flops(run) -> int:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def _autocast(bfloat16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bfloat16 else nullcontext()


def _layout(channels_last: bool):
    return torch.channels_last if channels_last else torch.contiguous_format


def attainable(dtype: torch.dtype, repeats: int, clock) -> dict[str, float]:
    """GFLOP/s of a dense matrix product and of the reference convolution."""
    side = 2048
    a, b = torch.randn(side, side, dtype=dtype), torch.randn(side, side, dtype=dtype)
    rates = {"matmul": 2 * side**3 / _seconds(lambda: a @ b, repeats=repeats, clock=clock) / 1e9}
    for channels_last in (False, True):
        layout = _layout(channels_last)
        conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(dtype, memory_format=layout)
        x = torch.randn(8, 64, 64, 64, dtype=dtype).contiguous(memory_format=layout)
        run = partial(conv, x)
        with torch.no_grad():
            seconds = _seconds(run, repeats=repeats, clock=clock)
            rates["conv NHWC" if channels_last else "conv NCHW"] = _flops(run) / seconds / 1e9
    return rates


def lpg_training_step(*, channels_last: bool, bfloat16: bool):
    """A closure running one ``lite`` LPG training step (batch 8, 256 px)."""
    torch.manual_seed(0)
    model = build_model(get_config("lite"), pretrained=False).train()
    model = model.to(memory_format=_layout(channels_last))
    stacks = torch.randn(8, 9, 256, 256).contiguous(memory_format=_layout(channels_last))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with _autocast(bfloat16):
            outputs = model(stacks)
        loss = sum(value.float().square().mean() for value in outputs.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def lpg_scan(*, channels_last: bool, bfloat16: bool, slices: int = 24):
    """A closure scanning a random 256 px volume of ``slices`` slices (shared features)."""
    torch.manual_seed(0)
    model = build_model(get_config("lite"), pretrained=False).eval()
    hu = np.random.default_rng(0).normal(0, 300, (slices, 256, 256)).astype(np.int16)
    volume = CTVolume.from_array("roofline", hu, (2.0, 0.8, 0.8))
    precision = "bfloat16" if bfloat16 else "float32"

    def scan():
        for _ in predict_volume(
            model,
            volume,
            batch_size=8,
            device="cpu",
            precision=precision,
            channels_last=channels_last,
        ):
            pass

    return scan


def lpc_training_step(*, channels_last: bool, bfloat16: bool):
    """A closure running one ``lite`` multi-view LPC training step (batch 32, 64 px)."""
    torch.manual_seed(0)
    model = build_classifier("multiview", width="lite", patch_size=64, pretrained=False)
    model = model.train().to(memory_format=_layout(channels_last))
    patches = torch.rand(32, *model.spec.shape)
    targets = (torch.arange(32) % 2).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with _autocast(bfloat16):
            logits = model(patches)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


WORKLOADS = {
    "LPG train step": (lpg_training_step, 3),
    "LPG scan (24 slices)": (lpg_scan, 3),
    "LPC train step": (lpc_training_step, 5),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of the references")
    parser.add_argument("--profile", action="store_true", help="per-operator profile tables")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="time with the wall clock, or with this process's CPU time (a shared machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    bfloat16_native = torch.cpu._is_avx512_bf16_supported()
    print(
        f"{platform.processor() or platform.machine()}, {args.threads} threads, "
        f"{args.clock} clock, "
        f"torch {torch.__version__}, native bfloat16: {bfloat16_native}"
    )
    limits = {False: attainable(torch.float32, args.repeats, clock)}
    if bfloat16_native:
        limits[True] = attainable(torch.bfloat16, args.repeats, clock)
    for bfloat16, rates in limits.items():
        names = ", ".join(f"{name} {rate:.1f}" for name, rate in rates.items())
        print(f"attainable {'bfloat16' if bfloat16 else 'float32'} GFLOP/s: {names}")

    settings = [(False, False), (True, False)] + ([(True, True)] if bfloat16_native else [])
    print(
        f"\n{'workload':<22} {'setting':<14} {'GFLOP':>7} {'ms':>8} {'GFLOP/s':>8} "
        f"{'of matmul':>9} {'of conv':>8}"
    )
    for name, (make, repeats) in WORKLOADS.items():
        for channels_last, bfloat16 in settings:
            run = make(channels_last=channels_last, bfloat16=bfloat16)
            run()
            flops = _flops(run)
            seconds = _seconds(run, repeats=repeats, clock=clock)
            rate = flops / seconds / 1e9
            limit = limits[bfloat16]
            conv = limit["conv NHWC" if channels_last else "conv NCHW"]
            setting = f"{'NHWC' if channels_last else 'NCHW'} {'bf16' if bfloat16 else 'fp32'}"
            print(
                f"{name:<22} {setting:<14} {flops / 1e9:7.2f} {seconds * 1e3:8.1f} "
                f"{rate:8.1f} {rate / limit['matmul']:9.0%} {rate / conv:8.0%}"
            )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, (make, _) in WORKLOADS.items():
            run = make(channels_last=True, bfloat16=False)
            run()
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                run()
            print(f"\n{name} (NHWC fp32): self CPU time per operator")
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
