"""How long a harvest round takes here: its work, this machine's rates, and the ETA while it runs.

A round's duration is, stage by stage, the stage's *work* (from the round
configuration and the project's size) times this machine's *rate* (seconds
per unit of work) for that stage, model and device:

=============  ===============================================================  ==========
stage          work (units)                                                     rate key
=============  ===============================================================  ==========
``train_lpg``  steps x batch x (side / 256)^2; steps: ``lpg.train_steps`` in     LPG preset
               the first round, ``lpg.finetune_steps`` later; side: the slices'
               side after resampling to 0.8 mm pixels, at most ``lpg.max_side``
               (``lpg.crop_px`` when set)
``scan``       sum over V_M, V_H, V_H_test of slices x (side / 256)^2           LPG preset
``verify``     volumes                                                          --
``train_lpc``  trainings x epochs x (V_M + V_H volumes) x (patch / 64)^2;       LPC width,
               trainings: ``folds + 1`` (out-of-fold V_M scores) or 1           variant
``harvest``    (V_H + V_H_test volumes) x (patch / 64)^2                        LPC width,
                                                                                variant
``evaluate``   V_H_test volumes                                                 --
=============  ===============================================================  ==========

The rates are measured: every round the dock runs records each stage's
seconds per unit (:class:`StageClock`) in ``round_rates.json`` of the
plugin's settings folder (:func:`~napari_lesion_harvest.ui.project_panel.config_dir`),
per machine (host name) and device kind (``cpu``, ``cuda``); the median of
the last :data:`RATES_KEPT` is used. Before a stage was measured here,
:data:`DEFAULT_RATES` gives an estimate from the figures of
``docs/performance.md`` (a shared 2-core CPU; an H200). Qt-free.
"""

from __future__ import annotations

import json
import socket
import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from napari_lesion_harvest.durable import replace_text
from napari_lesion_harvest.harvest.stages import STAGES
from napari_lesion_harvest.vocabulary import Split, Stage

#: Side (pixels) of the LPG's unit of work, and of the LPC's patch unit.
LPG_UNIT_SIDE = 256
LPC_UNIT_SIDE = 64
#: Measured rates kept per key (their median is used).
RATES_KEPT = 5
RATES_FILE = "round_rates.json"
#: Seconds per unit of work before this machine measured a stage, by
#: ``(device kind, stage, model)``; from docs/performance.md: the 2-core CPU's
#: lite LPG at 0.54 steps/s (batch 2, 256 px) and 5-10 slices/s scanning, the
#: paper LPG at 0.04 steps/s and 0.2-0.4 slices/s; the demo's LPC (lite, 4
#: trainings of 12 epochs on 18 volumes in 113-736 s); on an H200 the paper
#: LPG at 47 training slices/s and 533 scanned slices/s (512 px), the lite
#: LPG at 12 steps/s (batch 8) and 121 slices/s, the LPC 68 s for 4 x 12 x 45.
DEFAULT_RATES: dict[tuple[str, str, str], float] = {
    ("cpu", Stage.train_lpg, "lite"): 0.9,
    ("cpu", Stage.train_lpg, "paper"): 12.5,
    ("cpu", Stage.scan, "lite"): 0.2,
    ("cpu", Stage.scan, "paper"): 3.5,
    ("cpu", Stage.verify, ""): 0.05,
    ("cpu", Stage.train_lpc, "lite/multiview"): 0.3,
    ("cpu", Stage.train_lpc, "paper/multiview"): 1.5,
    ("cpu", Stage.harvest, "lite/multiview"): 2.0,
    ("cpu", Stage.harvest, "paper/multiview"): 8.0,
    ("cpu", Stage.evaluate, ""): 0.2,
    ("cuda", Stage.train_lpg, "lite"): 0.01,
    ("cuda", Stage.train_lpg, "paper"): 0.0053,
    ("cuda", Stage.scan, "lite"): 0.008,
    ("cuda", Stage.scan, "paper"): 0.0005,
    ("cuda", Stage.verify, ""): 0.05,
    ("cuda", Stage.train_lpc, "lite/multiview"): 0.03,
    ("cuda", Stage.train_lpc, "paper/multiview"): 0.06,
    ("cuda", Stage.harvest, "lite/multiview"): 0.4,
    ("cuda", Stage.harvest, "paper/multiview"): 0.8,
    ("cuda", Stage.evaluate, ""): 0.2,
}
#: An LPC variant other than the multi-view one costs this times the multi-view rate
#: when only the multi-view one has a default.
OTHER_LPC_VARIANT_FACTOR = 1.0


@dataclass(frozen=True)
class ProjectSize:
    """What a round's work depends on: the volumes of each split.

    Attributes
    ----------
    volumes : dict of str -> list of tuple
        Split -> ``(Z, Y, X, sy, sx)`` of each volume (a shape or spacing the
        project does not know counts as 1 slice of 512 x 512 at 0.8 mm).
    """

    volumes: dict[str, list[tuple[int, int, int, float, float]]]

    def count(self, *splits: str) -> int:
        """Number of volumes in ``splits``."""
        return sum(len(self.volumes.get(split, ())) for split in splits)


def project_size(records: Iterable) -> ProjectSize:
    """The :class:`ProjectSize` of a project's volume records (``project.volumes()``)."""
    volumes: dict[str, list] = {}
    for record in records:
        z, y, x = record.shape or (1, 512, 512)
        _sz, sy, sx = record.spacing or (1.0, 0.8, 0.8)
        volumes.setdefault(record.split, []).append((int(z), int(y), int(x), sy, sx))
    return ProjectSize(volumes)


def _lpg_sides(config, size: ProjectSize) -> list[tuple[int, float]]:
    """``(slices, side)`` of each scanned volume (V_M, V_H, V_H_test): its LPG input side
    after resampling to the preset's pixel spacing, at most ``max_side``."""
    from napari_lesion_harvest.lpg.config import get_config

    preset = get_config(config.lpg.architecture)
    max_side = float(config.lpg.max_side or preset.max_side)
    return [
        (z, min(max_side, max(y * sy, x * sx) / preset.pixel_spacing_mm))
        for split in (Split.V_M, Split.V_H, Split.V_H_test)
        for z, y, x, sy, sx in size.volumes.get(split, ())
    ]


def stage_work(stage: str, config, size: ProjectSize, *, first_round: bool) -> float:
    """Units of work of ``stage`` (see the module's table).

    Parameters
    ----------
    stage : str
        One of :data:`~napari_lesion_harvest.harvest.stages.STAGES`.
    config : RoundConfig
    size : ProjectSize
    first_round : bool
        No round finished before this one (the LPG trains from scratch).
    """
    lpc_area = (config.lpc.patch_size / LPC_UNIT_SIDE) ** 2
    if stage == Stage.train_lpg:
        steps = config.lpg.train_steps if first_round else config.lpg.finetune_steps
        sides = [side for _z, side in _lpg_sides(config, size)]
        side = statistics.median(sides) if sides else LPG_UNIT_SIDE
        if config.lpg.crop_px is not None:
            side = min(side, config.lpg.crop_px)
        return steps * config.lpg.batch_size * (side / LPG_UNIT_SIDE) ** 2
    if stage == Stage.scan:
        return sum(z * (side / LPG_UNIT_SIDE) ** 2 for z, side in _lpg_sides(config, size))
    if stage == Stage.verify:
        return size.count(Split.V_M, Split.V_H, Split.V_H_test)
    if stage == Stage.train_lpc:
        trainings = config.lpc.folds + 1 if config.lpc.threshold_mode == "out_of_fold" else 1
        return trainings * config.lpc.epochs * size.count(Split.V_M, Split.V_H) * lpc_area
    if stage == Stage.harvest:
        return size.count(Split.V_H, Split.V_H_test) * lpc_area
    if stage == Stage.evaluate:
        return size.count(Split.V_H_test)
    raise KeyError(f"unknown round stage {stage!r}; stages: {', '.join(STAGES)}")


def device_kind(device: str) -> str:
    """``cpu`` or ``cuda`` (``cuda:1`` counts as ``cuda``)."""
    return "cuda" if device.startswith("cuda") else "cpu"


def rate_model(stage: str, config) -> str:
    """The model part of a rate key: what makes a stage's unit cost differ."""
    if stage in (Stage.train_lpg, Stage.scan):
        return config.lpg.architecture
    if stage in (Stage.train_lpc, Stage.harvest):
        return f"{config.lpc.width}/{config.lpc.variant}"
    return ""


def _rate_key(device: str, stage: str, model: str) -> str:
    return f"{socket.gethostname()}|{device_kind(device)}|{stage}|{model}"


class RateBook:
    """This machine's measured seconds per unit of work, kept in a JSON file.

    Parameters
    ----------
    path : Path
        The rates file (missing or unreadable: no measurement yet).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            values = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            values = {}
        self.measured: dict[str, list[float]] = {
            str(key): [float(v) for v in rates if isinstance(v, int | float) and v > 0]
            for key, rates in (values.items() if isinstance(values, dict) else ())
            if isinstance(rates, list)
        }

    def rate(self, device: str, stage: str, model: str) -> tuple[float, bool]:
        """Seconds per unit, and whether this machine measured it (else the default)."""
        measured = self.measured.get(_rate_key(device, stage, model))
        if measured:
            return statistics.median(measured), True
        kind = device_kind(device)
        default = DEFAULT_RATES.get((kind, stage, model))
        if default is None and stage in (Stage.train_lpc, Stage.harvest):
            width = model.split("/")[0]
            default = DEFAULT_RATES[(kind, stage, f"{width}/multiview")]
            default *= OTHER_LPC_VARIANT_FACTOR
        if default is None:  # an LPG preset without a figure: the paper one's
            default = DEFAULT_RATES[(kind, stage, "paper")]
        return default, False

    def record(self, device: str, stage: str, model: str, seconds_per_unit: float) -> None:
        """Add one measurement and write the file (atomically)."""
        key = _rate_key(device, stage, model)
        kept = [*self.measured.get(key, []), float(seconds_per_unit)][-RATES_KEPT:]
        self.measured[key] = kept
        self.path.parent.mkdir(parents=True, exist_ok=True)
        replace_text(self.path, json.dumps(self.measured, indent=1, sort_keys=True))


@dataclass(frozen=True)
class RoundEstimate:
    """Expected seconds of each stage still to run, and which were measured here.

    Attributes
    ----------
    seconds : dict of str -> float
        Stage -> expected seconds, in the round's order (stages already
        committed by a resumed round are left out).
    measured : set of str
        Stages whose rate this machine measured.
    """

    seconds: dict[str, float]
    measured: frozenset[str] = field(default_factory=frozenset)

    @property
    def total(self) -> float:
        """Expected seconds of the whole (rest of the) round."""
        return sum(self.seconds.values())

    def after(self, stage: str) -> float:
        """Expected seconds of the stages after ``stage``."""
        stages = list(self.seconds)
        if stage not in stages:
            return 0.0
        return sum(self.seconds[s] for s in stages[stages.index(stage) + 1 :])


def estimate_round(
    config,
    size: ProjectSize,
    rates: RateBook,
    *,
    device: str,
    first_round: bool,
    done_stages: Iterable[str] = (),
) -> RoundEstimate:
    """Expected duration of a round, stage by stage (see the module notes).

    Parameters
    ----------
    config : RoundConfig
    size : ProjectSize
    rates : RateBook
    device : str
        ``cpu``, ``cuda`` or ``cuda:N`` (resolved, not ``auto``).
    first_round : bool
        No round finished before this one.
    done_stages : iterable of str
        Stages a resumed round committed already (left out).
    """
    done = set(done_stages)
    seconds, measured = {}, set()
    for stage in STAGES:
        if stage in done:
            continue
        rate, here = rates.rate(device, stage, rate_model(stage, config))
        seconds[stage] = rate * stage_work(stage, config, size, first_round=first_round)
        if here:
            measured.add(stage)
    return RoundEstimate(seconds, frozenset(measured))


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"3 h 20 min"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class StageClock:
    """Stage times and the time left of a running round, from its progress events.

    Feed every event (``stage``, ``step``, ``total``, ``time``) to :meth:`event`.
    A round reports each stage of :data:`STAGES` with a first event when it
    begins (its sub-steps, e.g. ``lpc-train``, carry other names); a stage ends
    when the next begins or the round reports ``done``.

    Parameters
    ----------
    estimate : RoundEstimate
        The round's expected stage times.
    """

    def __init__(self, estimate: RoundEstimate):
        self.estimate = estimate
        self.stage: str | None = None
        self.stage_started: float | None = None
        self.fraction = 0.0  # of the current stage, from its own events
        self.finished: dict[str, float] = {}

    def event(self, event: Mapping) -> tuple[str, float] | None:
        """Take one event; returns ``(stage, seconds)`` when it ends a stage."""
        now = float(event.get("time") or time.time())
        name = str(event.get("stage"))
        ended = None
        if (name in STAGES and name != self.stage) or name == "done":
            if self.stage is not None and self.stage_started is not None:
                ended = (self.stage, now - self.stage_started)
                self.finished[self.stage] = ended[1]
            self.stage = name if name in STAGES else None
            self.stage_started = now
            self.fraction = 0.0
        elif name == self.stage and int(event.get("total") or 0) > 0:
            self.fraction = min(1.0, int(event.get("step") or 0) / int(event["total"]))
        return ended

    def seconds_left(self, now: float | None = None) -> float:
        """Expected seconds to the round's end: the current stage's rest (from its own
        progress once it has some, else from the estimate) and the stages after it."""
        if self.stage is None or self.stage_started is None:
            return self.estimate.total
        now = time.time() if now is None else now
        elapsed = max(0.0, now - self.stage_started)
        if self.fraction >= 0.05:
            rest = elapsed * (1.0 - self.fraction) / self.fraction
        else:
            rest = max(0.0, self.estimate.seconds.get(self.stage, 0.0) - elapsed)
        return rest + self.estimate.after(self.stage)

    def stage_number(self) -> tuple[int, int]:
        """``(n, of)``: the current stage's place among the round's stages."""
        stages = list(STAGES)
        if self.stage not in stages:
            return 0, len(stages)
        return stages.index(self.stage) + 1, len(stages)
