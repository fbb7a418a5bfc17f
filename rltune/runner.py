"""Run one training job in segments: the trial runner.

Owns everything the agents do not know about: the run directory, JSONL + TensorBoard logs,
checkpoints (last and best), evaluation, and the `report` hook through which a tuning
scheduler can stop a run between segments.

The best checkpoint: with periodic evaluation (`eval_every`, on by default for `rltune train`)
it is the policy with the best greedy evaluation return (SB3's EvalCallback), ties going to the
later one; without it, the policy at the best training reward (the last-`reward_window` mean,
measured with exploration). The final evaluation in summary.json is of the best checkpoint, the
policy `rltune eval RUN` and `load_agent` use.

Run directory layout:
    config.yaml            resolved config (accepted by `rltune train --config`)
    metrics.jsonl          one JSON object per segment
    tb/                    TensorBoard event files (tb/<run name>/ when RunOptions.tb_run is set):
                           charts/ (reward, episodes, eval return, learning rate, steps/s without
                           compile time), losses/, and the run's hyperparameters (HParams tab)
    checkpoints/last.msgpack, checkpoints/best.msgpack
    summary.json           final summary (status, steps, reward, evaluation)
"""

from __future__ import annotations

import functools
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

from rltune import checkpoint, executable_cache, hp_schedule
from rltune.profile import phase
from rltune.agents import get_agent
from rltune.config import to_dict
from rltune.envs import env_info
from rltune.evaluate import eval_backend, evaluate, evaluate_compiled

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
    # Seconds between checkpoint writes (0: at every segment end). Tuning trials, which last
    # seconds, write at their first segment, then at most this often, and at their end; the
    # best-reward state waits in memory until the next write.
    checkpoint_interval: float = 0.0
    progress: bool = False
    report_steps: tuple[int, ...] = ()  # env steps where a segment must end (scheduler rungs/phases)
    hparams: dict[str, Any] | None = None  # TensorBoard HParams (a trial's sampled params); None: the config
    # Final evaluation on the reference simulator (Gymnasium twin of a gymnax env); False: on the
    # env as trained, gymnax episodes compiled into one program (tuning trials: no dispatch per step)
    eval_reference: bool = True
    tb_run: str | None = None  # TensorBoard run name: events in tb/<tb_run>/ (None: tb/)
    # Greedy evaluation every `eval_every` env steps (and at the end), which then picks the best
    # checkpoint; None: 20 evaluations per run; 0: none (best = best training reward).
    eval_every: int | None = 0
    eval_every_episodes: int = 10


# metrics.jsonl keys shown under charts/ in TensorBoard; every other key is a loss statistic.
# eval_return: the final evaluation (summary.json); periodic_eval: the evaluations during training.
CHART_KEYS = ("reward", "episode_length", "episodes", "steps_per_second", "learning_rate", "eval_return",
              "periodic_eval", "compile_seconds")
# The HParams tab's metric columns (the last value of each tag in a trial's run).
HPARAM_METRICS = ("charts/reward", "charts/eval_return", "charts/episode_length")


def tb_tag(key: str) -> str:
    return f"charts/{key}" if key in CHART_KEYS else f"losses/{key}"


def hparam_values(values: dict[str, Any]) -> dict[str, Any]:
    """Values TensorBoard's HParams tab can show (numbers, strings, booleans)."""
    return {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool)) and v is not None}


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
    """metrics.jsonl plus TensorBoard scalars, appended (resume keeps the history).

    `hparams` go to TensorBoard's HParams tab (a session per run, so the tab compares the trials
    of a study); `tb_run` names the TensorBoard run: events go to tb/<tb_run>/, so `tensorboard
    --logdir STUDY/trials` lists runs by trial and parameters instead of `0/tb`, `1/tb`, ...
    """

    def __init__(self, run_dir: Path, hparams: dict[str, Any] | None = None, tb_run: str | None = None,
                 resume_step: int | None = None):
        from rltune.tbevents import EventFile

        if resume_step is not None:
            _drop_lines_after(run_dir / "metrics.jsonl", resume_step)
        self._jsonl = (run_dir / "metrics.jsonl").open("a")
        self._tb = EventFile(str(run_dir / "tb" / tb_run if tb_run else run_dir / "tb"))
        if hparams:
            from tensorboardX.summary import hparams as hparams_summaries

            exp, ssi, _ = hparams_summaries(hparam_values(hparams), {tag: 0.0 for tag in HPARAM_METRICS})
            self._tb.add_summary(exp)
            self._tb.add_summary(ssi)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self._jsonl.flush()
        self.scalars(step, metrics)

    def scalars(self, step: int, metrics: dict[str, float]) -> None:
        """TensorBoard only (e.g. the final evaluation, which is not a training segment)."""
        self._tb.add_scalars(((tb_tag(key), value) for key, value in metrics.items()
                              if key not in ("step", "wall_time") and value is not None), step)

    def end_session(self, status: str) -> None:
        """Close the HParams session: completed/stopped as success, failed as failure."""
        from tensorboardX.proto.api_pb2 import Status
        from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
        from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

        code = Status.Value("STATUS_FAILURE" if status == "failed" else "STATUS_SUCCESS")
        content = HParamsPluginData(session_end_info=SessionEndInfo(status=code, end_time_secs=time.time()),
                                    version=0)
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams",
                                                                       content=content.SerializeToString()))
        self._tb.add_summary(Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=meta)]))

    def close(self) -> None:
        if not self._jsonl.closed:
            self._jsonl.close()
            self._tb.close()


class CompileClock:
    """Seconds JAX spent tracing, lowering and compiling programs in this process
    (jax.monitoring events, reported once per top-level jit), so steps/s can leave compile time
    out: a segment's first call, or a new segment length, compiles."""

    total = 0.0
    _registered = False
    EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration", executable_cache.LOAD_EVENT)

    @classmethod
    def read(cls) -> float:
        if not cls._registered:
            import jax.monitoring

            def listen(event: str, duration: float, **_) -> None:
                if event in cls.EVENTS:
                    cls.total += duration

            jax.monitoring.register_event_duration_secs_listener(listen)
            cls._registered = True
        return cls.total


class SegmentClock:
    """Wall seconds of one training segment and the compile seconds inside it."""

    def __init__(self):
        self.start, self.compiled = time.perf_counter(), CompileClock.read()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.start, CompileClock.read() - self.compiled


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


AUTO_EVALUATIONS = 20  # eval_every=None: evaluations per run


def eval_interval(options: RunOptions, total_steps: int) -> int:
    """Env steps between periodic evaluations (0: none)."""
    if options.eval_every is None:
        return max(1, math.ceil(total_steps / AUTO_EVALUATIONS))
    return options.eval_every


def eval_boundaries(every: int, total_steps: int) -> tuple[int, ...]:
    """The env steps where a periodic evaluation falls, so segments end on them."""
    return tuple(range(every, total_steps, every)) if every else ()


class PeriodicEval:
    """Mean greedy return of `episodes` episodes on the env as trained, one fixed set of starts
    (`seed`) every time, so the evaluations of a run compare policies, not luck. On gymnax ids
    the episodes run inside one compiled program (rltune.evaluate.evaluate_compiled)."""

    def __init__(self, agent_name: str, config, episodes: int, seed: int):
        self.agent_name, self.config, self.episodes, self.seed = agent_name, config, episodes, seed

    def __call__(self, params) -> float:
        return evaluate_params(self.agent_name, self.config, params, self.episodes, self.seed,
                               reference=False)["mean"]


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

    def __init__(self, agent_name: str, config, run_dir: str | Path, *, resume_extra: dict | None = None,
                 hparams: dict[str, Any] | None = None, tb_run: str | None = None, best_by_eval: bool = False,
                 checkpoint_interval: float = 0.0):
        self.agent_name = agent_name
        self.config = config
        self.run_dir = Path(run_dir)
        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.config_dict = to_dict(config)
        (self.run_dir / "config.yaml").write_text(
            yaml.safe_dump({"agent": agent_name, **self.config_dict}, sort_keys=False))
        extra = resume_extra or {}
        self.best_reward = extra.get("best_reward", -math.inf)
        # best_by_eval: the best checkpoint is the best periodic evaluation's, else the best reward's
        self.best_by_eval = best_by_eval
        self.best_eval = extra.get("best_eval", -math.inf)
        self.best_params = None  # the best checkpoint's params, once saved in this process
        self.wall_before = extra.get("wall_time", 0.0)
        self.start = time.perf_counter()
        self.reward = None
        self.metrics: dict[str, Any] = {}
        self.segments = 0
        self.checkpoint_interval = checkpoint_interval
        self._saved_at = -math.inf  # perf_counter of the last checkpoint write
        self._best_state = None  # the best-reward state not written yet
        self._log = MetricLog(self.run_dir, hparams if hparams is not None else self.config_dict, tb_run,
                              resume_step=extra.get("env_steps") if resume_extra else None)

    def wall_time(self) -> float:
        return self.wall_before + time.perf_counter() - self.start

    def _extra(self, state) -> dict:
        return {"env_steps": int(state.env_steps), "best_reward": self.best_reward, "best_eval": self.best_eval,
                "wall_time": self.wall_time()}

    def save(self, which: str, state) -> None:
        if which == "best":  # a host copy: the state's device buffers may be donated later
            self.best_params = jax.tree.map(np.asarray, jax.device_get(state.params))
        with phase("checkpoint"):
            checkpoint.save(self.run_dir / "checkpoints" / checkpoint.FILE_NAME[which], agent=self.agent_name,
                            config=self.config_dict, state=state, extra=self._extra(state))

    def record_segment(self, state, raw_metrics, num_updates: int, seconds: float,
                       checkpoint_every: int = 1, compile_seconds: float = 0.0,
                       eval_return: float | None = None) -> dict[str, Any]:
        """Log one segment and checkpoint; raise TrialDiverged on a non-finite loss.
        `compile_seconds` of the segment's `seconds` were compiling (SegmentClock): steps/s
        leaves them out. `eval_return`: the periodic evaluation at the segment's end, if any."""
        with phase("log"):
            metrics = _host_metrics(raw_metrics)
            step = int(state.env_steps)
            metrics["steps_per_second"] = (num_updates * self.config.steps_per_update
                                           / max(seconds - compile_seconds, 1e-3))
            if compile_seconds > 0.01:
                metrics["compile_seconds"] = compile_seconds
            metrics["learning_rate"] = learning_rate_at(self.agent_name, self.config, int(state.update))
            metrics["wall_time"] = self.wall_time()
            if eval_return is not None:
                metrics["periodic_eval"] = eval_return
            self._log.write(step, metrics)
        self.metrics = metrics
        if metrics.get("loss") is None or not math.isfinite(metrics["loss"]):
            raise TrialDiverged(f"loss is {metrics.get('loss')} at step {step}")
        self.reward = metrics["reward"]
        self.segments += 1
        improved = self.reward is not None and self.reward > self.best_reward
        if improved:
            self.best_reward = self.reward
        if self.best_by_eval:  # ties go to the later policy: it has trained on more data
            improved = eval_return is not None and eval_return >= self.best_eval
            if improved:
                self.best_eval = eval_return
        if improved:
            self._best_state = state
        now = time.perf_counter()
        if self.checkpoint_interval <= 0 or now - self._saved_at >= self.checkpoint_interval:
            self._save_best()
            if self.segments % checkpoint_every == 0:
                self.save("last", state)
                self._saved_at = now
        return metrics

    def _save_best(self) -> None:
        if self._best_state is not None:
            self.save("best", self._best_state)
            self._best_state = None

    def fail(self, state, reason: str) -> None:
        self._save_best()
        self._log.end_session("failed")
        self._log.close()
        _write_summary(self.run_dir, {"status": "failed", "reason": reason, "env_steps": int(state.env_steps)})

    def finish(self, state, status: str, eval_episodes: int = 0, eval_seed: int = 10_000,
               eval_reference: bool = True) -> dict[str, Any]:
        """Final checkpoints (a stopped trial keeps its results), evaluation and summary."""
        self._save_best()
        self.save("last", state)
        best_file = self.run_dir / "checkpoints" / checkpoint.FILE_NAME["best"]
        if not best_file.exists():
            self.save("best", state)
        summary = {"status": status, "agent": self.agent_name, "env": self.config.env,
                   "env_steps": int(state.env_steps), "reward": self.reward,
                   "best_reward": self.best_reward if math.isfinite(self.best_reward) else None,
                   "best_by": "eval" if self.best_by_eval else "reward",
                   "wall_time": self.wall_time(), "metrics": self.metrics}
        if self.best_by_eval:
            summary["best_eval"] = self.best_eval if math.isfinite(self.best_eval) else None
        if eval_episodes > 0:  # the best checkpoint's policy: what `rltune eval RUN` evaluates
            params = self.best_params
            if params is None:  # best saved before a resume: read it back
                params = checkpoint.restore_state(state, checkpoint.read(best_file)).params
            with phase("eval"):
                summary["eval"] = evaluate_params(self.agent_name, self.config, params, eval_episodes, eval_seed,
                                                  reference=eval_reference)
            summary["eval"]["checkpoint"] = "best"
        with phase("log"):
            if eval_episodes > 0:
                self._log.scalars(int(state.env_steps), {"eval_return": summary["eval"]["mean"]})
            self._log.end_session(status)
            self._log.close()
            _write_summary(self.run_dir, summary)
        return summary

    def close(self) -> None:
        self._log.close()


def learning_rate_at(agent_name: str, config, update: int) -> float | None:
    """The learning rate in use at `update`: the agent's schedule (`learning_rate_at`) where it
    has one, else its constant `learning_rate`."""
    schedule = getattr(get_agent(agent_name), "learning_rate_at", None)
    if schedule is not None:
        return float(schedule(config, update))
    rate = getattr(config, "learning_rate", None)
    return None if rate is None else float(rate)


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
    with phase("setup"):
        state, extra = load_last(agent_name, config, run_dir) if resume else (module.init(config), None)
        every = eval_interval(options, config.total_steps)
        recorder = TrialRecorder(agent_name, config, run_dir, resume_extra=extra, hparams=options.hparams,
                                 tb_run=options.tb_run, best_by_eval=every > 0,
                                 checkpoint_interval=options.checkpoint_interval)
        periodic = (PeriodicEval(agent_name, config, options.eval_every_episodes, options.eval_seed + 1)
                    if every > 0 else None)
    seg_updates = _segment_updates(config, options)
    status = "completed"
    progress = _progress_bar(options.progress, config.total_steps)
    # A hyperparameter schedule (PBT's best member) changes traced values at segment ends.
    boundaries = (tuple(options.report_steps) + hp_schedule.steps(config)
                  + eval_boundaries(every, config.total_steps))
    current, applied = config, 0
    if resume:  # entries before the checkpoint are in force already (their random folds included)
        current, _, applied = hp_schedule.apply(config, None, int(state.env_steps) - 1, 0)
    try:
        while int(state.update) < config.num_updates:
            current, state, applied = hp_schedule.apply(current, state, int(state.env_steps), applied)
            n = _next_segment(int(state.update), seg_updates, config, boundaries)
            clock = SegmentClock()
            before = int(state.env_steps)
            with phase("train"):
                state, raw = module.train_segment(current, state, n)
                jax.block_until_ready(state)
            seconds, compiled = clock.stop()
            eval_return = None
            after = int(state.env_steps)
            if periodic is not None and (after // every > before // every or int(state.update) >= config.num_updates):
                eval_return = periodic(state.params)  # every `every` steps and at the end
            recorder.record_segment(state, raw, n, seconds, options.checkpoint_every, compiled, eval_return)
            reward = recorder.reward
            if progress:
                progress.update(int(state.env_steps), reward)
            if report is not None and report(int(state.env_steps), reward if reward is not None else -math.inf) == "stop":
                status = "stopped"
                break
    except TrialDiverged as exc:
        recorder.fail(state, str(exc))
        raise
    except BaseException:
        recorder.close()
        raise
    finally:
        if progress:
            progress.close()
        if hasattr(module, "close"):  # e.g. a3c's actor processes
            module.close(state)
    return recorder.finish(state, status, options.eval_episodes, options.eval_seed, options.eval_reference)


class EvaluationStopped(Exception):
    """`evaluate_params`'s `stop` asked it to end before its last episode."""


def evaluate_params(agent_name: str, config, params, episodes: int, seed: int, reference: bool = True,
                    stop: Callable[[], bool] | None = None) -> dict:
    """The greedy policy's return over `episodes` episodes: on the reference simulator, or with
    `reference=False` on a gymnax env as trained, all episodes in one compiled program. `stop`
    (the reference simulator): asked before each step; True ends it with EvaluationStopped."""
    module = get_agent(agent_name)
    info = env_info(config.env, config.backend)
    if not reference and info.backend == "gymnax":
        static = module.split_config(config)[0] if hasattr(module, "split_config") else config
        policy = _greedy_policy(agent_name, static, info)
        return evaluate_compiled(policy, params, config.env, episodes, seed).summary()
    act = module.policy_fn(config, info)
    key = jax.random.PRNGKey(seed)
    eval_env, backend = eval_backend(config.env, info.backend)

    def policy(obs):
        if stop is not None and stop():
            raise EvaluationStopped
        return act(params, obs, key, True)

    return evaluate(policy, eval_env, backend, episodes, seed).summary()


@functools.lru_cache(maxsize=32)
def _greedy_policy(agent_name: str, static_config, info):
    """`policy(params, obs) -> action`, one per static config: the compiled evaluation of every
    trial of a study reuses one program."""
    act = get_agent(agent_name).policy_fn(static_config, info)
    key = jax.random.PRNGKey(0)  # unused by greedy actions

    def policy(params, obs):
        return act(params, obs, key, True)

    policy.program_context = ("greedy", agent_name, static_config, info)  # its compiled evaluation is cached
    return policy


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
