"""Harvest quality with intervals: rounds on one phantom, several training seeds.

Issue 24's quality benchmark. One phantom dataset (``lesion-harvest synth``) is
synthesised once under ``OUT/dataset``; for every training seed a project
``OUT/seed-K/project`` imports it (V_M and V_H_test fully annotated, V_H_test
flagged complete and held out) and runs up to ``--rounds`` harvest rounds with the
``lite`` configuration as the demo sets it for a CPU (``demo_config``) and any
``--set FIELD=JSON`` changes. Then, from the stored projects alone, per round and
seed: Table I rows on V_H_test (cumulative and per round), the s_g-only ranking
beside s_gc, the ceiling (recall of every proposal), stage times, and 95%
bootstrap intervals (V_H_test volumes and training seeds resampled) for R@90P,
AP and the gain of R@90P over the original marks. Written to
``OUT/quality.json`` and ``OUT/quality.png``.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/quality_bench.py --out DIR
[--seeds 0 1 2] [--set FIELD=JSON ...]``. Re-running with the same ``--out``
reuses the dataset, skips the seeds whose run finished, resumes an unfinished one,
and recomputes the report; ``--report-only`` runs nothing and reports the finished
seeds (the phantom, preset and changes are read from ``OUT``).
``tools/quality_compare.py A/quality.json B/quality.json`` gives the paired
difference of two runs (e.g. B with ``--pretrain-steps N`` or ``--pretrain-minutes M``:
each seed's LPG trunk, or with ``--pretrain-network lpc|both`` the LPC's trunks too,
pretrained on the project's training volumes before round 1; ``--pretrain-pretext``
chooses what the LPG's learns from).
Protocol and figures: ``docs/experiments/quality-benchmark.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from harvest_bench import StageClock

from napari_lesion_harvest.harvest.config_overrides import add_set_option, with_set_fields
from napari_lesion_harvest.harvest.demo import demo_config, import_demo_project
from napari_lesion_harvest.harvest.quality import (
    false_positive_totals,
    format_summary,
    over_seeds,
    project_rounds,
    save_plot,
    seed_weights,
    test_set,
)
from napari_lesion_harvest.harvest.stages import STAGES
from napari_lesion_harvest.lpg.config import PRETEXTS
from napari_lesion_harvest.progress import Cancelled
from napari_lesion_harvest.store import HarvestProject

#: The benchmark's phantom (see docs/experiments/quality-benchmark.md for why).
DEFAULTS = {
    "volumes": 180,
    "size": 128,
    "slices": (20, 36),
    "lesions": (2, 7),
    "fraction_m": 0.075,
    "fraction_h_test": 0.4,
}
#: What a seed's finished run writes beside its project.
RUN_FILE = "run.json"
#: The networks ``--pretrain-network`` pretrains.
NETWORKS = {"lpg": ("lpg",), "lpc": ("lpc",), "both": ("lpg", "lpc")}


def phantom_dataset(out: Path, args, parser) -> Path:
    """``OUT/dataset``: synthesised once; a dataset already there must have been made
    with the same phantom options (else the program ends naming the option)."""
    from napari_lesion_harvest.synthetic.dataset import generate_dataset
    from napari_lesion_harvest.synthetic.phantom import PhantomConfig

    root = out / "dataset"
    config = PhantomConfig(size=args.size, slices=tuple(args.slices), lesions=tuple(args.lesions))
    wanted = {"seed": args.phantom_seed, "volumes": args.volumes, "config": asdict(config)}
    manifest_path = root / "synth.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        stored = {"seed": manifest["seed"], "volumes": manifest["volumes"]}
        stored["config"] = json.loads(json.dumps(manifest["config"]))
        for key, value in json.loads(json.dumps(wanted)).items():
            if stored[key] != value:
                parser.error(f"{root} was made with {key} {stored[key]}, not {value}")
        return root
    print(f"synthesising {args.volumes} phantom volumes ({args.size} px) in {root}", flush=True)
    dataset = generate_dataset(
        root,
        volumes=args.volumes,
        seed=args.phantom_seed,
        config=config,
        split_fractions=(args.fraction_m, args.fraction_h_test, 0.0),
        workers=args.workers,
    )
    print(f"{dataset.lesion_count} lesions, {dataset.mark_count} with an original mark")
    return root


def run_seed(out: Path, dataset: Path, config, *, device: str, settings: dict) -> dict:
    """Run (or resume) the rounds of one training seed; ``OUT/seed-K/run.json`` (with
    ``settings``: the preset's name and the ``--set`` changes)."""
    from napari_lesion_harvest.harvest.cli import run_rounds_stoppably

    folder = out / f"seed-{config.seed}"
    run_file = folder / RUN_FILE
    if run_file.exists():
        return json.loads(run_file.read_text(encoding="utf-8"))
    project_dir = folder / "project"
    if not project_dir.exists():
        folder.mkdir(parents=True, exist_ok=True)
        import_demo_project(project_dir, dataset, say=print)
    clock = StageClock()
    load_before = os.getloadavg()
    started, cpu_started = time.monotonic(), time.process_time()
    with HarvestProject.open(project_dir) as project:
        done = sum(r.status == "done" for r in project.rounds.list())
        if (settings["pretrain_minutes"] or settings["pretrain_steps"]) and not done:
            for network in NETWORKS[settings["pretrain_network"]]:
                pretrain(
                    project,
                    config,
                    network=network,
                    pretext=settings["pretrain_pretext"] if network == "lpg" else None,
                    minutes=settings["pretrain_minutes"],
                    steps=settings["pretrain_steps"],
                    device=device,
                )
        pretrained = {n: project.pretrained.current(n) for n in NETWORKS["both"]}
        try:
            run_rounds_stoppably(
                project, config, rounds=config.max_rounds - done, device=device, progress=clock
            )
        except Cancelled:
            print("stopped; the unfinished round is left resumable (re-run to resume)")
            raise
    record = {
        "seed": config.seed,
        "config": settings["config"],
        "set": settings["set"],
        "rounds": config.max_rounds,
        "pretrain_minutes": settings["pretrain_minutes"],
        "pretrain_steps": settings["pretrain_steps"],
        "pretrain_network": settings["pretrain_network"],
        "pretrain_pretext": settings["pretrain_pretext"],
        "pretrained": {
            network: {"steps": weights.step, "minutes": weights.minutes}
            for network, weights in pretrained.items()
            if weights is not None
        },
        "resumed_after_rounds": done,
        "seconds": round(time.monotonic() - started, 1),
        # CPU seconds of this process: about the wall time of an unshared machine
        # (with OMP_NUM_THREADS=1), whatever else ran beside it
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "stage_seconds": {
            str(number): {stage: round(t, 1) for stage, t in stages.items()}
            for number, stages in clock.seconds().items()
        },
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "commit": _commit(),
    }
    run_file.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


def pretrain(
    project,
    config,
    *,
    network: str,
    pretext: str | None,
    minutes: float | None,
    steps: int | None,
    device: str,
) -> None:
    """Pretrain the project's ``network`` (``lesion-harvest pretrain --network``) up to
    ``steps`` steps (default: the command's), for at most what is left of ``minutes`` of
    training (default: no limit); the rounds then start from it."""
    from napari_lesion_harvest.harvest.pretraining import run_pretraining
    from napari_lesion_harvest.harvest.round import resolve_device
    from napari_lesion_harvest.progress import no_progress

    current = project.pretrained.current(network)
    left = None if minutes is None else minutes - (current.minutes if current else 0.0)
    if (left is None or left > 0) and not (current and steps and current.step >= steps):
        print(f"pretraining the {network}: {steps or 'default'} steps, {left} min", flush=True)
        run_pretraining(
            project,
            network=network,
            pretext=pretext,
            config=config,
            steps=steps,
            minutes=left,
            device=resolve_device(device),
            author="quality_bench",
            progress=no_progress,
        )


def _commit() -> str | None:
    """The code's git commit (None outside a checkout)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def report(out: Path, args, runs: dict[int, dict]) -> dict:
    """Figures of the finished seeds' projects; ``OUT/quality.json`` and ``quality.png``."""
    from napari_lesion_harvest.evaluation.bootstrap import volume_resamples

    projects = {seed: out / f"seed-{seed}" / "project" for seed in runs}
    truths = {seed: test_set(project)[0] for seed, project in projects.items()}
    volumes = list(next(iter(truths.values())))
    if any(list(truth) != volumes for truth in truths.values()):
        raise SystemExit("the seeds' projects differ in their V_H_test volumes (not one phantom)")
    counts = volume_resamples(len(volumes), args.resamples, seed=args.bootstrap_seed)
    seed_rounds = {seed: project_rounds(project, counts) for seed, project in projects.items()}
    weights = seed_weights(len(seed_rounds), args.resamples, seed=args.bootstrap_seed)
    rounds = run_settings(runs, args)["rounds"]
    summary, draws = over_seeds(seed_rounds, rounds, weights)
    baseline = next(iter(seed_rounds.values()))[0]["baseline"]
    n_lesions = sum(map(len, next(iter(truths.values())).values()))
    stage_seconds = {
        number: {
            stage: float(np.mean(times))
            for stage in STAGES
            if (times := [t for r in runs.values() if (t := _stage(r, number, stage)) is not None])
        }
        for number in range(1, rounds + 1)
    }
    result = {
        "protocol": {
            "command": "benchmarks/quality_bench.py " + " ".join(sys.argv[1:]),
            "phantom": phantom_of(out / "dataset"),
            **run_settings(runs, args),
            "seeds": sorted(runs),
            "bootstrap": {"resamples": args.resamples, "seed": args.bootstrap_seed},
        },
        "volumes": volumes,
        "n_lesions": n_lesions,
        "n_unmarked": n_lesions - round(baseline["recall"] * n_lesions),
        "baseline": baseline,
        "seeds": {
            str(seed): {
                "run": runs[seed],
                "rounds": [{k: v for k, v in e.items() if k != "draws"} for e in found],
            }
            for seed, found in seed_rounds.items()
        },
        "summary": summary,
        "false_positives": false_positive_totals(seed_rounds, rounds),
        "stage_seconds": {str(k): v for k, v in stage_seconds.items()},
        "draws": {
            str(number): {
                key: {stat: np.round(values, 5).tolist() for stat, values in by_stat.items()}
                for key, by_stat in by_key.items()
            }
            for number, by_key in draws.items()
        },
    }
    (out / "quality.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    save_plot(summary, stage_seconds, baseline, out / "quality.png")
    print(
        f"V_H_test: {len(volumes)} fully annotated volumes, {n_lesions} lesions, "
        f"{result['n_unmarked']} without an original mark; seeds {sorted(runs)}"
    )
    print(format_summary(summary, baseline))
    for total in result["false_positives"]:
        if total["seeds"]:
            print(
                f"round {total['round']} harvest on V_H_test, summed over {total['seeds']} seeds: "
                f"{total['harvested']:.0f} harvested, {total['observed']:.0f} false positives "
                f"(V_M let one expect {total['expected']:.1f})"
            )
    for number, stages in stage_seconds.items():
        if not stages:
            continue  # no seed ran this round
        print(
            f"round {number} stage minutes (mean over the seeds that ran it): "
            + ", ".join(f"{stage} {seconds / 60:.1f}" for stage, seconds in stages.items())
        )
    print(f"written: {out / 'quality.json'}, {out / 'quality.png'}")
    return result


def phantom_of(dataset: Path) -> dict:
    """The phantom's options and split sizes, from the dataset folder itself."""
    manifest = json.loads((dataset / "synth.json").read_text(encoding="utf-8"))
    split = json.loads((dataset / "split.json").read_text(encoding="utf-8"))
    return {
        "seed": manifest["seed"],
        "volumes": manifest["volumes"],
        "config": {k: manifest["config"][k] for k in ("size", "slices", "lesions")},
        "split": {part: len(ids) for part, ids in split.items()},
    }


def run_settings(runs: dict[int, dict], args) -> dict:
    """``config``, ``set`` and ``rounds`` the seeds ran with (as their run.json records
    them); the program ends when two seeds differ."""
    found = {}
    for name, default in (
        ("config", args.config),
        ("set", args.set),
        ("rounds", args.rounds),
        ("pretrain_minutes", args.pretrain_minutes),
        ("pretrain_steps", args.pretrain_steps),
        ("pretrain_network", args.pretrain_network),
        ("pretrain_pretext", args.pretrain_pretext),
    ):
        values = {json.dumps(run.get(name, default)) for run in runs.values()}
        if len(values) > 1:
            raise SystemExit(f"the seeds ran with different {name}: {sorted(values)}")
        found[name] = json.loads(values.pop())
    return found


def _stage(run: dict, number: int, stage: str) -> float | None:
    """Seconds of one stage of one round in a seed's run (None: not run, or an earlier run)."""
    return run["stage_seconds"].get(str(number), {}).get(stage)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="runs and report go here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    parser.add_argument("--phantom-seed", type=int, default=0)
    parser.add_argument("--volumes", type=int, default=DEFAULTS["volumes"])
    parser.add_argument("--size", type=int, default=DEFAULTS["size"])
    parser.add_argument("--slices", type=int, nargs=2, default=DEFAULTS["slices"])
    parser.add_argument("--lesions", type=int, nargs=2, default=DEFAULTS["lesions"])
    parser.add_argument("--fraction-m", type=float, default=DEFAULTS["fraction_m"])
    parser.add_argument("--fraction-h-test", type=float, default=DEFAULTS["fraction_h_test"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--config", default="lite")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--workers", type=int, default=1, help="synthesis processes")
    parser.add_argument(
        "--pretrain-minutes",
        type=float,
        help="pretrain each seed's LPG trunk this long before round 1 (lesion-harvest pretrain)",
    )
    parser.add_argument(
        "--pretrain-network",
        choices=sorted(NETWORKS),
        default="lpg",
        help="what --pretrain-steps / --pretrain-minutes pretrain (each network its own)",
    )
    parser.add_argument(
        "--pretrain-pretext",
        choices=PRETEXTS,
        help="what the LPG's pretraining learns from (lesion-harvest pretrain --pretext; "
        "default blobs)",
    )
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        help="pretrain each seed's LPG trunk this many steps before round 1 (with "
        "--pretrain-minutes: whichever ends first)",
    )
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--bootstrap-seed", type=int, default=0)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: report the seeds whose run has finished",
    )
    add_set_option(parser)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {}
    if args.report_only:
        for seed in args.seeds:
            run_file = args.out / f"seed-{seed}" / RUN_FILE
            if run_file.exists():
                runs[seed] = json.loads(run_file.read_text(encoding="utf-8"))
        if not runs:
            parser.error(f"no finished seed of {args.seeds} under {args.out}")
    else:
        dataset = phantom_dataset(args.out, args, parser)
        for seed in args.seeds:
            config = demo_config(args.config, rounds=args.rounds, seed=seed, size=args.size)
            config = with_set_fields(config, args.set, parser)
            runs[seed] = run_seed(
                args.out,
                dataset,
                config,
                device=args.device,
                settings={
                    "config": args.config,
                    "set": args.set,
                    "pretrain_minutes": args.pretrain_minutes,
                    "pretrain_steps": args.pretrain_steps,
                    "pretrain_network": args.pretrain_network,
                    "pretrain_pretext": args.pretrain_pretext,
                },
            )
            print(f"seed {seed}: {runs[seed]['seconds'] / 60:.1f} min", flush=True)
    report(args.out, args, runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
