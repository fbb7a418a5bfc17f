"""Run one training job in segments: the trial runner.

Owns everything the agents do not know about: the run directory, JSONL + TensorBoard logs,
checkpoints (last and best), evaluation, and the `report` hook through which a tuning
scheduler can stop a run between segments.

Run directory layout:
    config.yaml            resolved config (accepted by `rltune train --config`)
    metrics.jsonl          one JSON object per segment
    tb/                    TensorBoard event files
    checkpoints/last.msgpack, checkpoints/best.msgpack
    summary.json           final summary (status, steps, reward, evaluation)
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import yaml

from rltune import checkpoint
from rltune.agents import get_agent
from rltune.config import to_dict
from rltune.envs import env_info
from rltune.evaluate import eval_backend, evaluate

# report(step, reward) -> "continue" | "stop"; called after every segment.
ReportFn = Callable[[int, float], str]


class TrialDiverged(RuntimeError):
    """Training produced a NaN or infinite loss."""


@dataclass(frozen=True)
class RunOptions:
    segment_steps: int | None = None  # env steps per segment; None: about 1/20 of the run
    eval_episodes: int = 10
    eval_seed: int = 10_000
    checkpoint_every: int = 1  # segments between "last" checkpoints
    progress: bool = False
    report_steps: tuple[int, ...] = ()  # env steps where a segment must end (scheduler rungs/phases)


class MetricLog:
    """metrics.jsonl plus TensorBoard scalars, appended (resume keeps the history)."""

    def __init__(self, run_dir: Path):
        from tensorboardX import SummaryWriter

        self._jsonl = (run_dir / "metrics.jsonl").open("a")
        self._tb = SummaryWriter(str(run_dir / "tb"), flush_secs=5)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self._jsonl.flush()
        for key, value in metrics.items():
            if key in ("step", "wall_time") or value is None:
                continue
            tag = f"charts/{key}" if key in ("reward", "episode_length", "steps_per_second") else f"losses/{key}"
            self._tb.add_scalar(tag, value, step)

    def close(self) -> None:
        self._jsonl.close()
        self._tb.close()


def _segment_updates(config, options: RunOptions) -> int:
    per_update = config.steps_per_update
    if options.segment_steps:
        return max(1, options.segment_steps // per_update)
    return max(1, math.ceil(config.num_updates / 20))


def _next_segment(update: int, seg_updates: int, config, report_steps) -> int:
    """Updates in the next segment: at most `seg_updates`, ending on the first scheduler
    boundary ahead (rounded up to whole updates) so the report lands on it."""
    n = min(seg_updates, config.num_updates - update)
    for boundary in sorted(report_steps):
        boundary_update = math.ceil(boundary / config.steps_per_update)
        if boundary_update > update:
            return max(1, min(n, boundary_update - update))
    return n


def _host_metrics(metrics: dict) -> dict[str, float]:
    out = {}
    for key, value in jax.device_get(metrics).items():
        value = float(np.asarray(value))
        out[key] = None if math.isnan(value) else value
    out["reward"] = out.pop("episode_return")
    return out


def train(agent_name: str, config, run_dir: str | Path, *, options: RunOptions = RunOptions(),
          report: ReportFn | None = None, resume: bool = False) -> dict[str, Any]:
    """Train to `config.total_steps` (or until `report` says stop). Returns the summary dict.

    With `resume=True` the run continues from `run_dir/checkpoints/last.msgpack`.
    Raises TrialDiverged on a NaN loss (after writing the summary as failed).
    """
    module = get_agent(agent_name)
    run_dir = Path(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    config_dict = to_dict(config)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"agent": agent_name, **config_dict}, sort_keys=False))

    state = module.init(config)
    best_reward = -math.inf
    wall_before = 0.0
    if resume:
        payload = checkpoint.read(run_dir / "checkpoints" / checkpoint.FILE_NAME["last"])
        state = checkpoint.restore_state(state, payload)
        best_reward = payload["extra"].get("best_reward", -math.inf)
        wall_before = payload["extra"].get("wall_time", 0.0)

    log = MetricLog(run_dir)
    seg_updates = _segment_updates(config, options)
    status, reward, metrics = "completed", None, {}
    start = time.perf_counter()
    progress = _progress_bar(options.progress, config.total_steps)
    try:
        segment = 0
        while int(state.update) < config.num_updates:
            n = _next_segment(int(state.update), seg_updates, config, options.report_steps)
            seg_start = time.perf_counter()
            state, raw = module.train_segment(config, state, n)
            metrics = _host_metrics(raw)
            seg_time = time.perf_counter() - seg_start
            step = int(state.env_steps)
            metrics["steps_per_second"] = n * config.steps_per_update / max(seg_time, 1e-9)
            metrics["wall_time"] = wall_before + time.perf_counter() - start
            log.write(step, metrics)
            if metrics.get("loss") is None or not math.isfinite(metrics["loss"]):
                raise TrialDiverged(f"loss is {metrics.get('loss')} at step {step}")
            reward = metrics["reward"]
            segment += 1
            extra = {"env_steps": step, "best_reward": best_reward, "wall_time": metrics["wall_time"]}
            if reward is not None and reward > best_reward:
                best_reward = extra["best_reward"] = reward
                checkpoint.save(run_dir / "checkpoints" / checkpoint.FILE_NAME["best"], agent=agent_name,
                                config=config_dict, state=state, extra=extra)
            if segment % options.checkpoint_every == 0:
                checkpoint.save(run_dir / "checkpoints" / checkpoint.FILE_NAME["last"], agent=agent_name,
                                config=config_dict, state=state, extra=extra)
            if progress:
                progress.update(step, reward)
            if report is not None and report(step, reward if reward is not None else -math.inf) == "stop":
                status = "stopped"
                break
    except TrialDiverged as exc:
        _write_summary(run_dir, {"status": "failed", "reason": str(exc), "env_steps": int(state.env_steps)})
        raise
    finally:
        log.close()
        if progress:
            progress.close()
    # The final state is always the last checkpoint (a stopped trial keeps its results).
    checkpoint.save(run_dir / "checkpoints" / checkpoint.FILE_NAME["last"], agent=agent_name,
                    config=config_dict, state=state,
                    extra={"env_steps": int(state.env_steps), "best_reward": best_reward,
                           "wall_time": wall_before + time.perf_counter() - start})
    if not (run_dir / "checkpoints" / checkpoint.FILE_NAME["best"]).exists():
        checkpoint.save(run_dir / "checkpoints" / checkpoint.FILE_NAME["best"], agent=agent_name,
                        config=config_dict, state=state, extra={"env_steps": int(state.env_steps)})
    train_time = time.perf_counter() - start
    summary = {"status": status, "agent": agent_name, "env": config.env, "env_steps": int(state.env_steps),
               "reward": reward, "best_reward": best_reward if math.isfinite(best_reward) else None,
               "wall_time": wall_before + train_time, "metrics": metrics}
    if options.eval_episodes > 0:
        summary["eval"] = evaluate_params(agent_name, config, state.params, options.eval_episodes,
                                          options.eval_seed)
    _write_summary(run_dir, summary)
    return summary


def evaluate_params(agent_name: str, config, params, episodes: int, seed: int) -> dict:
    module = get_agent(agent_name)
    info = env_info(config.env, config.backend)
    act = module.policy_fn(config, info)
    key = jax.random.PRNGKey(seed)
    eval_env, backend = eval_backend(config.env, info.backend)
    result = evaluate(lambda obs: act(params, obs, key, True), eval_env, backend, episodes, seed)
    return result.summary()


def _write_summary(run_dir: Path, summary: dict) -> None:
    tmp = run_dir / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(run_dir / "summary.json")


class _RichProgress:
    def __init__(self, total: int):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("[bold]training"), BarColumn(),
                                  TextColumn("{task.completed:,}/{task.total:,} steps"),
                                  TextColumn("reward {task.fields[reward]}"), TimeElapsedColumn(),
                                  TimeRemainingColumn())
        self._task = self._progress.add_task("train", total=total, reward="-")
        self._progress.start()

    def update(self, step: int, reward) -> None:
        self._progress.update(self._task, completed=step, reward=f"{reward:.1f}" if reward is not None else "-")

    def close(self) -> None:
        self._progress.stop()


def _progress_bar(enabled: bool, total: int):
    if enabled and sys.stderr.isatty():
        return _RichProgress(total)
    return None
