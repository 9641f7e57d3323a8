"""Soak test: random SIGKILLs over a project's whole data entry, then count what was lost.

On a tiny synthetic DeepLesion-layout dataset (``lesion-harvest synth``), the real
command line builds a project step by step; each step is killed at random moments
and run again until it exits 0 on its own:

1. ``import`` of the DeepLesion folder (volumes + original marks);
2. ``split`` of two volumes to ``V_H_test``;
3. ``annotate --complete`` of three volumes with their full marks (they join ``V_M``);
4. ``annotate`` of the held-out volumes' full marks;
5. ``round`` with a tiny ``lite`` configuration (one round; a killed round resumes);
6. verdict writers (``HarvestProject.set_verdict`` on up to 15 of the round's
   proposals each, each verdict printed once the call returned), until every
   proposal has a verdict.

After every killed attempt of steps 1-4 the project must hold either nothing of the
step or all of it (a step killed after its commit is run again: it must change
nothing). At the end it prints, for volumes, marks, verdicts and rounds, what was
acknowledged (a command that exited 0, a printed verdict) against what the project
holds, and the marks held more than once. ``--kills N`` spreads N kills over the
steps (30% on the round, 20% on the verdict writers).

Run: ``OMP_NUM_THREADS=1 python benchmarks/kill_soak_bench.py --kills 40``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

from napari_lesion_harvest.io.annotations import read_marks, write_marks
from napari_lesion_harvest.io.deeplesion import read_dl_info
from napari_lesion_harvest.store import HarvestProject

#: One round in seconds on 64-pixel phantoms (no claim about its quality).
TINY_ROUND = {
    "preset": "lite",
    "lpg.max_side": 64,
    "lpg.train_steps": 80,
    "lpg.finetune_steps": 5,
    "lpg.batch_size": 4,
    "lpg.learning_rate": 0.003,
    "lpg.hu_window": [-200, 300],
    "lpg.zoom_range": [0.8, 1.2],
    "lpg.flip_probability": 0.0,
    "scan.link_iou": 0.5,
    "scan.fuse_iou": 0.5,
    "lpc.epochs": 2,
    "lpc.patch_size": 32,
    "lpc.pad_px": 16,
    "lpc.folds": 2,
    "max_rounds": 1,
}
#: Share of the kills per step.
KILL_SHARE = {
    "import": 0.2,
    "split": 0.1,
    "annotate V_M": 0.1,
    "annotate test": 0.1,
    "round": 0.3,
    "verdicts": 0.2,
}
#: Kills land uniformly between 0.05 s after the start and this share of the run time of
#: the same command on a scratch copy of the project (a run that ends first counts as done).
KILL_WINDOW = 1.2
#: The round's kills land within 90% of a whole round's time, so most runs are killed;
#: each run resumes after the last committed stage, so the round still ends.
ROUND_KILL_WINDOW = 0.9
#: Verdicts one writer sets before it exits (several writers, more kills).
VERDICTS_PER_WRITER = 15

VERDICT_WRITER = textwrap.dedent(
    f"""
    import random, sys
    VERDICTS_PER_WRITER = {VERDICTS_PER_WRITER}
    from napari_lesion_harvest.store import HarvestProject

    project = HarvestProject.open(sys.argv[1])
    reviewable = project.proposals(
        project.latest_done_round(), roles=("candidate", "P_pos_H", "P_neg_H")
    )
    ids = [p.id for p in reviewable if p.verdict is None]
    random.Random(int(sys.argv[2])).shuffle(ids)
    for proposal_id in ids[:VERDICTS_PER_WRITER]:
        verdict = "accepted" if proposal_id % 3 else "rejected"
        project.set_verdict(proposal_id, verdict, author="reviewer")
        print(proposal_id, verdict, flush=True)  # acknowledged: set_verdict returned
    """
)


def _cli(*argv) -> list[str]:
    return [sys.executable, "-m", "napari_lesion_harvest", *map(str, argv)]


def _data_state(project_dir: Path) -> tuple:
    """Volumes (split, completion) and marks: what steps 1-4 write."""
    with HarvestProject.open(project_dir) as project:
        volumes = tuple((v.volume_id, v.split, v.complete) for v in project.volumes())
        marks = tuple(
            (m.id, m.origin, m.mark.z, tuple(m.mark.measurement_coordinates()), m.deleted)
            for m in project.marks(include_deleted=True)
        )
    return volumes, marks


class Soak:
    """Runs the steps under random kills and counts the kills and any half-written step."""

    def __init__(self, project_dir: Path, rng: random.Random):
        self.project_dir = project_dir
        self.rng = rng
        self.kills: Counter = Counter()
        self.half_written = 0

    def step(
        self,
        name: str,
        argv: list[str],
        *,
        kills: int,
        all_or_nothing: bool = True,
        window: float = KILL_WINDOW,
    ):
        """Run ``argv`` with a SIGKILL at a random moment until ``kills`` runs were killed
        (runs that end first are re-runs of a finished step), then once to the end.

        With ``all_or_nothing`` every run must leave the data as it was before the step
        or as the finished step has it; otherwise (the round) the first run that exits 0
        ends the step. ``window``: see :data:`KILL_WINDOW`.
        """
        window *= self.run_time(argv)
        before = after = None
        if all_or_nothing:
            before = _data_state(self.project_dir)
        for _ in range(3 * kills):
            if self.kills[name] >= kills:
                break
            process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                process.wait(timeout=self.rng.uniform(0.05, window))
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                self.kills[name] += 1
            _, err = process.communicate()
            if process.returncode not in (0, -signal.SIGKILL):
                raise SystemExit(f"{name} exited {process.returncode}: {err.decode()}")
            if not all_or_nothing:
                if process.returncode == 0:
                    return
                continue
            now = _data_state(self.project_dir)
            if now == before and process.returncode != 0:
                continue  # killed before its commit: nothing written
            if after is None:
                if process.returncode != 0:  # killed after its commit: a re-run adds nothing
                    subprocess.run(argv, check=True, capture_output=True)
                after = _data_state(self.project_dir)
            self.half_written += now != after
        subprocess.run(argv, check=True, capture_output=True)
        if after is not None:
            self.half_written += _data_state(self.project_dir) != after

    def run_time(self, argv: list[str]) -> float:
        """Seconds ``argv`` takes, run to the end on a scratch copy of the project."""
        scratch = self.project_dir.with_name("scratch")
        shutil.copytree(self.project_dir, scratch)
        start = time.perf_counter()
        on_copy = [str(scratch) if a == str(self.project_dir) else a for a in argv]
        subprocess.run(on_copy, check=True, capture_output=True)
        elapsed = time.perf_counter() - start
        shutil.rmtree(scratch)
        return elapsed

    def verdicts(self, *, kills: int) -> dict[int, str]:
        """Run verdict writers until every proposal has a verdict, killing ``kills`` of them;
        returns the acknowledged verdicts."""
        acknowledged: dict[int, str] = {}
        writer_argv = [sys.executable, "-c", VERDICT_WRITER, str(self.project_dir)]
        window = KILL_WINDOW * self.run_time([*writer_argv, "0"])
        for attempt in range(3 * kills + 100):
            writer = subprocess.Popen(
                [*writer_argv, str(attempt)], stdout=subprocess.PIPE, text=True
            )
            if self.kills["verdicts"] < kills:
                time.sleep(self.rng.uniform(0.05, window))
                if writer.poll() is None:
                    writer.send_signal(signal.SIGKILL)
                    self.kills["verdicts"] += 1
            output = writer.stdout.read()
            writer.wait()
            lines = output.splitlines(keepends=True)
            for line in lines:
                if line.endswith("\n"):  # a line cut by the kill is not acknowledged
                    proposal_id, verdict = line.split()
                    acknowledged[int(proposal_id)] = verdict
            if writer.returncode == 0 and not lines and self.kills["verdicts"] >= kills:
                break  # nothing was left to review
        return acknowledged


def _prepare(work: Path, n_volumes: int) -> dict:
    """Dataset, mark files, held-out list and round config; returns what is acknowledged."""
    data = work / "synth"
    synth = _cli("synth", data, "--volumes", n_volumes, "--size", 64, "--slices", 8, 12)
    subprocess.run(synth, check=True, capture_output=True)
    rows = read_dl_info(data / "DL_info.csv", strict=True).rows
    volume_ids = list(dict.fromkeys(row.volume_id for row in rows))
    v_m, test = volume_ids[:3], volume_ids[3:5]
    truth = read_marks(data / "truth" / "marks.csv", strict=True)[0]
    write_marks(work / "v_m.csv", [r for r in truth if r.volume_id in v_m])
    write_marks(work / "test.csv", [r for r in truth if r.volume_id in test])
    (work / "test.txt").write_text("\n".join(test) + "\n")
    (work / "tiny.json").write_text(json.dumps(TINY_ROUND))
    marks = [(row.volume_id, "original", row.mark) for row in rows] + [
        (r.volume_id, "expert", r.mark) for r in truth if r.volume_id in (*v_m, *test)
    ]
    return {"data": data, "volumes": volume_ids, "v_m": v_m, "test": test, "marks": marks}


def _mark_key(volume_id, origin, mark) -> tuple:
    return volume_id, origin, mark.z, tuple(mark.measurement_coordinates())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=40, help="SIGKILLs in all (40)")
    parser.add_argument("--volumes", type=int, default=8, help="synthetic volumes (8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="kill_soak_"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    acked = _prepare(work, args.volumes)
    budget = {name: round(args.kills * share) for name, share in KILL_SHARE.items()}

    project_dir = work / "project"
    subprocess.run(_cli("init", project_dir), check=True, capture_output=True)
    soak = Soak(project_dir, random.Random(args.seed))
    steps = {
        "import": _cli("import", project_dir, acked["data"]),
        "split": _cli("split", project_dir, "--volumes", work / "test.txt", "--as", "V_H_test"),
        "annotate V_M": _cli("annotate", project_dir, "--marks", work / "v_m.csv", "--complete"),
        "annotate test": _cli("annotate", project_dir, "--marks", work / "test.csv"),
    }
    for name, argv in steps.items():
        soak.step(name, argv, kills=budget[name])
    round_argv = _cli(
        "round", project_dir, "--config", work / "tiny.json", "--device", "cpu", "--rounds", 1
    )
    soak.step(
        "round", round_argv, kills=budget["round"], all_or_nothing=False, window=ROUND_KILL_WINDOW
    )
    verdicts = soak.verdicts(kills=budget["verdicts"])

    with HarvestProject.open(project_dir) as project:
        problems = project.integrity_check()
        volumes = {v.volume_id: v for v in project.volumes()}
        live = Counter(_mark_key(m.volume_id, m.origin, m.mark) for m in project.marks())
        stored = {v.proposal_id: v.verdict for v in project.verdicts()}
        rounds = [r.status for r in project.rounds.list()]
    wanted = Counter(_mark_key(*mark) for mark in acked["marks"])
    present = sum(min(live[key], n) for key, n in wanted.items())
    duplicates = sum(max(live[key] - n, 0) for key, n in wanted.items())
    splits_kept = all(volumes[v].split == "V_M" and volumes[v].complete for v in acked["v_m"])
    splits_kept &= all(volumes[v].split == "V_H_test" for v in acked["test"])

    print(
        f"kill soak: {sum(soak.kills.values())} SIGKILLs "
        f"({', '.join(f'{name} {n}' for name, n in soak.kills.items())}) in "
        f"{time.perf_counter() - started:.0f} s; {platform.machine()}, "
        f"Python {platform.python_version()}"
    )
    print(
        f"volumes:  acknowledged {len(acked['volumes'])}, present "
        f"{len(set(acked['volumes']) & set(volumes))}, in the project {len(volumes)}; "
        f"splits and completions as acknowledged: {splits_kept}"
    )
    print(
        f"marks:    acknowledged {sum(wanted.values())}, present {present}, "
        f"duplicates {duplicates}, in the project {sum(live.values())}"
    )
    print(
        f"verdicts: acknowledged {len(verdicts)}, present "
        f"{sum(stored.get(pid) == verdict for pid, verdict in verdicts.items())}, "
        f"in the project {len(stored)}"
    )
    print(f"rounds:   acknowledged 1 done, in the project {rounds}")
    print(f"killed steps that left part of their data: {soak.half_written}")
    print(f"integrity_check: {'ok' if not problems else problems}")
    if args.keep is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
