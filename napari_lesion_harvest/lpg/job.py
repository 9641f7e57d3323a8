"""Run LPG training or detection from a JSON job file, in one process or under ``torchrun``.

::

    torchrun --nproc_per_node 4 -m napari_lesion_harvest.lpg.job job.json

Job file (paths relative to the job file's folder)::

    {"mode": "train" | "detect",
     "volumes": [{"id": "v1", "path": "v1.npy", "spacing": [sz, sy, sx]}, ...],
     "config": "lite",                                   # train from scratch
     "samples": [{"volume": "v1", "z": 3, "positive_boxes": [[x1, y1, x2, y2]],
                  "hard_negative_boxes": [],
                  "background_known": true,
                  "ignore_boxes": []}, ...],              # train
     "options": {"steps": 100, "batch_size": 4, ...,     # LPGTrainOptions fields
                 "augmentation": {"edge_probability": 0.25, ...}},  # or null: none
     "init_checkpoint": null,                            # train: fine-tune from
     "checkpoint": "lpg.pt",                             # train: output; detect: model
     "detect": {"batch_size": 8, "min_score": 0.1},      # detect_volume options
     "output": "result.json"}                            # written by rank 0

Volumes are ``.npy`` arrays ``(Z, Y, X)`` in HU, memory-mapped and read slice by slice.
Training's output JSON holds the steps done and whether all ranks ended with
identical weights; detection's holds ``{volume_id: [{"z", "boxes", "scores"}]}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from napari_lesion_harvest.io.volume import CTVolume


class JobError(ValueError):
    """A job file that cannot be run; the message names the file and field."""


def _load_volumes(job: dict, folder: Path, job_path: Path) -> dict[str, CTVolume]:
    volumes = {}
    for i, entry in enumerate(job.get("volumes", [])):
        try:
            path = folder / entry["path"]
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            volumes[entry["id"]] = CTVolume(
                entry["id"],
                array.shape,
                tuple(entry["spacing"]),
                load_slice=array.__getitem__,
                source=f"npy:{path}",
            )
        except (KeyError, OSError, ValueError) as error:
            raise JobError(f"{job_path}: volumes[{i}]: {error}") from error
    return volumes


def _samples(job: dict, volumes: dict[str, CTVolume], job_path: Path) -> list:
    from napari_lesion_harvest.lpg.data import LPGSample

    samples = []
    for i, entry in enumerate(job.get("samples", [])):
        try:
            background_known = entry.get("background_known", True)
            if not isinstance(background_known, bool):
                raise ValueError(f"background_known must be true or false: {background_known!r}")
            samples.append(
                LPGSample(
                    volumes[entry["volume"]],
                    entry["z"],
                    np.asarray(entry.get("positive_boxes", []), dtype=np.float64),
                    np.asarray(entry.get("hard_negative_boxes", []), dtype=np.float64),
                    background_known=background_known,
                    ignore_boxes=np.asarray(entry.get("ignore_boxes", []), dtype=np.float64),
                )
            )
        except (KeyError, ValueError) as error:
            raise JobError(f"{job_path}: samples[{i}]: {error}") from error
    return samples


def _train_options(job: dict, job_path: Path):
    """``LPGTrainOptions`` of the job's ``options`` (``augmentation``: an object of
    :class:`~napari_lesion_harvest.lpg.data.SliceAugmentation` fields, or null)."""
    from napari_lesion_harvest.lpg.data import SliceAugmentation
    from napari_lesion_harvest.lpg.train import LPGTrainOptions

    options = dict(job.get("options", {}))
    fields = options.get("augmentation", {})
    try:
        if fields is not None and not isinstance(fields, dict):
            raise TypeError(f"augmentation must be an object or null, got {fields!r}")
        if fields is not None:
            ranges = {k: tuple(v) for k, v in fields.items() if k.endswith("_range")}
            options["augmentation"] = SliceAugmentation(**(fields | ranges))
        return LPGTrainOptions(**options)
    except TypeError as error:
        raise JobError(f"{job_path}: options: {error}") from error


def _weights_in_sync(model, context) -> bool:
    import torch

    from napari_lesion_harvest.lpg.distributed import gather_to_main

    flat = torch.cat([p.detach().float().reshape(-1).cpu() for p in model.parameters()])
    gathered = gather_to_main(flat.numpy().tobytes(), context)
    return gathered is None or all(g == gathered[0] for g in gathered)


def run_job(job_path: str | Path) -> dict | None:
    """Run a job file; returns the result dict on rank 0 (``None`` on other ranks)."""
    from napari_lesion_harvest.lpg.checkpoint import load_model
    from napari_lesion_harvest.lpg.distributed import init_distributed
    from napari_lesion_harvest.lpg.infer import detect_volumes
    from napari_lesion_harvest.lpg.train import train_lpg

    job_path = Path(job_path)
    try:
        job = json.loads(job_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise JobError(f"{job_path}: cannot read job file ({error})") from error
    folder = job_path.parent
    context = init_distributed()
    volumes = _load_volumes(job, folder, job_path)
    mode = job.get("mode")
    if mode == "train":
        init = job.get("init_checkpoint")
        result = train_lpg(
            _samples(job, volumes, job_path),
            config=job.get("config", "lite"),
            options=_train_options(job, job_path),
            init_checkpoint=folder / init if init else None,
            checkpoint_path=folder / job["checkpoint"],
            device=context.device,
        )
        summary = {
            "steps": result.step,
            "stopped": result.stopped,
            "world_size": context.world_size,
            "ranks_in_sync": _weights_in_sync(result.model, context),
            "final_loss": result.history[-1]["total"] if result.history else None,
        }
    elif mode == "detect":
        model = load_model(folder / job["checkpoint"]).to(context.device)
        found = detect_volumes(model, list(volumes.values()), **job.get("detect", {}))
        summary = None
        if found is not None:
            summary = {
                vid: [
                    {"z": d.z, "boxes": d.boxes.tolist(), "scores": d.scores.tolist()}
                    for d in detections
                ]
                for vid, detections in found.items()
            }
    else:
        raise JobError(f"{job_path}: mode must be 'train' or 'detect', got {mode!r}")
    if context.is_main and summary is not None:
        output = folder / job.get("output", "result.json")
        temporary = output.with_name(f".{output.name}.tmp")
        temporary.write_text(json.dumps(summary))
        temporary.replace(output)
    if context.active:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return summary if context.is_main else None


def main(argv: list[str] | None = None) -> int:
    """``python -m napari_lesion_harvest.lpg.job JOB.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m napari_lesion_harvest.lpg.job JOB.json", file=sys.stderr)
        return 2
    try:
        run_job(args[0])
    except JobError as error:
        print(f"lpg job: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from napari_lesion_harvest.lpg.distributed import exit_launched_process

    raise SystemExit(exit_launched_process(main()))
