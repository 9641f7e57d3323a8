"""``lesion-harvest demo``: the whole method on a synthetic CT set, headless, on the CPU.

Steps (each one a public command a user would run on real data):

1. synthesise a phantom dataset in DeepLesion's layout (``lesion-harvest synth``),
   with DeepLesion-like incomplete original marks and the full truth beside it;
2. create a project and import the dataset (``init``, ``import``);
3. hold out V_H_test and V_D_test volumes (``split``), give V_H_test its full
   marks, hidden from the rounds (``annotate``);
4. annotate V_M with its full truth and mark it complete (``annotate --complete``);
5. run harvest rounds with the ``lite`` configuration (``round``);
6. print the paper's Table I rows for V_H_test and save the PR / FROC plot.

A tiny dataset has too few volumes for the paper's 5% V_M, so the demo
fully annotates a larger share (``--fraction-m``, default 0.25).
"""

from __future__ import annotations

import time
from pathlib import Path

from napari_lesion_harvest.cli import CommandError

DEMO_AUTHOR = "demo"


def register(subparsers) -> None:
    """Add ``lesion-harvest demo``."""
    p = subparsers.add_parser(
        "demo", help="synthesise a phantom set, annotate a subset, run harvest rounds (CPU)"
    )
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    p.add_argument("--volumes", type=int, default=24, help="phantom sub-volumes")
    p.add_argument("--size", type=int, default=128, help="in-plane size of the phantom")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3, help="harvest rounds (the paper ran 3)")
    p.add_argument("--config", default="lite", help="lite, paper or a JSON file")
    p.add_argument("--fraction-m", type=float, default=0.25, help="share of V_M volumes")
    p.add_argument("--fraction-h-test", type=float, default=0.25, help="share of V_H_test")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.set_defaults(func=run)


def run(args) -> int:
    from napari_lesion_harvest.harvest.cli import run_rounds_stoppably
    from napari_lesion_harvest.harvest.config import load_config
    from napari_lesion_harvest.harvest.importing import import_sources
    from napari_lesion_harvest.harvest.report import format_round_table, save_round_curves
    from napari_lesion_harvest.io.annotations import read_marks
    from napari_lesion_harvest.store import HarvestProject
    from napari_lesion_harvest.synthetic.dataset import generate_dataset
    from napari_lesion_harvest.synthetic.phantom import PhantomConfig
    from napari_lesion_harvest.workers.progress import TqdmProgress

    started = time.monotonic()
    out = args.out
    project_dir = out / "project"
    if project_dir.exists():
        raise CommandError(f"{project_dir} exists; choose another --out or remove it")
    try:
        # The phantom's own resolution: resampling it finer costs CPU time, adds nothing.
        config = load_config(
            args.config, max_rounds=args.rounds, seed=args.seed, lpg_max_side=args.size
        )
    except ValueError as error:
        raise CommandError(str(error)) from error

    print(f"1/5 synthesising {args.volumes} phantom volumes ({args.size} px) in {out / 'dataset'}")
    dataset = generate_dataset(
        out / "dataset",
        volumes=args.volumes,
        seed=args.seed,
        config=PhantomConfig(size=args.size),
        split_fractions=(args.fraction_m, args.fraction_h_test, 0.0),
    )
    split = dataset.split.as_dict()
    print(
        f"    {dataset.lesion_count} lesions, {dataset.mark_count} with an original mark "
        f"({dataset.mark_count / max(dataset.lesion_count, 1):.0%})"
    )
    truth, _ = read_marks(dataset.truth_marks)

    print(f"2/5 importing into the project {project_dir}")
    with HarvestProject.open(project_dir, create=True) as project:
        import_sources(project, [dataset.root], author=DEMO_AUTHOR)
        for volume_id in split["V_H_test"]:
            project.set_split(volume_id, "V_H_test", author=DEMO_AUTHOR)
        print(
            f"3/5 annotating V_M ({len(split['V_M'])} volumes, full truth) and giving "
            f"V_H_test ({len(split['V_H_test'])} volumes) its hidden full marks"
        )
        annotated = set(split["V_M"]) | set(split["V_H_test"])
        project.add_marks(
            [(r.volume_id, r.mark) for r in truth if r.volume_id in annotated],
            author=DEMO_AUTHOR,
            origin="expert",
        )
        for volume_id in split["V_M"]:
            project.set_volume_complete(volume_id, author=DEMO_AUTHOR)

        print(f"4/5 running {args.rounds} harvest round(s), config {args.config!r}")
        run_rounds_stoppably(
            project, config, rounds=args.rounds, device=args.device, progress=TqdmProgress()
        )
        rounds = [r for r in project.rounds.list() if r.status == "done"]

    print("5/5 results on V_H_test (recall at precision, P3D matching)")
    print(format_round_table(rounds))
    for record in rounds:
        print(
            f"round {record.number}: harvested {record.metrics.get('n_harvested')} lesions "
            f"({record.metrics.get('new_lesions')} new), threshold "
            f"{record.metrics.get('threshold')}"
        )
    plot = save_round_curves(rounds, out / "pr_curve.png")
    minutes = (time.monotonic() - started) / 60
    print(f"PR / FROC plot: {plot}\nproject: {project_dir} ({minutes:.1f} min)")
    return 0
