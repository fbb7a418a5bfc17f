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

from rltune import checkpoint, hp_schedule
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


def _drop_lines_after(path: Path, step: int) -> None:
    """A run resumed from a checkpoint at `step` logs the steps after it again: drop lines a
    crash left behind beyond the checkpoint, so the history never repeats a step."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        path.write_text("".join(kept))


class MetricLog:
    """metrics.jsonl plus TensorBoard scalars, appended (resume keeps the history)."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        from tensorboardX import SummaryWriter

        if resume_step is not None:
            _drop_lines_after(run_dir / "metrics.jsonl", resume_step)
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
        if not self._jsonl.closed:
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


class TrialRecorder:
    """Everything a run writes: config, metrics (JSONL + TensorBoard), last/best checkpoints and
    the summary. Used by `train` and by the population executor (one recorder per member)."""

    def __init__(self, agent_name: str, config, run_dir: str | Path, *, resume_extra: dict | None = None):
        self.agent_name = agent_name
        self.config = config
        self.run_dir = Path(run_dir)
        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.config_dict = to_dict(config)
        (self.run_dir / "config.yaml").write_text(
            yaml.safe_dump({"agent": agent_name, **self.config_dict}, sort_keys=False))
        extra = resume_extra or {}
        self.best_reward = extra.get("best_reward", -math.inf)
        self.wall_before = extra.get("wall_time", 0.0)
        self.start = time.perf_counter()
        self.reward = None
        self.metrics: dict[str, Any] = {}
        self.segments = 0
        self._log = MetricLog(self.run_dir, resume_step=extra.get("env_steps") if resume_extra else None)

    def wall_time(self) -> float:
        return self.wall_before + time.perf_counter() - self.start

    def _extra(self, state) -> dict:
        return {"env_steps": int(state.env_steps), "best_reward": self.best_reward, "wall_time": self.wall_time()}

    def save(self, which: str, state) -> None:
        checkpoint.save(self.run_dir / "checkpoints" / checkpoint.FILE_NAME[which], agent=self.agent_name,
                        config=self.config_dict, state=state, extra=self._extra(state))

    def record_segment(self, state, raw_metrics, num_updates: int, seconds: float,
                       checkpoint_every: int = 1) -> dict[str, Any]:
        """Log one segment and checkpoint; raise TrialDiverged on a non-finite loss."""
        metrics = _host_metrics(raw_metrics)
        step = int(state.env_steps)
        metrics["steps_per_second"] = num_updates * self.config.steps_per_update / max(seconds, 1e-9)
        metrics["wall_time"] = self.wall_time()
        self._log.write(step, metrics)
        self.metrics = metrics
        if metrics.get("loss") is None or not math.isfinite(metrics["loss"]):
            raise TrialDiverged(f"loss is {metrics.get('loss')} at step {step}")
        self.reward = metrics["reward"]
        self.segments += 1
        if self.reward is not None and self.reward > self.best_reward:
            self.best_reward = self.reward
            self.save("best", state)
        if self.segments % checkpoint_every == 0:
            self.save("last", state)
        return metrics

    def fail(self, state, reason: str) -> None:
        self._log.close()
        _write_summary(self.run_dir, {"status": "failed", "reason": reason, "env_steps": int(state.env_steps)})

    def finish(self, state, status: str, eval_episodes: int = 0, eval_seed: int = 10_000) -> dict[str, Any]:
        """Final checkpoints (a stopped trial keeps its results), evaluation and summary."""
        self._log.close()
        self.save("last", state)
        if not (self.run_dir / "checkpoints" / checkpoint.FILE_NAME["best"]).exists():
            self.save("best", state)
        summary = {"status": status, "agent": self.agent_name, "env": self.config.env,
                   "env_steps": int(state.env_steps), "reward": self.reward,
                   "best_reward": self.best_reward if math.isfinite(self.best_reward) else None,
                   "wall_time": self.wall_time(), "metrics": self.metrics}
        if eval_episodes > 0:
            summary["eval"] = evaluate_params(self.agent_name, self.config, state.params, eval_episodes, eval_seed)
        _write_summary(self.run_dir, summary)
        return summary

    def close(self) -> None:
        self._log.close()


def load_last(agent_name: str, config, run_dir: str | Path, template=None):
    """The state and checkpoint extras of a run's last checkpoint (for --resume)."""
    payload = checkpoint.read(Path(run_dir) / "checkpoints" / checkpoint.FILE_NAME["last"])
    template = get_agent(agent_name).init(config) if template is None else template
    return checkpoint.restore_state(template, payload), payload["extra"]


def train(agent_name: str, config, run_dir: str | Path, *, options: RunOptions = RunOptions(),
          report: ReportFn | None = None, resume: bool = False) -> dict[str, Any]:
    """Train to `config.total_steps` (or until `report` says stop). Returns the summary dict.

    With `resume=True` the run continues from `run_dir/checkpoints/last.msgpack`.
    Raises TrialDiverged on a NaN loss (after writing the summary as failed).
    """
    module = get_agent(agent_name)
    state, extra = load_last(agent_name, config, run_dir) if resume else (module.init(config), None)
    recorder = TrialRecorder(agent_name, config, run_dir, resume_extra=extra)
    seg_updates = _segment_updates(config, options)
    status = "completed"
    progress = _progress_bar(options.progress, config.total_steps)
    # A hyperparameter schedule (PBT's best member) changes traced values at segment ends.
    boundaries = tuple(options.report_steps) + hp_schedule.steps(config)
    current, applied = config, 0
    if resume:  # entries before the checkpoint are in force already (their random folds included)
        current, _, applied = hp_schedule.apply(config, None, int(state.env_steps) - 1, 0)
    try:
        while int(state.update) < config.num_updates:
            current, state, applied = hp_schedule.apply(current, state, int(state.env_steps), applied)
            n = _next_segment(int(state.update), seg_updates, config, boundaries)
            seg_start = time.perf_counter()
            state, raw = module.train_segment(current, state, n)
            jax.block_until_ready(state)
            recorder.record_segment(state, raw, n, time.perf_counter() - seg_start, options.checkpoint_every)
            reward = recorder.reward
            if progress:
                progress.update(int(state.env_steps), reward)
            if report is not None and report(int(state.env_steps), reward if reward is not None else -math.inf) == "stop":
                status = "stopped"
                break
    except TrialDiverged as exc:
        recorder.fail(state, str(exc))
        raise
    finally:
        recorder.close()
        if progress:
            progress.close()
    return recorder.finish(state, status, options.eval_episodes, options.eval_seed)


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
