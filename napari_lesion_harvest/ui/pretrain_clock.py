"""The time left of a running pretraining, from its progress events and its time budget.

Pretraining (``lesion-harvest pretrain --minutes M``) saves and exits after
``M`` minutes of training or after its planned steps, whichever comes first;
its events carry ``step`` of ``total`` planned steps. Qt-free.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

#: Share of the planned steps done before the step rate is trusted.
MIN_FRACTION = 0.02


class PretrainClock:
    """Seconds left of one pretraining run.

    Parameters
    ----------
    minutes : float
        The run's time budget.
    started : float, optional
        Unix time it started (default: now).
    """

    def __init__(self, minutes: float, *, started: float | None = None):
        self.budget_s = float(minutes) * 60.0
        self.started = time.time() if started is None else float(started)
        self.fraction = 0.0  # of the planned steps, from the events

    def event(self, event: Mapping) -> None:
        """Take one progress event (``step``, ``total``)."""
        total = int(event.get("total") or 0)
        if total > 0:
            self.fraction = min(1.0, int(event.get("step") or 0) / total)

    def seconds_left(self, now: float | None = None) -> float:
        """The rest of the budget, or less when the planned steps end sooner at the rate so
        far."""
        elapsed = max(0.0, (time.time() if now is None else now) - self.started)
        left = max(0.0, self.budget_s - elapsed)
        if self.fraction >= MIN_FRACTION:
            left = min(left, elapsed * (1.0 - self.fraction) / self.fraction)
        return left
