"""Shared fixtures (paths to the real reference data in ``../shared/data``, a tiny
synthetic DeepLesion dataset) and import order.

Helper modules of the tests (``tests/NAME.py`` without the ``test_`` prefix; a test
module is never imported by another) are imported as ``from tests.NAME import ...``:
projects, marks and rounds written through the store in :mod:`tests.builders`, the
``lesion-harvest`` command in :mod:`tests.round_command`, rounds run in the test's
process in :mod:`tests.round_runs`. The project builders that benchmarks and tools use
too live in the package (:mod:`napari_lesion_harvest.harvest.blob_project`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Load triton (through torchvision and torch._dynamo) before any test starts Qt:
# its bundled LLVM crashes the process (SIGSEGV) when it loads after Mesa's OpenGL,
# so without this a UI test followed by a torch test segfaults (see
# test_napari_contributions_load_and_make_sample_data_without_torch for the plugin).
import torchvision.models  # noqa: F401

from napari_lesion_harvest.harvest.blob_project import make_blob_project
from napari_lesion_harvest.synthetic.dataset import generate_dataset
from napari_lesion_harvest.synthetic.phantom import PhantomConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder with the real DeepLesion rows and the paper's annotation pickles."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"reference data folder {SHARED_DATA} is missing (expected beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dl_info_rows_csv(shared_data) -> Path:
    """The six real ``DL_info.csv`` rows."""
    return shared_data / "deeplesion" / "DL_info_example_rows.csv"


@pytest.fixture(scope="session")
def annotation_dir(shared_data) -> Path:
    """The paper's released DeepLesionAnnotation pickles."""
    return shared_data / "deeplesion_annotation"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A synthetic DeepLesion-layout dataset of 3 volumes (64 px, 8-10 slices, seed 1)
    with NIfTI copies, one per test module.

    Returns the :class:`~napari_lesion_harvest.synthetic.dataset.SyntheticDataset`:
    ``root`` (``Images_png/`` + ``DL_info.csv``), ``root / "nifti"``, ``truth_marks``.
    """
    config = PhantomConfig(size=64, slices=(8, 10))
    folder = tmp_path_factory.mktemp("data") / "synth"
    return generate_dataset(folder, volumes=3, seed=1, config=config, write_nifti=True)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """A blob project (never changed: each test copies it) and its folder (with
    ``tiny.json``)."""
    folder = tmp_path_factory.mktemp("blobs")
    return make_blob_project(folder), folder


@pytest.fixture
def project_dir(blobs, tmp_path):
    """A copy of the blob project (its volumes stay where the project recorded them)."""
    return shutil.copytree(blobs[0], tmp_path / "project")
