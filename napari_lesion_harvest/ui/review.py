"""Keyboard-driven proposal review: a list sorted by lesion score, accept / reject / undo.

Keys (in the list and on the napari canvas): N or Down = next proposal, P or
Up = previous, A = accept, R = reject, U = undo the last verdict. Each verdict
is written to the store at once through ``set_verdict``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_harvest.ui.proposal_overlay import ProposalItem

COLUMNS = ("score", "role", "slices", "verdict")
#: Review keys (napari key names) -> ReviewPanel method names.
REVIEW_KEYS = {"n": "next", "p": "previous", "a": "accept", "r": "reject", "u": "undo"}


class ReviewPanel(QWidget):
    """The open volume's proposals, best lesion score first, reviewed from the keyboard.

    Parameters
    ----------
    set_verdict : callable
        ``set_verdict(proposal_id, verdict_or_None)``: saves at once (the store).
    show_item : callable
        ``show_item(item)``: jump to the proposal's best slice and centre it.
    """

    def __init__(
        self,
        *,
        set_verdict: Callable[[int, str | None], None],
        show_item: Callable[[ProposalItem], None],
        parent=None,
    ):
        super().__init__(parent)
        self._set_verdict = set_verdict
        self._show_item = show_item
        self.items: list[ProposalItem] = []
        self.current: int | None = None
        self._undo: list[tuple[int, str | None]] = []
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.cellClicked.connect(lambda row, _col: self.go_to(row))
        self.table.keyPressEvent = self._table_key
        self.help = QLabel("N/P next/previous  A accept  R reject  U undo")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addWidget(self.help)

    # ------------------------------------------------------------------ content

    def set_items(self, items: list[ProposalItem]) -> None:
        """Show ``items`` (already sorted by lesion score, highest first)."""
        current_id = self.current_item.proposal_id if self.current_item else None
        self.items = list(items)
        self.table.setRowCount(len(self.items))
        for row in range(len(self.items)):
            self._fill_row(row)
        ids = [item.proposal_id for item in self.items]
        self.current = ids.index(current_id) if current_id in ids else None
        if self.current is not None:
            self.table.selectRow(self.current)

    def _fill_row(self, row: int) -> None:
        item = self.items[row]
        slices = item.proposal.slices
        values = (
            f"{item.lesion_score:.3f}",
            item.display_role,
            f"{slices.min()}-{slices.max()}",
            item.verdict or "",
        )
        for column, text in enumerate(values):
            self.table.setItem(row, column, QTableWidgetItem(text))

    @property
    def current_item(self) -> ProposalItem | None:
        """The proposal under review (None before the first jump)."""
        return None if self.current is None else self.items[self.current]

    # ------------------------------------------------------------------ navigation

    def go_to(self, row: int) -> None:
        """Make ``row`` current and show it in the viewer."""
        if not self.items:
            return
        self.current = max(0, min(row, len(self.items) - 1))
        self.table.selectRow(self.current)
        self._show_item(self.items[self.current])

    def next(self) -> None:
        """Next proposal (lower lesion score)."""
        self.go_to(0 if self.current is None else self.current + 1)

    def previous(self) -> None:
        """Previous proposal (higher lesion score)."""
        self.go_to(0 if self.current is None else self.current - 1)

    # ------------------------------------------------------------------ verdicts

    def accept(self) -> None:
        """Accept the current proposal as a lesion, then move on."""
        self._verdict("accepted")

    def reject(self) -> None:
        """Reject the current proposal, then move on."""
        self._verdict("rejected")

    def _verdict(self, verdict: str) -> None:
        if self.current is None:
            self.next()
            if self.current is None:
                return
        item = self.items[self.current]
        self._set_verdict(item.proposal_id, verdict)
        self._undo.append((self.current, item.verdict))
        self._update(self.current, verdict)
        if self.current < len(self.items) - 1:
            self.next()
        else:
            self._show_item(self.items[self.current])

    def undo(self) -> None:
        """Undo the last verdict (the store gets the previous one back) and go to it."""
        if not self._undo:
            return
        row, previous = self._undo.pop()
        if row >= len(self.items):
            return
        self._set_verdict(self.items[row].proposal_id, previous)
        self._update(row, previous)
        self.go_to(row)

    def _update(self, row: int, verdict: str | None) -> None:
        self.items[row] = replace(self.items[row], verdict=verdict)
        self._fill_row(row)

    # ------------------------------------------------------------------ keys

    def handle_key(self, key: str) -> bool:
        """Run the review action bound to napari key name ``key``; True when there is one."""
        name = REVIEW_KEYS.get(key.lower())
        if name is None:
            return False
        getattr(self, name)()
        return True

    def _table_key(self, event) -> None:
        key = event.key()
        if key == Qt.Key.Key_Down:
            self.next()
        elif key == Qt.Key.Key_Up:
            self.previous()
        elif not self.handle_key(event.text()):
            QTableWidget.keyPressEvent(self.table, event)
