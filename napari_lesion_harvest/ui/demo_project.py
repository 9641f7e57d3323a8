"""A demo project for a first try: the sample's phantoms, split and marked, ready for a round.

:func:`make_demo_project` reuses the ``lesion-harvest demo`` steps
(:func:`~napari_lesion_harvest.harvest.demo.build_demo_project`): it
synthesises :data:`DEMO_VOLUMES` phantom CT volumes (the generator and seed of
the napari sample), imports them with their incomplete original marks, fully
marks a quarter (V_M, complete), holds out a quarter (V_H_test, with hidden
full marks for Table I) and leaves the rest to harvest (V_H). The demo's round
configuration (:func:`~napari_lesion_harvest.harvest.demo.demo_config`: ``lite``
at the phantoms' resolution) is written beside the project. Qt-free; it runs
in a worker thread (about half a minute on a busy 2-core CPU).
"""

from __future__ import annotations

from pathlib import Path

#: Phantom volumes of the demo project, and their in-plane size (pixels).
DEMO_VOLUMES = 12
DEMO_SIZE = 128
#: Shares of V_M (fully marked) and V_H_test (held out) among them.
DEMO_SPLIT = (0.25, 0.25)
#: Rounds the demo's configuration allows (the paper ran 3).
DEMO_ROUNDS = 3
#: The demo's round configuration, written beside the project.
DEMO_CONFIG_NAME = "demo_round.json"


def make_demo_project(out: str | Path) -> tuple[Path, Path]:
    """Build the demo project in ``out`` (a new or empty folder).

    Returns
    -------
    project_dir : Path
        ``out/project``.
    config_path : Path
        ``out/demo_round.json``, the demo's round configuration.

    Raises
    ------
    ValueError
        ``out`` exists and is not an empty folder.
    """
    from napari_lesion_harvest.harvest.demo import build_demo_project, demo_config
    from napari_lesion_harvest.synthetic.sample import SAMPLE_SEED

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} is not an empty folder; choose a new one for the demo")
    config = demo_config("lite", rounds=DEMO_ROUNDS, seed=SAMPLE_SEED, size=DEMO_SIZE)
    project_dir = build_demo_project(
        out, volumes=DEMO_VOLUMES, size=DEMO_SIZE, seed=SAMPLE_SEED, split_fractions=DEMO_SPLIT
    )
    config_path = out / DEMO_CONFIG_NAME
    config_path.write_text(config.to_json() + "\n", encoding="utf-8")
    return project_dir, config_path
