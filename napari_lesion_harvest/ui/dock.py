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
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_lesion_harvest.annotation.recist_editor import StoreMarkSink
from napari_lesion_harvest.ui.hu_windows import WINDOW_KEYS, WINDOW_PRESETS
from napari_lesion_harvest.ui.project_panel import ProjectPanel, remember_recent
from napari_lesion_harvest.ui.proposal_overlay import items_from_store
from napari_lesion_harvest.ui.review import REVIEW_KEYS, ReviewPanel
from napari_lesion_harvest.ui.round_panel import RoundPanel
from napari_lesion_harvest.ui.summary_panel import SummaryPanel
from napari_lesion_harvest.ui.volume_loading import load_record
from napari_lesion_harvest.ui.volume_view import VolumeView
from napari_lesion_harvest.ui.worklist import WorklistPanel
from napari_lesion_harvest.vocabulary import RoundStatus, Split

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
    demo_ready(str)
        A demo project was built and opened (its folder).
    exported(object)
        An export finished (its ExportReport).
    """

    volume_opened = Signal(str)
    refreshed = Signal()
    imported = Signal(object)
    demo_ready = Signal(str)
    exported = Signal(object)
    #: The window whose closing is watched (asks during a round); set when first shown.
    _watched_window = None

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
        self.demo_worker = None
        self.export_worker = None
        self._volume_proposals: list = []

        self.project_panel = ProjectPanel()
        self.worklist = WorklistPanel()
        self.review = ReviewPanel(set_verdict=self._save_verdict, show_item=self._show_item)
        self.review.shown_changed.connect(self._show_review_items)
        self.round_panel = RoundPanel(
            project_folder=lambda: None if self.project is None else self.project.folder,
            project=lambda: self.project,
            on_finished=lambda status: self.refresh_in_steps(),
            author=self.author,
        )
        from napari_lesion_harvest.ui.results_panel import ResultsPanel

        self.results = ResultsPanel()
        self.summary = SummaryPanel()
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
        help_label.setToolTip(
            "The thin box around a mark is the box training and evaluation use: the axes' "
            "extent plus DeepLesion's 5-pixel margin"
        )
        volume_layout.addWidget(help_label)
        self.drawing_message = QLabel("")
        self.drawing_message.setWordWrap(True)
        self.drawing_message.setStyleSheet("color: #ff8080")
        volume_layout.addWidget(self.drawing_message)
        self.assist_box = QCheckBox("Draw assist: a click on a lesion suggests a mark")
        self.assist_box.setChecked(True)
        self.assist_box.setToolTip(
            "Once a round has run: a click inside a proposal's box (where no mark is) suggests "
            "a RECIST mark from that box; Enter accepts it, Esc drops it"
        )
        self.assist_label = QLabel("")
        self.assist_label.setWordWrap(True)
        self.accept_suggestion_button = QPushButton("Accept suggested mark [Enter]")
        self.accept_suggestion_button.setEnabled(False)
        volume_layout.addWidget(self.assist_box)
        volume_layout.addWidget(self.assist_label)
        volume_layout.addWidget(self.accept_suggestion_button)
        volume_layout.addWidget(self.complete_button)
        volume_layout.addWidget(QLabel("Proposals (best lesion score first):"))
        volume_layout.addWidget(self.review)

        self.project_message = QLabel("")
        self.project_message.setWordWrap(True)
        project_tab = QWidget()
        project_layout = QVBoxLayout(project_tab)
        project_layout.addWidget(self.project_panel)
        project_layout.addWidget(self.project_message)
        project_layout.addWidget(self.worklist)

        self.tabs = QTabWidget()
        self.tabs.addTab(project_tab, "Project")
        self.tabs.addTab(volume_tab, "Volume")
        self.tabs.addTab(self.round_panel, "Round")
        self.tabs.addTab(self.results, "Results")
        self.tabs.addTab(self.summary, "Summary")
        self.tabs.setTabToolTip(4, "What the project holds, to hand on; Export")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.tabs)
        self.setMaximumWidth(DOCK_MAX_WIDTH)  # leave the canvas most of the window

        self.project_panel.open_requested.connect(
            lambda folder, create: self.open_project(folder, create=create)
        )
        self.project_panel.import_requested.connect(self.import_data)
        self.project_panel.demo_requested.connect(self.start_demo)
        self.summary.export_requested.connect(self.export)
        self.tabs.currentChanged.connect(lambda _index: self._show_summary_if_visible())
        self.worklist.volume_requested.connect(self.open_volume)
        self.worklist.split_requested.connect(self.hold_out)
        self.viewer.layers.events.inserted.connect(self._on_layer_added)
        self.worklist.next_requested.connect(self.open_next_volume)
        self.complete_button.toggled.connect(self._set_complete)
        self.accept_suggestion_button.clicked.connect(self._accept_suggestion)
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
        self._project_notice("")
        self.refresh()
        return project

    def start_demo(self, folder: str | Path):
        """Build a demo project in ``folder`` in a worker thread, then open it.

        The round configuration becomes the demo's (``demo_round.json``);
        ``demo_ready`` is emitted once it is open. Returns the worker (None when
        refused: a demo is being built already).
        """
        from napari.qt.threading import thread_worker
        from napari.utils import progress

        from napari_lesion_harvest.ui.demo_project import make_demo_project

        if self.demo_worker is not None:
            self._project_notice("A demo project is being built already.", problem=True)
            return None
        self._project_notice(
            f"Building a demo project in {folder}: synthetic CT volumes with lesions "
            "(about half a minute)..."
        )
        self.project_panel.demo_button.setEnabled(False)
        bar = progress(total=0, desc="demo project")
        worker = thread_worker(make_demo_project)(Path(folder))

        def finish():
            bar.close()
            self.demo_worker = None
            self.project_panel.demo_button.setEnabled(True)

        def on_done(result):
            project_dir, config_path = result
            finish()
            if self.open_project(project_dir) is None:
                return
            self.round_panel.set_config(str(config_path))
            counts = {
                s: len(self.project.volumes(split=s))
                for s in (Split.V_M, Split.V_H, Split.V_H_test)
            }
            self._project_notice(
                f"Demo project ready: {counts[Split.V_M]} fully marked volumes (V_M), "
                f"{counts[Split.V_H]} to harvest (V_H), "
                f"{counts[Split.V_H_test]} held out (V_H_test). "
                "Open a volume to draw or review marks, or run a round (Round tab: the "
                "demo's configuration is chosen)."
            )
            self.demo_ready.emit(str(project_dir))

        def on_error(error):
            finish()
            self._project_notice(f"The demo project could not be built: {error}", problem=True)

        worker.returned.connect(on_done)
        worker.errored.connect(on_error)
        self.demo_worker = worker
        worker.start()
        return worker

    def _show_summary_if_visible(self) -> None:
        """Reread the project's summary when the Summary tab is shown."""
        from napari_lesion_harvest.ui.project_summary import summary_text

        if self.project is not None and self.tabs.currentWidget() is self.summary:
            self.summary.show_summary(summary_text(self.project))

    def export(self, folder: str | Path, formats: list[str]):
        """Export the completed annotations (``formats``: ``csv``, ``json``, ``pickle``) and
        the summary to ``folder`` in a worker thread; what was written is said in the
        Summary tab and ``exported`` is emitted. Returns the worker (None when refused)."""
        from napari.qt.threading import thread_worker

        from napari_lesion_harvest.ui.project_summary import export_with_summary

        if self.project is None or self.export_worker is not None:
            self.summary.say("Open a project (and wait for a running export).", problem=True)
            return None
        self.summary.say(f"Exporting to {folder}...")
        self.summary.export_button.setEnabled(False)
        worker = thread_worker(export_with_summary)(self.project.share(), folder, formats=formats)

        def finish():
            self.export_worker = None
            self.summary.export_button.setEnabled(self.project is not None)

        def on_done(report):
            finish()
            self.summary.say(report.message())
            self.exported.emit(report)

        def on_error(error):
            finish()
            self.summary.say(f"Nothing exported: {error}", problem=True)

        worker.returned.connect(on_done)
        worker.errored.connect(on_error)
        self.export_worker = worker
        worker.start()
        return worker

    def _project_notice(self, text: str, *, problem: bool = False) -> None:
        """A message in the Project tab (it stays until the next one)."""
        self.project_message.setText(text)
        self.project_message.setStyleSheet("color: #ff8080" if problem else "")

    def _on_layer_added(self, event) -> None:
        """An image opened outside a project (the sample, a file): say how to work on it."""
        from napari.layers import Image

        layer = event.value
        ours = self.volume_view is not None and layer is self.volume_view.image_layer
        if self.project is None and isinstance(layer, Image) and not ours:
            self._project_notice(
                f"{layer.name!r} is not in a harvest project: marks drawn on it are not saved "
                "and it has no proposals. Start a demo project (phantoms like the sample), or "
                "create a project and import your images."
            )
            self.tabs.setCurrentIndex(0)

    def hold_out(self, volume_ids: list[str], split: str) -> bool:
        """Move volumes to a held-out split (``V_H_test``, ``V_D_test``) or back to ``V_H``,
        in one transaction; fully marked volumes (V_M) are refused. Said in the Project tab."""
        from napari_lesion_harvest.store import DataBatch, StoreError
        from napari_lesion_harvest.ui.worklist import split_name

        if self.project is None or not volume_ids:
            return False
        complete = [v for v in volume_ids if self.project.volume(v).split == Split.V_M]
        if complete:
            shown = ", ".join(complete[:3]) + (" and more" if len(complete) > 3 else "")
            self._project_notice(
                f"Nothing moved: {shown} {'is' if len(complete) == 1 else 'are'} fully marked "
                '(V_M) and train the rounds; withdraw "Mark volume complete" first.',
                problem=True,
            )
            return False
        try:
            result = self.project.add_batch(
                DataBatch(splits=dict.fromkeys(volume_ids, split)), author=self.author
            )
        except StoreError as error:
            self._project_notice(f"Nothing moved: {error}", problem=True)
            return False
        already = f"; {len(result.split_unchanged)} already were" if result.split_unchanged else ""
        self._project_notice(
            f"{len(result.split_changed)} volume(s) now {split_name(split)} ({split}){already}."
        )
        self.worklist.set_summaries(self.project.volume_summaries())
        if self.volume_view is not None and self.volume_view.volume_id in volume_ids:
            self._show_volume_label(self.project.volume(self.volume_view.volume_id))
        return True

    def import_data(self, sources: list[str | Path], *, split: str = Split.V_H):
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
            self.project_panel.show_project(None)
            self.summary.set_project_open(None)
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
        done = sum(1 for r in rounds if r.status == RoundStatus.done)
        self.project_panel.show_project(
            project.folder, f"{len(summaries)} volumes, {done} finished rounds"
        )
        self.results.show_rounds(rounds)
        self.round_panel.show_estimate()
        self.round_panel.pretrain_row.show_pretrained()
        self.summary.set_project_open(project.folder)
        self._show_summary_if_visible()
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
            notify=self._drawing_notice,
            suggest=self._suggest,
            on_suggestion=self._show_suggestion,
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
        self._show_volume_label(overlays.volume)
        self.worklist.select_volume(record.volume_id)
        self.tabs.setCurrentIndex(1)
        self.volume_opened.emit(record.volume_id)

    def _show_volume_label(self, record) -> None:
        """The open volume's id, split (plain words; the symbol in the tooltip), size."""
        from napari_lesion_harvest.ui.worklist import SPLIT_NAMES, split_name

        hu = self.volume_view.image_layer.data
        sz, sy, sx = self.volume_view.image_layer.scale
        self.volume_label.setText(
            f"<b>{record.volume_id}</b> ({split_name(record.split)}), "
            f"{hu.shape[0]} slices, {sy:.2f} x {sx:.2f} x {sz:.2f} mm"
        )
        self.volume_label.setToolTip(SPLIT_NAMES.get(record.split, ("", record.split))[1])

    def _load_overlays(self, volume_id: str, *, overlays=None) -> None:
        overlays = overlays or self.project.volume_overlays(volume_id)
        self._volume_proposals = overlays.proposals
        threshold = None
        if overlays.round_number is not None:
            threshold = self.project.rounds.get(overlays.round_number).metrics.get("threshold")
        self.review.set_items(items_from_store(overlays.proposals), threshold=threshold)

    def _show_review_items(self) -> None:
        """Draw the proposals the review lists (its view and lowest score), the one under
        review highlighted (none when the view left it out)."""
        if self.volume_view is not None:
            current = self.review.current_item
            self.volume_view.proposals.current_id = current and current.proposal_id
            self.volume_view.set_proposals(self.review.items)

    def close_volume(self) -> None:
        """Remove the open volume's layers (its marks are already saved)."""
        if self.volume_view is not None:
            self.volume_view.close()
            self.volume_view = None
        self._volume_proposals = []
        self._show_suggestion(None)
        self.review.set_items([])
        self.complete_button.setEnabled(False)
        self.volume_label.setText("No volume open.")

    def open_next_volume(self) -> None:
        """Open the V_H volume ranked first by :func:`annotation_priority.rank_volumes`."""
        from napari.utils.notifications import show_info

        from napari_lesion_harvest.harvest.annotation_priority import next_volume_to_annotate

        if self.project is None:
            return
        if self.project.latest_done_round() is None:
            show_info("No finished round yet: run a round first, then its proposals rank V_H.")
            return
        volume_id = next_volume_to_annotate(self.project)
        if volume_id is None:
            show_info(
                "No V_H volume to offer: the latest round left no proposal without a verdict "
                "on a V_H volume that is not complete."
            )
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
            if complete and record.split != Split.V_M:  # held out: flagged, not moved
                show_info(
                    f"{record.volume_id} stays in {record.split}; its marks are now the "
                    "evaluation's truth"
                )
        except StoreError as error:
            show_error(str(error))
            self.complete_button.blockSignals(True)
            self.complete_button.setChecked(not complete)
            self.complete_button.blockSignals(False)
            record = self.project.volume(self.volume_view.volume_id)
        self._show_volume_label(record)
        self.worklist.set_summaries(self.project.volume_summaries())

    def _suggest(self, z: int, point_xy):
        """Draw assist: the mark suggested by the shown round's box under a click."""
        from napari_lesion_harvest.annotation.draw_assist import suggest_mark

        if not self.assist_box.isChecked():
            return None
        return suggest_mark(self._volume_proposals, z, point_xy)

    def _show_suggestion(self, suggestion) -> None:
        from napari_lesion_harvest.ui.recist_tool import mark_label

        self.accept_suggestion_button.setEnabled(suggestion is not None)
        if suggestion is None:
            self.assist_label.setText("")
            return
        sizes = mark_label(suggestion.mark, self.volume_view.recist.pixel_spacing_yx)
        self.assist_label.setText(
            f"Suggested mark ({sizes}) from a proposal's box (LPG score {suggestion.score:.2f}): "
            "Enter accepts it as your mark (then drag its ends onto the lesion's edges); "
            "Esc drops it."
        )

    def _accept_suggestion(self) -> None:
        if self.volume_view is not None:
            self.volume_view.recist.editor.accept_suggestion()

    def _drawing_notice(self, message: str) -> None:
        """A drawing refusal: in the Volume tab (it stays until the next one) and as a
        notification."""
        from napari.utils.notifications import show_info

        self.drawing_message.setText(message)
        show_info(message)

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

    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        """Watch the window the dock lives in, to ask before it closes during a round."""
        import weakref

        super().showEvent(event)
        window = self.window()
        watched = None if self._watched_window is None else self._watched_window()
        if window is not self and window is not watched:
            window.installEventFilter(self)
            self._watched_window = weakref.ref(window)  # the window owns the dock

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt API
        """Closing napari during a round: ask, then stop the round, wait for it and close
        the project."""
        from qtpy.QtCore import QEvent

        if (
            event.type() == QEvent.Type.Close
            and self._watched_window is not None
            and watched is self._watched_window()
            and self.round_panel.runner.running
        ):
            if not self.confirm_close_during_round():
                event.ignore()
                return True
            self.stop_round_and_wait()
            self.close_project()
        return False

    def confirm_close_during_round(self) -> bool:
        """Ask whether to stop the running round (or pretraining) and close; True to close."""
        from qtpy.QtWidgets import QMessageBox

        from napari_lesion_harvest.ui.round_plan import PRETRAIN_JOB

        job = self.round_panel.job
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Warning)
        running = f"{job.name.capitalize()} is running"
        box.setWindowTitle(running)
        stage = self.round_panel.clock.stage if self.round_panel.clock else None
        box.setText(f"{running}{f' ({stage})' if stage else ''}.")
        box.setInformativeText(
            "Stop it and close? It stops at its next step and saves its weights; Pretrain "
            "continues it when the project is open again."
            if job is PRETRAIN_JOB
            else "Stop it and close? It stops at its next step and keeps every stage it "
            "finished; Run resumes it when the project is open again."
        )
        stop = box.addButton(f"Stop {job.the} and close", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(stop)
        box.exec()
        return box.clickedButton() is stop

    def stop_round_and_wait(self) -> bool:
        """Stop a running round and wait until its process ended (it stops at its next
        step; after the runner's grace period it is killed); True when none runs."""
        from napari_lesion_harvest.ui.round_runner import STOP_GRACE_S

        return self.round_panel.stop_and_wait(self.round_panel.runner.stop_grace_s + STOP_GRACE_S)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        """Stop a running round, wait for it (it stops cleanly at its next step) and close
        the project."""
        self.stop_round_and_wait()
        self.close_project()
        self.viewer.layers.events.inserted.disconnect(self._on_layer_added)
        super().closeEvent(event)
