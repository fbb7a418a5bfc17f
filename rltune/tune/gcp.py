"""The Cloud ML Engine hyperparameter tuning file (``trainingInput: hyperparameters: ...``).

Read as it is, so users of the managed service can run the same study locally. Mapping:

| Cloud field                              | StudySpec                                          |
|------------------------------------------|----------------------------------------------------|
| ``jobId`` (top level, optional)          | name (default: the file name without extension)    |
| ``trainingInput.scaleTier``              | scale_tier (information only)                      |
| ``goal`` (default MAXIMIZE)              | goal "maximize" / "minimize"                       |
| ``hyperparameterMetricTag``              | metric (default ``training/hptuning/metric``)      |
| ``maxTrials`` (default 1)                | num_trials                                         |
| ``maxParallelTrials`` (default 1)        | parallel                                           |
| ``maxFailedTrials`` (0 = tool decides)   | max_failed_trials (0 -> None: half the trials,     |
|                                          | see `StudySpec.failed_trials_limit`)               |
| ``enableTrialEarlyStopping``             | early_stopping (scheduler stays "fifo": the study  |
|                                          | driver picks its default early-stopping rule)      |
| ``resumePreviousJobId``                  | resume_from                                        |
| ``algorithm``: unset / ALGORITHM_UNSPECIFIED | sampler "gp" (Bayesian, as the service)        |
| GRID_SEARCH / RANDOM_SEARCH              | sampler "grid" / "random"                          |
| ``params``                               | space (DOUBLE -> float, INTEGER -> int,            |
|                                          | DISCRETE -> discrete, CATEGORICAL -> categorical;  |
|                                          | NONE / UNIT_LINEAR_SCALE -> linear,                |
|                                          | UNIT_LOG_SCALE -> log,                             |
|                                          | UNIT_REVERSE_LOG_SCALE -> reverse_log)             |

The file names no trainer: the command comes from the CLI after ``--`` (`spec.with_command`),
and gets the service's command line (`external.CLOUD_TRAINER`: ``--job-dir=<dir>`` then
``--name=value``) unless it holds placeholders such as ``{learning_rate}`` (a template).
Other ``trainingInput`` fields of the service that describe machines (masterType, workerCount,
region, runtimeVersion, ...) are accepted and ignored; packaging fields (packageUris,
pythonModule, args) are a UsageError that says to give the trainer command after ``--``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rltune.errors import UsageError
from rltune.tune.external import CLOUD_TRAINER
from rltune.tune.space import Param, SearchSpace, validate_param_fields
from rltune.tune.spec import (
    DEFAULT_COMMAND_METRIC,
    SamplerSpec,
    StudySpec,
    _check_keys,
    _mapping,
    _number,
)

__all__ = ["ALGORITHMS", "PARAM_TYPES", "SCALE_TYPES", "spec_from_gcp"]

ALGORITHMS = {
    None: "gp",
    "ALGORITHM_UNSPECIFIED": "gp",
    "GRID_SEARCH": "grid",
    "RANDOM_SEARCH": "random",
}
PARAM_TYPES = {"DOUBLE": "float", "INTEGER": "int", "DISCRETE": "discrete", "CATEGORICAL": "categorical"}
SCALE_TYPES = {
    None: "linear",
    "NONE": "linear",
    "UNIT_LINEAR_SCALE": "linear",
    "UNIT_LOG_SCALE": "log",
    "UNIT_REVERSE_LOG_SCALE": "reverse_log",
}
GOALS = {"MAXIMIZE": "maximize", "MINIMIZE": "minimize", "GOAL_TYPE_UNSPECIFIED": "maximize"}

_TOP_KEYS = ("trainingInput", "jobId", "labels")
_HP_KEYS = (
    "goal", "hyperparameterMetricTag", "maxTrials", "maxParallelTrials", "maxFailedTrials",
    "enableTrialEarlyStopping", "resumePreviousJobId", "algorithm", "params",
)  # fmt: skip
_PARAM_KEYS = (
    "parameterName", "type", "minValue", "maxValue", "discreteValues", "categoricalValues", "scaleType",
)  # fmt: skip
# Service fields about machines and runtime: meaningless locally, accepted and ignored.
_IGNORED_INPUT_KEYS = (
    "masterType", "masterConfig", "workerType", "workerConfig", "parameterServerType",
    "parameterServerConfig", "evaluatorType", "evaluatorConfig", "workerCount",
    "parameterServerCount", "evaluatorCount", "region", "runtimeVersion", "pythonVersion",
    "jobDir", "scheduling", "network", "serviceAccount", "encryptionConfig",
    "useChiefInTfConfig", "enableWebAccess",
)  # fmt: skip
_PACKAGING_KEYS = ("packageUris", "pythonModule", "args")
_INPUT_KEYS = ("scaleTier", "hyperparameters", *_IGNORED_INPUT_KEYS, *_PACKAGING_KEYS)


def _enum(value: Any, table: Mapping[Any, str], where: str) -> str:
    key = value.upper() if isinstance(value, str) else value
    if key not in table:
        choices = ", ".join(k for k in table if k is not None)
        raise UsageError(where, f"unknown value {value!r}; choose one of {choices}")
    return table[key]


def _count(hp: Mapping[str, Any], key: str, default: int, minimum: int, where: str) -> int:
    value = hp.get(key, default)
    if value is None:
        return default
    if isinstance(value, str) and value.strip().isdigit():  # the service's JSON writes int64 as strings
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{where}.{key}", f"must be an integer >= {minimum}, got {value!r}")
    return value


def _parse_param(entry: Any, where: str) -> Param:
    entry = _mapping(entry, where)
    _check_keys(entry, _PARAM_KEYS, where)
    name = entry.get("parameterName")
    if name is None:
        raise UsageError(f"{where}.parameterName", "missing")
    if "type" not in entry:
        raise UsageError(f"{where}.type", f"missing; choose one of {', '.join(PARAM_TYPES)}")
    kind = _enum(entry["type"], PARAM_TYPES, f"{where}.type")
    scale = _enum(entry.get("scaleType"), SCALE_TYPES, f"{where}.scaleType")

    low = high = None
    values: tuple[Any, ...] = ()
    values_key = "categoricalValues" if kind == "categorical" else "discreteValues"
    if kind in ("float", "int"):
        for key in ("discreteValues", "categoricalValues"):
            if key in entry:
                raise UsageError(f"{where}.{key}", f"a {entry['type']} parameter takes minValue/maxValue")
        for key in ("minValue", "maxValue"):
            if entry.get(key) is None:
                raise UsageError(f"{where}.{key}", f"missing: a {entry['type']} parameter needs minValue and maxValue")
        low, high = _number(entry["minValue"], f"{where}.minValue"), _number(entry["maxValue"], f"{where}.maxValue")
        if kind == "float":
            low, high = float(low), float(high)
    else:
        for key in ("minValue", "maxValue"):
            if key in entry:
                raise UsageError(f"{where}.{key}", f"a {entry['type']} parameter takes {values_key}")
        other = "discreteValues" if kind == "categorical" else "categoricalValues"
        if other in entry:
            raise UsageError(f"{where}.{other}", f"a {entry['type']} parameter takes {values_key}")
        raw = entry.get(values_key)
        if raw is None:
            raise UsageError(f"{where}.{values_key}", f"missing: a {entry['type']} parameter needs {values_key}")
        if not isinstance(raw, list):
            raise UsageError(f"{where}.{values_key}", f"must be a list, got {raw!r}")
        if kind == "discrete":
            values = tuple(_number(v, f"{where}.{values_key}") for v in raw)
        else:
            for i, v in enumerate(raw):
                if not isinstance(v, str):
                    raise UsageError(f"{where}.{values_key}", f"categorical values are strings; item {i} is {v!r}")
            values = tuple(raw)
        if kind == "categorical" and scale != "linear":
            raise UsageError(f"{where}.scaleType", "a CATEGORICAL parameter has no scale; leave scaleType unset")
    keys = {
        "name": "parameterName",
        "kind": "type",
        "low": "minValue",
        "high": "maxValue",
        "scale": "scaleType",
        "values": values_key,
    }
    validate_param_fields(name, kind, low, high, scale, values, prefix=where, keys=keys)
    return Param(name, kind, low=low, high=high, scale=scale, values=values)


def spec_from_gcp(data: Mapping[str, Any], *, default_name: str = "study") -> StudySpec:
    """StudySpec from a parsed Cloud ML Engine file (a mapping with ``trainingInput``)."""
    _check_keys(data, _TOP_KEYS, "")
    ti = _mapping(data["trainingInput"], "trainingInput")
    _check_keys(ti, _INPUT_KEYS, "trainingInput")
    for key in _PACKAGING_KEYS:
        if key in ti:
            raise UsageError(
                f"trainingInput.{key}",
                "rltune runs the trainer locally: drop this field and give the trainer command "
                "after `--`, e.g. `rltune tune hptuning.yaml -- python -m trainer.task`",
            )
    where = "trainingInput.hyperparameters"
    if ti.get("hyperparameters") is None:
        raise UsageError(where, "missing: the file must define hyperparameters")
    hp = _mapping(ti["hyperparameters"], where)
    _check_keys(hp, _HP_KEYS, where)

    raw_params = hp.get("params")
    if not isinstance(raw_params, list) or not raw_params:
        raise UsageError(f"{where}.params", "must be a non-empty list of parameters")
    params = [_parse_param(p, f"{where}.params[{i}]") for i, p in enumerate(raw_params)]
    seen: dict[str, int] = {}
    for i, p in enumerate(params):
        if p.name in seen:
            raise UsageError(f"{where}.params[{i}].parameterName", f"{p.name!r} is also params[{seen[p.name]}]")
        seen[p.name] = i

    sampler = _enum(hp.get("algorithm"), ALGORITHMS, f"{where}.algorithm")
    if sampler == "grid":
        for i, p in enumerate(params):
            if p.kind == "float":
                raise UsageError(
                    f"{where}.params[{i}].type",
                    f"GRID_SEARCH cannot enumerate the DOUBLE parameter {p.name!r}; "
                    "use type: DISCRETE with discreteValues (or another algorithm)",
                )

    metric = hp.get("hyperparameterMetricTag", DEFAULT_COMMAND_METRIC)
    if not isinstance(metric, str) or not metric:
        raise UsageError(f"{where}.hyperparameterMetricTag", f"must be a non-empty string, got {metric!r}")
    early = hp.get("enableTrialEarlyStopping", False)
    if not isinstance(early, bool):
        raise UsageError(f"{where}.enableTrialEarlyStopping", f"must be True or False, got {early!r}")
    resume = hp.get("resumePreviousJobId")
    if resume is not None and (isinstance(resume, (dict, list, bool)) or str(resume) == ""):
        raise UsageError(f"{where}.resumePreviousJobId", f"must be a job id, got {resume!r}")
    scale_tier = ti.get("scaleTier")
    if scale_tier is not None and not isinstance(scale_tier, str):
        raise UsageError("trainingInput.scaleTier", f"must be a string such as BASIC_GPU, got {scale_tier!r}")
    name = data.get("jobId", default_name)
    if not isinstance(name, str) or not name:
        raise UsageError("jobId", f"must be a non-empty string, got {name!r}")

    max_failed = _count(hp, "maxFailedTrials", 0, 0, where)
    return StudySpec(
        name=name,
        space=SearchSpace(tuple(params)),
        metric=metric,
        goal=_enum(hp.get("goal", "MAXIMIZE"), GOALS, f"{where}.goal"),
        num_trials=_count(hp, "maxTrials", 1, 1, where),
        parallel=_count(hp, "maxParallelTrials", 1, 1, where),
        max_failed_trials=max_failed or None,
        sampler=SamplerSpec(sampler),
        early_stopping=early,
        resume_from=None if resume is None else str(resume),
        scale_tier=scale_tier,
        trainer=CLOUD_TRAINER,  # the service's argv: --job-dir=... --name=value
    )
