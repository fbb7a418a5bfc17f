"""The executor protocol: how the study driver runs trials, wherever they run.

An executor owns slots (a local worker process, one member of a vmapped population, a Ray
actor). The driver submits a `TrialTask` when a slot is free, reads typed events, and answers
each `Report` with a decision. Executors never write the study storage: the driver is its
only writer. A new executor is one module here plus one line in `EXECUTORS`.

Worker loops (`local.worker_main`, `population.population_main`) speak plain tuples on their
queues, since those cross process boundaries; `event_from_message` turns them into the events
below at the executor's edge, so the driver never indexes a tuple.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from rltune.errors import UsageError


# ---------------------------------------------------------------- what a slot runs
@dataclass(frozen=True)
class TrialTask:
    trial_id: int
    trial_dir: str
    params: dict[str, Any]  # the sampled hyperparameters
    agent: str | None = None  # built-in agent ...
    config: dict[str, Any] = field(default_factory=dict)  # ... and its full config
    command: tuple[str, ...] | None = None  # or an external trainer ...
    fixed: dict[str, Any] = field(default_factory=dict)  # ... its fixed values (the spec's `fixed:`)
    trainer: Any = None  # ... and how it takes values and reports (external.TrainerOptions)
    metric: str = "reward"
    goal: str = "maximize"
    report_steps: tuple[int, ...] = ()  # scheduler boundaries (env steps)
    eval_episodes: int = 10
    resume: bool = False  # continue from the trial directory's last checkpoint
    # Population-based training (population executor): the PBT scheduler's settings, mutations
    # resolved ({"goal", "max_steps", "num_trials", "params", "names"}); None: no PBT.
    pbt: dict[str, Any] | None = None


# ---------------------------------------------------------------- events (executor -> driver)
@dataclass(frozen=True)
class Started:
    trial_id: int
    pid: int
    node: str = "local"


@dataclass(frozen=True)
class Report:
    """An intermediate value at `step`; the driver must answer with `Executor.decide`."""

    trial_id: int
    step: int
    value: float
    # The trial waits for the answer only when this report crosses one of its `report_steps`
    # (the scheduler's boundaries, where a decision can be other than "continue"); the driver
    # answers exactly the reports that ask, so a trial between boundaries never waits for it.
    answer: bool = True


def needs_answer(report_steps, before: int, step: int) -> bool:
    """A report at `step` (the previous one at `before`) crosses a scheduler boundary."""
    return any(before < b <= step for b in report_steps)


@dataclass(frozen=True)
class Done:
    """The trial ended: status "completed" or "stopped" (by a decision), with its result."""

    trial_id: int
    status: str
    value: float
    step: int
    wall_time: float
    eval_mean: float | None = None


@dataclass(frozen=True)
class Failed:
    trial_id: int
    reason: str


@dataclass(frozen=True)
class Retried:
    """The trial's worker died (node lost, actor killed); the executor started it again,
    from its last checkpoint when `from_checkpoint`. Informational: the trial keeps running."""

    trial_id: int
    reason: str
    attempt: int
    from_checkpoint: bool


@dataclass(frozen=True)
class Exploited:
    """PBT: at env step `step` the trial copied trial `source` (weights, optimizer and traced
    hyperparameters) and now trains with `hps`; `reason` is "exploit" or "diverged"."""

    trial_id: int
    step: int
    source: int
    hps: dict[str, Any]
    reason: str = "exploit"


Event = Started | Report | Done | Failed | Retried | Exploited


def event_from_message(msg: tuple) -> Event | None:
    """A worker-loop message (`(kind, worker_id, trial_id, ...)`) as a typed event."""
    kind, trial_id = msg[0], msg[2]
    if kind == "started":
        return Started(trial_id, pid=msg[3], node=msg[4] if len(msg) > 4 else "local")
    if kind == "report":
        return Report(trial_id, step=msg[3], value=msg[4], answer=msg[5] if len(msg) > 5 else True)
    if kind == "done":
        r = msg[3]
        return Done(trial_id, status=r["status"], value=r["value"], step=r["step"], wall_time=r["wall_time"],
                    eval_mean=r.get("eval_mean"))
    if kind == "failed":
        return Failed(trial_id, reason=msg[3])
    if kind == "exploited":
        return Exploited(trial_id, step=msg[3], source=msg[4], hps=msg[5], reason=msg[6])
    return None


# ---------------------------------------------------------------- the protocol
@dataclass(frozen=True)
class ExecutorOptions:
    """What every executor may use; each reads its own part."""

    parallel: int = 1  # local workers / Ray actors
    population_size: int | None = None  # members per population (None: from memory and trials)
    population: bool = False  # Ray: each actor trains a vmapped population
    address: str | None = None  # Ray cluster address (None: start a local Ray)
    resources: dict[str, float] = field(default_factory=dict)  # per trial (Ray): {cpu: 1, gpu: 0.25}
    max_failures: int = 2  # Ray: restarts of a trial whose worker died
    agent: str | None = None
    num_trials: int = 1
    agent_config: Any = None  # a built-in agent's config (population sizing)
    pbt: bool = False  # population-based training: one population, never sharded


class Executor(Protocol):
    def start(self) -> None:
        """Start workers (may take seconds: imports, a Ray cluster)."""

    def free_slots(self) -> int:
        """Slots that can take a task now."""

    def warm_up(self, hint: TrialTask) -> None:
        """Before the first `submit`: the workers may compile the programs of a trial like
        `hint` (its params at any value the search space holds, none of them static; never
        run, no directory written) while the driver opens the storage. Only an optimization:
        an executor may ignore it."""

    def idle_workers(self) -> int:
        """Workers (processes, actors) that run no trial now: their cores are free."""

    def submit(self, task: TrialTask) -> None:
        """Run `task` on a free slot."""

    def events(self, timeout: float) -> list[Event]:
        """Events since the last call, waiting up to `timeout` seconds for the first."""

    def decide(self, trial_id: int, decision: str) -> None:
        """Answer a `Report`: "continue" or "stop" (a pause is a stop whose checkpoint is kept)."""

    def kill(self, trial_id: int) -> None:
        """End a trial now, whatever it is doing (its timeout passed); the executor sends no
        further event for it and its slot frees up."""

    def shutdown(self, force: bool = False) -> None:
        """Stop every worker; `force` kills running trials (Ctrl-C)."""


# ---------------------------------------------------------------- the registry
# name -> (module, class, help). Read by the spec check, the CLI choices and the driver.
EXECUTORS: dict[str, tuple[str, str, str]] = {
    "local": ("rltune.tune.executors.local", "LocalExecutor",
              "one worker process per parallel trial (default)"),
    "population": ("rltune.tune.executors.population", "PopulationExecutor",
                   "trials vmapped in one compiled program in one process"),
    "ray": ("rltune.tune.executors.ray", "RayExecutor",
            "trials in long-lived Ray actors on a local Ray or a cluster (--address)"),
}
EXECUTOR_NAMES = tuple(EXECUTORS)


def executor_class(name: str):
    if name not in EXECUTORS:
        raise UsageError("executor", f"unknown executor {name!r}; choose one of {', '.join(EXECUTOR_NAMES)}")
    module, cls, _ = EXECUTORS[name]
    return getattr(importlib.import_module(module), cls)


def make_executor(name: str, options: ExecutorOptions) -> Executor:
    return executor_class(name)(options)
