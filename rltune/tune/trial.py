"""Running one trial in this process: a built-in agent's training run or an external trainer.

Every executor's worker calls `run_task(task, report)`; `report(step, value)` sends an
intermediate value to the driver and returns its decision ("continue" or "stop").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rltune.tune.executors.base import TrialTask

# A tuning trial's checkpoints: at its first segment, then at most every this many seconds, and
# at its end (a trial of seconds writes 2-3 instead of 2 per segment; a resume or a retry after
# a lost worker goes back at most this far).
CHECKPOINT_INTERVAL = 10.0


def run_task(task: TrialTask, report) -> dict[str, Any]:
    """Run one trial here. Returns {status, value, step, ...}; status is completed/stopped/failed."""
    if task.command is not None:
        return _run_external(task, report)
    return _run_builtin(task, report)


def _run_builtin(task: TrialTask, report) -> dict[str, Any]:
    from rltune.agents import get_agent
    from rltune.config import from_dict
    from rltune.runner import RunOptions, TrialDiverged, train
    from rltune.tune.results import tb_run_name

    module = get_agent(task.agent)
    config = from_dict(module.Config, task.config, source=f"trial {task.trial_id}")
    # A trial's evaluation runs on the env as trained (compiled on gymnax); the study checks its
    # best trial on the reference simulator afterwards (driver.reference_eval).
    options = RunOptions(eval_episodes=task.eval_episodes, report_steps=task.report_steps, hparams=task.params,
                         tb_run=tb_run_name(task.trial_id, task.params), eval_reference=False,
                         checkpoint_interval=CHECKPOINT_INTERVAL)
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
    """A trial result as a worker-loop message (see executors/base.py)."""
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
                                task.metric, goal=task.goal, report=report, fixed=task.fixed,
                                options=task.trainer)
    if result.status == "failed":
        return {"status": "failed", "reason": result.reason}
    return {"status": result.status, "value": result.metric, "step": result.step,
            "wall_time": result.wall_time, "eval_mean": None}
