"""Shared fixtures (paths to the real reference data in ``../shared/data``) and import order."""

from __future__ import annotations

from pathlib import Path

import pytest

# Load triton (through torchvision and torch._dynamo) before any test starts Qt:
# its bundled LLVM crashes the process (SIGSEGV) when it loads after Mesa's OpenGL,
# so without this a UI test followed by a torch test segfaults (see
# test_napari_contributions_load_and_make_sample_data_without_torch for the plugin).
import torchvision.models  # noqa: F401

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
