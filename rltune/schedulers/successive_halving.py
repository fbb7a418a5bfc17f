"""Synchronous successive halving (SH): every rung is a barrier; trials *pause* there.

Rungs sit at ``min_steps * eta^k`` below ``max_steps`` (eta = ``reduction_factor``; default
``min_steps = ceil(max_steps / eta^3)``). All ``num_trials`` trials run to rung 0; there they
wait until every trial still alive has reported. Then the top ``max(1, n // eta)`` of the n
reports go on to the next rung and the rest are stopped; ties go to the earlier report.

Barrier choice: a trial that reaches a rung before the rung is complete is answered
``"pause"``: the driver checkpoints it and frees its slot (with fewer slots than trials there
is no other way to let the stragglers run). The trial whose report completes the rung is
answered at once (``"continue"`` or ``"stop"``), so it never pauses. The paused winners are
then listed by ``resumable()`` (until they report again) and the driver resumes them from
their checkpoints; the paused losers appear in ``stopped()`` and never resume. A trial that
fails (``on_complete`` before its next rung) no longer counts at that rung, so a crash cannot
hold a barrier forever. This is the honest cost of SH the HyperTrick talk points at: slots
sit idle or swap trials (context switches) while a rung waits for its slowest trial.

More distinct trials than ``num_trials`` is a driver error (ValueError): the barrier counts
depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence

from rltune.errors import UsageError
from rltune.schedulers._base import (CONTINUE, PAUSE, STOP, Decision, Scheduler, check_int,
                                     rung_ladder, score)


def successive_halving_survivors(reports: Sequence[tuple[int, float]], reduction_factor: int,
                                 goal: str = "maximize") -> list[int]:
    """The trials that go on from a complete rung: the top max(1, n // eta) of `reports`
    ((trial_id, metric) in arrival order), best first; ties go to the earlier report."""
    keep = max(1, len(reports) // reduction_factor)
    order = sorted(range(len(reports)), key=lambda i: (-score(reports[i][1], goal), i))
    return [reports[i][0] for i in order[:keep]]


class SuccessiveHalvingScheduler(Scheduler):
    name = "successive_halving"

    def __init__(self, *, goal: str = "maximize", max_steps: int, num_trials: int | None = None,
                 min_steps: int | None = None, reduction_factor: int = 3,
                 _first_rung: int = 0):
        super().__init__(goal=goal, max_steps=max_steps)
        if num_trials is None:
            raise UsageError("scheduler.num_trials",
                             f"{self.name} needs the number of trials (its rungs are barriers)")
        self.num_trials = check_int("scheduler.num_trials", num_trials, low=1)
        # _first_rung > 0 skips the lowest rungs (a HyperBand bracket, which may rightly have
        # no rung left); not a user parameter.
        self.reduction_factor, self.min_steps, rungs = rung_ladder(
            self.max_steps, min_steps, reduction_factor, check_budget=_first_rung == 0)
        self._bounds = rungs[_first_rung:]
        self._expected = [0] * len(self._bounds)  # trials that must report at each rung
        if self._bounds:
            self._expected[0] = self.num_trials
        self._reports: list[list[tuple[int, float]]] = [[] for _ in self._bounds]
        self._target: dict[int, int] = {}  # trial -> the rung it is heading to
        self._paused: set[int] = set()
        self._resumable: set[int] = set()
        self._seen: set[int] = set()

    def paused(self) -> list[int]:
        return sorted(self._paused)

    def resumable(self) -> list[int]:
        return sorted(self._resumable)

    def on_report(self, trial_id: int, step: int, value: float) -> Decision:
        if trial_id in self._paused:
            return PAUSE  # reported again while waiting at a barrier: still waiting
        return super().on_report(trial_id, step, value)

    def on_complete(self, trial_id: int) -> None:
        super().on_complete(trial_id)
        self._see(trial_id)
        self._resumable.discard(trial_id)
        rung = self._target.pop(trial_id, len(self._bounds))
        if trial_id in self._paused:  # given up while waiting: withdraw its report
            self._paused.discard(trial_id)
            self._reports[rung] = [r for r in self._reports[rung] if r[0] != trial_id]
        if rung < len(self._bounds) and trial_id not in self._stopped:
            self._expected[rung] -= 1  # failed before its rung: the barrier stops waiting for it
            self._resolve(rung, reporter=None)

    def _see(self, trial_id: int) -> None:
        """Register a new trial (heading to rung 0); more than num_trials is a driver error."""
        if trial_id in self._seen:
            return
        if len(self._seen) >= self.num_trials:
            raise ValueError(f"{self.name}: more than num_trials={self.num_trials} trials")
        self._seen.add(trial_id)
        self._target[trial_id] = 0

    def _decide(self, trial_id: int, index: int, value: float) -> Decision:
        self._see(trial_id)
        rung = self._target[trial_id]
        if rung >= len(self._bounds):
            return CONTINUE  # past the last rung: run to the end of the budget
        self._resumable.discard(trial_id)
        self._reports[rung].append((trial_id, value))
        decision = self._resolve(rung, reporter=trial_id)
        if decision is None:
            self._paused.add(trial_id)
            return PAUSE
        return decision

    def _resolve(self, rung: int, reporter: int | None) -> Decision | None:
        """If every expected trial has reported at `rung`, decide them all; return the
        reporter's decision (None while the barrier still waits)."""
        reports = self._reports[rung]
        if not reports or len(reports) < self._expected[rung]:
            return None
        winners = successive_halving_survivors(reports, self.reduction_factor, self.goal)
        if rung + 1 < len(self._bounds):
            self._expected[rung + 1] = len(winners)
        for trial, _ in reports:
            self._paused.discard(trial)
            if trial in winners:
                self._target[trial] = rung + 1
                if trial != reporter:
                    self._resumable.add(trial)
            else:
                self._stopped.add(trial)
                self._target.pop(trial, None)
        self._reports[rung] = []
        self._expected[rung] = 0
        if reporter is None:
            return None
        return CONTINUE if reporter in winners else STOP
