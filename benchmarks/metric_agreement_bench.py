"""Fig. 4 on the phantom: do P3D and the incomplete 2D RECIST metric track the true 3D IoU?

The phantom knows every lesion's per-slice boxes, so the paper's gold-standard
3D IoU metric (Sec. IV-B, IoU >= 0.33) can be computed exactly, next to the
P3D metric (complete RECIST marks, IoU >= 0.5 on the marked slice) and the
incomplete 2D RECIST metric used before the paper (original marks only,
marked slices only, false positives per marked slice).

Detectors: one lite LPG trained on the training volumes' full per-slice truth
boxes, snapshotted at several step counts of one run (one cosine schedule
over the longest length), each run on the held-out volumes and stacked into
3D proposals at several score thresholds ``t_G`` (stack_proposals +
suppress_duplicates, as a harvest round's scan stage does). For every
detector, the FROC sensitivities at 0.125 .. 16 FPs are collected under the
three metrics; like Fig. 4, the Pearson correlation of P3D vs 3D and of 2D vs
3D is taken over all (detector, FP rate) points.

Also (issue 7): for each held-out lesion, the highest-scoring proposal that
hits its complete RECIST mark (P3D rule) is compared with the lesion's true
slice range; the mean absolute z error of the two ends is reported, in slices.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/metric_agreement_bench.py \\
        --plot docs/images/fig4_metric_agreement.png
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_lesion_harvest.evaluation.froc import FROC_FP_RATES
from napari_lesion_harvest.evaluation.matching import match_p3d
from napari_lesion_harvest.evaluation.report import evaluate
from napari_lesion_harvest.evaluation.tables import BoxTruth3D, ProposalTable, RecistTruth
from napari_lesion_harvest.geometry import Proposal3D

METRICS = ("3d", "p3d", "2d")

#: Simulated detectors: (missed lesion fraction, box jitter px, z-end error sd in slices,
#: false positives per volume), from good to poor, mixing in-plane and z errors.
SIMULATED = (
    (0.1, 0.5, 0.5, 2),
    (0.2, 1.0, 1.0, 4),
    (0.3, 0.5, 3.0, 3),
    (0.3, 1.5, 2.0, 6),
    (0.2, 3.0, 1.0, 10),
    (0.5, 1.0, 4.0, 4),
    (0.4, 2.0, 3.0, 8),
    (0.6, 2.5, 2.0, 12),
)


def build_dataset(folder: Path, *, volumes: int, seed: int, size: int):
    """Generate the phantom dataset (DeepLesion layout with full truth) in ``folder``."""
    from napari_lesion_harvest.synthetic.dataset import generate_dataset
    from napari_lesion_harvest.synthetic.phantom import PhantomConfig

    return generate_dataset(folder, volumes=volumes, seed=seed, config=PhantomConfig(size=size))


def training_samples(volumes: dict, lesions: dict[str, list[Proposal3D]]) -> list:
    """One LPGSample per slice of a training volume that shows a lesion, with every
    lesion box of that slice (the full per-slice truth, not just the marks)."""
    from napari_lesion_harvest.lpg.data import LPGSample

    samples = []
    for volume_id, volume in volumes.items():
        per_slice: dict[int, list[np.ndarray]] = {}
        for lesion in lesions.get(volume_id, []):
            for z, box in zip(lesion.slices, lesion.boxes, strict=True):
                per_slice.setdefault(int(z), []).append(box)
        samples.extend(LPGSample(volume, z, np.array(boxes)) for z, boxes in per_slice.items())
    return samples


def truths(test_ids: list[str], dataset, lesions: dict[str, list[Proposal3D]]):
    """The three truths of the test set: 3D boxes, complete marks, original marks."""
    from napari_lesion_harvest.io.annotations import read_marks
    from napari_lesion_harvest.io.deeplesion import read_dl_info

    complete: dict[str, list] = {v: [] for v in test_ids}
    for record in read_marks(dataset.truth_marks, strict=True)[0]:
        if record.volume_id in complete:
            complete[record.volume_id].append(record.mark)
    original: dict[str, list] = {v: [] for v in test_ids}
    for volume_id, rows in read_dl_info(dataset.dl_info, strict=True).by_volume().items():
        if volume_id in original:
            original[volume_id] = [row.mark for row in rows]
    boxes_3d = {
        v: np.array([p.box_3d for p in lesions.get(v, [])]).reshape(-1, 6) for v in test_ids
    }
    return {
        "3d": BoxTruth3D.from_mapping(boxes_3d),
        "p3d": RecistTruth.from_mapping(complete),
        "2d": RecistTruth.from_mapping(original),
    }


def train_until(samples, config, options, checkpoint: Path, *, start: int, stop: int):
    """Train (resuming from ``checkpoint`` at step ``start``) until step ``stop`` of the
    run's schedule, leaving the checkpoint there for the next snapshot."""
    from napari_lesion_harvest.lpg.train import train_lpg

    step = {"now": start}
    return train_lpg(
        samples,
        config=config,
        options=options,
        checkpoint_path=checkpoint,
        pretrained=False,
        should_stop=lambda: step["now"] >= stop,
        progress=lambda now, total, parts: step.update(now=now),
    )


def detect(model, volumes: dict, *, min_score: float) -> dict[str, dict]:
    """Per test volume, ``{z: (boxes (N, 4), scores (N,))}`` of non-degenerate boxes."""
    from napari_lesion_harvest.lpg.infer import detect_volume

    found = {}
    for volume_id, volume in volumes.items():
        per_slice = {}
        for d in detect_volume(model, volume, min_score=min_score):
            proper = (d.boxes[:, 2] > d.boxes[:, 0]) & (d.boxes[:, 3] > d.boxes[:, 1])
            per_slice[d.z] = (d.boxes[proper], d.scores[proper])
        found[volume_id] = per_slice
    return found


def stack(detections: dict[str, dict], *, score_threshold: float) -> dict[str, list]:
    """3D proposals per volume, as a harvest round's scan stage makes them."""
    from napari_lesion_harvest.tracking import stack_proposals
    from napari_lesion_harvest.tracking.suppression import suppress_duplicates

    return {
        v: suppress_duplicates(stack_proposals(per_slice, score_threshold=score_threshold))
        for v, per_slice in detections.items()
    }


def simulate_detector(
    lesions: dict[str, list[Proposal3D]],
    shapes: dict[str, tuple[int, int, int]],
    *,
    miss: float,
    jitter_px: float,
    z_error: float,
    fp_per_volume: float,
    seed: int,
) -> dict[str, list[Proposal3D]]:
    """A detector of known quality made from the 3D truth (no LPG involved).

    Each lesion is missed with probability ``miss``; otherwise its slice range
    ends move by ``round(N(0, z_error))`` slices each, every slice gets the
    truth box of the nearest lesion slice with ``N(0, jitter_px)`` noise per
    coordinate, and the proposal scores ``N(0.6, 0.2)`` (per slice: that,
    falling off by up to 30% towards the ends). ``Poisson(fp_per_volume)``
    false positives per volume: random 6-20 px boxes on 1-8 slices scoring
    ``N(0.35, 0.2)``. ``shapes`` gives each volume's ``(Z, Y, X)``.
    """
    rng = np.random.default_rng(seed)
    found: dict[str, list[Proposal3D]] = {}
    for volume_id, (depth, height, width) in shapes.items():
        proposals = []
        for lesion in lesions.get(volume_id, []):
            if rng.random() < miss:
                continue
            ends = lesion.slices[[0, -1]] + np.round(rng.normal(0, z_error, 2)).astype(int)
            z1, z2 = np.clip(np.sort(ends), 0, depth - 1)
            slices = np.arange(z1, z2 + 1)
            nearest = np.abs(slices[:, None] - lesion.slices[None, :]).argmin(axis=1)
            boxes = lesion.boxes[nearest] + rng.normal(0, jitter_px, (len(slices), 4))
            proposals.append(_scored(slices, boxes, rng.normal(0.6, 0.2), (width, height)))
        for _ in range(rng.poisson(fp_per_volume)):
            size = rng.uniform(6, 20)
            x, y = rng.uniform(0, width - size), rng.uniform(0, height - size)
            z1 = int(rng.integers(0, depth))
            slices = np.arange(z1, min(z1 + int(rng.integers(1, 9)), depth))
            boxes = np.tile([x, y, x + size, y + size], (len(slices), 1))
            proposals.append(_scored(slices, boxes, rng.normal(0.35, 0.2), (width, height)))
        found[volume_id] = proposals
    return found


def _scored(slices: np.ndarray, boxes: np.ndarray, score: float, size_xy) -> Proposal3D:
    """A proposal with boxes kept inside the image and at least 1 px wide, and per-slice
    scores falling off from ``score`` (clipped to [0.01, 1]) by up to 30% at the ends."""
    boxes = np.clip(boxes, 0, np.tile(np.asarray(size_xy) - 1, 2))
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    centre, half = (slices[0] + slices[-1]) / 2, max((slices[-1] - slices[0]) / 2, 1)
    peak = float(np.clip(score, 0.01, 1.0))
    return Proposal3D(slices, boxes, peak * (1 - 0.3 * np.abs(slices - centre) / half))


def recall_points(truth: dict, proposals: dict, test_ids: list[str], **labels) -> list[dict]:
    """FROC sensitivities of one detector under every metric, one dict per FP rate."""
    table = ProposalTable.from_proposals(proposals, test_ids)
    sens = {m: evaluate(truth[m], table, metric=m).sensitivities for m in METRICS}
    return [
        labels | {"fp": fp} | {m: float(sens[m][k]) for m in METRICS}
        for k, fp in enumerate(FROC_FP_RATES)
    ]


def z_extent_errors(
    proposals: dict[str, list[Proposal3D]],
    complete: RecistTruth,
    lesions: dict[str, list[Proposal3D]],
) -> dict:
    """Slice-range errors of the best proposal hitting each lesion's complete mark.

    The complete marks and the lesions are in the same order per volume (both
    are the generator's lesion order), checked by the mark's slice.
    """
    table = ProposalTable.from_proposals(proposals, complete.volume_ids)
    matches = match_p3d(complete, table)
    flat = [p for v in complete.volume_ids for p in proposals.get(v, [])]
    truth_flat = [p for v in complete.volume_ids for p in lesions.get(v, [])]
    if len(truth_flat) != complete.n_lesions:
        raise ValueError("complete marks and 3D lesions differ in count")
    best: dict[int, int] = {}
    for det, les in zip(matches.hit_detection, matches.hit_lesion, strict=True):
        if les not in best or matches.scores[det] > matches.scores[best[les]]:
            best[int(les)] = int(det)
    start_err, end_err, length_diff = [], [], []
    for les, det in best.items():
        truth, found = truth_flat[les], flat[det]
        if truth.meta.get("recist_z", complete.z[les]) != complete.z[les]:
            raise ValueError(f"lesion {les}: mark slice differs from the 3D lesion's")
        start_err.append(int(found.slices.min()) - int(truth.slices.min()))
        end_err.append(int(found.slices.max()) - int(truth.slices.max()))
        length_diff.append(len(np.unique(found.slices)) - len(truth.slices))
    ends = np.abs(np.r_[start_err, end_err])
    return {
        "lesions": complete.n_lesions,
        "matched": len(best),
        "mean_abs_z_error": float(ends.mean()) if ends.size else float("nan"),
        "mean_abs_start_error": float(np.abs(start_err).mean()) if best else float("nan"),
        "mean_abs_end_error": float(np.abs(end_err).mean()) if best else float("nan"),
        "mean_signed_length_error": float(np.mean(length_diff)) if best else float("nan"),
        "exact_ends_fraction": float(np.mean(ends == 0)) if ends.size else float("nan"),
    }


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation coefficient of two equally long samples."""
    return float(np.corrcoef(x, y)[0, 1])


def plot(points: list[dict], correlations: dict[str, dict[str, float]], out: Path) -> None:
    """Fig. 4 layout: recall under P3D (a) and 2D (b) against recall under 3D IoU,
    LPG snapshots as circles, simulated detectors as triangles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(p["label"] for p in points))
    shades = plt.get_cmap("turbo")(np.linspace(0.05, 0.95, len(labels)))
    colours = dict(zip(labels, shades, strict=True))
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.2), sharex=True, sharey=True)
    names = {"p3d": "P3D IoU", "2d": "incomplete 2D RECIST"}
    for ax, metric, panel in zip(axes, ("p3d", "2d"), "ab", strict=True):
        for label in labels:
            mine = [p for p in points if p["label"] == label]
            ax.plot(
                [p["3d"] for p in mine],
                [p[metric] for p in mine],
                "o-" if mine[0]["detector"] == "lpg" else "^--",
                color=colours[label],
                markersize=4,
                linewidth=0.8,
                label=label,
            )
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_xlim(-0.02, 1)
        ax.set_ylim(-0.02, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("recall, 3D IoU >= 0.33 (gold standard)")
        ax.set_ylabel(f"recall, {names[metric]}")
        r = "  ".join(f"{group}: {values[metric]:.2f}" for group, values in correlations.items())
        ax.set_title(f"({panel}) {names[metric]}\nPearson r  {r}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(
        "Phantom test volumes: FROC recalls at 0.125-16 FPs per detector under three metrics",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-volumes", type=int, default=16)
    parser.add_argument("--test-volumes", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="phantom in-plane pixels")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--steps", default="100,250,500", help="snapshot step counts")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--thresholds", default="0.1,0.3,0.5", help="t_G values to stack at")
    parser.add_argument("--skip-lpg", action="store_true", help="simulated detectors only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, help="dataset/checkpoint folder (default: temp)")
    parser.add_argument("--plot", type=Path, help="save the Fig. 4 scatter here")
    parser.add_argument("--json", type=Path, help="save all figures here")
    args = parser.parse_args()

    import torch

    from napari_lesion_harvest.io.annotations import read_lesions
    from napari_lesion_harvest.io.deeplesion import DeepLesionDataset
    from napari_lesion_harvest.lpg.config import get_config
    from napari_lesion_harvest.lpg.train import LPGTrainOptions

    torch.set_num_threads(args.threads)
    snapshots = sorted(int(s) for s in args.steps.split(","))
    thresholds = sorted(float(t) for t in args.thresholds.split(","))
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        started = time.perf_counter()
        volumes_total = args.train_volumes + args.test_volumes
        dataset = build_dataset(
            work / "phantom", volumes=volumes_total, seed=args.seed, size=args.size
        )
        lesions = read_lesions(dataset.truth_lesions, strict=True)[0]
        opened = DeepLesionDataset(dataset.root / "Images_png", dataset.dl_info)
        missing = set(dataset.volume_ids) - set(opened.volume_ids)
        if missing:
            raise SystemExit(f"volumes without an original mark cannot be opened: {missing}")
        train_ids = dataset.volume_ids[: args.train_volumes]
        test_ids = dataset.volume_ids[args.train_volumes :]
        train_volumes = {v: opened.open(v) for v in train_ids}
        test_volumes = {v: opened.open(v) for v in test_ids}
        truth = truths(test_ids, dataset, lesions)
        samples = training_samples(train_volumes, lesions)
        print(
            f"phantom {args.size} px seed {args.seed}: {len(train_ids)} training volumes "
            f"({len(samples)} lesion slices), {len(test_ids)} test volumes "
            f"({truth['3d'].n_lesions} lesions, {truth['2d'].n_lesions} original marks, "
            f"{sum(v.num_slices for v in test_volumes.values())} slices); "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )

        options = LPGTrainOptions(
            steps=snapshots[-1], batch_size=args.batch, learning_rate=1e-3, seed=args.seed
        )
        checkpoint = work / "lpg.pt"
        config = get_config("lite", max_side=args.size)
        points, z_errors, timings, done = [], [], [], 0
        shapes = {v: volume.shape for v, volume in test_volumes.items()}
        for k, (miss, jitter, z_sd, fps) in enumerate(SIMULATED):
            simulated = simulate_detector(
                lesions,
                shapes,
                miss=miss,
                jitter_px=jitter,
                z_error=z_sd,
                fp_per_volume=fps,
                seed=args.seed * 100 + k,
            )
            label = f"sim miss {miss:g}, jitter {jitter:g} px, z sd {z_sd:g}, {fps} FP/vol"
            points.extend(recall_points(truth, simulated, test_ids, detector="sim", label=label))
        for target in [] if args.skip_lpg else snapshots:
            t0 = time.perf_counter()
            result = train_until(samples, config, options, checkpoint, start=done, stop=target)
            done = result.step
            t1 = time.perf_counter()
            detections = detect(result.model, test_volumes, min_score=thresholds[0])
            t2 = time.perf_counter()
            timings.append({"steps": result.step, "train_s": t1 - t0, "detect_s": t2 - t1})
            loss = result.history[-1]["total"] if result.history else float("nan")
            print(
                f"snapshot {result.step} steps (last loss {loss:.3f}): "
                f"train {t1 - t0:.1f} s, detect {t2 - t1:.1f} s",
                flush=True,
            )
            for t_g in thresholds:
                proposals = stack(detections, score_threshold=t_g)
                mine = recall_points(
                    truth,
                    proposals,
                    test_ids,
                    detector="lpg",
                    label=f"LPG {result.step} steps, t_G {t_g:g}",
                )
                points.extend(mine)
                errors = z_extent_errors(proposals, truth["p3d"], lesions)
                z_errors.append({"steps": result.step, "t_g": t_g} | errors)
                print(
                    f"  t_G {t_g:g}: "
                    + "  ".join(f"{m} mean {np.mean([p[m] for p in mine]):.3f}" for m in METRICS)
                    + f"  | z error {errors['mean_abs_z_error']:.2f} slices "
                    f"({errors['matched']}/{errors['lesions']} lesions matched)",
                    flush=True,
                )

    groups = {"lpg": "LPG snapshots", "sim": "simulated detectors", "all": "all together"}
    correlations: dict[str, dict[str, float]] = {}
    print("\nFROC sensitivity @ FPs " + " ".join(f"{f:g}" for f in FROC_FP_RATES))
    print("| detector | metric | " + " | ".join(f"{f:g}" for f in FROC_FP_RATES) + " |")
    print("|---|---|" + "---|" * len(FROC_FP_RATES))
    for label in dict.fromkeys(p["label"] for p in points):
        mine = [p for p in points if p["label"] == label]
        for m in METRICS:
            print(f"| {label} | {m} | " + " | ".join(f"{p[m]:.3f}" for p in mine) + " |")
    print("\nPearson r against the 3D IoU recall (mean |recall - 3D recall|):")
    for group, name in groups.items():
        mine = [p for p in points if group == "all" or p["detector"] == group]
        if not mine:
            continue
        recall = {m: np.array([p[m] for p in mine]) for m in METRICS}
        correlations[group] = {m: pearson(recall["3d"], recall[m]) for m in ("p3d", "2d")}
        gaps = {m: float(np.mean(np.abs(recall[m] - recall["3d"]))) for m in ("p3d", "2d")}
        print(
            f"  {name} ({len(mine)} points): "
            + ", ".join(f"{m} r = {correlations[group][m]:.3f} ({gaps[m]:.3f})" for m in gaps)
        )
    print("\nz extent of the best proposal hitting each lesion's complete mark (P3D rule):")
    print(
        "| steps | t_G | matched / lesions | mean abs z error (ends) | start | end | "
        "mean length error | exact ends |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for e in z_errors:
        print(
            f"| {e['steps']} | {e['t_g']:g} | {e['matched']}/{e['lesions']} | "
            f"{e['mean_abs_z_error']:.2f} | {e['mean_abs_start_error']:.2f} | "
            f"{e['mean_abs_end_error']:.2f} | {e['mean_signed_length_error']:+.2f} | "
            f"{e['exact_ends_fraction']:.2f} |"
        )
    if args.plot:
        plot(points, correlations, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "points": points,
                    "pearson": correlations,
                    "z_errors": z_errors,
                    "timings": timings,
                    "args": {k: str(v) for k, v in vars(args).items()},
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
