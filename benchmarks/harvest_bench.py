"""Harvest rounds end to end on a phantom project: time per stage and round, Table I rows.

Issue 10's benchmark: a 60-volume phantom project (256 x 256 by default),
``lite`` configuration with the demo's changes (``demo_config``: soft-tissue LPG
window, 3 out-of-fold folds), CPU, 3 rounds. Prints the wall time of every stage of
every round (from the progress events), the harvest counts, and the Table I
rows on V_H_test after each round.

Run: ``.venv/bin/python benchmarks/harvest_bench.py [--volumes 60] [--size 256] [--out DIR]``
(``--device cuda`` for a GPU; ``--lpg-steps N --lpg-finetune-steps M`` to train the
LPG longer than the configuration says; ``--set FIELD=JSON`` to change any other field
of the round configuration, e.g. ``--set lpg.ignore_known_lesions=true``;
``--complete-v-h K`` to fully annotate K V_H volumes too, a larger V_M on the same
V_H_test: with all of V_H, round 1 shows what full labels of the training volumes
buy). Each
stage's start is printed as it happens, so a run cut short still shows how far it got;
stopped by SIGTERM (``timeout``), it still prints the rounds that finished.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from napari_lesion_harvest.harvest.config import with_changes
from napari_lesion_harvest.harvest.config_overrides import add_set_option, with_set_fields
from napari_lesion_harvest.harvest.demo import demo_config, run_demo
from napari_lesion_harvest.harvest.report import format_round_table, save_round_curves
from napari_lesion_harvest.harvest.stages import STAGES
from napari_lesion_harvest.progress import Cancelled
from napari_lesion_harvest.store import HarvestProject


class StageClock:
    """Progress callback that records when each (round, stage) starts and ends."""

    def __init__(self):
        self.round = 0
        self.origin = time.monotonic()
        self.started: dict[tuple[int, str], float] = {}
        self.last_event: dict[tuple[int, str], float] = {}

    def __call__(self, stage, step, total, message="", metrics=None):
        now = time.monotonic()
        if message.startswith("round ") and stage in STAGES:
            self.round = int(message.split()[1].rstrip(":"))
        key = (self.round, stage)
        if key not in self.started:
            print(f"[{now - self.origin:7.1f} s] round {self.round}: {stage}", flush=True)
        self.started.setdefault(key, now)
        self.last_event[key] = now

    def seconds(self) -> dict[int, dict[str, float]]:
        """Per round, the seconds from each stage's start to the next stage's start."""
        table: dict[int, dict[str, float]] = defaultdict(dict)
        starts = sorted((t, key) for key, t in self.started.items() if key[1] in STAGES)
        ends = [*starts[1:], (time.monotonic(), None)]
        for (t, key), (t_next, _) in zip(starts, ends, strict=True):
            table[key[0]][key[1]] = t_next - t
        return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=60)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--config", default="lite")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--out", type=Path, help="keep the project here (default: temporary)")
    parser.add_argument("--lpg-steps", type=int, help="round 1 LPG steps (default: config's)")
    parser.add_argument("--lpg-finetune-steps", type=int, help="later rounds' LPG steps")
    parser.add_argument(
        "--complete-v-h",
        type=int,
        default=0,
        metavar="K",
        help="also fully annotate K V_H volumes, which join V_M (V_H_test unchanged)",
    )
    add_set_option(parser)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="harvest_bench_"))
    config = demo_config(args.config, rounds=args.rounds, seed=args.seed, size=args.size)
    steps = {"lpg.train_steps": args.lpg_steps, "lpg.finetune_steps": args.lpg_finetune_steps}
    config = with_changes(config, {k: v for k, v in steps.items() if v is not None})
    config = with_set_fields(config, args.set, parser)
    clock = StageClock()
    started = time.monotonic()
    try:
        rounds = run_demo(
            out,
            config,
            volumes=args.volumes,
            size=args.size,
            seed=args.seed,
            split_fractions=(0.25, 0.25),
            device=args.device,
            progress=clock,
            say=print,
            complete_v_h=args.complete_v_h,
        )
    except Cancelled:  # SIGTERM, e.g. from `timeout`: report the rounds that finished
        print("stopped; the unfinished round is left resumable")
        with HarvestProject.open(out / "project") as project:
            rounds = [r for r in project.rounds.list() if r.status == "done"]
    total = time.monotonic() - started
    print(
        f"\n{args.volumes} volumes at {args.size} px, config {args.config} (LPG steps "
        f"{config.lpg.train_steps} / {config.lpg.finetune_steps}), {args.device}"
    )
    print(f"{'round':<7}" + "".join(f"{s:>11}" for s in STAGES) + f"{'total':>10}")
    for number, stages in sorted(clock.seconds().items()):
        cells = "".join(f"{stages[s]:>10.1f}s" if s in stages else f"{'-':>11}" for s in STAGES)
        print(f"{number:<7}{cells}{sum(stages.values()):>9.1f}s")
    print(f"whole run (synthesis, import, rounds): {total / 60:.1f} min")
    for record in rounds:
        m = record.metrics
        print(
            f"round {record.number}: {m.get('n_harvested')} harvested "
            f"({m.get('new_lesions')} new), threshold {m.get('threshold')}, "
            f"on V_H_test: {m.get('harvested_on_test')}"
        )
        evaluation = m.get("evaluation") or {}
        ceiling = (evaluation.get("per_round") or {}).get("ceiling", float("nan"))
        print(
            f"  scan {m['scan']['proposals']} proposals at {m['scan']['slices_per_second']} "
            f"slices/s; V_M {m['verify']['P_RM']} P_RM / {m['verify']['P_neg_M']} P_neg_M; "
            f"P_neg_H {m['harvest']['P_neg_H']}; V_H_test recall of R + every proposal "
            f"{ceiling:.3f} (the round's ceiling)"
        )
    if rounds:
        print(format_round_table(rounds))
        print(f"plot: {save_round_curves(rounds, out / 'pr_curve.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
