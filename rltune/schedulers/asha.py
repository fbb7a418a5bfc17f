"""ASHA: asynchronous successive halving, promotion-free (like Optuna's SuccessiveHalvingPruner).

Rungs sit at ``min_steps * eta^k`` below ``max_steps`` (eta = ``reduction_factor``; default
``min_steps = ceil(max_steps / eta^3)``, so three rungs). A trial reaching rung k continues
only if its metric is among the top ``max(1, n // eta)`` of the n metrics reported at that rung
so far, its own included (ties count in its favour); otherwise it is stopped. The first arrival
at a rung always continues, the second only if at least as good as the first, and so on.
Decided on arrival, never pauses: nothing waits for stragglers.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from rltune.schedulers._base import (CONTINUE, STOP, Decision, Scheduler, count_better, rung_ladder,
                                     score)


def asha_promotable(value: float, rung_values: Sequence[float], reduction_factor: int,
                    goal: str = "maximize") -> bool:
    """True (continue) if `value` is in the top max(1, n // eta) of `rung_values` (which include
    `value` itself): fewer than that many reports are strictly better."""
    keep = max(1, len(rung_values) // reduction_factor)
    own = score(value, goal)
    better = sum(1 for v in rung_values if score(v, goal) > own)
    return better < keep


class ASHAScheduler(Scheduler):
    name = "asha"

    def __init__(self, *, goal: str = "maximize", max_steps: int, min_steps: int | None = None,
                 reduction_factor: int = 3):
        super().__init__(goal=goal, max_steps=max_steps)
        self.reduction_factor, self.min_steps, self._bounds = rung_ladder(
            self.max_steps, min_steps, reduction_factor)
        self._rungs: list[list[float]] = [[] for _ in self._bounds]  # ascending scores

    def _decide(self, trial_id: int, index: int, value: float) -> Decision:
        scores = self._rungs[index]
        own = score(value, self.goal)
        bisect.insort(scores, own)
        keep = max(1, len(scores) // self.reduction_factor)
        return CONTINUE if count_better(scores, own) < keep else STOP
