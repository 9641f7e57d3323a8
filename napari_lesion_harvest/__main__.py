"""``python -m napari_lesion_harvest`` (also the entry point for ``torchrun -m``)."""

from napari_lesion_harvest.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
