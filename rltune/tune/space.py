"""The search space: typed parameters and their mapping to Optuna distributions.

Both spec formats (native YAML / Python and the Cloud ML Engine file) build the same
`SearchSpace`; samplers and the study driver only ever see this model.

Kinds and scales
----------------
- ``float`` / ``int``: a range ``low..high`` (both ends included) with a ``scale``:
  ``linear``; ``log`` (log-uniform, needs ``low > 0``); ``reverse_log`` (dense near ``high``).
- ``discrete``: a strictly increasing list of numbers (sampled as an Optuna categorical:
  each value is a choice, their order is not modelled).
- ``categorical``: a list of distinct choices (str, int, float or bool; not null, and no two that
  compare equal such as ``1``, ``1.0`` and ``true``, which Optuna's storage conflates).

Reverse-log mapping
-------------------
Optuna has no reverse-log distribution, so a ``reverse_log`` parameter ``x`` in
``[low, high]`` is sampled through its mirror ``y = high + low - x``, which lies in the same
interval: the sampler draws ``y`` log-uniformly (``low > 0`` is required, as for ``log``) and
``x = high + low - y``. Since ``y`` crowds near ``low``, ``x`` crowds near ``high``. Like
``log``, it matters only when ``high / low`` is large: on [0.9, 0.999] it is almost linear,
on [0.001, 1] two thirds of the samples fall above 0.9.
In the Optuna trial the mirrored value is stored as the parameter ``"<name>__mirrored"``
(so samplers model it on the log scale), and the real value is stored as the user attribute
``"<name>"``; optuna-dashboard shows both (params and user attrs). Use
`SearchSpace.values_from_params` to turn a trial's Optuna params into real values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from rltune.errors import UsageError

__all__ = [
    "KINDS",
    "SCALES",
    "Param",
    "SearchSpace",
    "categorical_param",
    "discrete_param",
    "float_param",
    "int_param",
    "mirrored_name",
    "validate_param_fields",
]

KINDS = ("float", "int", "discrete", "categorical")
SCALES = ("linear", "log", "reverse_log")
MIRROR_SUFFIX = "__mirrored"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")

# Display names of the Param attributes in error messages, per spec format.
NATIVE_KEYS: Mapping[str, str] = {
    "name": "name",
    "kind": "type",
    "low": "low",
    "high": "high",
    "scale": "scale",
    "values": "values",
}


def mirrored_name(name: str) -> str:
    """Optuna parameter name that holds the mirrored value of a reverse-log parameter."""
    return name + MIRROR_SUFFIX


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_param_fields(
    name: Any,
    kind: Any,
    low: Any,
    high: Any,
    scale: Any,
    values: Sequence[Any],
    *,
    prefix: str,
    keys: Mapping[str, str] = NATIVE_KEYS,
) -> None:
    """Check one parameter's fields; raise UsageError naming ``<prefix>.<key>``.

    ``keys`` maps the Param attributes (kind, low, high, scale, values) to the names the
    user wrote, so the Cloud format reports ``params[2].minValue`` and the native one
    ``search_space.lr.low``.
    """

    def fail(attr: str, message: str) -> UsageError:
        return UsageError(f"{prefix}.{keys[attr]}" if keys[attr] else prefix, message)

    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise fail("name", f"parameter name {name!r} must be an identifier (letters, digits, _ . -)")
    if name.endswith(MIRROR_SUFFIX):
        raise fail("name", f"parameter names may not end with {MIRROR_SUFFIX!r} (reserved)")
    if kind not in KINDS:
        raise fail("kind", f"unknown type {kind!r}; choose one of {', '.join(KINDS)}")
    if scale not in SCALES:
        raise fail("scale", f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")

    if kind in ("float", "int"):
        for attr, value in (("low", low), ("high", high)):
            if value is None:
                raise fail(attr, f"a {kind} parameter needs {keys[attr]}")
            if not _is_number(value):
                raise fail(attr, f"must be a number, got {value!r}")
            if kind == "int" and not isinstance(value, int):
                raise fail(attr, f"an int parameter needs an integer, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise fail(attr, f"must be finite, got {value!r}")
        if low > high:
            raise fail("low", f"{keys['low']} ({low}) is greater than {keys['high']} ({high})")
        if scale in ("log", "reverse_log") and low <= 0:
            raise fail("low", f"{scale} scale needs {keys['low']} > 0, got {low}")
        if values:
            raise fail("values", f"a {kind} range takes {keys['low']}/{keys['high']}, not a list")
        return

    # discrete / categorical
    if low is not None or high is not None:
        raise fail("low" if low is not None else "high", f"a {kind} parameter takes a list of values, not a range")
    if not isinstance(values, (list, tuple)) or len(values) == 0:
        raise fail("values", f"a {kind} parameter needs a non-empty list of values")
    if kind == "discrete":
        for i, value in enumerate(values):
            if not _is_number(value):
                raise fail("values", f"discrete values must be numbers; item {i} is {value!r}")
        for a, b in zip(values, values[1:]):
            if not a < b:
                raise fail("values", f"discrete values must be strictly increasing; {a!r} then {b!r}")
        if scale in ("log", "reverse_log") and values[0] <= 0:
            raise fail("scale", f"{scale} scale needs positive values, got {values[0]!r}")
    else:
        if scale != "linear":
            raise fail("scale", "a categorical parameter has no scale; leave it unset")
        for i, value in enumerate(values):
            if value is None:
                # Every trial drawing it would fail in the trainer; write the string "null"
                # (or "none") if that is what the trainer understands.
                raise fail("values", f"item {i} is null, which no trainer can take as a value; "
                                     "drop it or quote it as a string (\"null\")")
            if not isinstance(value, (str, int, float, bool)):
                raise fail("values", f"categorical values must be str, number or bool; item {i} is {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise fail("values", f"item {i} is {value!r}; categorical values must be finite")
        if len(set(map(repr, values))) != len(values):
            raise fail("values", f"categorical values must be distinct, got {list(values)!r}")
        # 1, 1.0 and true are different values here, but one value to Optuna's storage (which
        # compares choices with ==, and JSON writes them alike): a trial could run with the
        # wrong one. Equal-but-different-type choices are therefore refused.
        for i, a in enumerate(values):
            for b in values[i + 1:]:
                if a == b:
                    raise fail("values", f"{a!r} and {b!r} are one value to Optuna's storage; "
                                         "keep one of them, or quote them as distinct strings")


@dataclass(frozen=True)
class Param:
    """One hyperparameter of the search space."""

    name: str
    """Config field (built-in agent) or command-line flag (external trainer) it sets."""
    kind: str
    """"float" | "int" | "discrete" | "categorical"."""
    low: float | int | None = None
    """Lower end of a float/int range (included)."""
    high: float | int | None = None
    """Upper end of a float/int range (included)."""
    scale: str = "linear"
    """"linear" | "log" | "reverse_log" (float/int; recorded but unused for discrete)."""
    values: tuple[Any, ...] = ()
    """Choices of a discrete (increasing numbers) or categorical parameter."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        validate_param_fields(
            self.name, self.kind, self.low, self.high, self.scale, self.values, prefix=str(self.name)
        )
        if self.kind == "float":
            object.__setattr__(self, "low", float(self.low))
            object.__setattr__(self, "high", float(self.high))

    @property
    def optuna_name(self) -> str:
        """Name of the Optuna parameter (the mirrored one for reverse-log ranges)."""
        if self.scale == "reverse_log" and self.kind in ("float", "int"):
            return mirrored_name(self.name)
        return self.name

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution of `optuna_name` (see the module doc for reverse-log)."""
        if self.kind == "float":
            return FloatDistribution(self.low, self.high, log=self.scale != "linear")
        if self.kind == "int":
            return IntDistribution(self.low, self.high, log=self.scale != "linear")
        return CategoricalDistribution(self.values)

    def from_internal(self, value: Any) -> Any:
        """Real value from the value Optuna holds under `optuna_name`."""
        if self.optuna_name == self.name:
            return value
        real = self.high + self.low - value
        if self.kind == "float":  # rounding could step just outside the interval
            real = min(max(real, self.low), self.high)
        return real

    def contains(self, value: Any) -> bool:
        """Whether a real value lies in this parameter's domain."""
        if self.kind in ("float", "int"):
            if not _is_number(value) or (self.kind == "int" and not isinstance(value, int)):
                return False
            return self.low <= value <= self.high
        return any(type(value) is type(v) and value == v for v in self.values)

    def grid_values(self) -> list[Any]:
        """Values to enumerate in grid search; a float range has none (UsageError)."""
        if self.kind == "float":
            raise UsageError(
                f"search_space.{self.name}",
                "grid search cannot enumerate a float range; use type: discrete with the values "
                "to try (Cloud format: type: DISCRETE with discreteValues)",
            )
        if self.kind == "int":
            return list(range(self.low, self.high + 1))
        return list(self.values)


def float_param(name: str, low: float, high: float, scale: str = "linear") -> Param:
    return Param(name, "float", low=low, high=high, scale=scale)


def int_param(name: str, low: int, high: int, scale: str = "linear") -> Param:
    return Param(name, "int", low=low, high=high, scale=scale)


def discrete_param(name: str, values: Sequence[float | int], scale: str = "linear") -> Param:
    return Param(name, "discrete", values=tuple(values), scale=scale)


def categorical_param(name: str, values: Sequence[Any]) -> Param:
    return Param(name, "categorical", values=tuple(values))


@dataclass(frozen=True)
class SearchSpace:
    """An ordered tuple of uniquely named parameters."""

    params: tuple[Param, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(self.params))
        seen: set[str] = set()
        for p in self.params:
            if not isinstance(p, Param):
                raise UsageError("search_space", f"expected Param objects, got {p!r}")
            if p.name in seen:
                raise UsageError(f"search_space.{p.name}", "parameter defined twice")
            seen.add(p.name)

    # ---- construction / dumping (native format) ----
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, prefix: str = "search_space") -> "SearchSpace":
        """Build from the native mapping ``{name: {type: float, low: .., high: .., scale: log}}``."""
        from rltune.tune.spec import parse_search_space  # the native parser lives with the spec

        return parse_search_space(data, prefix=prefix)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Native mapping (plain lists/numbers, YAML-ready); `from_dict` reads it back."""
        out: dict[str, dict[str, Any]] = {}
        for p in self.params:
            entry: dict[str, Any] = {"type": p.kind}
            if p.kind in ("float", "int"):
                entry["low"], entry["high"] = p.low, p.high
            else:
                entry["values"] = list(p.values)
            if p.scale != "linear":
                entry["scale"] = p.scale
            out[p.name] = entry
        return out

    # ---- access ----
    def __iter__(self) -> Iterator[Param]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    # ---- optuna ----
    def to_optuna_distributions(self) -> dict[str, BaseDistribution]:
        """Optuna distributions keyed by Optuna parameter name (mirrored names for reverse-log);
        usable with ``study.ask(fixed_distributions=...)``."""
        return {p.optuna_name: p.distribution() for p in self.params}

    def values_from_params(self, optuna_params: Mapping[str, Any]) -> dict[str, Any]:
        """Real values ``{name: value}`` from a trial's Optuna params (``trial.params``)."""
        return {p.name: p.from_internal(optuna_params[p.optuna_name]) for p in self.params}

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample every parameter through ``trial``; return the real values ``{name: value}``.

        Reverse-log parameters also get ``trial.set_user_attr(name, real_value)``.
        """
        values: dict[str, Any] = {}
        for p in self.params:
            d = p.distribution()
            if isinstance(d, FloatDistribution):
                internal = trial.suggest_float(p.optuna_name, d.low, d.high, log=d.log)
            elif isinstance(d, IntDistribution):
                internal = trial.suggest_int(p.optuna_name, d.low, d.high, log=d.log)
            else:
                internal = trial.suggest_categorical(p.optuna_name, d.choices)
            values[p.name] = p.from_internal(internal)
            if p.optuna_name != p.name:
                trial.set_user_attr(p.name, values[p.name])
        return values

    def contains(self, config: Mapping[str, Any]) -> bool:
        """Whether ``config`` has a value in range for every parameter."""
        return all(p.name in config and p.contains(config[p.name]) for p in self.params)

    def grid(self) -> dict[str, list[Any]]:
        """GridSampler search space keyed by Optuna names; UsageError for a float range."""
        return {p.optuna_name: p.grid_values() for p in self.params}

    def grid_size(self) -> int:
        """Number of points in the full grid (raises like `grid` for float ranges)."""
        return math.prod(len(v) for v in self.grid().values())
