"""Create or open a harvest project, start a demo project, export; remember recent projects."""

from __future__ import annotations

import json
import os
from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_harvest.durable import replace_text

#: How many recent projects are remembered.
MAX_RECENT = 8


def config_dir() -> Path:
    """Folder of the plugin's user settings (``$LESION_HARVEST_CONFIG`` overrides it)."""
    override = os.environ.get("LESION_HARVEST_CONFIG")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "napari-lesion-harvest"


def read_recent() -> list[str]:
    """Recent project folders, newest first (missing or unreadable file: none)."""
    try:
        values = json.loads((config_dir() / "recent.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [str(v) for v in values if isinstance(v, str)][:MAX_RECENT]


def remember_recent(folder: str | Path) -> list[str]:
    """Put ``folder`` first in the recent list (written atomically); returns the list."""
    folder = str(Path(folder).resolve())
    recent = [folder] + [f for f in read_recent() if f != folder]
    recent = recent[:MAX_RECENT]
    path = config_dir() / "recent.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_text(path, json.dumps(recent, indent=1))
    return recent


#: What the panel says while no project is open.
NO_PROJECT_TEXT = (
    "No project open. To try the dock, <b>start a demo project</b>: a small synthetic CT set "
    "with fully marked, to-harvest and held-out volumes, ready for a round. For your own "
    "data, create a new project and import it."
)


def new_folder_dialog(parent, title: str) -> str:
    """Ask for a folder that may not exist yet (it is created); '' when cancelled."""
    dialog = QFileDialog(parent, title)
    dialog.setFileMode(QFileDialog.FileMode.AnyFile)
    dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
    dialog.setOption(QFileDialog.Option.DontUseNativeDialog, True)
    dialog.setOption(QFileDialog.Option.DontConfirmOverwrite, True)
    dialog.setLabelText(QFileDialog.DialogLabel.Accept, "Create")
    dialog.setLabelText(QFileDialog.DialogLabel.FileName, "Folder")
    if not dialog.exec() or not dialog.selectedFiles():
        return ""
    return dialog.selectedFiles()[0]


class ProjectPanel(QWidget):
    """Buttons to create / open a project folder, start a demo project, import, export, and
    a recent-projects list.

    Signals
    -------
    open_requested(str, bool)
        Folder and whether to create it.
    demo_requested(str)
        A new folder for a demo project.
    import_requested(list)
        Paths to import (a DeepLesion / DICOM folder, or files).
    """

    open_requested = Signal(str, bool)
    demo_requested = Signal(str)
    import_requested = Signal(list)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.path_label = QLabel(NO_PROJECT_TEXT)
        self.path_label.setWordWrap(True)
        self.demo_button = QPushButton("Start a demo project...")
        self.demo_button.setToolTip(
            "A small synthetic CT project (phantoms like the sample) with fully marked (V_M), "
            "to-harvest (V_H) and held-out (V_H_test) volumes, ready for a round"
        )
        self.create_button = QPushButton("New project...")
        self.create_button.setToolTip("Choose or type a new folder; it is created")
        self.open_button = QPushButton("Open project...")
        self.import_button = QPushButton("Import data...")
        self.import_button.setToolTip(
            "DeepLesion folder or DL_info.csv, NIfTI / NRRD / MHA files, DICOM folders, mark files"
        )
        self.import_button.setEnabled(False)
        import_menu = QMenu(self.import_button)
        import_menu.addAction("Folder (DeepLesion, DICOM series)...", self._choose_import_folder)
        import_menu.addAction("Files (DL_info.csv, images, marks)...", self._choose_import_files)
        self.import_button.setMenu(import_menu)
        self.recent_box = QComboBox()
        self.recent_box.setPlaceholderText("recent projects")
        buttons = QHBoxLayout()
        buttons.addWidget(self.create_button)
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.import_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.path_label)
        layout.addWidget(self.demo_button)
        layout.addLayout(buttons)
        layout.addWidget(self.recent_box)
        self.demo_button.clicked.connect(self._choose_demo)
        self.create_button.clicked.connect(lambda: self._choose(create=True))
        self.open_button.clicked.connect(lambda: self._choose(create=False))
        self.recent_box.activated.connect(self._open_recent)
        self.show_recent(read_recent())

    def show_recent(self, recent: list[str]) -> None:
        """Fill the recent-projects list."""
        self.recent_box.clear()
        self.recent_box.addItems(recent)
        self.recent_box.setCurrentIndex(-1)

    def show_project(self, folder: str | Path | None, summary: str = "") -> None:
        """Show the open project's folder and a one-line summary (None: no project)."""
        if folder is None:
            self.path_label.setText(NO_PROJECT_TEXT)
            self.import_button.setEnabled(False)
            return
        self.path_label.setText(f"<b>{Path(folder).name}</b><br>{folder}<br>{summary}")
        self.import_button.setEnabled(True)

    def _choose_demo(self) -> None:
        folder = new_folder_dialog(self, "New folder for the demo project")
        if folder:
            self.demo_requested.emit(folder)

    def _choose_import_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import a DeepLesion or DICOM folder")
        if folder:
            self.import_requested.emit([folder])

    def _choose_import_files(self) -> None:
        files, _filter = QFileDialog.getOpenFileNames(
            self,
            "Import files",
            "",
            "Data (*.csv *.json *.pkl *.nii *.nii.gz *.nrrd *.mha *.mhd);;All files (*)",
        )
        if files:
            self.import_requested.emit(list(files))

    def _choose(self, *, create: bool) -> None:
        if create:
            folder = new_folder_dialog(self, "New harvest project folder")
        else:
            folder = QFileDialog.getExistingDirectory(self, "Open harvest project folder")
        if folder:
            self.open_requested.emit(folder, create)

    def _open_recent(self, index: int) -> None:
        if index >= 0:
            self.open_requested.emit(self.recent_box.itemText(index), False)
