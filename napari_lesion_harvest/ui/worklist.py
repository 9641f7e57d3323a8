"""The volume worklist: a table model over the store's volume summaries, filter and search.

A ``QTableView`` over a ``QAbstractTableModel`` asks only for the visible
cells, so 15,000 volumes scroll and sort without building 100,000 items.
Splits are shown in plain words (:data:`SPLIT_NAMES`), the paper's symbols in
tooltips. Selected volumes can be held out for testing (``V_H_test``,
``V_D_test``) or put back to harvest (``V_H``).
"""

from __future__ import annotations

from qtpy.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QMenu,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_harvest.vocabulary import Split

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
#: Split (the paper's symbol) -> (plain name, what it means).
SPLIT_NAMES: dict[str, tuple[str, str]] = {
    Split.V_M: (
        "fully marked",
        "V_M: every lesion is marked (complete); the rounds learn from it",
    ),
    Split.V_H: ("to harvest", "V_H: incompletely marked; the rounds harvest its missed lesions"),
    Split.V_H_test: (
        "held out: harvest test",
        "V_H_test: held out from the rounds; measures the harvest (Table I)",
    ),
    Split.V_D_test: (
        "held out: detector test",
        "V_D_test: held out from the rounds; for testing a detector trained on the result",
    ),
}
#: Splits the worklist can move selected volumes to: name -> menu text.
HOLD_OUT_CHOICES: dict[str, str] = {
    Split.V_H_test: "Hold out as harvest test (V_H_test)",
    Split.V_D_test: "Hold out as detector test (V_D_test)",
    Split.V_H: "Put back to harvest (V_H)",
}
#: Pixels added to the widest volume id so that the id column never elides it.
ID_COLUMN_MARGIN_PX = 24


def split_name(split: str) -> str:
    """The plain name of a split (the symbol itself when unknown)."""
    return SPLIT_NAMES.get(split, (split, ""))[0]


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
        attribute = COLUMNS[index.column()][1]
        value = getattr(self.summaries[index.row()], attribute)
        if role == Qt.ItemDataRole.DisplayRole:
            if attribute == "split":
                return split_name(value)
            return ("yes" if value else "") if isinstance(value, bool) else str(value)
        if role == Qt.ItemDataRole.ToolTipRole:
            if attribute == "split":
                return SPLIT_NAMES.get(value, (value, value))[1]
            if attribute == "volume_id":
                return value
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
    split_requested(list, str)
        The selected volume ids and the split chosen in "Hold out".
    """

    volume_requested = Signal(str)
    next_requested = Signal()
    split_requested = Signal(list, str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model = VolumeTableModel(self)
        self.proxy = VolumeFilter(self)
        self.proxy.setSourceModel(self.model)
        self.search = QLineEdit()
        self.search.setPlaceholderText("search volume id")
        self.split_box = QComboBox()
        self.split_box.addItem(ALL_SPLITS, None)
        for split, (name, meaning) in SPLIT_NAMES.items():
            self.split_box.addItem(name, split)
            self.split_box.setItemData(
                self.split_box.count() - 1, meaning, Qt.ItemDataRole.ToolTipRole
            )
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # import order until clicked
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        header = self.table.horizontalHeader()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        metrics = self.table.fontMetrics()
        for column, (title, attribute) in enumerate(COLUMNS[1:], start=1):
            texts = [name for name, _ in SPLIT_NAMES.values()] if attribute == "split" else []
            widest = max(metrics.horizontalAdvance(t) for t in [title, "00000", *texts])
            self.table.setColumnWidth(column, widest + ID_COLUMN_MARGIN_PX)
        self.next_button = QPushButton("Next volume to annotate")
        self.next_button.setToolTip(
            "Open the volume to harvest (V_H) whose proposals the last round was least sure of"
        )
        self.open_button = QPushButton("Open")
        self.hold_out_button = QPushButton("Hold out...")
        self.hold_out_button.setToolTip(
            "Move the selected volumes out of the rounds, to measure them (or back to harvest)"
        )
        hold_out_menu = QMenu(self.hold_out_button)
        for split, text in HOLD_OUT_CHOICES.items():
            hold_out_menu.addAction(text, lambda s=split: self._request_split(s))
        self.hold_out_button.setMenu(hold_out_menu)
        top = QHBoxLayout()
        top.addWidget(self.search)
        top.addWidget(self.split_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.hold_out_button)
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
        """Show the store's volume summaries (keeps filter and sort); the id column is as
        wide as the longest id."""
        self.model.set_summaries(summaries)
        ids = [s.volume_id for s in self.model.summaries]
        if ids:
            metrics = self.table.fontMetrics()
            widest = max(metrics.horizontalAdvance(v) for v in _longest(ids))
            self.table.setColumnWidth(0, widest + ID_COLUMN_MARGIN_PX)

    def _refilter(self, *_args) -> None:
        self.proxy.set_filter(split=self.split_box.currentData(), text=self.search.text())

    def selected_volume_ids(self) -> list[str]:
        """Ids of the selected rows, in the table's order."""
        rows = sorted(index.row() for index in self.table.selectionModel().selectedRows())
        return [
            self.model.volume_id(self.proxy.mapToSource(self.proxy.index(r, 0)).row())
            for r in rows
        ]

    def _request_split(self, split: str) -> None:
        volume_ids = self.selected_volume_ids()
        if volume_ids:
            self.split_requested.emit(volume_ids, split)

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


def _longest(texts: list[str], count: int = 20) -> list[str]:
    """The ``count`` longest of ``texts`` (the widest on screen is among them)."""
    return sorted(texts, key=len)[-count:]
