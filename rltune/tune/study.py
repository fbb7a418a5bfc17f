"""A tuning study, as a user sees it: `run_study`, its trial records and its result files.

The event loop is in driver.py, the storage writes in storage.py, the executors in executors/,
the tables and result files in results.py (shared with `rltune status` and `rltune report`).

Study directory:
    spec.yaml            the resolved study spec
    study.db             Optuna storage (unless --storage names another)
    trials/<n>/          one directory per trial (run directory or the trainer's job dir + log)
    trials.csv           the trials table, rewritten as trials finish
    best_config.yaml     the best trial's config (`rltune train <agent> --config` accepts it)
    summary.json         study summary
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from rltune.tune.resolve import prepare  # noqa: F401  (part of the API)
from rltune.tune.spec import StudySpec


@dataclass
class TrialRecord:
    """What the driver knows of one trial (mirrors storage; rendered as the trials table)."""

    number: int
    params: dict[str, Any]
    state: str = "RUNNING"  # RUNNING | PAUSED | COMPLETE | PRUNED | FAIL
    value: float | None = None
    step: int | None = None
    wall_time: float | None = None
    reason: str | None = None
    eval_mean: float | None = None
    started: float = field(default_factory=time.time)
    node: str | None = None  # where it ran last (Ray: the node's id)
    retries: list[str] = field(default_factory=list)  # worker deaths it survived
    timeline: list[list] = field(default_factory=list)  # [unix time, event, step]: start, report,
    # pause, resubmit, resume, retry, and its end state

    @property
    def pauses(self) -> list[dict]:
        """The scheduler's pauses, as `rltune status` and `rltune report` read them."""
        out = []
        for t, kind, step in self.timeline:
            if kind == "pause":
                out.append({"paused": t, "resumed": None, "step": step})
            elif kind == "resume" and out and out[-1]["resumed"] is None:
                out[-1]["resumed"] = t
        return out


@dataclass(frozen=True)
class StudyResult:
    study_dir: Path
    records: list[TrialRecord]
    best: TrialRecord | None
    interrupted: bool = False


def best_record(records: Iterable[TrialRecord], goal: str) -> TrialRecord | None:
    """The best trial by `results.best_row`'s rule (the one the tables and summary.json use)."""
    from rltune.tune.results import best_row

    by_number = {r.number: r for r in records}
    best = best_row(by_number.values(), goal)
    return by_number[best.number] if best is not None else None


def run_study(spec: StudySpec, study_dir: str | Path, *, storage: str | None = None, resume: bool = False,
              live: bool = False, eval_episodes: int = 10, population_size: int | None = None) -> StudyResult:
    """Python API: run (or resume) a study and return its trials and best trial."""
    from rltune.tune.driver import StudyDriver

    prepare(spec)
    return StudyDriver(spec, Path(study_dir), storage=storage, resume=resume, live=live,
                       eval_episodes=eval_episodes, population_size=population_size).run()
