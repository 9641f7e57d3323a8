"""The volume worklist: a table model over the store's volume summaries, filter and search.

A ``QTableView`` over a ``QAbstractTableModel`` asks only for the visible
cells, so 15,000 volumes scroll and sort without building 100,000 items.
"""

from __future__ import annotations

from qtpy.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

#: Column title -> VolumeSummary attribute.
COLUMNS = (
    ("volume", "volume_id"),
    ("split", "split"),
    ("complete", "complete"),
    ("marks", "n_marks"),
    ("proposals", "n_proposals"),
    ("harvested", "n_harvested"),
    ("reviewed", "n_verdicts"),
)
ALL_SPLITS = "all splits"


class VolumeTableModel(QAbstractTableModel):
    """Rows of :class:`~napari_lesion_harvest.store.records.VolumeSummary`."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.summaries: list = []
        self._imported: list = []
        self._sort: tuple[int, Qt.SortOrder] = (-1, Qt.SortOrder.AscendingOrder)

    def set_summaries(self, summaries) -> None:
        """Replace every row (kept in the current sort order)."""
        self.beginResetModel()
        self._imported = list(summaries)
        self.summaries = self._sorted(self._imported)
        self.endResetModel()

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        """Sort rows by a column in Python (column -1: import order)."""
        self.layoutAboutToBeChanged.emit()
        self._sort = (column, order)
        self.summaries = self._sorted(self._imported)
        self.layoutChanged.emit()

    def _sorted(self, summaries: list) -> list:
        column, order = self._sort
        if column < 0:
            return list(summaries)
        attribute = COLUMNS[column][1]
        reverse = order == Qt.SortOrder.DescendingOrder
        return sorted(summaries, key=lambda s: getattr(s, attribute), reverse=reverse)

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008, N802 - Qt API
        return 0 if parent.isValid() else len(self.summaries)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008, N802 - Qt API
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        value = getattr(self.summaries[index.row()], COLUMNS[index.column()][1])
        if role == Qt.ItemDataRole.DisplayRole:
            return ("yes" if value else "") if isinstance(value, bool) else str(value)
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section][0]
        return None

    def volume_id(self, row: int) -> str:
        """Volume id of source row ``row``."""
        return self.summaries[row].volume_id


class VolumeFilter(QSortFilterProxyModel):
    """Filter by split and by a search text in the volume id; sorting is the source's.

    Sorting 15,000 rows through the proxy calls ``data()`` millions of times;
    the source model sorts its Python list instead (milliseconds).
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.split: str | None = None
        self.text = ""

    def set_filter(self, *, split: str | None, text: str) -> None:
        """Show only ``split`` (None: every split) and ids containing ``text``."""
        self.split, self.text = split, text.strip().lower()
        self.invalidateFilter()

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        """Delegate to the source model (which keeps the proxy's rows in its order)."""
        self.sourceModel().sort(column, order)

    def filterAcceptsRow(self, row, parent) -> bool:  # noqa: N802 - Qt API
        summary = self.sourceModel().summaries[row]
        if self.split is not None and summary.split != self.split:
            return False
        return not self.text or self.text in summary.volume_id.lower()


class WorklistPanel(QWidget):
    """Search, split filter, the volume table and "Next volume to annotate".

    Signals
    -------
    volume_requested(str)
        Double-click or Enter on a row.
    next_requested()
        The "Next volume to annotate" button.
    """

    volume_requested = Signal(str)
    next_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = VolumeTableModel(self)
        self.proxy = VolumeFilter(self)
        self.proxy.setSourceModel(self.model)
        self.search = QLineEdit()
        self.search.setPlaceholderText("search volume id")
        self.split_box = QComboBox()
        self.split_box.addItems([ALL_SPLITS, "V_M", "V_H", "V_H_test", "V_D_test"])
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # import order until clicked
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.next_button = QPushButton("Next volume to annotate")
        self.open_button = QPushButton("Open")
        top = QHBoxLayout()
        top.addWidget(self.search)
        top.addWidget(self.split_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.next_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        self.search.textChanged.connect(self._refilter)
        self.split_box.currentTextChanged.connect(self._refilter)
        self.table.doubleClicked.connect(self._request)
        self.table.activated.connect(self._request)  # Enter
        self.open_button.clicked.connect(lambda: self._request(self.table.currentIndex()))
        self.next_button.clicked.connect(self.next_requested.emit)

    def set_summaries(self, summaries) -> None:
        """Show the store's volume summaries (keeps filter and sort)."""
        self.model.set_summaries(summaries)

    def _refilter(self, *_args) -> None:
        split = self.split_box.currentText()
        self.proxy.set_filter(
            split=None if split == ALL_SPLITS else split, text=self.search.text()
        )

    def visible_volume_ids(self) -> list[str]:
        """Volume ids in the table's current filter and sort order."""
        rows = (
            self.proxy.mapToSource(self.proxy.index(r, 0)).row()
            for r in range(self.proxy.rowCount())
        )
        return [self.model.volume_id(row) for row in rows]

    def select_volume(self, volume_id: str) -> None:
        """Select (and scroll to) a volume's row when it is visible."""
        for row in range(self.proxy.rowCount()):
            index = self.proxy.index(row, 0)
            if self.model.volume_id(self.proxy.mapToSource(index).row()) == volume_id:
                self.table.selectRow(row)
                self.table.scrollTo(index)
                return

    def _request(self, index) -> None:
        if index.isValid():
            self.volume_requested.emit(self.model.volume_id(self.proxy.mapToSource(index).row()))
