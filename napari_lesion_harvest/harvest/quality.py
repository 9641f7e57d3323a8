"""The quality benchmark's figures: per seed and round from the stored projects, then
over seeds with bootstrap intervals over the V_H_test volumes.

Used by ``benchmarks/quality_bench.py`` (which runs the rounds) and read back by
``tools/quality_compare.py``. Every figure is computed from a project's store with
the engine's own evaluation (:mod:`napari_lesion_harvest.evaluation.harvest`):
the truth is the full annotation of the V_H_test volumes flagged complete.

Keys: a row is ``"cumulative/s_gc"``, ``"per_round/s_gc"``, ``"cumulative/s_g"`` or
``"per_round/s_g"`` (label set, then the score ranking the round's proposals);
a statistic is ``"R@90"``, ``"AP"`` or ``"gain"`` (R@90 minus the original marks'
recall, both on the same resample).

Each round also counts the false positives of its harvest on V_H_test (harvested
proposals that hit no lesion of the truth) beside the number V_M let one expect
there (:func:`~napari_lesion_harvest.harvest.threshold.expected_false_positives`
with V_H_test's scored proposals).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from napari_lesion_harvest.evaluation.bootstrap import (
    percentile_interval,
    resampled_figures,
    volume_resamples,
    volume_steps,
)
from napari_lesion_harvest.evaluation.harvest import (
    ORIGINAL_MARK_SCORE,
    RANKINGS,
    carried_lesions,
    evaluate_harvest,
    evaluation_truth,
    label_sets,
)
from napari_lesion_harvest.evaluation.matching import IOU_THRESHOLD_2D
from napari_lesion_harvest.evaluation.tables import ProposalTable, RecistTruth
from napari_lesion_harvest.harvest.config_migration import dotted_fields
from napari_lesion_harvest.harvest.threshold import expected_false_positives
from napari_lesion_harvest.store import HarvestProject
from napari_lesion_harvest.tracking.marks import proposals_hitting_marks
from napari_lesion_harvest.vocabulary import Origin, Role, RoundStatus, Split

ROWS = ("cumulative", "per_round")
KEYS = tuple(f"{row}/{ranking}" for row in ROWS for ranking in RANKINGS)
STATISTICS = ("R@90", "AP", "gain")
#: Figures kept per row (besides the statistics).
POINT_FIGURES = ("R@80", "R@85", "R@90", "R@95", "AP", "ceiling")


def test_set(project_dir: Path) -> tuple[dict, dict]:
    """``(truth, original)`` of a project's evaluation: the full annotation and the
    original marks of each V_H_test volume flagged complete, in import order.

    Raises
    ------
    SystemExit
        Nothing to evaluate against (the message says why).
    """
    with HarvestProject.open(project_dir) as project:
        test = project.volumes(split=Split.V_H_test)
        marks = {v.volume_id: project.marks(v.volume_id) for v in test}
    truth, note = evaluation_truth(test, marks)
    if note is not None:
        raise SystemExit(f"{project_dir}: {note}")
    original = {v: [s.mark for s in marks[v] if s.origin == Origin.original] for v in truth}
    return truth, original


def project_rounds(project_dir: Path, counts: np.ndarray) -> list[dict]:
    """Every done round of one project: point figures per row and bootstrap draws.

    Parameters
    ----------
    project_dir : Path
    counts : ndarray of int, shape (B, V)
        Resamples of the V_H_test volumes (in :func:`test_set` order).

    Returns
    -------
    list of dict
        Per done round: ``round``, ``threshold``, ``n_harvested``, ``new_lesions``,
        ``proposals``, ``false_positives`` (:func:`harvest_false_positives`),
        ``baseline`` (recall, precision), ``rows`` (key -> point figures and
        ``harvested``), ``draws`` (key -> statistic -> ndarray (B,)).
    """
    truth, original = test_set(project_dir)
    ruler = RecistTruth.from_mapping(truth)
    found = []
    with HarvestProject.open(project_dir) as project:
        done = [r for r in project.rounds.list() if r.status == RoundStatus.done]
        previous = None
        for record in done:
            proposals = defaultdict(list)
            for stored in project.proposals(record.number):
                if stored.volume_id in truth:
                    proposals[stored.volume_id].append(stored)
            pool = project.rounds.pool(previous) if previous is not None else []
            v_m = list(project.proposals(record.number, roles=(Role.P_RM, Role.P_neg_M)))
            found.append(_round(record, truth, original, ruler, proposals, pool, v_m, counts))
            previous = record.number
    return found


def harvest_false_positives(proposals, truth, v_m, *, threshold, match_iou):
    """The false positives of a round's harvest on V_H_test, seen and expected.

    Parameters
    ----------
    proposals : mapping of str to list of StoredProposal
        The round's proposals in the V_H_test volumes.
    truth : mapping of str to list of RecistMark
        The V_H_test volumes' lesions.
    v_m : sequence of StoredProposal
        The round's V_M proposals (``P_RM`` and ``P_neg_M`` with their ``s_gc``).
    threshold : float or None
        The round's harvest threshold (None: nothing harvested).
    match_iou : float
        2D IoU a harvested proposal needs with a lesion to hit it.

    Returns
    -------
    dict
        ``harvested`` (P_pos_H in V_H_test), ``observed`` (those hitting no lesion)
        and ``expected`` (what V_M's non-lesions let one expect among them).
    """
    scored = [s for v in proposals.values() for s in v if s.s_gc is not None]
    scored = [s for s in scored if s.role in (Role.P_pos_H, Role.P_neg_H, Role.candidate)]
    harvested = defaultdict(list)
    for stored in scored:
        if stored.role == Role.P_pos_H:
            harvested[stored.volume_id].append(stored.proposal)
    hits = proposals_hitting_marks(dict(harvested), truth, iou_threshold=match_iou)
    expected = expected_false_positives(
        [s.s_gc for s in v_m],
        [s.role == Role.P_RM for s in v_m],
        [s.s_gc for s in scored],
        float("inf") if threshold is None else threshold,
    )
    return {
        "harvested": sum(map(len, harvested.values())),
        "observed": int(sum((~hit).sum() for hit in hits.values())),
        "expected": float(expected),
    }


def false_positive_totals(seed_rounds: dict[int, list[dict]], rounds: int) -> list[dict]:
    """Per round, the harvest's false positives on V_H_test summed over the seeds that
    ran it: ``round``, ``seeds``, ``harvested``, ``observed``, ``expected``."""
    totals = []
    for number in range(1, rounds + 1):
        ran = [
            found[number - 1]["false_positives"]
            for found in seed_rounds.values()
            if len(found) >= number
        ]
        sums = {k: float(sum(r[k] for r in ran)) for k in ("harvested", "observed", "expected")}
        totals.append({"round": number, "seeds": len(ran), **sums})
    return totals


def _round(record, truth, original, ruler, proposals, pool, v_m, counts) -> dict:
    metrics = record.metrics
    match_iou = dotted_fields(record.config).get("harvest.match_iou", IOU_THRESHOLD_2D)
    common = {
        "original": original,
        "proposals": dict(proposals),
        "carried": carried_lesions(pool, truth),
        "match_iou": match_iou,
    }
    entry = {
        "round": record.number,
        "threshold": metrics.get("threshold"),
        "n_harvested": metrics.get("n_harvested"),
        "new_lesions": metrics.get("new_lesions"),
        "proposals": (metrics.get("scan") or {}).get("proposals"),
        "false_positives": harvest_false_positives(
            proposals, truth, v_m, threshold=metrics.get("threshold"), match_iou=match_iou
        ),
        "rows": {},
        "draws": {},
    }
    for ranking in RANKINGS:
        evaluation = evaluate_harvest(
            truth, threshold=metrics.get("threshold"), ranking=ranking, **common
        )
        entry["baseline"] = evaluation["baseline"]
        sets = label_sets(truth, ranking=ranking, **common)
        for row in ROWS:
            key = f"{row}/{ranking}"
            figures = evaluation[row]
            points = {
                f"R@{100 * p['precision_target']:g}": p["recall"]
                for p in figures["p3d"]["recall_at_precision"]
            }
            points.update(AP=figures["p3d"]["ap"], ceiling=figures["ceiling"])
            entry["rows"][key] = {
                **{name: points[name] for name in POINT_FIGURES},
                "gain": points["R@90"] - evaluation["baseline"]["recall"],
                "harvested": figures["harvested"],
            }
            table = ProposalTable.from_proposals(sets[row].ranked(), ruler.volume_ids)
            drawn = resampled_figures(
                volume_steps(ruler, table, iou_threshold=match_iou),
                counts,
                first_score=ORIGINAL_MARK_SCORE,
            )
            entry["draws"][key] = {
                "R@90": drawn["R@90"],
                "AP": drawn["AP"],
                "gain": drawn["R@90"] - drawn["first"],
            }
    return entry


def seed_weights(n_seeds: int, n_resamples: int, *, seed: int) -> np.ndarray:
    """Weight of each training seed in each resample, shape ``(B, S)``: the seeds drawn
    with replacement (``seed + 1`` seeds the draw; ``seed`` draws the volumes)."""
    return volume_resamples(n_seeds, n_resamples, seed=seed + 1) / n_seeds


def combine(per_seed: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per resample, the weighted mean over seeds: ``per_seed`` (S, B), ``weights`` (B, S)
    -> (B,)."""
    return np.einsum("bs,sb->b", weights, np.asarray(per_seed, dtype=np.float64))


def over_seeds(
    seed_rounds: dict[int, list[dict]], rounds: int, weights: np.ndarray
) -> tuple[list[dict], dict]:
    """Rounds 1..``rounds`` over seeds: the mean of each figure, its 95% interval, and
    the values of each seed. The interval is a two-level bootstrap: each resample
    draws the V_H_test volumes (the same draw for every seed) and the seeds, both
    with replacement (``weights``, :func:`seed_weights`), so it holds both the
    test set's and the training seed's spread. A seed whose run stopped earlier (a
    round harvested nothing new) keeps its last round's figures: its label set no
    longer changes.

    Returns
    -------
    summary : list of dict
        Per round: ``round``, ``carried_forward`` (seeds), ``figures`` (key ->
        statistic -> {mean, low, high, per_seed}), ``s_gc_minus_s_g`` (row ->
        statistic -> same), ``ceiling`` (key -> mean), ``harvested`` (key -> mean
        recall and precision at the threshold).
    draws : dict
        ``{round: {key: {statistic: ndarray (S, B)}}}``, per seed (for comparisons).
    """
    summary, draws = [], {}
    for number in range(1, rounds + 1):
        chosen = {s: found[min(number, len(found)) - 1] for s, found in seed_rounds.items()}
        per_seed = {
            key: {
                stat: np.array([e["draws"][key][stat] for e in chosen.values()])
                for stat in STATISTICS
            }
            for key in KEYS
        }
        figures = {
            key: {
                stat: _summary(
                    [e["rows"][key][stat] for e in chosen.values()],
                    combine(per_seed[key][stat], weights),
                )
                for stat in STATISTICS
            }
            for key in KEYS
        }
        difference = {
            row: {
                stat: _summary(
                    [
                        e["rows"][f"{row}/s_gc"][stat] - e["rows"][f"{row}/s_g"][stat]
                        for e in chosen.values()
                    ],
                    combine(per_seed[f"{row}/s_gc"][stat] - per_seed[f"{row}/s_g"][stat], weights),
                )
                for stat in STATISTICS
            }
            for row in ROWS
        }
        summary.append(
            {
                "round": number,
                "carried_forward": [s for s, found in seed_rounds.items() if len(found) < number],
                "figures": figures,
                "s_gc_minus_s_g": difference,
                "ceiling": {
                    key: float(np.mean([e["rows"][key]["ceiling"] for e in chosen.values()]))
                    for key in KEYS
                },
                "harvested": {
                    key: {
                        part: _mean([e["rows"][key]["harvested"][part] for e in chosen.values()])
                        for part in ("recall", "precision")
                    }
                    for key in KEYS
                },
            }
        )
        draws[number] = per_seed
    return summary, draws


def _summary(per_seed, draws) -> dict:
    """Mean over seeds, 95% interval of the resampled seed means, each seed's value."""
    low, high = percentile_interval(draws)
    return {"mean": _mean(per_seed), "low": low, "high": high, "per_seed": list(per_seed)}


def _mean(values) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def format_summary(summary: list[dict], baseline: dict) -> str:
    """The benchmark's table: per round, each row's R@90, AP and gain with intervals."""
    lines = [
        f"original marks R: recall {baseline['recall']:.3f} at precision "
        f"{baseline['precision']:.2f} (V_H_test)",
        f"{'round':<6}{'row':<18}{'R@90P [95% CI]':>24}{'gain [95% CI]':>26}"
        f"{'AP [95% CI]':>24}{'ceiling':>9}",
    ]
    for entry in summary:
        for key in KEYS:
            cells = "".join(
                f"{_interval(entry['figures'][key][stat]):>{width}}"
                for stat, width in (("R@90", 24), ("gain", 26), ("AP", 24))
            )
            lines.append(f"{entry['round']:<6}{key:<18}{cells}{entry['ceiling'][key]:>9.3f}")
        for row in ROWS:
            cells = "".join(
                f"{_interval(entry['s_gc_minus_s_g'][row][stat]):>{width}}"
                for stat, width in (("R@90", 24), ("gain", 26), ("AP", 24))
            )
            lines.append(f"{entry['round']:<6}{row + ' s_gc-s_g':<18}{cells}")
        if entry["carried_forward"]:
            lines.append(
                f"      (seeds {entry['carried_forward']} stopped earlier: last round kept)"
            )
    return "\n".join(lines)


def _interval(figure: dict) -> str:
    return f"{figure['mean']:+.3f} [{figure['low']:+.3f}, {figure['high']:+.3f}]"


def save_plot(summary: list[dict], stage_seconds: dict, baseline: dict, path: Path) -> Path:
    """R@90P per round (rows with intervals, ceiling, original marks) and stage times."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), tight_layout=True)
    recall, times = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    rounds = [e["round"] for e in summary]
    for offset, key in zip((-0.09, -0.03, 0.03, 0.09), KEYS, strict=True):
        figures = [e["figures"][key]["R@90"] for e in summary]
        mean = np.array([f["mean"] for f in figures])
        error = np.array([[f["mean"] - f["low"], f["high"] - f["mean"]] for f in figures]).T
        recall.errorbar(
            np.array(rounds) + offset, mean, yerr=error, marker="o", capsize=3, label=key
        )
    recall.plot(rounds, [e["ceiling"]["per_round/s_gc"] for e in summary], "k:", label="ceiling")
    recall.axhline(baseline["recall"], color="grey", ls="--", label="original marks")
    recall.set(xlabel="round", ylabel="V_H_test recall at 90% precision", ylim=(0, 1))
    recall.set_xticks(rounds)
    recall.legend(fontsize=7)
    recall.set_title("R@90P, mean over seeds, 95% CI over volumes and seeds")
    bottom = np.zeros(len(rounds))
    for stage in sorted({s for by_stage in stage_seconds.values() for s in by_stage}):
        minutes = np.array([stage_seconds.get(r, {}).get(stage, 0.0) / 60 for r in rounds])
        times.bar(rounds, minutes, bottom=bottom, label=stage)
        bottom += minutes
    times.set(xlabel="round", ylabel="minutes (mean over seeds)", title="stage times")
    times.set_xticks(rounds)
    times.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
