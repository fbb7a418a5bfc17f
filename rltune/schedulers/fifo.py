"""FIFO: no early termination. Every trial runs its whole budget; the baseline (alpha = 1)."""

from __future__ import annotations

from rltune.schedulers._base import Scheduler


class FIFOScheduler(Scheduler):
    """No boundaries, nothing is ever stopped or paused."""

    name = "fifo"

    def __init__(self, *, goal: str = "maximize", max_steps: int):
        super().__init__(goal=goal, max_steps=max_steps)
