"""Keyboard-driven proposal review: a filtered list sorted by lesion score, accept / reject / undo.

Keys (in the list and on the napari canvas): N or Down = next proposal, P or
Up = previous, A = accept, R = reject, U = undo the last verdict. Each verdict
is written to the store at once through ``set_verdict``. A proposal that a
RECIST mark decides (a marked lesion, or a hard negative of a fully annotated
volume) takes no verdict: the panel says why and what to do instead, in the
dock. The view (:mod:`~napari_lesion_harvest.ui.proposal_filter`) chooses
which proposals are listed and drawn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_harvest.harvest.annotation_priority import BAND
from napari_lesion_harvest.ui.proposal_filter import (
    DEFAULT_VIEW,
    VIEWS,
    filter_items,
    review_threshold,
)
from napari_lesion_harvest.ui.proposal_overlay import ROLE_TOOLTIPS, ProposalItem
from napari_lesion_harvest.vocabulary import Verdict

COLUMNS = ("score", "role", "slices", "verdict")
#: Review keys (napari key names) -> ReviewPanel method names.
REVIEW_KEYS = {"n": "next", "p": "previous", "a": "accept", "r": "reject", "u": "undo"}
COLUMN_TOOLTIPS = (
    "lesion score s_gc = s_g * s_c (objectness times classifier score)",
    "what the round made of the proposal (hover a row for the paper's symbol)",
    "axial slices the proposal spans",
    "your verdict: accepted (a lesion) or rejected (not a lesion)",
)


class ReviewPanel(QWidget):
    """The open volume's proposals, best lesion score first, reviewed from the keyboard.

    Parameters
    ----------
    set_verdict : callable
        ``set_verdict(proposal_id, verdict_or_None)``: saves at once (the store);
        raises :class:`~napari_lesion_harvest.store.StoreError` when refused.
    show_item : callable
        ``show_item(item)``: jump to the proposal's best slice and centre it.

    Signals
    -------
    shown_changed()
        The listed proposals changed (a new view, a new lowest score, new items).
    """

    shown_changed = Signal()

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
        self.all_items: list[ProposalItem] = []
        self.items: list[ProposalItem] = []
        self.threshold: float | None = None
        self.current: int | None = None
        self._undo: list[tuple[int, str | None]] = []

        self.view_box = QComboBox()
        for index, (name, (meaning, _rule)) in enumerate(VIEWS.items()):
            self.view_box.addItem(name)
            self.view_box.setItemData(index, meaning, Qt.ItemDataRole.ToolTipRole)
        self.view_box.setCurrentText(DEFAULT_VIEW)
        self.view_box.setToolTip("Which proposals are listed and drawn")
        self.min_score = QDoubleSpinBox()
        self.min_score.setRange(0.0, 1.0)
        self.min_score.setSingleStep(0.05)
        self.min_score.setDecimals(2)
        self.min_score.setPrefix("score >= ")
        self.min_score.setToolTip("Lowest lesion score listed")
        self.count_label = QLabel("")
        self.count_label.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        for column, tip in enumerate(COLUMN_TOOLTIPS):
            self.table.horizontalHeaderItem(column).setToolTip(tip)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.cellClicked.connect(lambda row, _col: self.go_to(row))
        self.table.keyPressEvent = self._table_key
        self.accept_button = QPushButton("Accept [A]")
        self.accept_button.setToolTip("A lesion: exported as a harvested lesion")
        self.reject_button = QPushButton("Reject [R]")
        self.reject_button.setToolTip("Not a lesion: never exported; a hard negative next round")
        self.undo_button = QPushButton("Undo [U]")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.help = QLabel("N/P next/previous  A accept  R reject  U undo")

        filters = QHBoxLayout()
        filters.addWidget(self.view_box, stretch=1)
        filters.addWidget(self.min_score)
        buttons = QHBoxLayout()
        for button in (self.accept_button, self.reject_button, self.undo_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(filters)
        layout.addWidget(self.count_label)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        layout.addWidget(self.help)
        self.view_box.currentTextChanged.connect(self._refilter)
        self.min_score.valueChanged.connect(self._refilter)
        self.accept_button.clicked.connect(self.accept)
        self.reject_button.clicked.connect(self.reject)
        self.undo_button.clicked.connect(self.undo)
        self._update_buttons()

    # ------------------------------------------------------------------ content

    def set_items(self, items: list[ProposalItem], *, threshold: float | None = None) -> None:
        """Show the view's part of ``items`` (sorted by lesion score, highest first).

        Parameters
        ----------
        items : list of ProposalItem
            Every proposal of the volume in the shown round.
        threshold : float or None
            The round's harvest threshold (None: it reached none).
        """
        self.all_items = list(items)
        self.threshold = threshold
        ids = {item.proposal_id for item in items}
        self._undo = [entry for entry in self._undo if entry[0] in ids]
        self._refilter()

    def _refilter(self, *_args) -> None:
        current_id = self.current_item.proposal_id if self.current_item else None
        self.items = filter_items(
            self.all_items,
            self.view_box.currentText(),
            threshold=self.threshold,
            min_score=self.min_score.value(),
        )
        self.table.setRowCount(len(self.items))
        for row in range(len(self.items)):
            self._fill_row(row)
        ids = [item.proposal_id for item in self.items]
        self.current = ids.index(current_id) if current_id in ids else None
        if self.current is not None:
            self.table.selectRow(self.current)
        self.count_label.setText(self._count_text())
        self._update_buttons()
        self.shown_changed.emit()

    def _count_text(self) -> str:
        if not self.all_items:
            return "No proposals on this volume (none in the shown round)."
        t = review_threshold(self.threshold)
        if self.threshold is None:
            where = f"the round reached no threshold; band {t:.2f} +/- {BAND:g}"
        else:
            where = f"threshold {t:.2f} +/- {BAND:g}"
        return f"{len(self.items)} of {len(self.all_items)} proposals shown ({where})."

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
            cell = QTableWidgetItem(text)
            cell.setToolTip(ROLE_TOOLTIPS.get(item.role, item.role))
            self.table.setItem(row, column, cell)

    @property
    def current_item(self) -> ProposalItem | None:
        """The proposal under review (None before the first jump)."""
        return None if self.current is None else self.items[self.current]

    def _update_buttons(self) -> None:
        item = self.current_item
        takes_verdict = item is not None and item.decided_by_mark is None
        self.accept_button.setEnabled(takes_verdict or item is None and bool(self.items))
        self.reject_button.setEnabled(takes_verdict or item is None and bool(self.items))
        self.undo_button.setEnabled(bool(self._undo))

    # ------------------------------------------------------------------ navigation

    def go_to(self, row: int) -> None:
        """Make ``row`` current and show it in the viewer."""
        if not self.items:
            return
        self.current = max(0, min(row, len(self.items) - 1))
        self.table.selectRow(self.current)
        self.message.setText("")
        self._update_buttons()
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
        self._verdict(Verdict.accepted)

    def reject(self) -> None:
        """Reject the current proposal, then move on."""
        self._verdict(Verdict.rejected)

    def _verdict(self, verdict: str) -> None:
        if self.current is None:
            self.next()
            if self.current is None:
                return
        item = self.items[self.current]
        reason = item.decided_by_mark
        if reason is not None:
            self.message.setText(f"Not {verdict}: this proposal is {reason}.")
            return
        if not self._saved(item.proposal_id, verdict):
            return
        self._undo.append((item.proposal_id, item.verdict))
        self._update(item.proposal_id, verdict)
        if self.current < len(self.items) - 1:
            self.next()
        else:
            self._show_item(self.items[self.current])

    def _saved(self, proposal_id: int, verdict: str | None) -> bool:
        """Save through ``set_verdict``; a refusal is shown in the panel (False)."""
        from napari_lesion_harvest.store.errors import StoreError

        try:
            self._set_verdict(proposal_id, verdict)
        except StoreError as error:
            self.message.setText(f"Verdict not saved: {error}")
            return False
        self.message.setText("")
        return True

    def undo(self) -> None:
        """Undo the last verdict (the store gets the previous one back) and go to it."""
        if not self._undo:
            return
        proposal_id, previous = self._undo[-1]
        if not self._saved(proposal_id, previous):
            return
        self._undo.pop()
        self._update(proposal_id, previous)
        ids = [item.proposal_id for item in self.items]
        if proposal_id in ids:
            self.go_to(ids.index(proposal_id))
        self._update_buttons()

    def _update(self, proposal_id: int, verdict: str | None) -> None:
        self.all_items = [
            replace(item, verdict=verdict) if item.proposal_id == proposal_id else item
            for item in self.all_items
        ]
        for row, item in enumerate(self.items):
            if item.proposal_id == proposal_id:
                self.items[row] = replace(item, verdict=verdict)
                self._fill_row(row)
        self._update_buttons()

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
