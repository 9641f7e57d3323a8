"""The package as installed: light import, the command line, and the npe2 manifest."""

import subprocess
import sys
from pathlib import Path

import pytest

from napari_lesion_harvest.cli import COMMAND_MODULES, build_parser

EXPECTED_COMMANDS = {
    "init", "import", "annotate", "split", "marks", "round", "status", "export", "demo",
    "evaluate", "synth", "check", "backup", "restore", "weights", "pretrain",
}  # fmt: skip


def test_importing_the_package_loads_neither_torch_nor_qt():
    code = (
        "import sys, napari_lesion_harvest.cli, napari_lesion_harvest.store,"
        " napari_lesion_harvest.annotation.recist_editor;"
        "print(sorted(m for m in ('torch', 'torchvision', 'napari', 'qtpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_subcommand_is_listed_and_has_its_own_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == EXPECTED_COMMANDS
    assert len(COMMAND_MODULES) == len(set(COMMAND_MODULES))
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: lesion-harvest {name}" in capsys.readouterr().out


def test_console_script_runs_and_bad_arguments_exit_2():
    script = Path(sys.executable).with_name("lesion-harvest")  # the installed console script
    ok = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "round" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "napari_lesion_harvest", "round"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "arguments are required: project" in bad.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["round", "P", "--rounds", "0"],
        ["round", "P", "--rounds", "-1"],
        ["export", "P", "OUT", "--round", "0"],
        ["demo", "--volumes", "0"],
        ["demo", "--size", "x"],
        ["pretrain", "P", "--steps", "0"],
        ["pretrain", "P", "--minutes", "0"],
    ],
)
def test_counts_below_one_are_refused_by_name(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert f"argument {argv[-2]}:" in capsys.readouterr().err


def test_manifest_is_valid_and_contributes_widget_readers_and_sample():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-lesion-harvest")
    assert manifest.display_name == "Lesion Harvest"
    contributions = manifest.contributions
    assert contributions.widgets and contributions.readers and contributions.sample_data
    for command in contributions.commands:
        assert command.python_name.startswith("napari_lesion_harvest.")


def test_napari_contributions_load_and_make_sample_data_without_torch():
    """The napari process must never import torch's compiler stack.

    torchvision and ``torch._dynamo`` load triton, whose bundled LLVM crashes the
    process (SIGSEGV) once Mesa's OpenGL, with its own LLVM, is up. Training and
    scoring run in a ``lesion-harvest round`` subprocess; the dock, the readers and
    the sample data stay free of torch.
    """
    code = (
        "import sys, importlib\n"
        "from npe2 import PluginManifest\n"
        "manifest = PluginManifest.from_distribution('napari-lesion-harvest')\n"
        "for command in manifest.contributions.commands:\n"
        "    module, attribute = command.python_name.split(':')\n"
        "    getattr(importlib.import_module(module), attribute)\n"
        "from napari_lesion_harvest.synthetic.sample import make_sample_data\n"
        "assert make_sample_data()\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'triton') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_whole_tree_passes_ruff_lint_and_format():
    ruff = Path(sys.executable).with_name("ruff")
    root = Path(__file__).resolve().parents[1]
    lint = subprocess.run([str(ruff), "check", "."], cwd=root, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    fmt = subprocess.run(
        [str(ruff), "format", "--check", "."], cwd=root, capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout
