"""``python -m napari_lesion_harvest`` (also the entry point for ``torchrun -m``)."""

from napari_lesion_harvest.cli import main
from napari_lesion_harvest.lpg.distributed import exit_launched_process

if __name__ == "__main__":
    raise SystemExit(exit_launched_process(main()))
