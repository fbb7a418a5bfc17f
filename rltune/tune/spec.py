"""Study specs: the `StudySpec` model, the native YAML format, loading and dumping.

Two file formats give the same `StudySpec`:
- the Cloud ML Engine file (top-level ``trainingInput``), read by `rltune.tune.gcp`;
- the native format below, also what `dump_spec` writes into a study directory.

Native format (every key but ``search_space`` is optional)::

    name: ppo-cartpole                 # default: the file name without extension
    agent: ppo                         # built-in agent ...
    # command: [python, -m, trainer.task, --steps, "100000"]   # ... or an external trainer
    # trainer: {flag_style: space, kebab_case: true, job_dir: false, cwd: trial, aggregate: last}
    env: CartPole-v1
    fixed: {total_steps: 100000, num_envs: 4}    # config fields that are not searched
    search_space:
      learning_rate: {type: float, low: 1.0e-5, high: 1.0e-2, scale: log}
      gamma: {type: float, low: 0.9, high: 0.999, scale: reverse_log}
      num_minibatches: {type: int, low: 2, high: 8}
      activation: {type: categorical, values: [tanh, relu]}
      hidden: {type: discrete, values: [32, 64, 128]}
      clip: [0.1, 0.2, 0.3]            # a bare list = the values (discrete if increasing numbers)
    metric: reward                     # default: reward (agent), training/hptuning/metric (command)
    goal: maximize                     # or minimize
    trials: 32
    parallel: 2
    max_failed_trials: 5               # default: the tool decides, see `StudySpec.failed_trials_limit`
    sampler: tpe                       # random | grid | tpe | gp | cmaes | qmc, or {name: tpe, seed: 0, ...}
    scheduler: {name: hypertrick, num_phases: 5, r: 0.25}   # default fifo
    early_stopping: true               # default: true unless the scheduler is fifo
    budget_steps: 100000               # env steps per trial; default: the agent's own
    stop: {metric_threshold: 475}      # end the study once a trial reaches this value
    resume_from: studies/ppo-cartpole-1
    storage: sqlite:///studies/ppo.db
    executor: local                    # local | population | ray

``trainer`` (external trainers only; see `rltune.tune.external.TrainerOptions`): ``flag_style``
``equals`` (``--name=value``, default) or ``space`` (``--name value``); ``kebab_case``
(``--learning-rate``); ``job_dir`` (pass ``--job-dir``; default false here, true for a Cloud
file); ``cwd`` ``inherit`` or ``trial`` (start the trainer in its trial directory); ``aggregate``
``last`` (default), ``max``, ``min`` or ``mean_last_N``. A ``command`` holding placeholders
(``{learning_rate}``, ``{trial_dir}``, ``{trial_id}``, ``{seed}``, ...) is a template: they are
filled in and no flag is appended. ``fixed`` values reach an external trainer like the searched
ones. ``name`` is a plain name (it becomes ``studies/<name>``): no ``/`` and no leading dot.

In a parameter entry ``grid: [...]`` is accepted in place of ``values: [...]``. Numbers written
as ``1e-5`` (which YAML 1.1 reads as a string) are accepted as numbers.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rltune import yamlsafe
from rltune.errors import UsageError
from rltune.tune.external import CLOUD_TRAINER, TrainerOptions, check_command
from rltune.tune.samplers import SAMPLER_NAMES, check_sampler_options
from rltune.tune.space import KINDS, SCALES, Param, SearchSpace, validate_param_fields

__all__ = [
    "DEFAULT_COMMAND_METRIC",
    "EXECUTORS",
    "SCHEDULER_NAMES",
    "STOP_KEYS",
    "SamplerSpec",
    "SchedulerSpec",
    "StudySpec",
    "check_runnable",
    "check_storage_url",
    "dump_spec",
    "load_spec",
    "parse_search_space",
    "spec_differences",
    "spec_from_dict",
    "spec_to_dict",
    "validate_against_agent",
    "with_command",
]

from rltune.schedulers import SCHEDULERS as _SCHEDULERS  # noqa: E402  the one registry
SCHEDULER_NAMES = tuple(_SCHEDULERS)
from rltune.tune.executors.base import EXECUTOR_NAMES as EXECUTORS  # noqa: E402  the one registry
RESOURCE_KEYS = ("cpu", "gpu")
GOALS = ("maximize", "minimize")
STOP_KEYS = ("metric_threshold",)
DEFAULT_COMMAND_METRIC = "training/hptuning/metric"  # the hypertune helper's default tag
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
# A study name becomes a directory (studies/<name>) and a storage key: no separators, no "..".
_STUDY_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+\-]*$")
_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


# ============================================================================ MODEL
@dataclass(frozen=True)
class SamplerSpec:
    """Which Optuna sampler to use (`rltune.tune.samplers.make_sampler`)."""

    name: str = "tpe"
    seed: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for the Optuna sampler's constructor."""


@dataclass(frozen=True)
class SchedulerSpec:
    """Which trial scheduler (early stopping rule) to use, and its parameters."""

    name: str = "fifo"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StudySpec:
    """Everything a study needs, whichever file format (or Python code) it came from.

    Exactly one of `agent` / `command` must be set before the study runs (`check_runnable`);
    a Cloud-format file names neither and gets its command from the CLI (`with_command`).
    """

    name: str
    """Study name (default when loading: the file name without extension)."""
    space: SearchSpace
    """The hyperparameters to search."""
    agent: str | None = None
    """Built-in agent name, e.g. "ppo"."""
    command: tuple[str, ...] | None = None
    """External trainer argv; each trial appends ``--name=value`` flags."""
    env: str | None = None
    """Environment id for a built-in agent, e.g. "CartPole-v1"."""
    fixed: dict[str, Any] = field(default_factory=dict)
    """Config fields set to the same value in every trial."""
    metric: str = "reward"
    """Name of the reported metric to optimise."""
    goal: str = "maximize"
    """"maximize" | "minimize"."""
    num_trials: int = 1
    parallel: int = 1
    """Trials running at once."""
    max_failed_trials: int | None = None
    """Stop the study once this many trials failed; None = `failed_trials_limit` decides."""
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    early_stopping: bool = False
    """Whether poor trials may be stopped early (Cloud: enableTrialEarlyStopping)."""
    budget_steps: int | None = None
    """Env steps per trial; None = the agent's default."""
    stop: dict[str, Any] = field(default_factory=dict)
    """Study stop conditions, e.g. {"metric_threshold": 475.0}."""
    resume_from: str | None = None
    """Previous study id or directory whose completed trials are reused."""
    storage: str | None = None
    """Optuna storage URL; None = the study directory's SQLite file."""
    scale_tier: str | None = None
    """Cloud scaleTier, kept as information only."""
    executor: str = "local"
    """A name in `rltune.tune.executors.base.EXECUTORS`: "local" | "population" | "ray"."""
    population: bool = False
    """Ray: each actor trains a vmapped population of trials (executor population is the local form)."""
    resources: dict[str, float] = field(default_factory=dict)
    """Ray: resources of one trial (of one population shard), e.g. {"cpu": 1, "gpu": 0.25}."""
    address: str | None = None
    """Ray: cluster address ("auto", "HOST:PORT"); None starts a local Ray."""
    max_failures: int = 2
    """Ray: times a trial is restarted after its worker died (node lost, actor killed)."""
    trial_timeout: float | None = None
    """Seconds a trial may run (its running time, not its waits at a barrier); then it is killed
    and recorded as FAILED ("timeout after N s"). None: no limit."""
    max_time: float | None = None
    """Seconds the whole study may run; then running trials are stopped as interrupted (resume
    re-runs them) and no trial starts. None: no limit."""
    trainer: TrainerOptions = field(default_factory=TrainerOptions)
    """How an external trainer gets its values and reports its metric (`TrainerOptions`)."""

    def __post_init__(self) -> None:
        # Normalise containers (copies, so the caller's objects cannot change the spec).
        if self.command is not None:
            object.__setattr__(self, "command", tuple(str(a) for a in self.command))
        object.__setattr__(self, "fixed", dict(self.fixed))
        object.__setattr__(self, "stop", dict(self.stop))
        object.__setattr__(self, "resources", dict(self.resources))
        _validate_study(self)

    @property
    def failed_trials_limit(self) -> int:
        """`max_failed_trials`, or when unset (Cloud: 0) ``max(1, num_trials // 2)``: a study
        stops once half its trials failed, since something is then wrong with the setup."""
        if self.max_failed_trials is not None:
            return self.max_failed_trials
        return max(1, self.num_trials // 2)

    @property
    def direction(self) -> str:
        """Optuna's study direction for `goal`."""
        return self.goal


def _validate_study(s: StudySpec) -> None:
    """Cross-field checks, reported with native key names."""
    if not isinstance(s.name, str) or not s.name:
        raise UsageError("name", "must be a non-empty string")
    if not _STUDY_NAME_RE.match(s.name) or ".." in s.name:
        raise UsageError("name", f"{s.name!r} is not a plain name: it names the study directory "
                         "(studies/<name>), so use letters, digits, _ . + - (no '/', no leading dot, no '..')")
    if not isinstance(s.space, SearchSpace):
        raise UsageError("search_space", f"expected a SearchSpace, got {type(s.space).__name__}")
    if s.agent is not None and s.command is not None:
        raise UsageError("command", "give either agent (built-in) or command (external trainer), not both")
    if s.command is not None and len(s.command) == 0:
        raise UsageError("command", "must not be empty")
    if s.goal not in GOALS:
        raise UsageError("goal", f"unknown goal {s.goal!r}; choose one of {', '.join(GOALS)}")
    for key, value, minimum in (
        ("trials", s.num_trials, 1),
        ("parallel", s.parallel, 1),
        ("max_failed_trials", s.max_failed_trials, 1),
        ("budget_steps", s.budget_steps, 1),
    ):
        if value is None and key in ("max_failed_trials", "budget_steps"):
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise UsageError(key, f"must be an integer >= {minimum}, got {value!r}")
    if s.executor not in EXECUTORS:
        raise UsageError("executor", f"unknown executor {s.executor!r}; choose one of {', '.join(EXECUTORS)}")
    _validate_executor_fields(s)
    check_sampler_options(s.sampler.name, s.sampler.options)
    if s.sampler.name == "grid":
        s.space.grid()  # raises for float ranges, naming the parameter
    if s.scheduler.name not in SCHEDULER_NAMES:
        raise UsageError(
            "scheduler", f"unknown scheduler {s.scheduler.name!r}; choose one of {', '.join(SCHEDULER_NAMES)}"
        )
    for key, value in s.stop.items():
        if key not in STOP_KEYS:
            raise UsageError(f"stop.{key}", f"unknown stop condition; allowed: {', '.join(STOP_KEYS)}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UsageError(f"stop.{key}", f"must be a number, got {value!r}")
    for key in s.fixed:
        if not isinstance(key, str) or not _FIELD_RE.match(key):
            raise UsageError(f"fixed.{key}", "must be a config field name")
        if key in s.space.names:
            raise UsageError(f"fixed.{key}", "is also in search_space; keep it in one of the two")
    if not isinstance(s.trainer, TrainerOptions):
        raise UsageError("trainer", f"expected TrainerOptions, got {type(s.trainer).__name__}")
    if s.agent is not None and s.trainer != TrainerOptions():
        raise UsageError("trainer", f"only applies to an external command; the built-in agent {s.agent!r} "
                         "takes its values directly: drop the trainer block")
    if s.command is not None:
        check_command(s.command, {**s.fixed, **{n: None for n in s.space.names}}, searched=s.space.names)
    if s.storage is not None:
        check_storage_url(s.storage)


def check_storage_url(url: str, *, field: str = "storage") -> None:
    """Raise UsageError unless `url` is an SQLAlchemy URL whose database driver is installed
    (e.g. ``sqlite:///studies/x.db``, ``postgresql://user@host/db``)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    if not isinstance(url, str) or not url:
        raise UsageError(field, f"must be a database URL such as sqlite:///study.db, got {url!r}")
    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise UsageError(field, f"{url!r} is not a usable database URL ({exc}); "
                         "e.g. sqlite:///studies/x.db or postgresql://user@host/db") from None
    except ImportError as exc:
        raise UsageError(field, f"the database driver for {url!r} is not installed ({exc})") from None


def _validate_executor_fields(s: StudySpec) -> None:
    if not isinstance(s.population, bool):
        raise UsageError("population", f"must be true or false, got {s.population!r}")
    if s.population and s.executor == "local":
        raise UsageError("population", "a local population is `executor: population`; `population: true` "
                         "is for executor ray")
    for key, value in s.resources.items():
        if key not in RESOURCE_KEYS:
            raise UsageError(f"resources.{key}", f"unknown resource; allowed: {', '.join(RESOURCE_KEYS)}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise UsageError(f"resources.{key}", f"must be a number >= 0, got {value!r}")
    if s.resources and s.executor != "ray":
        raise UsageError("resources", "per-trial resources apply to executor ray only")
    if s.address is not None and s.executor != "ray":
        raise UsageError("address", "a cluster address applies to executor ray only (add --executor ray)")
    if not isinstance(s.max_failures, int) or isinstance(s.max_failures, bool) or s.max_failures < 0:
        raise UsageError("max_failures", f"must be an integer >= 0, got {s.max_failures!r}")
    for key in ("trial_timeout", "max_time"):
        value = getattr(s, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise UsageError(key, f"must be a number of seconds > 0, got {value!r}")


def check_runnable(spec: StudySpec) -> None:
    """Raise UsageError unless exactly one of agent / command is set."""
    if spec.agent is None and spec.command is None:
        raise UsageError(
            "agent",
            "the spec names no trainer: set `agent: <name>` or `command: [...]`, "
            "or give the trainer command after `--` on the command line",
        )


def with_command(spec: StudySpec, argv: Sequence[str]) -> StudySpec:
    """The spec with its external trainer command set (from the CLI after ``--``)."""
    if not argv:
        raise UsageError("command", "the trainer command after `--` is empty")
    if spec.agent is not None:
        raise UsageError("command", f"the spec already names the built-in agent {spec.agent!r}; drop one of the two")
    if spec.command is not None and tuple(spec.command) != tuple(argv):
        raise UsageError("command", "the spec already has a command; give it either in the spec or after `--`")
    return dataclasses.replace(spec, command=tuple(argv))


def validate_against_agent(spec: StudySpec, field_names: set[str], *, agent: str | None = None) -> None:
    """Raise UsageError if a search_space or fixed name is not one of the agent's config fields."""
    who = agent or spec.agent or "the agent"
    allowed = ", ".join(sorted(field_names))
    for prefix, names in (("search_space", spec.space.names), ("fixed", tuple(spec.fixed))):
        for name in names:
            if name not in field_names:
                raise UsageError(f"{prefix}.{name}", f"not a config field of {who!r}; fields: {allowed}")


# ============================================================================ PARSING HELPERS
def _check_keys(data: Mapping[str, Any], allowed: Sequence[str], prefix: str) -> None:
    for key in data:
        if key not in allowed:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise UsageError(where, f"unknown field; allowed: {', '.join(allowed)}")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UsageError(where, f"must be a mapping, got {type(value).__name__}: {value!r}")
    return value


def _number(value: Any, where: str) -> float | int:
    """A number; strings such as "1e-5" (YAML 1.1 reads them as strings) are converted."""
    if isinstance(value, str) and _NUMBER_RE.match(value.strip()):
        text = value.strip()
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(where, f"must be a number, got {value!r}")
    return value


def _integer(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(where, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(where, f"must be a non-empty string, got {value!r}")
    return value


def _optional(data: Mapping[str, Any], key: str, convert, *args) -> Any:
    value = data.get(key)
    return None if value is None else convert(value, key, *args)


# ============================================================================ NATIVE FORMAT
_PARAM_KEYS = ("type", "low", "high", "scale", "values", "grid")
_TYPE_ALIASES = {"double": "float", "integer": "int"}


def _parse_param(name: Any, entry: Any, prefix: str) -> Param:
    where = f"{prefix}.{name}"
    if isinstance(entry, (list, tuple)):
        entry = {"values": list(entry)}
    entry = _mapping(entry, where)
    _check_keys(entry, _PARAM_KEYS, where)
    if "values" in entry and "grid" in entry:
        raise UsageError(f"{where}.grid", "give values or grid, not both")
    values_key = "grid" if "grid" in entry else "values"
    raw_values = entry.get(values_key)
    if raw_values is not None and not isinstance(raw_values, (list, tuple)):
        raise UsageError(f"{where}.{values_key}", f"must be a list, got {raw_values!r}")

    kind = entry.get("type")
    if kind is None:  # infer: a list of increasing numbers is discrete, other lists categorical
        if raw_values is not None:
            try:
                nums = [_number(v, "") for v in raw_values]
                kind = "discrete" if all(a < b for a, b in zip(nums, nums[1:])) else "categorical"
            except UsageError:
                kind = "categorical"
        else:
            both_int = all(isinstance(entry.get(k), int) for k in ("low", "high"))
            kind = "int" if both_int else "float"
    elif isinstance(kind, str):
        kind = _TYPE_ALIASES.get(kind.lower(), kind.lower())
    scale = entry.get("scale", "linear")
    if isinstance(scale, str):
        scale = scale.lower().replace("-", "_")
    if kind not in KINDS:
        raise UsageError(f"{where}.type", f"unknown type {kind!r}; choose one of {', '.join(KINDS)}")
    if scale not in SCALES:
        raise UsageError(f"{where}.scale", f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")

    low = entry.get("low")
    high = entry.get("high")
    if kind in ("float", "int"):
        low = None if low is None else _number(low, f"{where}.low")
        high = None if high is None else _number(high, f"{where}.high")
        if kind == "float":
            low = float(low) if low is not None else None
            high = float(high) if high is not None else None
    values: tuple[Any, ...] = ()
    if raw_values is not None:
        if kind == "discrete":
            values = tuple(_number(v, f"{where}.{values_key}") for v in raw_values)
        else:
            values = tuple(raw_values)
    keys = {"name": "", "kind": "type", "low": "low", "high": "high", "scale": "scale", "values": values_key}
    validate_param_fields(name, kind, low, high, scale, values, prefix=where, keys=keys)
    return Param(name, kind, low=low, high=high, scale=scale, values=values)


def parse_search_space(data: Any, *, prefix: str = "search_space") -> SearchSpace:
    """SearchSpace from the native mapping ``{name: entry}`` (see the module doc)."""
    data = _mapping(data, prefix)
    return SearchSpace(tuple(_parse_param(name, entry, prefix) for name, entry in data.items()))


_NATIVE_KEYS = (
    "name", "agent", "command", "env", "fixed", "search_space", "metric", "goal", "trials",
    "parallel", "max_failed_trials", "sampler", "scheduler", "early_stopping", "budget_steps",
    "stop", "resume_from", "storage", "scale_tier", "executor", "population", "resources", "address",
    "max_failures", "trial_timeout", "max_time", "trainer",
)  # fmt: skip


def _parse_named(value: Any, where: str) -> tuple[str, dict[str, Any]]:
    """``tpe`` or ``{name: tpe, opt: ..}`` -> (name, options)."""
    if isinstance(value, str):
        return value.lower(), {}
    data = dict(_mapping(value, where))
    if "name" not in data:
        raise UsageError(f"{where}.name", "missing; e.g. {name: tpe}")
    return _string(data.pop("name"), f"{where}.name").lower(), data


def _parse_command(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(shlex.split(value))
    if not isinstance(value, (list, tuple)):
        raise UsageError("command", f"must be a list of arguments or a string, got {value!r}")
    for i, arg in enumerate(value):
        if isinstance(arg, (dict, list)) or arg is None:
            raise UsageError(f"command[{i}]", f"must be a string, got {arg!r}")
    return tuple(str(a) for a in value)


def spec_from_dict(data: Any, *, default_name: str = "study", command: Sequence[str] | None = None) -> StudySpec:
    """StudySpec from a native-format mapping (already parsed YAML or JSON).

    `command`: the trainer command given on the CLI after ``--`` (applied later by
    `with_command`); it only decides the default metric, as a ``command:`` in the file does."""
    data = _mapping(data, "spec")
    _check_keys(data, _NATIVE_KEYS, "")
    if "search_space" not in data:
        raise UsageError("search_space", "missing: the spec must define the parameters to search")
    space = parse_search_space(data["search_space"])
    if len(space) == 0:
        raise UsageError("search_space", "is empty: define at least one parameter to search")

    agent = _optional(data, "agent", _string)
    spec_command = _parse_command(data["command"]) if data.get("command") is not None else None
    trainer = TrainerOptions.from_dict(data["trainer"]) if data.get("trainer") is not None else TrainerOptions()

    sampler_name, sampler_opts = _parse_named(data.get("sampler", "tpe"), "sampler")
    seed = sampler_opts.pop("seed", None)
    if seed is not None:
        seed = _integer(seed, "sampler.seed", 0)
    if sampler_name not in SAMPLER_NAMES:
        raise UsageError("sampler", f"unknown sampler {sampler_name!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    sampler = SamplerSpec(sampler_name, seed, sampler_opts)

    sched_name, sched_params = _parse_named(data.get("scheduler", "fifo"), "scheduler")
    scheduler = SchedulerSpec(sched_name, sched_params)

    early = data.get("early_stopping")
    if early is None:
        early = scheduler.name != "fifo"
    elif not isinstance(early, bool):
        raise UsageError("early_stopping", f"must be true or false, got {early!r}")

    goal = _string(data.get("goal", "maximize"), "goal").lower()
    metric = data.get("metric")
    if metric is None:
        external = data.get("command") is not None or bool(command)
        metric = DEFAULT_COMMAND_METRIC if external else "reward"
    metric = _string(metric, "metric")

    fixed = dict(_mapping(data.get("fixed") or {}, "fixed"))
    stop = dict(_mapping(data.get("stop") or {}, "stop"))
    stop = {k: _number(v, f"stop.{k}") if k in STOP_KEYS else v for k, v in stop.items()}

    return StudySpec(
        name=_string(data.get("name", default_name), "name"),
        space=space,
        agent=agent,
        command=spec_command,
        env=_optional(data, "env", _string),
        fixed=fixed,
        metric=metric,
        goal=goal,
        num_trials=_integer(data.get("trials", 1), "trials", 1),
        parallel=_integer(data.get("parallel", 1), "parallel", 1),
        max_failed_trials=_optional(data, "max_failed_trials", _integer, 1),
        sampler=sampler,
        scheduler=scheduler,
        early_stopping=early,
        budget_steps=_optional(data, "budget_steps", _integer, 1),
        stop=stop,
        resume_from=_optional(data, "resume_from", lambda v, w: _string(str(v), w)),
        storage=_optional(data, "storage", _string),
        scale_tier=_optional(data, "scale_tier", _string),
        executor=_string(data.get("executor", "local"), "executor").lower(),
        population=data.get("population", False),
        resources=dict(_mapping(data.get("resources") or {}, "resources")),
        address=_optional(data, "address", _string),
        max_failures=_integer(data.get("max_failures", 2), "max_failures", 0),
        trial_timeout=data.get("trial_timeout"),
        max_time=data.get("max_time"),
        trainer=trainer,
    )


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so yaml.safe_dump can write the value."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def spec_to_dict(spec: StudySpec) -> dict[str, Any]:
    """The native-format mapping of ``spec`` (plain YAML types); `spec_from_dict` reads it back
    to an equal spec. Unset optional fields are left out."""
    sampler: Any = spec.sampler.name
    if spec.sampler.seed is not None or spec.sampler.options:
        sampler = {"name": spec.sampler.name}
        if spec.sampler.seed is not None:
            sampler["seed"] = spec.sampler.seed
        sampler.update(spec.sampler.options)
    scheduler: Any = spec.scheduler.name
    if spec.scheduler.params:
        scheduler = {"name": spec.scheduler.name, **spec.scheduler.params}
    out: dict[str, Any] = {
        "name": spec.name,
        "agent": spec.agent,
        "command": list(spec.command) if spec.command is not None else None,
        "env": spec.env,
        "fixed": dict(spec.fixed) or None,
        "search_space": spec.space.to_dict(),
        "metric": spec.metric,
        "goal": spec.goal,
        "trials": spec.num_trials,
        "parallel": spec.parallel,
        "max_failed_trials": spec.max_failed_trials,
        "sampler": sampler,
        "scheduler": scheduler,
        "early_stopping": spec.early_stopping,
        "budget_steps": spec.budget_steps,
        "stop": dict(spec.stop) or None,
        "resume_from": spec.resume_from,
        "storage": spec.storage,
        "scale_tier": spec.scale_tier,
        "executor": spec.executor,
        "population": spec.population or None,
        "resources": dict(spec.resources) or None,
        "address": spec.address,
        "max_failures": spec.max_failures if spec.max_failures != 2 else None,
        "trial_timeout": spec.trial_timeout,
        "max_time": spec.max_time,
        "trainer": spec.trainer.to_dict() or None,
    }
    return {k: _plain(v) for k, v in out.items() if v is not None}


# Fields a resumed study may change (how much more to run, how); any other difference means the
# stored trials answer another question, so resuming would mix two studies.
RESUMABLE_CHANGES = ("trials", "parallel", "max_failed_trials", "sampler", "stop", "storage", "executor",
                     "resume_from", "scale_tier", "population", "resources", "address", "max_failures",
                     "trial_timeout", "max_time")


def _diff(old: Any, new: Any, where: str, out: list[str]) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in old:
            if key not in new:
                out.append(f"{where}.{key}: removed (was {old[key]!r})")
        for key in new:
            if key not in old:
                out.append(f"{where}.{key}: added ({new[key]!r})")
            else:
                _diff(old[key], new[key], f"{where}.{key}", out)
    elif old != new or type(old) is not type(new) and not (_numeric(old) and _numeric(new)):
        out.append(f"{where}: {old!r} -> {new!r}")


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def spec_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between a stored study's spec and a new one, as native-format mappings
    (`spec_to_dict`, or a study directory's spec.yaml read back), ignoring the fields a resume
    may change (`RESUMABLE_CHANGES`: trials, parallel, sampler, ...). Empty: same study.

    One line per difference, naming the field: ``search_space.lr: removed (was {...})``,
    ``search_space.learning_rate: added ({...})``, ``name: 'a' -> 'b'``.
    """
    out: list[str] = []
    keys = [k for k in (*old, *(k for k in new if k not in old)) if k not in RESUMABLE_CHANGES]
    defaults = {"early_stopping": False, "goal": "maximize"}
    for key in keys:
        a, b = old.get(key, defaults.get(key)), new.get(key, defaults.get(key))
        if a is None and b is not None:
            out.append(f"{key}: added ({b!r})")
        elif b is None and a is not None:
            out.append(f"{key}: removed (was {a!r})")
        else:
            _diff(a, b, key, out)
    return out


def dump_spec(spec: StudySpec, path: str | Path) -> Path:
    """Write ``spec`` as a native-format YAML file (e.g. ``<study dir>/spec.yaml``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec_to_dict(spec), sort_keys=False, default_flow_style=None))
    return path


# ============================================================================ LOADING
def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(str(path), "no such spec file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise UsageError(str(path), f"cannot read the spec file: {e}") from None
    try:
        return yamlsafe.load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path.name}:{mark.line + 1}" if mark is not None else path.name
        problem = getattr(e, "problem", None) or str(e)
        raise UsageError(where, f"YAML syntax error: {problem}") from None


def load_spec(path: str | Path, *, command: Sequence[str] | None = None) -> StudySpec:
    """Load a study spec file, native or Cloud ML Engine format (top-level ``trainingInput``).

    ``command`` (the CLI's argv after ``--``) sets the external trainer; see `with_command`.
    Whether the spec can run (agent or command set) is checked by `check_runnable`.
    """
    from rltune.tune import gcp  # gcp imports this module's model

    path = Path(path)
    data = _read_yaml(path)
    if not isinstance(data, Mapping):
        raise UsageError(path.name, "a spec file must be a YAML mapping (key: value lines)")
    if "trainingInput" in data:
        spec = gcp.spec_from_gcp(data, default_name=path.stem)
    else:
        spec = spec_from_dict(data, default_name=path.stem, command=command)
    if command:
        spec = with_command(spec, command)
    return spec
