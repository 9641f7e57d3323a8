"""``lesion-harvest demo``: the whole method on a synthetic CT set, headless, on the CPU.

Steps (each one a public command a user would run on real data):

1. synthesise a phantom dataset in DeepLesion's layout (``lesion-harvest synth``),
   with DeepLesion-like incomplete original marks and the full truth beside it;
2. create a project and import the dataset (``init``, ``import``);
3. hold out V_H_test volumes (``split``), give them their full marks, hidden
   from the rounds, and flag them complete: the evaluation's truth
   (``annotate --complete``);
4. annotate V_M with its full truth and mark it complete (``annotate --complete``);
5. run harvest rounds with the ``lite`` configuration (``round``);
6. print the paper's Table I rows for V_H_test (cumulative ``R + P_H,1..i``, then
   each round's proposals alone) and save the PR / FROC plot.

A tiny dataset has too few volumes for the paper's 5% V_M, so the demo
fully annotates a larger share (``--fraction-m``, default 0.25).
"""

from __future__ import annotations

import time
from pathlib import Path

from napari_lesion_harvest.cli import CommandError, positive_int
from napari_lesion_harvest.vocabulary import Origin, RoundStatus, Split

DEMO_AUTHOR = "demo"


def register(subparsers) -> None:
    """Add ``lesion-harvest demo``."""
    p = subparsers.add_parser(
        "demo", help="synthesise a phantom set, annotate a subset, run harvest rounds (CPU)"
    )
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    p.add_argument("--volumes", type=positive_int, default=24, help="phantom sub-volumes")
    p.add_argument("--size", type=positive_int, default=128, help="in-plane size of the phantom")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rounds", type=positive_int, default=3, help="harvest rounds (the paper ran 3)"
    )
    p.add_argument("--config", default="lite", help="lite, paper or a JSON file")
    p.add_argument("--fraction-m", type=float, default=0.25, help="share of V_M volumes")
    p.add_argument("--fraction-h-test", type=float, default=0.25, help="share of V_H_test")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.set_defaults(func=run)


def run(args) -> int:
    from napari_lesion_harvest.harvest.report import (
        format_round_table,
        harvest_counts,
        save_round_curves,
    )
    from napari_lesion_harvest.harvest.round import HarvestInputError
    from napari_lesion_harvest.progress import TqdmProgress

    started = time.monotonic()
    out = args.out
    if (out / "project").exists():
        raise CommandError(f"{out / 'project'} exists; choose another --out or remove it")
    try:
        config = demo_config(args.config, rounds=args.rounds, seed=args.seed, size=args.size)
    except ValueError as error:
        raise CommandError(str(error)) from error
    try:
        rounds = run_demo(
            out,
            config,
            volumes=args.volumes,
            size=args.size,
            seed=args.seed,
            split_fractions=(args.fraction_m, args.fraction_h_test),
            device=args.device,
            progress=TqdmProgress(),
            say=print,
        )
    except HarvestInputError as error:  # e.g. no GPU for --device cuda, before synthesis
        raise CommandError(str(error)) from error
    print("5/5 results on V_H_test (recall at precision, P3D matching)")
    print(format_round_table(rounds))
    for record in rounds:
        print(f"round {record.number}: {harvest_counts(record.metrics)}")
    plot = save_round_curves(rounds, out / "pr_curve.png")
    minutes = (time.monotonic() - started) / 60
    print(f"PR / FROC plot: {plot}\nproject: {out / 'project'} ({minutes:.1f} min)")
    return 0


#: What the demo changes in a preset (not in a JSON file) for a CPU and minutes of
#: training: a soft-tissue window for the LPG's input, since organ lesions of the
#: phantom differ from their organ by 10-80 HU, under 5 of 255 grey levels in the
#: paper's [-1024, 3071] window (docs/experiments/lpg-hu-window.md), 3 folds for the
#: out-of-fold V_M scores instead of 5 (4 LPC trainings per round instead of 6), and a
#: tracker that links and fuses boxes from IoU 0.5 instead of 0.8: on thin slices the
#: true boxes of consecutive slices often overlap by less than 0.8, so the paper's cut
#: splits lesions into pieces that miss their RECIST slice and count as lesion-like
#: negatives (docs/experiments/tracker-link-iou.md).
DEMO_PRESET_CHANGES = {
    "lpg.hu_window": (-200.0, 300.0),
    "lpc.folds": 3,
    "scan.link_iou": 0.5,
    "scan.fuse_iou": 0.5,
}
#: Side of DeepLesion's slices, on which the paper's LPC context (64 pixels) was set.
PAPER_SLICE_SIDE = 512


def demo_config(name_or_path: str, *, rounds: int, seed: int, size: int):
    """The round configuration of a phantom demo: ``name_or_path`` with ``rounds`` rounds,
    ``seed``, the LPG at the phantom's own resolution ``size`` (resampling the
    coarse phantom finer costs CPU time and adds nothing) and the LPC's context
    scaled to it (the paper's 64 pixels of a 512-pixel slice, the same millimetres);
    a preset named here also gets :data:`DEMO_PRESET_CHANGES`.

    Raises
    ------
    ValueError
        As :func:`~napari_lesion_harvest.harvest.config.load_config`.
    """
    from napari_lesion_harvest.harvest.config import PRESETS, load_config
    from napari_lesion_harvest.lpc.patches import DEFAULT_PAD_PX

    changes = DEMO_PRESET_CHANGES if name_or_path in PRESETS else {}
    return load_config(
        name_or_path,
        {
            "max_rounds": rounds,
            "seed": seed,
            "lpg.max_side": size,
            "lpc.pad_px": DEFAULT_PAD_PX * size / PAPER_SLICE_SIDE,
            **changes,
        },
    )


def run_demo(
    out: Path,
    config,
    *,
    volumes: int,
    size: int,
    seed: int,
    split_fractions: tuple[float, float],
    device: str,
    progress,
    say=lambda message: None,
    complete_v_h: int = 0,
) -> list:
    """Synthesise, import, annotate, hold out (:func:`build_demo_project`), and run
    ``config.max_rounds`` rounds.

    Parameters
    ----------
    out : Path
        Gets ``dataset/`` and ``project/`` (which must not exist yet).
    config : RoundConfig
    volumes, size, seed, split_fractions, say, complete_v_h
        As :func:`build_demo_project`.
    device : str
        ``auto``, ``cpu`` or ``cuda``; checked before anything is synthesised.
    progress : callable
        Round progress callback.

    Returns
    -------
    list of RoundRecord
        The finished rounds.
    """
    from napari_lesion_harvest.harvest.cli import run_rounds_stoppably
    from napari_lesion_harvest.harvest.round import resolve_device
    from napari_lesion_harvest.store import HarvestProject

    device = resolve_device(device)
    project_dir = build_demo_project(
        out,
        volumes=volumes,
        size=size,
        seed=seed,
        split_fractions=split_fractions,
        say=say,
        complete_v_h=complete_v_h,
    )
    with HarvestProject.open(project_dir) as project:
        say(f"4/5 running {config.max_rounds} harvest round(s)")
        run_rounds_stoppably(
            project, config, rounds=config.max_rounds, device=device, progress=progress
        )
        return [r for r in project.rounds.list() if r.status == RoundStatus.done]


def build_demo_project(
    out: Path,
    *,
    volumes: int,
    size: int,
    seed: int,
    split_fractions: tuple[float, float],
    say=lambda message: None,
    complete_v_h: int = 0,
) -> Path:
    """Synthesise a phantom set into ``out/dataset`` and import it into ``out/project``
    (:func:`import_demo_project`).

    Parameters
    ----------
    out : Path
        Gets ``dataset/`` and ``project/`` (which must not exist yet).
    volumes, size, seed
        Phantom set: number of sub-volumes, in-plane size, seed.
    split_fractions : (float, float)
        Shares of V_M and V_H_test.
    say : callable
        Receives one line per step for the user.
    complete_v_h : int
        Also annotate this many V_H volumes (the first in the split's order) with
        their full truth and mark them complete, so they join V_M: a larger V_M on
        the same V_H_test (``benchmarks/harvest_bench.py --complete-v-h``).
        Checked before anything is synthesised.

    Returns
    -------
    Path
        The project folder.

    Raises
    ------
    ValueError
        ``complete_v_h`` outside ``[0, number of V_H volumes]``.
    """
    from napari_lesion_harvest.synthetic.dataset import generate_dataset
    from napari_lesion_harvest.synthetic.phantom import PhantomConfig
    from napari_lesion_harvest.synthetic.split import part_sizes

    n_m, n_h_test, _ = part_sizes(volumes, *split_fractions, 0.0)
    if not 0 <= complete_v_h <= volumes - n_m - n_h_test:
        raise ValueError(
            f"complete_v_h must be in [0, {volumes - n_m - n_h_test}] (the V_H volumes of "
            f"{volumes}), got {complete_v_h}"
        )
    say(f"1/5 synthesising {volumes} phantom volumes ({size} px) in {out / 'dataset'}")
    dataset = generate_dataset(
        out / "dataset",
        volumes=volumes,
        seed=seed,
        config=PhantomConfig(size=size),
        split_fractions=(*split_fractions, 0.0),
    )
    say(
        f"    {dataset.lesion_count} lesions, {dataset.mark_count} with an original mark "
        f"({dataset.mark_count / max(dataset.lesion_count, 1):.0%})"
    )
    return import_demo_project(out / "project", dataset.root, complete_v_h=complete_v_h, say=say)


def import_demo_project(
    project_dir: Path, dataset_root: Path, *, complete_v_h: int = 0, say=lambda message: None
) -> Path:
    """Create ``project_dir`` from a phantom dataset (``lesion-harvest synth``'s folder):
    import it, hold out its V_H_test, give V_M its full truth (complete) and V_H_test its
    full marks, flagged complete (the evaluation's truth, hidden from the rounds).

    Parameters
    ----------
    project_dir : Path
        The project folder to create (must not hold a project yet).
    dataset_root : Path
        Holds ``DL_info.csv``, ``Images_png/``, ``split.json`` and ``truth/marks.csv``.
    complete_v_h : int
        As :func:`build_demo_project`.
    say : callable
        Receives one line per step for the user.

    Returns
    -------
    Path
        ``project_dir``.

    Raises
    ------
    ValueError
        ``complete_v_h`` outside ``[0, number of V_H volumes]``.
    """
    from napari_lesion_harvest.harvest.importing import import_sources
    from napari_lesion_harvest.io.annotations import read_marks
    from napari_lesion_harvest.store import HarvestProject
    from napari_lesion_harvest.synthetic.split import DatasetSplit

    split = DatasetSplit.read(Path(dataset_root) / "split.json").as_dict()
    if not 0 <= complete_v_h <= len(split[Split.V_H]):
        raise ValueError(
            f"complete_v_h must be in [0, {len(split[Split.V_H])}] (the V_H volumes of "
            f"{dataset_root}), got {complete_v_h}"
        )
    split[Split.V_M] = [*split[Split.V_M], *split[Split.V_H][:complete_v_h]]
    truth, _ = read_marks(Path(dataset_root) / "truth" / "marks.csv")

    say(f"2/5 importing into the project {project_dir}")
    with HarvestProject.open(project_dir, create=True) as project:
        import_sources(project, [dataset_root], author=DEMO_AUTHOR)
        for volume_id in split[Split.V_H_test]:
            project.set_split(volume_id, Split.V_H_test, author=DEMO_AUTHOR)
        say(
            f"3/5 annotating V_M ({len(split[Split.V_M])} volumes, full truth) and giving "
            f"V_H_test ({len(split[Split.V_H_test])} volumes) its hidden full marks"
        )
        annotated = set(split[Split.V_M]) | set(split[Split.V_H_test])
        project.add_marks(
            [(r.volume_id, r.mark) for r in truth if r.volume_id in annotated],
            author=DEMO_AUTHOR,
            origin=Origin.expert,
        )
        for volume_id in [*split[Split.V_M], *split[Split.V_H_test]]:
            project.set_volume_complete(volume_id, author=DEMO_AUTHOR)
    return project_dir
