"""Run one trial as an external trainer command, the way the managed tuning service does, or
with whatever command line the trainer has.

Contract with the trainer (see specs/hptuning-yaml.md, "How the service talks to a trainer"):

* argv, by default (`CLOUD_TRAINER`, the service's convention): the user's command, then
  ``--job-dir=<trial_dir>/job``, then ``--name=value`` for each fixed value and hyperparameter
  (sorted by name; floats in shortest round-trip form, bools ``true``/``false``). `TrainerOptions`
  (the spec's ``trainer:`` block) changes that: ``--name value`` flags, kebab-case names
  (``--learning-rate``), no ``--job-dir``. A command holding placeholders such as
  ``{learning_rate}``, ``{trial_dir}``, ``{trial_id}``, ``{job_dir}``, ``{metric_file}`` or
  ``{seed}`` is a template: they are filled in and nothing is appended (``{{``/``}}`` are
  literal braces). ``{seed}`` is the ``seed`` hyperparameter or fixed value, else the trial number;
* environment: ``TF_CONFIG`` (``{"task": {"type": "master", "index": 0, "trial": "7"}, ...}``),
  ``CLOUD_ML_TRIAL_ID``, ``CLOUD_ML_JOB_DIR`` and ``CLOUD_ML_HP_METRIC_FILE``
  (``<trial_dir>/hypertune.metrics``); every path is absolute, so a trainer that changes
  directory still finds them. The working directory is the caller's, or the trial directory
  (``trainer: {cwd: trial}``);
* the metric comes back through either channel: JSON lines appended to the hypertune metric file
  (`rltune.hypertune`, or the Cloud ML ``hypertune`` helper), or TensorBoard scalars with the
  metric tag in event files anywhere under the trial directory (``job/``, or ``runs/<name>/``
  written relative to a trainer's working directory). One channel is used per trial: the
  hypertune file if it reports the tag within a poll of the first TensorBoard scalar (it holds
  exact float64 values), else TensorBoard; so a trainer writing both is not counted twice.

Like the service, the trial's objective is by default the *last* reported value of the tag.
``trainer: {aggregate: max}`` (or ``min``, or ``mean_last_N``, the mean of the last N reports)
suits noisy per-episode tags; the scheduler is then shown the same aggregate at each report.

Process handling: the trainer runs in its own session (process group); every way out of
`run_external_trial` (end, stop decision, timeout, an exception, SIGTERM to the caller) kills
the whole group, and ``<trial_dir>/trainer.pgid`` names it meanwhile so that a driver whose
worker died can kill it with `kill_trial_trainer`. The trainer's stdout and stderr go to
``<trial_dir>/trainer.log``.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rltune.errors import UsageError
from rltune.hypertune import MetricTail
from rltune.tbreader import ScalarTail

__all__ = [
    "AGGREGATES",
    "BUILTIN_PLACEHOLDERS",
    "CLOUD_TRAINER",
    "ExternalTrialResult",
    "TrainerOptions",
    "aggregate",
    "build_argv",
    "build_env",
    "check_command",
    "kill_process_group",
    "kill_trial_trainer",
    "placeholders",
    "run_external_trial",
    "JOB_SUBDIR",
    "METRIC_FILE_NAME",
    "LOG_FILE_NAME",
    "PGID_FILE_NAME",
]

JOB_SUBDIR = "job"
METRIC_FILE_NAME = "hypertune.metrics"
LOG_FILE_NAME = "trainer.log"
PGID_FILE_NAME = "trainer.pgid"
_GOALS = ("maximize", "minimize")
FLAG_STYLES = ("equals", "space")
CWD_CHOICES = ("inherit", "trial")
AGGREGATES = ("last", "max", "min", "mean_last_N")
_MEAN_LAST = re.compile(r"^mean_last_(\d+)$")
BUILTIN_PLACEHOLDERS = ("trial_id", "trial_dir", "job_dir", "metric_file", "seed")
# {name} with a parameter-like name; {{ and }} are literal braces (as in str.format, which is
# not used: its {a.__class__} attribute access has no place in a command line).
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_.\-]*)\}")


# ---------------------------------------------------------------------------------------------
# Options (the spec's `trainer:` block)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainerOptions:
    """How hyperparameters reach an external trainer and how its metric is read back."""

    flag_style: str = "equals"
    """"equals": ``--name=value``; "space": ``--name value`` (two arguments)."""
    kebab_case: bool = False
    """Flag names with ``-`` for ``_`` (``--learning-rate``); parameter names stay as written."""
    job_dir: bool = False
    """Append ``--job-dir`` (the service's flag). Default off for native specs; a Cloud ML
    Engine file gets `CLOUD_TRAINER`, which passes it."""
    cwd: str = "inherit"
    """"inherit": the trainer starts in rltune's working directory; "trial": in the trial dir."""
    aggregate: str = "last"
    """The trial's objective from the reports: "last" (the service's rule), "max", "min", or
    "mean_last_N" (mean of the last N reports, e.g. "mean_last_10")."""

    def __post_init__(self) -> None:
        if self.flag_style not in FLAG_STYLES:
            raise UsageError("trainer.flag_style", f"must be one of {', '.join(FLAG_STYLES)}; got {self.flag_style!r}")
        for key in ("kebab_case", "job_dir"):
            if not isinstance(getattr(self, key), bool):
                raise UsageError(f"trainer.{key}", f"must be true or false, got {getattr(self, key)!r}")
        if self.cwd not in CWD_CHOICES:
            raise UsageError("trainer.cwd", f"must be one of {', '.join(CWD_CHOICES)}; got {self.cwd!r}")
        aggregate_window(self.aggregate)

    @classmethod
    def from_dict(cls, data: Any, where: str = "trainer") -> "TrainerOptions":
        if not isinstance(data, Mapping):
            raise UsageError(where, f"must be a mapping, got {data!r}")
        keys = [f for f in cls.__dataclass_fields__]
        for key in data:
            if key not in keys:
                raise UsageError(f"{where}.{key}", f"unknown field; allowed: {', '.join(keys)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from the native defaults (for spec.yaml)."""
        default = TrainerOptions()
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if getattr(self, k) != getattr(default, k)}

    def flag(self, name: str, value: str) -> list[str]:
        """One ``name=value`` as command-line arguments in this style."""
        flag = "--" + (name.replace("_", "-") if self.kebab_case else name)
        return [f"{flag}={value}"] if self.flag_style == "equals" else [flag, value]




def aggregate_window(rule: Any) -> int | None:
    """N of "mean_last_N", None for last/max/min; UsageError for anything else."""
    if rule in ("last", "max", "min"):
        return None
    match = _MEAN_LAST.match(rule) if isinstance(rule, str) else None
    if match is None or int(match.group(1)) < 1:
        raise UsageError("trainer.aggregate", f"must be last, max, min or mean_last_N (N >= 1, e.g. "
                         f"mean_last_10); got {rule!r}")
    return int(match.group(1))


def aggregate(values: Sequence[float], rule: str = "last") -> float:
    """The objective from the reported values (in report order) under `rule` (see AGGREGATES)."""
    if not values:
        raise ValueError("no values to aggregate")
    window = aggregate_window(rule)
    if window is not None:
        tail = values[-window:]
        return math.fsum(tail) / len(tail)
    return {"last": values[-1], "max": max(values), "min": min(values)}[rule]


CLOUD_TRAINER = TrainerOptions(job_dir=True)
"""The managed service's convention: ``--job-dir=...`` then ``--name=value``."""


@dataclass(frozen=True)
class ExternalTrialResult:
    """What became of one external trial.

    status: "completed" (exit 0 with a finite metric), "stopped" (`report` returned "stop"), or
        "failed" (non-zero exit, killed by a signal, timed out, no metric, NaN/inf metric).
    metric: the objective (the aggregate of the reports, `TrainerOptions.aggregate`); None when
        failed or when nothing was reported.
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


def placeholders(command: Sequence[str]) -> list[str]:
    """The placeholder names in `command`, in order of appearance (empty: not a template)."""
    return [m.group(1) for arg in command for m in _PLACEHOLDER.finditer(str(arg)) if m.group(1)]


def _check_flag_name(name: str, where: str) -> None:
    if not name or "=" in name or name.startswith("-") or any(c.isspace() for c in name):
        raise UsageError(where, "not usable as a command-line flag name")


def check_command(command: Sequence[str], values: Mapping[str, Any], *, searched: Sequence[str] = ()) -> None:
    """Raise UsageError (naming the field) unless `command` can carry `values` (fixed values and
    hyperparameters by name; `searched` are the hyperparameters): in a template every
    placeholder must be known and every value must be used; otherwise every name must be usable
    as a flag. Values must be strings, numbers or booleans."""
    for name, value in values.items():
        prefix = "search_space" if name in searched else "fixed"
        if not isinstance(value, (str, int, float, bool)) and name not in searched:
            raise UsageError(f"{prefix}.{name}", f"an external trainer takes strings, numbers or booleans; "
                             f"got {value!r}")
    used = placeholders(command)
    if not used:
        for name in values:
            _check_flag_name(name, f"{'search_space' if name in searched else 'fixed'}.{name}")
        return
    for name in values:
        if name in BUILTIN_PLACEHOLDERS and name != "seed":
            prefix = "search_space" if name in searched else "fixed"
            raise UsageError(f"{prefix}.{name}", f"{{{name}}} is filled in by rltune; rename it")
    known = set(values) | set(BUILTIN_PLACEHOLDERS)
    for i, arg in enumerate(command):
        for m in _PLACEHOLDER.finditer(str(arg)):
            if m.group(1) and m.group(1) not in known:
                raise UsageError(f"command[{i}]", f"unknown placeholder {{{m.group(1)}}}; known: "
                                 f"{', '.join(sorted(known))} (write {{{{ and }}}} for literal braces)")
    for name in values:
        if name not in used:
            prefix = "search_space" if name in searched else "fixed"
            raise UsageError(f"{prefix}.{name}", f"the command is a template but has no {{{name}}}: "
                             "the trainer would never see this value; add the placeholder")


def _fill(arg: str, values: Mapping[str, str]) -> str:
    def sub(m: re.Match) -> str:
        if m.group(0) in ("{{", "}}"):
            return m.group(0)[0]
        if m.group(1) not in values:
            raise UsageError("command", f"unknown placeholder {m.group(0)}")
        return values[m.group(1)]

    return _PLACEHOLDER.sub(sub, arg)


def build_argv(command: Sequence[str], params: Mapping[str, object], job_dir: Path, *,
               options: TrainerOptions | None = None, context: Mapping[str, object] | None = None) -> list[str]:
    """The trainer's argv. `params`: fixed values and hyperparameters by name. Without
    placeholders in `command`: ``command [+ --job-dir] + one flag per name`` (sorted by name) in
    the style of `options` (default `CLOUD_TRAINER`). With placeholders: `command` with them
    filled in from `params` and `context` (trial_id, trial_dir, metric_file, seed), nothing
    appended."""
    if isinstance(command, str) or not command:
        raise UsageError("command", "must be a non-empty list of arguments")
    options = CLOUD_TRAINER if options is None else options
    formatted = {name: _format_value(name, value) for name, value in params.items()}
    if placeholders(command):
        values = {k: _format_value(k, v) for k, v in (context or {}).items()}
        values["job_dir"] = str(job_dir)
        values.setdefault("seed", formatted.get("seed", values.get("trial_id", "0")))
        values.update(formatted)
        return [_fill(str(c), values) for c in command]
    argv = [str(c) for c in command]
    if options.job_dir:
        argv += ["--job-dir=" + str(job_dir)] if options.flag_style == "equals" else ["--job-dir", str(job_dir)]
    for name in sorted(formatted):
        _check_flag_name(name, f"params.{name}")
        argv += options.flag(name, formatted[name])
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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but not ours to signal
        return True
    return True


def kill_process_group(pgid: int, grace_period: float = 5.0) -> bool:
    """SIGTERM process group `pgid`, SIGKILL what is left after `grace_period` seconds.

    For a trainer whose Popen object is gone (its worker died): the trainer's pid is its group
    id (it runs in its own session). Returns whether the group existed. Members that are
    zombies of a dead parent count as alive until reaped, so this may wait the whole grace
    period before the (harmless) SIGKILL.
    """
    if pgid <= 1 or pgid == os.getpgrp():
        raise ValueError(f"refusing to kill process group {pgid}")
    if not _group_alive(pgid):
        return False
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return True
    end = time.monotonic() + grace_period
    while time.monotonic() < end and _group_alive(pgid):
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return True


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (Linux /proc), to tell a pid from its reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]  # field 22, counted after the command name


def kill_trial_trainer(trial_dir: str | os.PathLike, grace_period: float = 5.0) -> bool:
    """Kill the process group of the trainer that `run_external_trial` started in `trial_dir`
    (named in ``trainer.pgid`` while it runs), e.g. after the worker running that trial was
    killed. A pid reused by another process since then is left alone. Returns whether a group
    was killed."""
    path = Path(trial_dir) / PGID_FILE_NAME
    try:
        pgid_text, _, started = path.read_text().partition(" ")
        pgid = int(pgid_text)
    except (OSError, ValueError):
        return False
    if started.strip() and _start_time(pgid) not in (None, started.strip()):
        path.unlink(missing_ok=True)
        return False
    killed = kill_process_group(pgid, grace_period)
    path.unlink(missing_ok=True)
    return killed


class _Terminated(BaseException):
    """SIGTERM arrived while a trainer ran: unwind (killing the trainer's group) and re-deliver."""


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

    def __init__(self, metric_file: Path, events_dir: Path, tag: str):
        self._tails = {
            "hypertune": MetricTail(metric_file, tag),
            "tensorboard": _TbPairs(ScalarTail(events_dir, tag=tag)),
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
    fixed: Mapping[str, object] | None = None,
    options: TrainerOptions | None = None,
) -> ExternalTrialResult:
    """Run the trainer for one trial and follow its metric until it ends.

    `params` (the hyperparameters) and `fixed` (the spec's fixed values) reach the trainer as
    `build_argv` says for `options` (default `CLOUD_TRAINER`). The job dir is
    ``trial_dir / "job"``; all paths given to the trainer are absolute. Metric reports left in
    the trial dir by an earlier run of it are ignored. Every `poll_interval` seconds both
    channels are read and for each new ``(step, value)`` ``report(step, objective)`` is called
    with the objective so far (`aggregate` of the reports under ``options.aggregate``; the
    value itself for "last"); a return of ``"stop"`` terminates the trainer's process group
    (SIGTERM, SIGKILL after `grace_period`) and the trial is "stopped" with the objective so far.
    A NaN/inf value fails the trial at once (it is not passed to `report`). `timeout` (seconds)
    fails a trial that runs longer, with reason "timeout after Ns". `goal` is checked but does
    not change the objective (pick ``aggregate: max`` or ``min`` for a best-so-far rule).
    Exceptions from `report`, and SIGTERM to this process, kill the trainer's group first.
    """
    if goal.lower() not in _GOALS:
        raise UsageError("goal", f"must be one of {', '.join(_GOALS)}, got {goal!r}")
    if poll_interval <= 0:
        raise UsageError("poll_interval", "must be > 0")
    if timeout is not None and timeout <= 0:
        raise UsageError("trial_timeout", f"must be > 0 seconds, got {timeout!r}")
    options = CLOUD_TRAINER if options is None else options
    trial_dir = Path(trial_dir).resolve()  # absolute: the trainer may change directory
    job_dir = trial_dir / JOB_SUBDIR
    metric_file = trial_dir / METRIC_FILE_NAME
    job_dir.mkdir(parents=True, exist_ok=True)
    metric_file.unlink(missing_ok=True)
    if cwd is None and options.cwd == "trial":
        cwd = trial_dir

    values = {**(fixed or {}), **params}
    context = {"trial_id": trial_id, "trial_dir": str(trial_dir), "metric_file": str(metric_file)}
    argv = build_argv(command, values, job_dir, options=options, context=context)
    env = build_env(trial_id, job_dir, metric_file, base_env)
    channels = _MetricChannels(metric_file, trial_dir, metric_tag)
    channels.skip_existing()  # event files from an earlier run of this trial

    history: list[tuple[int, float]] = []
    start = time.monotonic()
    pgid_file = trial_dir / PGID_FILE_NAME
    proc: subprocess.Popen | None = None
    with _unwind_on_sigterm() as terminated:
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
        try:
            pgid_file.write_text(f"{proc.pid} {_start_time(proc.pid) or ''}")
            result = _follow(proc, channels, history, report, options, timeout, poll_interval,
                             grace_period, metric_tag, start)
        finally:  # every way out: the trainer's whole group goes
            _terminate(proc, grace_period)
            pgid_file.unlink(missing_ok=True)
    if terminated:
        return ExternalTrialResult("failed", None, history[-1][0] if history else None, history,
                                   "terminated (SIGTERM)", proc and proc.returncode, time.monotonic() - start)
    return result


def _follow(proc, channels, history, report, options, timeout, poll_interval, grace_period, metric_tag,
            start) -> ExternalTrialResult:
    values: list[float] = []

    def finish(status: str, reason: str | None) -> ExternalTrialResult:
        _terminate(proc, grace_period)
        step = history[-1][0] if history else None
        metric = aggregate(values, options.aggregate) if values and status != "failed" else None
        return ExternalTrialResult(
            status, metric, step, list(history), reason, proc.returncode, time.monotonic() - start
        )

    while True:
        returncode = proc.poll()  # before reading: a finished trainer has flushed everything
        for step, value in channels.poll(final=returncode is not None):
            history.append((step, value))
            if not math.isfinite(value):
                return finish("failed", f"metric is {_describe_bad(value)} at step {step}")
            values.append(value)
            if report is not None and report(step, aggregate(values, options.aggregate)) == "stop":
                return finish("stopped", f"stopped early at step {step}")
        if returncode is not None:
            break
        if timeout is not None and time.monotonic() - start > timeout:
            return finish("failed", f"timeout after {timeout:g}s")
        try:
            proc.wait(timeout=poll_interval)
        except subprocess.TimeoutExpired:
            pass

    if returncode != 0:
        return finish("failed", _exit_reason(returncode))
    if not history:
        return finish("failed", f"no metric {metric_tag!r} reported")
    return finish("completed", None)


class _unwind_on_sigterm:
    """While active (main thread only), SIGTERM raises _Terminated so the trainer is killed on
    the way out; afterwards the previous handler is restored and the signal delivered to it
    again (by default: this process ends, as it would have). Entering gives a list that is
    non-empty once SIGTERM arrived and the previous handler let the process live on."""

    def __enter__(self) -> list[int]:
        self.previous: Any = None
        self.hit: list[int] = []
        if threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGTERM)
            if current is not signal.SIG_IGN:
                self.previous = signal.SIG_DFL if current is None else current
                signal.signal(signal.SIGTERM, self._handler)
        return self.hit

    def _handler(self, signum, frame) -> None:
        raise _Terminated

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.previous is None:
            return False
        signal.signal(signal.SIGTERM, self.previous)
        if exc_type is _Terminated:
            os.kill(os.getpid(), signal.SIGTERM)  # to the previous handler; SIG_DFL ends us here
            self.hit.append(signal.SIGTERM)
            return True
        return False
