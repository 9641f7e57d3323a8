"""The "Lesion Harvest" dock widget: wires the panels to the project store and the viewer.

The dock computes nothing: it reads and writes the store
(:class:`~napari_lesion_harvest.store.HarvestProject`), loads volumes in a
worker thread, and starts rounds as subprocesses (:mod:`.round_runner`).
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_harvest.ui.project_panel import ProjectPanel, remember_recent
from napari_lesion_harvest.ui.proposal_overlay import items_from_store
from napari_lesion_harvest.ui.review import REVIEW_KEYS, ReviewPanel
from napari_lesion_harvest.ui.round_panel import RoundPanel
from napari_lesion_harvest.ui.volume_loading import load_record
from napari_lesion_harvest.ui.volume_view import StoreMarkSink, VolumeView
from napari_lesion_harvest.ui.windows import WINDOW_KEYS, WINDOW_PRESETS
from napari_lesion_harvest.ui.worklist import WorklistPanel

#: Widest the dock gets (pixels), so that the CT canvas keeps most of the window.
DOCK_MAX_WIDTH = 460


class HarvestDock(QWidget):
    """Project, worklist, volume tools, proposal review, rounds and results.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    author : str, optional
        Name written with every mark and verdict (default: the login name).
    volume_loader : callable, optional
        ``volume_loader(record) -> (hu, spacing, window)``; default :func:`load_record`.

    Signals
    -------
    volume_opened(str)
        A volume's layers are in the viewer.
    refreshed()
        Worklist, overlays and results were reread from the store.
    imported(object)
        An import finished (its ImportSummary); the worklist is refreshed first.
    """

    volume_opened = Signal(str)
    refreshed = Signal()
    imported = Signal(object)

    def __init__(
        self,
        napari_viewer,
        *,
        author: str | None = None,
        volume_loader: Callable = load_record,
    ):
        super().__init__()
        self.viewer = napari_viewer
        self.author = author or getpass.getuser()
        self.volume_loader = volume_loader
        self.project = None
        self.volume_view: VolumeView | None = None
        self._loading: str | None = None
        self.import_worker = None

        self.project_panel = ProjectPanel()
        self.worklist = WorklistPanel()
        self.review = ReviewPanel(set_verdict=self._save_verdict, show_item=self._show_item)
        self.round_panel = RoundPanel(
            project_folder=lambda: None if self.project is None else self.project.folder,
            on_finished=lambda status: self.refresh_in_steps(),
        )
        from napari_lesion_harvest.ui.results_panel import ResultsPanel

        self.results = ResultsPanel()
        self.volume_label = QLabel("No volume open.")
        self.complete_button = QPushButton("Mark volume complete")
        self.complete_button.setCheckable(True)
        self.complete_button.setEnabled(False)
        window_row = QHBoxLayout()
        for key, name in WINDOW_KEYS.items():
            button = QPushButton(f"{name} [{key}]")
            button.setMinimumWidth(40)
            button.setToolTip(
                f"{WINDOW_PRESETS[name][0]:.0f} / {WINDOW_PRESETS[name][1]:.0f} HU"
                if name in WINDOW_PRESETS
                else "the volume's own DICOM window"
            )
            button.clicked.connect(lambda _checked=False, n=name: self.set_window(n))
            window_row.addWidget(button)

        volume_tab = QWidget()
        volume_layout = QVBoxLayout(volume_tab)
        volume_layout.addWidget(self.volume_label)
        volume_layout.addLayout(window_row)
        help_label = QLabel(
            "RECIST: drag the long axis, then the short axis along the guide. "
            "Click a mark to select it, drag an endpoint to edit, Delete removes, "
            "Ctrl+Z undoes, Esc cancels a half-drawn mark."
        )
        help_label.setWordWrap(True)
        volume_layout.addWidget(help_label)
        volume_layout.addWidget(self.complete_button)
        volume_layout.addWidget(QLabel("Proposals (best lesion score first):"))
        volume_layout.addWidget(self.review)

        project_tab = QWidget()
        project_layout = QVBoxLayout(project_tab)
        project_layout.addWidget(self.project_panel)
        project_layout.addWidget(self.worklist)

        self.tabs = QTabWidget()
        self.tabs.addTab(project_tab, "Project")
        self.tabs.addTab(volume_tab, "Volume")
        self.tabs.addTab(self.round_panel, "Round")
        self.tabs.addTab(self.results, "Results")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.tabs)
        self.setMaximumWidth(DOCK_MAX_WIDTH)  # leave the canvas most of the window

        self.project_panel.open_requested.connect(
            lambda folder, create: self.open_project(folder, create=create)
        )
        self.project_panel.import_requested.connect(self.import_data)
        self.worklist.volume_requested.connect(self.open_volume)
        self.worklist.next_requested.connect(self.open_next_volume)
        self.complete_button.toggled.connect(self._set_complete)
        for key in REVIEW_KEYS:
            self.viewer.bind_key(key, lambda _viewer, k=key: self._review_key(k), overwrite=True)
        for key, name in WINDOW_KEYS.items():
            self.viewer.bind_key(key, lambda _viewer, n=name: self.set_window(n), overwrite=True)

    # ------------------------------------------------------------------ project

    def open_project(self, folder: str | Path, *, create: bool = False):
        """Open (or create) a harvest project and show its volumes."""
        from napari.utils.notifications import show_error

        from napari_lesion_harvest.store import HarvestProject
        from napari_lesion_harvest.store.errors import StoreError

        try:
            project = HarvestProject.open(folder, create=create)
        except (StoreError, OSError) as error:
            show_error(f"Cannot open project {folder}: {error}")
            return None
        self.close_project()
        self.project = project
        self.project_panel.show_recent(remember_recent(project.folder))
        self.refresh()
        return project

    def import_data(self, sources: list[str | Path], *, split: str = "V_H"):
        """Import ``sources`` into the open project in a worker thread.

        A napari progress bar counts the sources; when the import ends a
        notification lists what was added and the skipped rows, the worklist
        refreshes and ``imported`` is emitted. A source that cannot be
        imported stops the import with an error notification (the sources
        before it stay imported). Returns the worker (None when refused).
        """
        from napari.qt.threading import thread_worker
        from napari.utils import progress
        from napari.utils.notifications import show_error, show_info, show_warning

        from napari_lesion_harvest.ui.data_import import import_one_by_one, summary_message

        if self.project is None:
            show_warning("Open a harvest project first.")
            return None
        if self.import_worker is not None:
            show_warning("An import is already running.")
            return None
        sources = [str(s) for s in sources]
        bar = progress(total=len(sources), desc="importing data")
        worker = thread_worker(import_one_by_one)(
            self.project.share(), sources, split=split, author=self.author
        )

        def on_step(value):
            done, _total = value
            bar.update(done - bar.n)

        def finish():
            bar.close()
            self.import_worker = None
            self.refresh()

        def on_done(result):
            summary, error = result
            finish()
            if error is not None:
                show_error(f"Import stopped: {error}\n{summary_message(summary)}")
                return
            notify = show_warning if summary.skipped else show_info
            notify(summary_message(summary))
            self.imported.emit(summary)

        def on_error(error):
            finish()
            show_error(f"Import failed: {error}")

        worker.yielded.connect(on_step)
        worker.returned.connect(on_done)
        worker.errored.connect(on_error)
        self.import_worker = worker
        worker.start()
        return worker

    def close_project(self) -> None:
        """Close the open volume and project (everything is already saved)."""
        self.close_volume()
        if self.project is not None:
            self.project.close()
            self.project = None
        self.worklist.set_summaries([])

    def refresh(self) -> None:
        """Reread worklist, open volume's overlays and results from the store."""
        if self.project is None:
            return
        for _ in self._refresh_steps(self.project):
            pass
        self.refreshed.emit()

    def refresh_in_steps(self) -> None:
        """:meth:`refresh` spread over event-loop turns (after a round, while the user works).

        Each step (worklist, results, overlays) runs in its own turn, so the GUI
        never waits for the whole refresh at once; ``refreshed`` is emitted
        after the last step. Stops quietly when the project is closed meanwhile.
        """
        from qtpy.QtCore import QTimer

        if self.project is None:
            return
        project = self.project
        steps = self._refresh_steps(project)

        def step():
            if self.project is not project:
                return
            try:
                next(steps)
            except StopIteration:
                self.refreshed.emit()
                return
            QTimer.singleShot(0, step)

        step()

    def _refresh_steps(self, project):
        """Generator: each ``next`` rereads one part of the dock from ``project``."""
        summaries = project.volume_summaries()
        self.worklist.set_summaries(summaries)
        yield
        rounds = project.rounds.list()
        done = sum(1 for r in rounds if r.status == "done")
        self.project_panel.show_project(
            project.folder, f"{len(summaries)} volumes, {done} finished rounds"
        )
        self.results.show_rounds(rounds)
        yield
        if self.volume_view is not None:
            self._load_overlays(self.volume_view.volume_id)

    # ------------------------------------------------------------------ volumes

    def open_volume(self, volume_id: str) -> None:
        """Load a volume in a worker thread, then show it with its marks and proposals."""
        from napari.qt.threading import thread_worker
        from napari.utils.notifications import show_error

        if self.project is None or self._loading is not None:
            return
        record = self.project.volume(volume_id)
        self._loading = volume_id
        self.volume_label.setText(f"Loading {volume_id}...")
        worker = thread_worker(self.volume_loader)(record)

        def failed(error):
            self._loading = None
            self.volume_label.setText(f"Could not open {volume_id}.")
            show_error(f"Cannot open volume {volume_id}: {error}")

        worker.returned.connect(lambda loaded: self._show_volume(record, *loaded))
        worker.errored.connect(failed)
        worker.start()

    def _show_volume(self, record, hu, spacing, window) -> None:
        from napari.utils.notifications import show_info

        self._loading = None
        if self.project is None:
            return
        self.close_volume()
        overlays = self.project.volume_overlays(record.volume_id)
        marks = {stored.id: stored.mark for stored in overlays.marks}
        sink = StoreMarkSink(self.project, record.volume_id, author=self.author)
        self.volume_view = VolumeView(
            self.viewer,
            record.volume_id,
            hu,
            spacing,
            display_window=window,
            sink=sink,
            marks=marks,
            notify=show_info,
        )
        for layer in (
            self.volume_view.image_layer,
            self.volume_view.proposals.layer,
            self.volume_view.recist.marks_layer,
        ):
            for key in REVIEW_KEYS:
                layer.bind_key(key, lambda _layer, k=key: self._review_key(k), overwrite=True)
        self._load_overlays(record.volume_id, overlays=overlays)
        self.complete_button.blockSignals(True)
        self.complete_button.setChecked(overlays.volume.complete)
        self.complete_button.blockSignals(False)
        self.complete_button.setEnabled(True)
        self.volume_label.setText(
            f"<b>{record.volume_id}</b> ({overlays.volume.split}), "
            f"{hu.shape[0]} slices, {spacing[1]:.2f} x {spacing[2]:.2f} x {spacing[0]:.2f} mm"
        )
        self.worklist.select_volume(record.volume_id)
        self.tabs.setCurrentIndex(1)
        self.volume_opened.emit(record.volume_id)

    def _load_overlays(self, volume_id: str, *, overlays=None) -> None:
        overlays = overlays or self.project.volume_overlays(volume_id)
        items = items_from_store(overlays.proposals)
        self.volume_view.set_proposals(items)
        self.review.set_items(items)

    def close_volume(self) -> None:
        """Remove the open volume's layers (its marks are already saved)."""
        if self.volume_view is not None:
            self.volume_view.close()
            self.volume_view = None
        self.review.set_items([])
        self.complete_button.setEnabled(False)
        self.volume_label.setText("No volume open.")

    def open_next_volume(self) -> None:
        """Open the V_H volume ranked first by :func:`annotation_priority.rank_volumes`."""
        from napari.utils.notifications import show_info

        from napari_lesion_harvest.ui.annotation_priority import next_volume_to_annotate

        if self.project is None:
            return
        volume_id = next_volume_to_annotate(self.project)
        if volume_id is None:
            show_info("No V_H volume with proposals to rank yet; run a round first.")
            return
        self.open_volume(volume_id)

    def _set_complete(self, complete: bool) -> None:
        if self.project is None or self.volume_view is None:
            return
        from napari.utils.notifications import show_error, show_info

        from napari_lesion_harvest.store.errors import StoreError

        try:
            record = self.project.set_volume_complete(
                self.volume_view.volume_id, author=self.author, complete=complete
            )
            if complete and record.split != "V_M":  # held out: flagged, not moved
                show_info(
                    f"{record.volume_id} stays in {record.split}; its marks are now the "
                    "evaluation's truth"
                )
        except StoreError as error:
            show_error(str(error))
            self.complete_button.blockSignals(True)
            self.complete_button.setChecked(not complete)
            self.complete_button.blockSignals(False)
        self.worklist.set_summaries(self.project.volume_summaries())

    def set_window(self, name: str) -> None:
        """Apply a window preset to the open volume."""
        if self.volume_view is not None:
            self.volume_view.set_window(name)

    # ------------------------------------------------------------------ review

    def _save_verdict(self, proposal_id: int, verdict: str | None) -> None:
        self.project.set_verdict(proposal_id, verdict, author=self.author)

    def _show_item(self, item) -> None:
        if self.volume_view is not None:
            self.volume_view.set_proposals(self.review.items)
            self.volume_view.show_proposal(item)

    def _review_key(self, key: str) -> None:
        if self.volume_view is not None:
            self.review.handle_key(key)

    # ------------------------------------------------------------------ teardown

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        """Stop a running round (it stops cleanly at its next step) and close the project."""
        self.round_panel.stop_round()
        self.close_project()
        super().closeEvent(event)
