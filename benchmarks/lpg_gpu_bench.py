"""LPG on a GPU: whole-volume scanning and training of the ``paper`` MSCN at 512 px.

Issue 6's GPU target: >= 1,000 slices/s on one H100 (DeepLesion's ~928,000 slices
in under 20 minutes). Measured here, all in one run on the same random volumes
(512 x 512 slices at 0.8 mm, so the network sees the full 512 px canvas):

1. scanning (``detect_volume``: device-side input pipeline, network, decoding to
   boxes in original pixels) for float32 / bfloat16 x NCHW / NHWC x batch sizes,
   shared-feature path, 2 mm slices; slices/s and peak GPU memory;
2. naive versus shared-feature path at the best setting, 2 mm and 5 mm slices;
   eager versus ``torch.compile``'d (inductor, fixed batch rows) scanning at the
   best setting and batch 64 / 128, with the compile time;
3. network FLOPs per target slice (torch's FLOP counter) and the achieved rate;
4. bfloat16 against float32 outputs (max heatmap probability difference);
5. training steps/s and peak GPU memory at several batch sizes (bf16, NHWC),
   the CPU time to build one batch (the input pipeline of training runs on
   the CPU, in data-loader workers), which bounds the step rate, and the share
   of the training's wall time in which the GPU ran no kernel.

    python benchmarks/lpg_gpu_bench.py [--slices 96] [--budget-s 240] [--out FILE.jsonl]

``--device cpu --side 64 --slices 12 --compile-backend eager`` is a quick dry run
of the script itself (memory columns then read 0). Each figure is printed as a markdown row as soon
as it is measured and, with ``--out``, appended as a JSON line. Parts that would
start after ``--budget-s`` seconds are skipped (and say so).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

#: DeepLesion's slice count, for the whole-dataset estimate.
DEEPLESION_SLICES = 928_000


class Report:
    """Prints rows and keeps the JSON lines."""

    def __init__(self, out: str | None, budget_s: float):
        self.out, self.budget_s, self.started = out, budget_s, time.monotonic()

    def time_left(self, part: str) -> bool:
        elapsed = time.monotonic() - self.started
        if elapsed > self.budget_s:
            print(f"\n(skipped {part}: {elapsed:.0f} s used of the {self.budget_s:.0f} s budget)")
            return False
        return True

    def record(self, kind: str, **values) -> None:
        if self.out:
            with open(self.out, "a") as handle:
                handle.write(json.dumps({"kind": kind, **values}) + "\n")


class Device:
    """The benchmark's device, its memory statistics, and the test volumes' size."""

    def __init__(self, name: str, side: int):
        import torch

        self.name, self.side, self.cuda = name, side, name.startswith("cuda")
        self.torch = torch

    def synchronize(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        return self.torch.cuda.max_memory_allocated() / 2**30 if self.cuda else 0.0

    def volume(self, slices: int, slice_mm: float, seed: int = 0):
        """Random HU slices of ``side`` pixels at 0.8 mm (the canvas is ``side`` px)."""
        from napari_lesion_harvest.io.volume import CTVolume

        rng = np.random.default_rng(seed)
        hu = rng.normal(0, 400, (slices, self.side, self.side)).astype(np.int16)
        return CTVolume.from_array(f"bench{slice_mm}", hu, (slice_mm, 0.8, 0.8))

    def config(self):
        from napari_lesion_harvest.lpg.config import get_config

        return get_config("paper", max_side=self.side)

    def model(self):
        from napari_lesion_harvest.lpg.model import build_model

        self.torch.manual_seed(0)
        return build_model(self.config(), pretrained=False).to(self.name).eval()


def scan_rate(device: Device, model, volume, *, repeats=2, **options) -> tuple[float, float]:
    """Best slices/s of ``detect_volume`` over ``repeats`` runs, and peak GPU GiB."""
    from napari_lesion_harvest.lpg.infer import detect_volume

    detect_volume(model, volume, slices=range(min(volume.num_slices, 48)), **options)
    device.synchronize()
    device.reset_peak()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        detect_volume(model, volume, **options)
        device.synchronize()
        best = max(best, volume.num_slices / (time.perf_counter() - start))
    return best, device.peak_gib()


def sweep(device: Device, model, report: Report, slices: int) -> dict:
    """Precision x layout x batch on the shared path at 2 mm; returns the best setting."""
    volume = device.volume(slices, 2.0)
    print("\n| precision | layout | batch | slices/s | peak GiB |\n|---|---|---|---|---|")
    best = {"rate": 0.0}
    for precision in ("float32", "bfloat16"):
        for channels_last in (False, True):
            for batch in (16, 32, 64):
                if not report.time_left("the rest of the sweep"):
                    return best
                rate, gib = scan_rate(
                    device,
                    model,
                    volume,
                    batch_size=batch,
                    precision=precision,
                    channels_last=channels_last,
                )
                model.to(memory_format=device.torch.contiguous_format)
                layout = "NHWC" if channels_last else "NCHW"
                print(f"| {precision} | {layout} | {batch} | {rate:.0f} | {gib:.1f} |", flush=True)
                report.record(
                    "scan", precision=precision, layout=layout, batch=batch, rate=rate, gib=gib
                )
                if rate > best["rate"]:
                    best = {
                        "rate": rate,
                        "batch_size": batch,
                        "precision": precision,
                        "channels_last": channels_last,
                    }
    return best


def naive_versus_shared(device: Device, model, report: Report, slices: int, best: dict):
    settings = {k: v for k, v in best.items() if k != "rate"}
    print(f"\nbest setting: {settings}")
    print("| slice mm | naive slices/s | shared slices/s | ratio |\n|---|---|---|---|")
    for slice_mm in (2.0, 5.0):
        if not report.time_left(f"naive vs shared at {slice_mm} mm"):
            return
        volume = device.volume(slices, slice_mm, seed=1)
        naive, _ = scan_rate(device, model, volume, shared=False, **settings)
        shared, _ = scan_rate(device, model, volume, shared=True, **settings)
        print(f"| {slice_mm:g} | {naive:.0f} | {shared:.0f} | {shared / naive:.2f}x |", flush=True)
        report.record("paths", slice_mm=slice_mm, naive=naive, shared=shared, **settings)


def compiled_versus_eager(
    device: Device, model, report: Report, slices: int, best: dict, backend: str
):
    """Eager and ``torch.compile``'d (``backend``) scanning at the best setting, several
    batch sizes, on the same volume in one run; the compile time apart."""
    from napari_lesion_harvest.lpg.infer import detect_volume

    settings = {k: v for k, v in best.items() if k not in ("rate", "batch_size")}
    volume = device.volume(slices, 2.0, seed=5)
    print("\n| batch | eager slices/s | compiled slices/s | ratio | compile s |")
    print("|---|---|---|---|---|")
    for batch in sorted({best["batch_size"], 64, 128}):
        if not report.time_left(f"compiled scan at batch {batch}"):
            return
        eager, _ = scan_rate(device, model, volume, batch_size=batch, **settings)
        start = time.perf_counter()
        detect_volume(
            model,
            volume,
            slices=range(batch),
            batch_size=batch,
            compile_backend=backend,
            **settings,
        )
        device.synchronize()
        compile_s = time.perf_counter() - start
        compiled, gib = scan_rate(
            device, model, volume, batch_size=batch, compile_backend=backend, **settings
        )
        model.to(memory_format=device.torch.contiguous_format)
        print(
            f"| {batch} | {eager:.0f} | {compiled:.0f} | {compiled / eager:.2f}x | "
            f"{compile_s:.0f} |",
            flush=True,
        )
        report.record(
            "compiled",
            batch=batch,
            eager=eager,
            compiled=compiled,
            compile_s=compile_s,
            gib=gib,
            **settings,
        )


def flops_per_slice(device: Device, model) -> dict[str, float]:
    """Network FLOPs per target slice (naive and shared, 2 mm, 40 slices)."""
    from torch.utils.flop_counter import FlopCounterMode

    from napari_lesion_harvest.lpg.infer import predict_volume

    volume = device.volume(40, 2.0, seed=2)
    result = {}
    for shared in (False, True):
        counter = FlopCounterMode(display=False)
        with counter:
            for _ in predict_volume(
                model, volume, shared=shared, batch_size=8, precision="float32"
            ):
                pass
        result["shared" if shared else "naive"] = counter.get_total_flops() / volume.num_slices
    return result


def precision_agreement(device: Device, model, slices: int) -> float:
    """Max |p_bf16 - p_fp32| of heatmap probabilities over a volume."""
    import torch

    from napari_lesion_harvest.lpg.infer import predict_volume

    volume = device.volume(slices, 2.0, seed=3)
    worst = 0.0
    pairs = zip(
        predict_volume(model, volume, batch_size=16, precision="float32"),
        predict_volume(model, volume, batch_size=16, precision="bfloat16"),
        strict=True,
    )
    for (_, exact, _), (_, rounded, _) in pairs:
        difference = torch.sigmoid(exact["heatmap"].float()) - torch.sigmoid(
            rounded["heatmap"].float()
        )
        worst = max(worst, difference.abs().max().item())
    return worst


def training(device: Device, report: Report, batches: tuple[int, ...], steps: int) -> None:
    from napari_lesion_harvest.lpg.data import LPGSample, collate, make_example
    from napari_lesion_harvest.lpg.train import LPGTrainOptions, train_lpg

    config = device.config()
    canvas = (config.max_side, config.max_side)
    volume = device.volume(24, 2.0, seed=4)
    box = np.array([[0.4, 0.4, 0.5, 0.48]]) * device.side
    samples = [LPGSample(volume, z, box) for z in range(4, 20)]
    print(
        f"\ntraining, paper {device.side} px (bf16 autocast and NHWC on CUDA), AdamW\n"
        "| batch | steps/s | slices/s | peak GiB | CPU s to build one batch | GPU idle |\n"
        "|---|---|---|---|---|---|"
    )
    for batch in batches:
        if not report.time_left(f"training at batch {batch}"):
            return
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        collate(
            [
                make_example(samples[k % 16], config, canvas_shape=canvas, rng=rng)
                for k in range(batch)
            ]
        )
        build_s = time.perf_counter() - start
        device.reset_peak()
        times = []
        train_lpg(
            samples,
            config=config,
            options=LPGTrainOptions(steps=steps + 2, batch_size=batch, warmup_steps=1),
            device=device.name,
            pretrained=False,
            progress=lambda step, total, parts, times=times: times.append(time.perf_counter()),
        )
        rate = (len(times) - 2) / (times[-1] - times[1])
        gib = device.peak_gib()
        idle = gpu_idle_fraction(device, samples, config, batch, steps)
        print(
            f"| {batch} | {rate:.2f} | {rate * batch:.0f} | {gib:.1f} | {build_s:.2f} | "
            f"{idle:.0%} |",
            flush=True,
        )
        report.record(
            "train", batch=batch, steps_per_s=rate, gib=gib, build_s=build_s, gpu_idle=idle
        )


def gpu_idle_fraction(device: Device, samples, config, batch: int, steps: int) -> float:
    """The share of ``steps`` training steps' wall time in which no GPU kernel ran
    (torch's profiler: kernel time summed over the run; NaN on the CPU)."""
    from torch.profiler import ProfilerActivity, profile

    from napari_lesion_harvest.lpg.train import LPGTrainOptions, train_lpg

    if not device.cuda:
        return float("nan")
    options = LPGTrainOptions(steps=steps, batch_size=batch, warmup_steps=1)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        start = time.perf_counter()
        train_lpg(samples, config=config, options=options, device=device.name, pretrained=False)
        device.synchronize()
        wall_us = (time.perf_counter() - start) * 1e6
    kernel_us = sum(event.self_device_time_total for event in profiler.key_averages())
    return max(0.0, 1.0 - kernel_us / wall_us)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=96, help="slices per test volume")
    parser.add_argument("--budget-s", type=float, default=240.0)
    parser.add_argument("--train-steps", type=int, default=6)
    parser.add_argument("--train-batches", default="8,16,32")
    parser.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend of the scan"
    )
    parser.add_argument("--out", help="append JSON lines here")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--side", type=int, default=512, help="slice and canvas pixels")
    args = parser.parse_args()

    import torch

    device = Device(args.device, args.side)
    if device.cuda:
        if not torch.cuda.is_available():
            raise SystemExit("lpg_gpu_bench: no CUDA GPU here (try --device cpu for a dry run)")
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name()
    else:
        name = "CPU"
    print(f"{name}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    report = Report(args.out, args.budget_s)
    report.record("device", name=name, torch=torch.__version__, side=args.side)
    model = device.model()

    best = sweep(device, model, report, args.slices)
    if best["rate"]:
        minutes = DEEPLESION_SLICES / best["rate"] / 60
        print(
            f"\nDeepLesion ({DEEPLESION_SLICES} slices) at {best['rate']:.0f} slices/s: "
            f"{minutes:.1f} min on this device"
        )
        naive_versus_shared(device, model, report, args.slices, best)
        compiled_versus_eager(device, model, report, args.slices, best, args.compile_backend)
    if report.time_left("FLOP count"):
        flops = flops_per_slice(device, model)
        achieved = flops["shared"] * best["rate"] / 1e12
        print(
            f"\nnetwork GFLOP per slice: naive {flops['naive'] / 1e9:.0f}, shared "
            f"{flops['shared'] / 1e9:.0f}; achieved at the best rate: {achieved:.0f} TFLOP/s"
        )
        report.record("flops", **flops, achieved_tflops=achieved)
    if report.time_left("precision agreement"):
        worst = precision_agreement(device, model, 24)
        print(f"bf16 vs fp32 heatmap probability, max |difference|: {worst:.4f}")
        report.record("agreement", max_probability_difference=worst)
    del model
    if device.cuda:
        torch.cuda.empty_cache()
    batches = tuple(int(b) for b in args.train_batches.split(","))
    training(device, report, batches, args.train_steps)


if __name__ == "__main__":
    main()
