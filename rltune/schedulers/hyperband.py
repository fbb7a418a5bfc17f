"""HyperBand (Li et al.): several synchronous successive-halving brackets side by side.

With rungs ``min_steps * eta^k < max_steps`` (n of them), bracket s = 0 .. n starts halving at
rung s: bracket 0 is the most aggressive (all n rungs), bracket n has no rung at all (its trials
run the whole budget). Following Li et al., bracket s gets a share of the ``num_trials`` trials
proportional to ``ceil((n + 1) / (h + 1) * eta^h)`` with h = n - s its number of halvings
(largest-remainder rounding). Trials are dealt to brackets in order of first appearance along
an interleaved (stride) sequence, so early and late trials are spread over all brackets.

Each bracket is a :class:`SuccessiveHalvingScheduler` (composition, as in Optuna), and like it
*pauses* trials at its barriers: a bracket waits only for its own trials. ``boundaries()`` is
the union of the brackets' rungs (that is bracket 0's rungs); a report at a step that is not a
rung of the trial's own bracket is answered ``"continue"``.
"""

from __future__ import annotations

import math

from rltune.errors import UsageError
from rltune.schedulers._base import STOP, Decision, Scheduler, check_int, rung_ladder
from rltune.schedulers.successive_halving import SuccessiveHalvingScheduler


def hyperband_bracket_sizes(num_trials: int, num_rungs: int, reduction_factor: int) -> list[int]:
    """Trials per bracket s = 0 .. num_rungs (largest remainder of Li et al.'s weights)."""
    weights = []
    for s in range(num_rungs + 1):
        h = num_rungs - s
        weights.append(math.ceil((num_rungs + 1) / (h + 1) * reduction_factor ** h))
    total = sum(weights)
    exact = [num_trials * w / total for w in weights]
    sizes = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda s: (-(exact[s] - sizes[s]), s))
    for s in by_remainder[: num_trials - sum(sizes)]:
        sizes[s] += 1
    return sizes


def interleave(sizes: list[int]) -> list[int]:
    """A sequence holding bracket s sizes[s] times, each bracket spread evenly (stride order)."""
    slots = [((i + 0.5) / n, s) for s, n in enumerate(sizes) for i in range(n)]
    return [s for _, s in sorted(slots)]


class HyperBandScheduler(Scheduler):
    name = "hyperband"

    def __init__(self, *, goal: str = "maximize", max_steps: int, num_trials: int | None = None,
                 min_steps: int | None = None, reduction_factor: int = 3):
        super().__init__(goal=goal, max_steps=max_steps)
        if num_trials is None:
            raise UsageError("scheduler.num_trials",
                             "hyperband needs the number of trials (its rungs are barriers)")
        self.num_trials = check_int("scheduler.num_trials", num_trials, low=1)
        self.reduction_factor, self.min_steps, self._bounds = rung_ladder(
            self.max_steps, min_steps, reduction_factor)
        sizes = hyperband_bracket_sizes(self.num_trials, len(self._bounds), self.reduction_factor)
        self.brackets = [
            SuccessiveHalvingScheduler(goal=goal, max_steps=self.max_steps, num_trials=n,
                                       min_steps=self.min_steps,
                                       reduction_factor=self.reduction_factor, _first_rung=s)
            if n else None
            for s, n in enumerate(sizes)]
        self._deal = interleave(sizes)
        self._bracket_of: dict[int, int] = {}

    def bracket_of(self, trial_id: int) -> int:
        """The bracket a trial belongs to (assigned on its first appearance)."""
        if trial_id not in self._bracket_of:
            if len(self._bracket_of) >= self.num_trials:
                raise ValueError(f"hyperband: more than num_trials={self.num_trials} trials")
            self._bracket_of[trial_id] = self._deal[len(self._bracket_of)]
        return self._bracket_of[trial_id]

    def on_report(self, trial_id: int, step: int, value: float) -> Decision:
        bracket = self.brackets[self.bracket_of(trial_id)]
        decision = bracket.on_report(trial_id, step, value)
        if decision == STOP:
            self._stopped.add(trial_id)
        return decision

    def on_complete(self, trial_id: int) -> None:
        super().on_complete(trial_id)
        self.brackets[self.bracket_of(trial_id)].on_complete(trial_id)

    def paused(self) -> list[int]:
        return sorted(t for b in self.brackets if b for t in b.paused())

    def resumable(self) -> list[int]:
        return sorted(t for b in self.brackets if b for t in b.resumable())

    def stopped(self) -> list[int]:
        return sorted(t for b in self.brackets if b for t in b.stopped())
