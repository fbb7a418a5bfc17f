"""Where a study's time goes: cheap wall-clock accounting per process, no profiler.

Every process (the study driver, each executor worker) adds the seconds it spends in a few
named phases to one in-process table: `with phase("eval"): ...`. A phase's time is exclusive:
a phase inside another counts for itself only, and JAX's trace/compile time inside any phase
(jax.monitoring events, `runner.CompileClock`) counts as "compile". The cost is two
`perf_counter` calls per phase, at segment granularity, never per env step.

When the environment names a directory (`RLTUNE_PROFILE_DIR`, set by the study driver to
`STUDY/profile/` before its workers start, so they inherit it), each process writes its table
there as it ends (`dump`), and the driver merges them into `STUDY/profile.json` (`merge`). A
worker in a Ray actor hands its table to the driver when it stops, and the driver writes it there.
A worker's time not in any phase is "other"; its time before its first task is "start".

Phases: start (a worker: process start to ready; the driver: starting its executor, a local
Ray included), setup (building a trial: config, init, recorder),
compile, train (training segments, compile excluded), log (metrics.jsonl + TensorBoard),
checkpoint, eval (final evaluation), storage (the driver's own work: Optuna storage, scheduler,
result files), shutdown (the driver stopping its workers), wait (a worker waiting for a task or
a decision, the driver waiting for events), other.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

ENV_DIR = "RLTUNE_PROFILE_DIR"
PHASES = ("start", "setup", "compile", "train", "log", "checkpoint", "eval", "storage", "shutdown", "wait", "other")

TOTALS: dict[str, float] = defaultdict(float)
_stack: list[list[float]] = []  # per open phase: [seconds taken by phases nested inside it]
_born = time.time()


def _compile_seconds() -> float:
    from rltune.runner import CompileClock

    return CompileClock.read()


@contextmanager
def phase(name: str):
    start, compiled = time.perf_counter(), _compile_seconds()
    _stack.append([0.0])
    try:
        yield
    finally:
        nested = _stack.pop()[0]
        wall = time.perf_counter() - start
        compile_s = _compile_seconds() - compiled
        TOTALS[name] += max(wall - nested - compile_s, 0.0)
        TOTALS["compile"] += compile_s  # nested phases' compile time is in compile_s: counted once
        if _stack:
            _stack[-1][0] += wall


def add(name: str, seconds: float) -> None:
    """Seconds measured elsewhere (e.g. a population segment split into compile and train)."""
    TOTALS[name] += seconds
    if _stack:
        _stack[-1][0] += seconds


def process_age() -> float:
    """Seconds since this process started (Linux: from /proc; else since this module loaded)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return time.time() - _born


def table(role: str, wall: float, cpu: float | None = None) -> dict:
    """This process's phase table, its untimed rest counted as "other"; `cpu`: its CPU seconds
    (default: the whole process's, right for a worker)."""
    phases = dict(TOTALS)
    phases["other"] = max(wall - sum(phases.values()), 0.0)
    return {"role": role, "pid": os.getpid(), "wall": wall,
            "cpu": time.process_time() if cpu is None else cpu, "phases": phases}


def write(entry: dict, directory: str | Path | None = None) -> None:
    """Write a table to `directory` (default $RLTUNE_PROFILE_DIR)/<role>-<pid>.json, for `merge`."""
    directory = directory or os.environ.get(ENV_DIR)
    if not directory:
        return
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / f"{entry['role']}-{entry['pid']}.json").write_text(json.dumps(entry))
    except OSError:  # a profile is never worth failing a study for
        pass


def dump(role: str, wall: float, directory: str | Path | None = None, cpu: float | None = None) -> None:
    """Write this process's table where the driver merges it (see `write`)."""
    write(table(role, wall, cpu), directory)


def merge(directory: Path, out: Path, study_wall: float) -> dict:
    """Sum the worker tables and the driver's into `out`: {"study_wall", "driver", "workers"};
    each with "wall" and "cpu" (the processes' CPU seconds: on a shared machine the phases, which
    are wall time, grow with the load, the CPU seconds much less)."""
    workers, driver = defaultdict(float), defaultdict(float)
    count = 0
    for path in sorted(Path(directory).glob("*.json")):
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        target = driver if table["role"] == "driver" else workers
        count += table["role"] != "driver"
        for key, value in table["phases"].items():
            target[key] += value
        target["wall"] += table["wall"]
        target["cpu"] += table.get("cpu", 0.0)
        path.unlink()
    result = {"study_wall": study_wall, "worker_processes": count, "driver": dict(driver), "workers": dict(workers)}
    out.write_text(json.dumps(result, indent=1))
    try:
        Path(directory).rmdir()
    except OSError:
        pass
    return result


def reset() -> None:
    TOTALS.clear()


@contextmanager
def lifetime(role: str, own_process: bool = True):
    """A worker's whole life: its time before this is "start"; its table is dumped as it ends.
    A worker thread in a Ray actor (`own_process=False`) is the only thread of its actor that
    times phases; its table is kept in `LAST` for the actor to hand to the driver (its node may
    share no filesystem with the driver), and its process's age is not its start (Ray starts
    worker processes ahead of need)."""
    reset()
    age = process_age() if own_process else 0.0
    TOTALS["start"] += age
    start = time.perf_counter()
    with phase("setup"):
        _compile_seconds()  # imports JAX (through the runner): part of getting ready, not a phase's
    try:
        yield
    finally:
        LAST.clear()
        LAST.update(table(role, age + time.perf_counter() - start))
        if own_process:
            write(LAST)


LAST: dict = {}  # the table of the last `lifetime` that ended in this process
