"""A long-lived trial worker process.

Workers are started with the `spawn` method (JAX must not be forked) and run one trial at a
time. Keeping them alive across trials keeps JAX imported and compiled programs cached: trials
that differ only in traced hyperparameters (learning rate, gamma, ...) reuse one compile.

Messages to the driver (shared `outbox`):
    ("started", worker_id, trial_id, pid)
    ("report", worker_id, trial_id, step, value)   -> the driver answers "continue"/"stop"/"pause"
    ("done", worker_id, trial_id, result_dict)
    ("failed", worker_id, trial_id, reason)
Messages from the driver (this worker's `inbox`): a TrialTask, ("decision", trial_id, decision),
or None (exit).
"""

from __future__ import annotations

import math
import os
import signal
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrialTask:
    trial_id: int
    trial_dir: str
    params: dict[str, Any]  # the sampled hyperparameters
    agent: str | None = None  # built-in agent ...
    config: dict[str, Any] = field(default_factory=dict)  # ... and its full config
    command: tuple[str, ...] | None = None  # or an external trainer
    metric: str = "reward"
    goal: str = "maximize"
    report_steps: tuple[int, ...] = ()  # scheduler boundaries (env steps)
    eval_episodes: int = 10
    resume: bool = False


def worker_main(worker_id: int, inbox, outbox) -> None:
    # Ctrl-C is the driver's to handle: it records running trials as interrupted and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        task = inbox.get()
        if task is None:
            return
        outbox.put(("started", worker_id, task.trial_id, os.getpid()))
        Path(task.trial_dir).mkdir(parents=True, exist_ok=True)
        (Path(task.trial_dir) / "pid").write_text(str(os.getpid()))

        def report(step: int, value: float, _task=task) -> str:
            outbox.put(("report", worker_id, _task.trial_id, int(step), float(value)))
            return inbox.get()[2]  # ("decision", trial_id, "continue" | "stop")

        try:
            result = run_task(task, report)
        except Exception as exc:  # a crashing trial fails alone; the worker lives on
            (Path(task.trial_dir) / "error.txt").write_text(traceback.format_exc())
            outbox.put(("failed", worker_id, task.trial_id, f"{type(exc).__name__}: {exc}"))
            continue
        outbox.put(result_message(worker_id, task.trial_id, result))


def run_task(task: TrialTask, report) -> dict[str, Any]:
    """Run one trial here. Returns {status, value, step, ...}; status is completed/stopped/failed."""
    if task.command is not None:
        return _run_external(task, report)
    return _run_builtin(task, report)


def _run_builtin(task: TrialTask, report) -> dict[str, Any]:
    from rltune.agents import get_agent
    from rltune.config import from_dict
    from rltune.runner import RunOptions, TrialDiverged, train

    module = get_agent(task.agent)
    config = from_dict(module.Config, task.config, source=f"trial {task.trial_id}")
    options = RunOptions(eval_episodes=task.eval_episodes, report_steps=task.report_steps)
    try:
        summary = train(task.agent, config, task.trial_dir, options=options, report=report, resume=task.resume)
    except TrialDiverged as exc:
        return {"status": "failed", "reason": f"diverged: {exc}"}
    return trial_result(summary, task.metric)


def trial_result(summary: dict, metric: str) -> dict[str, Any]:
    """A run's summary as the driver's trial result (failed when the metric is missing or NaN)."""
    value = metric_value(summary, metric)
    if value is None or not math.isfinite(value):
        return {"status": "failed", "reason": f"metric {metric!r} is {value} (no finished episode?)"}
    return {"status": summary["status"], "value": value, "step": summary["env_steps"],
            "wall_time": summary["wall_time"], "eval_mean": summary.get("eval", {}).get("mean")}


def result_message(worker_id: int, trial_id: int, result: dict[str, Any]) -> tuple:
    if result["status"] == "failed":
        return ("failed", worker_id, trial_id, result["reason"])
    return ("done", worker_id, trial_id, result)


def metric_value(summary: dict, metric: str) -> float | None:
    """Built-in metrics: reward (last-100 training mean), best_reward, eval_return (final evaluation)."""
    if metric == "eval_return":
        return summary.get("eval", {}).get("mean")
    if metric in ("reward", "best_reward"):
        return summary.get(metric)
    return summary.get("metrics", {}).get(metric)


def _run_external(task: TrialTask, report) -> dict[str, Any]:
    from rltune.tune.external import run_external_trial

    result = run_external_trial(list(task.command), task.params, task.trial_id, Path(task.trial_dir),
                                task.metric, goal=task.goal, report=report)
    if result.status == "failed":
        return {"status": "failed", "reason": result.reason}
    return {"status": result.status, "value": result.metric, "step": result.step,
            "wall_time": result.wall_time, "eval_mean": None}
