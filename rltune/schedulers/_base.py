"""What every scheduler shares: the decision words, goal handling, validation, boundary tracking.

A scheduler is told, for each trial, the metric it reports at each boundary (a rung or a phase
end) and answers at once with one of three words:

- ``"continue"``: run on to the next boundary (or to the end of the budget);
- ``"stop"``: terminate the trial now (its reports still count for choosing the best config);
- ``"pause"``: checkpoint the trial and free its slot; it waits at a barrier. Only the
  synchronous schedulers (successive halving, hyperband) say this. After a barrier is resolved
  the paused trials that won are listed by ``resumable()`` until they report again; the ones
  that lost are listed by ``stopped()`` and never resume.

Reporting contract: a trial reports at each step in ``boundaries()``, in order. A report at
step ``s`` counts for the highest boundary ``<= s`` the trial has not reported yet (so a trial
that overshoots a boundary a little, because its segments are whole rollouts, is still judged
there); a report that crosses no new boundary is ignored and answered ``"continue"``.
Boundaries are the decision points only: they are all below ``max_steps``; the end of the
budget needs no report (call ``on_complete``).

All comparisons are made on a *score*: the value itself when the goal is ``"maximize"``, its
negation when ``"minimize"``; NaN scores as the worst possible value.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Sequence
from typing import ClassVar, Literal

from rltune.errors import UsageError

Decision = Literal["continue", "stop", "pause"]
CONTINUE: Decision = "continue"
STOP: Decision = "stop"
PAUSE: Decision = "pause"
GOALS = ("maximize", "minimize")


# ---------------------------------------------------------------- goal-aware scores


def score(value: float, goal: str) -> float:
    """Map a metric to a score that is always maximised (NaN -> -inf, the worst)."""
    value = float(value)
    if math.isnan(value):
        return -math.inf
    return value if goal == "maximize" else -value


def is_better(a: float, b: float, goal: str) -> bool:
    """True when metric `a` is strictly better than metric `b` under `goal`."""
    return score(a, goal) > score(b, goal)


def count_not_better(sorted_scores: Sequence[float], s: float) -> int:
    """How many of `sorted_scores` (ascending) are <= s: the rank from the bottom, ties counted
    in the trial's favour (it sits at the top of its tie group)."""
    return bisect.bisect_right(sorted_scores, s)


def count_better(sorted_scores: Sequence[float], s: float) -> int:
    """How many of `sorted_scores` (ascending) are strictly > s."""
    return len(sorted_scores) - bisect.bisect_right(sorted_scores, s)


# ---------------------------------------------------------------- parameter validation


def check_goal(goal: object) -> str:
    """"maximize" or "minimize", any case (the Cloud ML format writes MAXIMIZE)."""
    if isinstance(goal, str):
        goal = goal.lower()
    if goal not in GOALS:
        raise UsageError("scheduler.goal", f"must be one of {', '.join(GOALS)}, got {goal!r}")
    return goal  # type: ignore[return-value]


def check_int(field: str, value: object, *, low: int | None = None) -> int:
    """An integer (an integral float such as 1e6 from YAML is accepted) >= low."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(field, f"must be an integer, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise UsageError(field, f"must be an integer, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise UsageError(field, f"must be >= {low}, got {value}")
    return value


def check_float(field: str, value: object, *, low: float | None = None,
                high: float | None = None, open_interval: bool = False) -> float:
    """A finite real number in [low, high] (or (low, high) with `open_interval`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise UsageError(field, f"must be a finite number, got {value!r}")
    value = float(value)
    too_low = low is not None and (value <= low if open_interval else value < low)
    too_high = high is not None and (value >= high if open_interval else value > high)
    if too_low or too_high:
        lo, hi = ("(", ")") if open_interval else ("[", "]")
        raise UsageError(field, f"must be in {lo}{low}, {high}{hi}, got {value}")
    return value


def check_below_budget(field: str, value: int, max_steps: int, *, given: bool, what: str) -> None:
    """Refuse a first rung/boundary at or beyond the trial budget: the scheduler would have no
    boundary below `max_steps`, so it would silently never stop a trial. `given`: the user set
    `field` (else it was derived from a budget too small to hold one)."""
    if value < max_steps:
        return
    if given:
        raise UsageError(field, f"{value} is not below the trial budget ({max_steps} steps): there "
                         f"would be no {what} and no trial would ever be stopped; lower it below "
                         f"{max_steps}, or raise budget_steps")
    raise UsageError("budget_steps", f"the trial budget ({max_steps} steps) is too small for any {what} "
                     f"({field} would be {value}): raise budget_steps, or use scheduler fifo")


def default_min_steps(max_steps: int, reduction_factor: int) -> int:
    """ceil(max_steps / eta^3): three rungs, the last one a factor eta below max_steps."""
    return max(1, -(-max_steps // reduction_factor ** 3))


def rung_ladder(max_steps: int, min_steps: int | None, reduction_factor: int, *,
                check_budget: bool = True) -> tuple[int, int, list[int]]:
    """The checked (reduction_factor, min_steps, rungs) shared by ASHA, successive halving and
    HyperBand: min_steps defaults to three rungs below max_steps; a first rung at or past the
    budget is refused (`check_budget=False` for a HyperBand bracket, which may have none)."""
    reduction_factor = check_int("scheduler.reduction_factor", reduction_factor, low=2)
    given = min_steps is not None
    if min_steps is None:
        min_steps = default_min_steps(max_steps, reduction_factor)
    min_steps = check_int("scheduler.min_steps", min_steps, low=1)
    if check_budget:
        check_below_budget("scheduler.min_steps", min_steps, max_steps, given=given, what="rung")
    return reduction_factor, min_steps, geometric_rungs(min_steps, reduction_factor, max_steps)


def geometric_rungs(min_steps: int, reduction_factor: int, max_steps: int) -> list[int]:
    """min_steps * eta^k for k = 0, 1, ... while below max_steps."""
    rungs, step = [], min_steps
    while step < max_steps:
        rungs.append(step)
        step *= reduction_factor
    return rungs


# ---------------------------------------------------------------- the base object


class Scheduler:
    """Thin state holder; subclasses implement `_decide` with a pure module-level function."""

    name: ClassVar[str] = ""

    def __init__(self, *, goal: str = "maximize", max_steps: int):
        self.goal = check_goal(goal)
        self.max_steps = check_int("scheduler.max_steps", max_steps, low=1)
        self._next_boundary: dict[int, int] = {}  # trial -> index of its next unreported boundary
        self._stopped: set[int] = set()
        self._completed: set[int] = set()
        self._bounds: list[int] = []  # subclasses fill this in __init__

    # -- the interface the driver calls ------------------------------------------------------

    def boundaries(self) -> list[int]:
        """Steps at which trials must report, sorted, all below max_steps."""
        return list(self._bounds)

    def on_report(self, trial_id: int, step: int, value: float) -> Decision:
        """A trial reached a boundary: answer "continue", "stop" or "pause"."""
        if trial_id in self._stopped:
            return STOP
        index = self._crossed_boundary(trial_id, step)
        if index is None:
            return CONTINUE
        decision = self._decide(trial_id, index, float(value))
        if decision == STOP:
            self._stopped.add(trial_id)
        return decision

    def on_complete(self, trial_id: int) -> None:
        """The trial ran its whole budget, or failed; it will not report again."""
        self._completed.add(trial_id)

    def paused(self) -> list[int]:
        """Trials waiting at a barrier, not yet decided (barrier schedulers only)."""
        return []

    def resumable(self) -> list[int]:
        """Paused trials that won at their barrier and should be resumed (barrier schedulers)."""
        return []

    def stopped(self) -> list[int]:
        """Every trial this scheduler has terminated, including losers decided at a barrier."""
        return sorted(self._stopped)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(goal={self.goal!r}, max_steps={self.max_steps})"

    # -- for subclasses ----------------------------------------------------------------------

    def _decide(self, trial_id: int, index: int, value: float) -> Decision:
        return CONTINUE

    def _crossed_boundary(self, trial_id: int, step: int) -> int | None:
        """Index of the highest boundary <= step this trial has not reported, or None."""
        bounds = self._bounds
        start = self._next_boundary.get(trial_id, 0)
        index = bisect.bisect_right(bounds, step) - 1
        if index < start:
            return None
        self._next_boundary[trial_id] = index + 1
        return index
