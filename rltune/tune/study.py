"""A tuning study, as a user sees it: `run_study`, its trial records and its result files.

The event loop is in driver.py, the storage writes in storage.py, the executors in executors/.

Study directory:
    spec.yaml            the resolved study spec
    study.db             Optuna storage (unless --storage names another)
    trials/<n>/          one directory per trial (run directory or the trainer's job dir + log)
    trials.csv           the trials table, rewritten as trials finish
    best_config.yaml     the best trial's config (`rltune train <agent> --config` accepts it)
    summary.json         study summary
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from rltune.tune.resolve import agent_config, prepare  # noqa: F401  (prepare: part of the API)
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
    # pause, resume, retry, and its end state; the report's timeline of slots is drawn from it


@dataclass(frozen=True)
class StudyResult:
    study_dir: Path
    records: list[TrialRecord]
    best: TrialRecord | None
    interrupted: bool = False


def best_record(records: Iterable[TrialRecord], goal: str) -> TrialRecord | None:
    """Best among completed and early-stopped trials (a stopped trial keeps its result)."""
    candidates = [r for r in records if r.state in ("COMPLETE", "PRUNED") and r.value is not None]
    if not candidates:
        return None
    sign = 1 if goal == "maximize" else -1
    return max(candidates, key=lambda r: (sign * r.value, r.state == "COMPLETE"))


def record_dict(r: TrialRecord) -> dict:
    return {"number": r.number, "state": r.state, "value": r.value, "step": r.step, "wall_time": r.wall_time,
            "eval_mean": r.eval_mean, "reason": r.reason, "params": r.params}


def write_trials_csv(path: Path, records: list[TrialRecord], spec: StudySpec) -> None:
    names = list(spec.space.names)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["number", "state", *names, spec.metric, "eval_return", "steps", "wall_time_s", "reason"])
        for r in records:
            writer.writerow([r.number, r.state, *(r.params.get(n) for n in names), r.value, r.eval_mean, r.step,
                             None if r.wall_time is None else round(r.wall_time, 3), r.reason or ""])
    tmp.replace(path)


def write_summary(path: Path, spec: StudySpec, storage_url: str, records: list[TrialRecord], failed: int) -> None:
    best = best_record(records, spec.goal)
    summary = {"name": spec.name, "storage": storage_url, "trials": len(records),
               "complete": sum(r.state == "COMPLETE" for r in records),
               "pruned": sum(r.state == "PRUNED" for r in records),
               "failed": failed, "best": record_dict(best) if best else None}
    path.write_text(json.dumps(summary, indent=2, default=str))


def write_best_config(path: Path, spec: StudySpec, best: TrialRecord,
                      params: dict[str, Any] | None = None) -> None:
    """`params`: the config values to write instead of the trial's own (PBT: its schedule)."""
    if spec.agent is not None:
        from rltune.config import to_dict

        config = agent_config(spec, params if params is not None else best.params)
        data = {"agent": spec.agent, **to_dict(config)}
    else:
        data = dict(best.params)
    header = (f"# best trial {best.number} of study {spec.name!r}: {spec.metric} = {best.value}\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))


class LiveTable:
    """A live rich table of running trials, on a terminal."""

    def __init__(self, driver):
        from rich.live import Live

        self.driver = driver
        self._live = Live(self._render(), refresh_per_second=4, transient=True)
        self._live.start()

    def _render(self):
        from rich.table import Table

        d = self.driver
        table = Table(title=f"study {d.spec.name}: {d._counted()}/{d.spec.num_trials} trials, "
                            f"{d.failures()} failed")
        for col in ("trial", *d.spec.space.names, "step", d.spec.metric):
            table.add_column(col)
        for run in d.running.values():
            r = run.record
            table.add_row(str(r.number), *(format_value(r.params.get(n)) for n in d.spec.space.names),
                          format_value(r.step), format_value(r.value))
        return table

    def refresh(self) -> None:
        self._live.update(self._render())

    def close(self) -> None:
        self._live.stop()


def format_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def run_study(spec: StudySpec, study_dir: str | Path, *, storage: str | None = None, resume: bool = False,
              live: bool = False, eval_episodes: int = 10, population_size: int | None = None) -> StudyResult:
    """Python API: run (or resume) a study and return its trials and best trial."""
    from rltune.tune.driver import StudyDriver

    prepare(spec)
    return StudyDriver(spec, Path(study_dir), storage=storage, resume=resume, live=live,
                       eval_episodes=eval_episodes, population_size=population_size).run()
