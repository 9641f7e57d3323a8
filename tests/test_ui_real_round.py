"""A real harvest round from the dock: the real subprocess, the tiny blob project, CPU.

These tests start ``lesion-harvest round PROJECT --progress-json`` exactly as the
"Run harvest round" button does and check what the radiologist sees: the napari
progress bar walking through the round's stages, a GUI that keeps processing
events, the worklist and the open volume's proposals reread from the store, and
the Table I rows and curves in the results panel. Stopping a round must leave
the project consistent and ready for the next round.
"""

from __future__ import annotations

import time

import pytest
from qtpy.QtCore import QElapsedTimer, QTimer

from napari_lesion_harvest.harvest.blob_project import V_M, make_blob_project
from napari_lesion_harvest.harvest.stages import STAGES
from napari_lesion_harvest.store import HarvestProject
from napari_lesion_harvest.store.lock import is_stale
from napari_lesion_harvest.ui.dock import HarvestDock
from napari_lesion_harvest.ui.round_outcome import harvest_outcome

pytestmark = [pytest.mark.gui, pytest.mark.slow]

#: A tiny round on 2 busy cores takes well under a minute; leave room for a loaded machine.
ROUND_TIMEOUT_MS = 300_000
#: Event-loop probe interval (ms).
PROBE_MS = 10
#: Gaps longer than this are listed in the printed report (ms).
SLOW_TICK_MS = 50
#: Event-loop time (ms) given to the freshly opened volume to paint before the round starts.
SETTLE_MS = 500
V_H_VOLUME = "vol04"


class StallProbe:
    """Longest gap between two ticks of a fast QTimer: how long the GUI thread was busy.

    The first gap runs from :meth:`start`, so work done synchronously right after
    it (the Start click's handler) counts. ``gaps`` lists ``(start_ms, length_ms)``
    of every gap over :data:`SLOW_TICK_MS`.
    """

    def __init__(self):
        self.clock = QElapsedTimer()
        self.timer = QTimer()
        self.timer.setInterval(PROBE_MS)
        self.timer.timeout.connect(self._tick)
        self.last = 0
        self.longest_ms = 0
        self.ticks = 0
        self.gaps = []

    def _tick(self) -> None:
        now = self.clock.elapsed()
        self.longest_ms = max(self.longest_ms, now - self.last)
        if now - self.last > SLOW_TICK_MS:
            self.gaps.append((self.last, now - self.last))
        self.last = now
        self.ticks += 1

    def start(self) -> None:
        self.clock.start()
        self.last = 0
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()


def _open_dock(make_napari_viewer, qtbot, project_dir, config_path):
    viewer = make_napari_viewer(show=True)
    dock = HarvestDock(viewer, author="radiologist")
    viewer.window.add_dock_widget(dock, name="Lesion Harvest", area="right")
    assert dock.open_project(project_dir) is not None
    panel = dock.round_panel
    panel.set_config(str(config_path))
    panel.device_box.setCurrentText("cpu")
    return viewer, dock, panel


def _watch(panel, dock):
    """Record (stage, bar step, bar total) after each progress event, and finished statuses."""
    seen, finished = [], []

    def on_event(event):
        bar = panel.progress.progress_bar
        seen.append((event["stage"], None if bar is None else (bar.n, bar.total)))

    panel.runner.progressed.connect(on_event)
    dock.refreshed.connect(lambda: finished.append(panel.runner.running))
    return seen, finished


def test_real_round_from_the_dock_refreshes_worklist_overlays_and_results(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    project_dir = make_blob_project(tmp_path)
    viewer, dock, panel = _open_dock(
        make_napari_viewer, qtbot, project_dir, tmp_path / "tiny.json"
    )
    before = {s.volume_id: s for s in dock.worklist.model.summaries}
    assert before[V_H_VOLUME].n_proposals == 0
    with qtbot.waitSignal(dock.volume_opened, timeout=20_000):
        dock.open_volume(V_H_VOLUME)
    assert dock.review.items == [] and len(dock.volume_view.proposals.layer.data) == 0
    seen, refreshes = _watch(panel, dock)
    qtbot.wait(SETTLE_MS)  # the volume is painted, as it is by the time anyone clicks Run

    probe = StallProbe()
    probe.start()
    started = time.monotonic()
    assert panel.start_round()
    assert not panel.start_round()  # a second round while one runs is refused
    qtbot.waitUntil(lambda: not panel.runner.running and bool(refreshes), timeout=ROUND_TIMEOUT_MS)
    probe.stop()
    elapsed = time.monotonic() - started
    print(
        f"\nreal round from the dock: {elapsed:.1f} s, {len(seen)} progress events, "
        f"{probe.ticks} event-loop ticks, longest event-loop stall {probe.longest_ms} ms, "
        f"gaps over {SLOW_TICK_MS} ms (start ms, length ms): {probe.gaps}"
    )

    assert panel.status_label.text().startswith("Round 1 "), panel.status_label.text()
    stages = [stage for stage, _bar in seen]
    assert [s for s in STAGES if s in stages] == list(STAGES)  # every real stage reported
    order = [stages.index(s) for s in STAGES]
    assert order == sorted(order)  # in the round's order
    bars = [bar for _stage, bar in seen if bar is not None]
    assert bars and any(total > 0 and 0 < n <= total for n, total in bars)
    assert probe.ticks > 10  # the event loop kept running during the round

    with HarvestProject.open(project_dir) as project:
        (record,) = project.rounds.list()
        stored = {s.volume_id: s for s in project.volume_summaries()}
        on_volume = [p for p in project.proposals(record.number) if p.volume_id == V_H_VOLUME]
    assert record.status == "done"
    assert panel.status_label.text() == harvest_outcome(record)[0]  # said in the dock
    after = {s.volume_id: s for s in dock.worklist.model.summaries}
    assert after[V_H_VOLUME].n_proposals == stored[V_H_VOLUME].n_proposals == len(on_volume) > 0
    assert sum(s.n_harvested for s in after.values()) == record.metrics["n_harvested"]
    # the open volume's overlays came from the store: the review list and the drawn boxes
    assert {item.proposal_id for item in dock.review.all_items} == {p.id for p in on_volume}
    dock.review.view_box.setCurrentText("all proposals")
    dock.review.next()
    assert len(dock.volume_view.proposals.layer.data) >= 1
    # the results panel: Table I rows of the round and its PR / FROC curves (drawn when shown)
    dock.tabs.setCurrentWidget(dock.results)
    table = dock.results.table
    labels = [table.item(r, 0).toolTip().split(":")[0] for r in range(table.rowCount())]
    assert labels == [f"R + P_H,{record.number}"] == [record.metrics["table_i"][1]["label"]]
    assert table.item(0, 0).text() == f"round {record.number}: marks + harvested"
    assert "original marks only: recall " in dock.results.summary.text()
    assert dock.results.rounds_plotted == [record.number]
    assert len(dock.results.pr_axes.lines) == 1 and len(dock.results.froc_axes.lines) == 1
    assert f"Round {record.number} finished" in dock.results.summary.text()
    _check_next_volume_to_annotate(dock, qtbot, record)
    dock.close_project()


def _documented_priorities(project, record) -> dict[str, tuple[float, float]]:
    """The rule of :mod:`annotation_priority`, written out from its docstring.

    Each unreviewed proposal of a V_H volume that is not complete adds
    ``max(0, 1 - |s_gc - t| / 0.25)``, with ``t`` the round's harvest threshold;
    proposals a mark decides (P_RM, P_neg_M, P_RH) are settled and add nothing.
    Equal sums go to the volume with the proposal nearest to ``t``.

    Returns
    -------
    dict
        Volume id -> (summed uncertainty, minus the nearest proposal's distance to ``t``):
        the volume offered first has the largest pair.
    """
    threshold = record.metrics["threshold"]
    open_vh = {v.volume_id for v in project.volumes(split="V_H") if not v.complete}
    totals: dict[str, float] = {}
    nearest: dict[str, float] = {}
    for stored in project.proposals(record.number):
        settled = stored.role in ("P_RM", "P_neg_M", "P_RH")
        if stored.volume_id in open_vh and stored.verdict is None and not settled:
            score = stored.s_gc if stored.s_gc is not None else stored.s_g
            near = max(0.0, 1.0 - abs(score - threshold) / 0.25)
            totals[stored.volume_id] = totals.get(stored.volume_id, 0.0) + near
            distance = abs(score - threshold)
            nearest[stored.volume_id] = min(distance, nearest.get(stored.volume_id, distance))
    return {volume_id: (total, -nearest[volume_id]) for volume_id, total in totals.items()}


def _check_next_volume_to_annotate(dock, qtbot, record) -> None:
    """ "Next volume to annotate" offers the V_H volume with most proposals near the threshold."""
    from napari_lesion_harvest.harvest.annotation_priority import BAND

    assert BAND == 0.25  # the band the documented rule names
    priorities = _documented_priorities(dock.project, record)
    assert priorities, "the round left no unsettled V_H proposal"
    expected = max(sorted(priorities), key=priorities.get)
    with qtbot.waitSignal(dock.volume_opened, timeout=20_000) as opened:
        dock.worklist.next_button.click()
    assert opened.args == [expected]
    assert dock.volume_view.volume_id == expected
    assert dock.volume_label.text().startswith(f"<b>{expected}</b>")

    # settling the volume's proposals (expert verdicts) moves the suggestion on
    for stored in dock.project.proposals(record.number):
        if stored.volume_id == expected and stored.role not in ("P_RM", "P_neg_M", "P_RH"):
            dock.project.set_verdict(stored.id, "rejected", author="radiologist")
    remaining = _documented_priorities(dock.project, record)
    assert expected not in remaining
    if remaining:
        following = max(sorted(remaining), key=remaining.get)
        with qtbot.waitSignal(dock.volume_opened, timeout=20_000) as opened:
            dock.worklist.next_button.click()
        assert opened.args == [following]


def test_stopping_a_real_round_leaves_the_project_consistent_and_the_next_round_finishes(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("LESION_HARVEST_CONFIG", str(tmp_path / "config"))
    project_dir = make_blob_project(tmp_path)
    _viewer, dock, panel = _open_dock(
        make_napari_viewer, qtbot, project_dir, tmp_path / "tiny.json"
    )
    seen, refreshes = _watch(panel, dock)

    assert panel.start_round()
    qtbot.waitUntil(lambda: any(stage == "scan" for stage, _ in seen), timeout=ROUND_TIMEOUT_MS)
    panel.stop_round()
    qtbot.waitUntil(lambda: not panel.runner.running and bool(refreshes), timeout=60_000)
    assert "stopped" in panel.status_label.text()
    assert "evaluate" not in [stage for stage, _ in seen]

    with HarvestProject.open(project_dir) as project:
        (record,) = project.rounds.list()
        assert record.status in ("failed", "cancelled")
        assert "evaluate" not in record.completed_stages
        assert project.integrity_check() == []
        holder = project.rounds.lock_holder()
        assert holder is None or is_stale(holder, now=time.time())
        # nothing the expert entered was touched by the stop
        assert all(s.n_expert_marks == 3 for s in project.volume_summaries() if s.volume_id in V_M)

    seen.clear()
    refreshes.clear()
    assert panel.start_round()  # the next round starts (it resumes the stopped one)
    qtbot.waitUntil(lambda: not panel.runner.running and bool(refreshes), timeout=ROUND_TIMEOUT_MS)
    with HarvestProject.open(project_dir) as project:
        records = project.rounds.list()
        assert records[-1].status == "done"
        assert panel.status_label.text() == harvest_outcome(records[-1])[0]
        assert project.integrity_check() == []
        assert project.rounds.lock_holder() is None
    dock.tabs.setCurrentWidget(dock.results)
    assert dock.results.rounds_plotted == [records[-1].number]
    dock.close_project()
