"""Median stopping rule (asynchronous), in the spirit of Optuna's MedianPruner / Vizier.

Trials report every ``interval_steps`` (default ``max_steps // 10``). At a report at step s a
trial is stopped if its *best* metric so far is strictly worse than the median of the metrics
that *other* trials reported at the same boundary (stopped trials' reports included), provided
that at least ``min_trials`` other trials have reported there and s >= ``warmup_steps``.
Optuna compares only against completed trials; comparing against every earlier report at the
boundary makes the rule useful while the first trials are still running, which matters when
all trials run at once. Decided on arrival, never pauses.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Sequence

from rltune.schedulers._base import (CONTINUE, STOP, Decision, Scheduler, check_below_budget, check_int, score)


def median_decision(best_so_far: float, others_at_step: Sequence[float], goal: str = "maximize",
                    min_trials: int = 1) -> bool:
    """True (continue) unless `best_so_far` is strictly worse than the median of the other
    trials' metrics at this step; always True while fewer than `min_trials` others reported."""
    if len(others_at_step) < max(1, min_trials):
        return True
    median = statistics.median(score(v, goal) for v in others_at_step)
    return score(best_so_far, goal) >= median


class MedianScheduler(Scheduler):
    name = "median"

    def __init__(self, *, goal: str = "maximize", max_steps: int,
                 interval_steps: int | None = None, warmup_steps: int = 0, min_trials: int = 5):
        super().__init__(goal=goal, max_steps=max_steps)
        given = interval_steps is not None
        if interval_steps is None:
            interval_steps = max(1, self.max_steps // 10)
        self.interval_steps = check_int("scheduler.interval_steps", interval_steps, low=1)
        self.warmup_steps = check_int("scheduler.warmup_steps", warmup_steps, low=0)
        self.min_trials = check_int("scheduler.min_trials", min_trials, low=1)
        check_below_budget("scheduler.interval_steps", self.interval_steps, self.max_steps,
                           given=given, what="report boundary")
        check_below_budget("scheduler.warmup_steps", self.warmup_steps, self.max_steps, given=True,
                           what="boundary after the warm-up")
        self._bounds = list(range(self.interval_steps, self.max_steps, self.interval_steps))
        # per boundary: every score reported there so far, ascending
        self._reports: list[list[float]] = [[] for _ in self._bounds]
        self._best: dict[int, float] = {}  # trial -> best score so far

    def _decide(self, trial_id: int, index: int, value: float) -> Decision:
        own = score(value, self.goal)
        best = max(own, self._best.get(trial_id, own))
        self._best[trial_id] = best
        others = self._reports[index]
        # The pure rule on scores (goal already folded in), before recording this report.
        keep = (self._bounds[index] < self.warmup_steps
                or median_decision(best, others, "maximize", self.min_trials))
        bisect.insort(others, own)
        return CONTINUE if keep else STOP
