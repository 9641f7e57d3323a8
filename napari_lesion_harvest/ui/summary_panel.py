"""The "Summary" tab: the project's summary to hand on, and Export (a thin Qt view over
:mod:`~napari_lesion_harvest.ui.project_summary`)."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtGui import QFontDatabase
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_harvest.ui.project_summary import EXPORT_FORMATS


class ExportDialog(QDialog):
    """Where to export and which formats (CSV, JSON, the paper's pickle).

    Parameters
    ----------
    folder : path
        The folder proposed (it is created when missing).
    """

    def __init__(self, folder: str | Path, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Export the completed annotations")
        self.folder_edit = QLineEdit(str(folder))
        browse = QPushButton("Choose...")
        browse.clicked.connect(self._choose)
        self.format_boxes = {text: QCheckBox(text) for text in EXPORT_FORMATS}
        for box in self.format_boxes.values():
            box.setChecked(True)
        self.format_boxes["paper (MinedLesions.pkl)"].setToolTip(
            "The paper's pickle layout: {volume: [[(z, [x1, y1, x2, y2, score]), ...], ...]}"
        )
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(self.folder_edit, stretch=1)
        row.addWidget(browse)
        layout = QVBoxLayout(self)
        layout.addWidget(
            QLabel(
                "Marks (original and expert) and harvested lesions (harvested by the rounds "
                "and not rejected, or accepted), with a summary.txt, into the folder:"
            )
        )
        layout.addLayout(row)
        for box in self.format_boxes.values():
            layout.addWidget(box)
        layout.addWidget(buttons)

    def _choose(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export folder", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)

    def formats(self) -> list[str]:
        """The checked formats (``export_annotations`` names)."""
        return [EXPORT_FORMATS[text] for text, box in self.format_boxes.items() if box.isChecked()]


class SummaryPanel(QWidget):
    """The project's summary (read-only text), Copy, Save as..., and Export...

    Signals
    -------
    export_requested(str, list)
        A folder and formats chosen in the export dialog.
    """

    export_requested = Signal(str, list)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.default_folder: Path | None = None
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setPlaceholderText("Open a project to see its summary.")
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the summary to the clipboard")
        self.save_button = QPushButton("Save as...")
        self.export_button = QPushButton("Export...")
        self.export_button.setToolTip(
            "Write the completed annotations as CSV, JSON and the paper's pickle "
            "(as lesion-harvest export), with this summary"
        )
        self.message = QLabel("")
        self.message.setWordWrap(True)
        buttons = QHBoxLayout()
        for button in (self.copy_button, self.save_button, self.export_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.text, stretch=1)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        self.copy_button.clicked.connect(self._copy)
        self.save_button.clicked.connect(self._save)
        self.export_button.clicked.connect(self.ask_export)
        self.set_project_open(None)

    def set_project_open(self, folder: Path | None) -> None:
        """Enable the buttons for an open project (``folder``), or disable them."""
        self.default_folder = None if folder is None else Path(folder) / "exports"
        for button in (self.copy_button, self.save_button, self.export_button):
            button.setEnabled(folder is not None)
        if folder is None:
            self.text.setPlainText("")

    def show_summary(self, text: str) -> None:
        """Show the project's summary."""
        self.text.setPlainText(text)

    def say(self, text: str, *, problem: bool = False) -> None:
        """A message under the buttons (it stays until the next one)."""
        self.message.setText(text)
        self.message.setStyleSheet("color: #ff8080" if problem else "")

    def _copy(self) -> None:
        QApplication.clipboard().setText(self.text.toPlainText())
        self.say("Summary copied to the clipboard.")

    def _save(self) -> None:
        path, _filter = QFileDialog.getSaveFileName(
            self, "Save the summary", str(self.default_folder or ""), "Text (*.txt)"
        )
        if path:
            try:
                Path(path).write_text(self.text.toPlainText(), encoding="utf-8")
            except OSError as error:
                self.say(f"Summary not saved: {error}", problem=True)
                return
            self.say(f"Summary saved to {path}.")

    def ask_export(self) -> None:
        """The export dialog; Export emits ``export_requested``."""
        dialog = ExportDialog(self.default_folder or "", self)
        if not dialog.exec():
            return
        formats = dialog.formats()
        folder = dialog.folder_edit.text().strip()
        if not folder or not formats:
            self.say("Nothing exported: choose a folder and at least one format.", problem=True)
            return
        self.export_requested.emit(folder, formats)
