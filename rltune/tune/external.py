"""Run one trial as an external trainer command, the way the managed tuning service does.

Contract with the trainer (see specs/hptuning-yaml.md, "How the service talks to a trainer"):

* argv: the user's command, then ``--job-dir=<trial_dir>/job``, then ``--name=value`` for each
  hyperparameter (sorted by name; floats in shortest round-trip form, bools ``true``/``false``);
* environment: ``TF_CONFIG`` (``{"task": {"type": "master", "index": 0, "trial": "7"}, ...}``),
  ``CLOUD_ML_TRIAL_ID``, ``CLOUD_ML_JOB_DIR`` and ``CLOUD_ML_HP_METRIC_FILE``
  (``<trial_dir>/hypertune.metrics``);
* the metric comes back through either channel: JSON lines appended to the hypertune metric file
  (`rltune.hypertune`, or the Cloud ML ``hypertune`` helper), or TensorBoard scalars with the
  metric tag in event files anywhere under the job dir. One channel is used per trial: the
  hypertune file if it reports the tag within a poll of the first TensorBoard scalar (it holds
  exact float64 values), else TensorBoard; so a trainer writing both is not counted twice.

Like the service, the trial's final objective is the *last* reported value of the tag, not the
best one. The trainer's stdout and stderr go to ``<trial_dir>/trainer.log``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from rltune.errors import UsageError
from rltune.hypertune import MetricTail
from rltune.tbreader import ScalarTail

__all__ = [
    "ExternalTrialResult",
    "build_argv",
    "build_env",
    "run_external_trial",
    "JOB_SUBDIR",
    "METRIC_FILE_NAME",
    "LOG_FILE_NAME",
]

JOB_SUBDIR = "job"
METRIC_FILE_NAME = "hypertune.metrics"
LOG_FILE_NAME = "trainer.log"
_GOALS = ("maximize", "minimize")


@dataclass(frozen=True)
class ExternalTrialResult:
    """What became of one external trial.

    status: "completed" (exit 0 with a finite metric), "stopped" (`report` returned "stop"), or
        "failed" (non-zero exit, killed by a signal, timed out, no metric, NaN/inf metric).
    metric: the last reported value; None when failed or when nothing was reported.
    step: the step of the last reported value (None if none).
    history: every (step, value) reported, in order (including a final NaN/inf, if any).
    reason: human-readable cause for "failed" / "stopped"; None when completed.
    returncode: the process's exit status (negative: killed by that signal); None if it never
        started.
    wall_time: seconds from start to the end of the process.
    """

    status: str
    metric: float | None
    step: int | None
    history: list[tuple[int, float]] = field(default_factory=list)
    reason: str | None = None
    returncode: int | None = None
    wall_time: float = 0.0


# ---------------------------------------------------------------------------------------------
# Command line and environment
# ---------------------------------------------------------------------------------------------


def _format_value(name: str, value) -> str:
    # numpy scalars expose .item(); bool must be tested before int (bool is an int)
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # shortest string that round-trips: 0.0003, 1e-05
    if isinstance(value, str):
        return value
    raise UsageError(f"params.{name}", f"cannot pass a {type(value).__name__} as a flag value")


def build_argv(command: Sequence[str], params: Mapping[str, object], job_dir: Path) -> list[str]:
    """``command + ["--job-dir=<dir>"] + ["--name=value", ...]`` with params sorted by name."""
    if isinstance(command, str) or not command:
        raise UsageError("command", "must be a non-empty list of arguments")
    argv = [str(c) for c in command] + [f"--job-dir={job_dir}"]
    for name in sorted(params):
        if not name or "=" in name or name.startswith("-") or any(c.isspace() for c in name):
            raise UsageError(f"params.{name}", "not usable as a command-line flag name")
        argv.append(f"--{name}={_format_value(name, params[name])}")
    return argv


def build_env(
    trial_id: int,
    job_dir: Path,
    metric_file: Path,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The trainer's environment: `base_env` (default os.environ) plus the service's variables."""
    env = dict(os.environ if base_env is None else base_env)
    tf_config = {
        "cluster": {},
        "task": {"type": "master", "index": 0, "trial": str(trial_id)},
        "job": {"job_dir": str(job_dir), "hyperparameter_metric_file": str(metric_file)},
    }
    env["TF_CONFIG"] = json.dumps(tf_config)
    env["CLOUD_ML_TRIAL_ID"] = str(trial_id)
    env["CLOUD_ML_HP_METRIC_FILE"] = str(metric_file)
    env["CLOUD_ML_JOB_DIR"] = str(job_dir)
    env.setdefault("PYTHONUNBUFFERED", "1")  # a live trainer.log for Python trainers
    return env


# ---------------------------------------------------------------------------------------------
# Process handling
# ---------------------------------------------------------------------------------------------


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session=True: the group id is the pid
    except (ProcessLookupError, PermissionError):
        pass


def _terminate(proc: subprocess.Popen, grace_period: float) -> None:
    """SIGTERM the trainer's process group, then SIGKILL it after `grace_period` seconds."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_period)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    # children the trainer left behind (data loaders, ...) go with it
    _signal_group(proc, signal.SIGKILL)


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def _describe_bad(value: float) -> str:
    return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")


class _MetricChannels:
    """The hypertune file and the TensorBoard events, read together; locks onto one of them.

    The hypertune file wins: TensorBoard is chosen only if it has reported on two successive
    polls (or at the final poll) while the hypertune file has said nothing, so that a trainer
    writing the TensorBoard scalar just before the hypertune line is not caught in between.
    """

    def __init__(self, metric_file: Path, job_dir: Path, tag: str):
        self._tails = {
            "hypertune": MetricTail(metric_file, tag),
            "tensorboard": _TbPairs(ScalarTail(job_dir, tag=tag)),
        }
        self._pending: dict[str, list[tuple[int, float]]] = {name: [] for name in self._tails}
        self._tb_waited = False
        self.source: str | None = None

    def skip_existing(self) -> None:
        for tail in self._tails.values():
            tail.poll()

    def poll(self, final: bool = False) -> list[tuple[int, float]]:
        if self.source is not None:
            return self._tails[self.source].poll()
        for name, tail in self._tails.items():
            self._pending[name].extend(tail.poll())
        if self._pending["hypertune"]:
            self.source = "hypertune"
        elif self._pending["tensorboard"] and (self._tb_waited or final):
            self.source = "tensorboard"
        else:
            self._tb_waited = bool(self._pending["tensorboard"])
            return []
        return self._pending[self.source]


class _TbPairs:
    def __init__(self, tail: ScalarTail):
        self._tail = tail

    def poll(self) -> list[tuple[int, float]]:
        return [(step, value) for step, _tag, value in self._tail.poll()]


# ---------------------------------------------------------------------------------------------
# The trial
# ---------------------------------------------------------------------------------------------


def run_external_trial(
    command: Sequence[str],
    params: Mapping[str, object],
    trial_id: int,
    trial_dir: Path,
    metric_tag: str,
    *,
    goal: str = "maximize",
    report: Callable[[int, float], str | None] | None = None,
    poll_interval: float = 0.2,
    timeout: float | None = None,
    grace_period: float = 5.0,
    base_env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> ExternalTrialResult:
    """Run the trainer for one trial and follow its metric until it ends.

    The job dir is ``trial_dir / "job"``; metric reports left there or in the metric file by an
    earlier run in the same trial dir are ignored. Every `poll_interval` seconds both channels
    are read and each new ``(step, value)`` is passed to ``report(step, value)``; a return of
    ``"stop"`` terminates the trainer's process group (SIGTERM, SIGKILL after `grace_period`)
    and the trial is "stopped" with the metric so far. A NaN/inf value fails the trial at once
    (it is not passed to `report`). `goal` is checked but, as in the service, does not change
    which value is final (the last one). Exceptions from `report` kill the trainer and propagate.
    """
    if goal.lower() not in _GOALS:
        raise UsageError("goal", f"must be one of {', '.join(_GOALS)}, got {goal!r}")
    if poll_interval <= 0:
        raise UsageError("poll_interval", "must be > 0")
    trial_dir = Path(trial_dir)
    job_dir = trial_dir / JOB_SUBDIR
    metric_file = trial_dir / METRIC_FILE_NAME
    job_dir.mkdir(parents=True, exist_ok=True)
    metric_file.unlink(missing_ok=True)

    argv = build_argv(command, params, job_dir)
    env = build_env(trial_id, job_dir, metric_file, base_env)
    channels = _MetricChannels(metric_file, job_dir, metric_tag)
    channels.skip_existing()  # event files from an earlier run of this trial

    history: list[tuple[int, float]] = []
    start = time.monotonic()
    with open(trial_dir / LOG_FILE_NAME, "wb") as log_file:
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env=env, cwd=cwd, start_new_session=True,
            )
        except OSError as err:
            return ExternalTrialResult(
                "failed", None, None, [], f"cannot start {argv[0]!r}: {err.strerror or err}",
                None, time.monotonic() - start,
            )

    def finish(status: str, reason: str | None) -> ExternalTrialResult:
        _terminate(proc, grace_period)
        step = history[-1][0] if history else None
        metric = history[-1][1] if history and status != "failed" else None
        return ExternalTrialResult(
            status, metric, step, list(history), reason, proc.returncode, time.monotonic() - start
        )

    try:
        while True:
            returncode = proc.poll()  # before reading: a finished trainer has flushed everything
            for step, value in channels.poll(final=returncode is not None):
                history.append((step, value))
                if not math.isfinite(value):
                    return finish("failed", f"metric is {_describe_bad(value)} at step {step}")
                if report is not None and report(step, value) == "stop":
                    return finish("stopped", f"stopped early at step {step}")
            if returncode is not None:
                break
            if timeout is not None and time.monotonic() - start > timeout:
                return finish("failed", f"timed out after {timeout:g} s")
            try:
                proc.wait(timeout=poll_interval)
            except subprocess.TimeoutExpired:
                pass
    except BaseException:
        _terminate(proc, grace_period)
        raise

    if returncode != 0:
        return finish("failed", _exit_reason(returncode))
    if not history:
        return finish("failed", f"no metric {metric_tag!r} reported")
    return finish("completed", None)
