"""Typed, frozen configs that are also the command line.

Every agent config is a frozen dataclass whose fields are declared with `param(...)`: a default,
a help text, optional bounds or choices, and whether the value is *static* (it fixes an array
shape, so changing it recompiles) or *traced* (a scalar that can differ per vmapped member).
The CLI flags, YAML loading and validation are all generated from these declarations.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rltune import yamlsafe
from rltune.errors import UsageError


def param(default: Any, help: str, *, low: float | None = None, high: float | None = None,
          low_exclusive: bool = False, choices: tuple | None = None, static: bool = False):
    """Declare a config field. `static` fields fix shapes; the others are traced scalars."""
    meta = {"help": help, "low": low, "high": high, "low_exclusive": low_exclusive,
            "choices": choices, "static": static}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class CommonConfig:
    """Fields every agent has, with the same flag names everywhere."""

    env: str = param("CartPole-v1", "Environment id (gymnax or Gymnasium).", static=True)
    seed: int = param(0, "Random seed.", low=0, static=True)
    total_steps: int = param(500_000, "Total environment steps to train for.", low=1, static=True)
    num_envs: int = param(4, "Parallel environments (vectorized, auto-reset).", low=1, static=True)
    backend: str = param("auto", "Environment backend: auto picks gymnax when the id exists there.",
                         choices=("auto", "gymnax", "gymnasium"), static=True)
    reward_window: int = param(100, "Completed episodes in the reported reward's moving average "
                               "(the 'reward' metric a tuner optimizes).", low=1, static=True)


def field_types(cls) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: _base_type(hints[f.name]) for f in dataclasses.fields(cls)}


def _base_type(hint) -> type:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0]
    return hint


def static_fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("static")}


def traced_fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if not f.metadata.get("static")]


# The last split (config, also_reset, static, hp): a run splits its config at every segment, and
# making its ten float32 arrays again cost ~1.5 ms a segment. Keyed by the config object itself
# (frozen): an equal config may differ in bits (0.0 and -0.0 compare equal).
_last_split: tuple = (None, None, None, None)


def split_traced(config, also_reset: tuple[str, ...] = ()):
    """(static part, traced values): the static part has every traced field (and `also_reset`)
    set to its default, so configs of equal shapes share one compiled program; the traced
    values are float32 arrays, which the caller may vmap over."""
    global _last_split
    import jax
    import jax.numpy as jnp

    last = _last_split
    if last[0] is config and last[1] == also_reset:
        return last[2], dict(last[3])
    names = traced_fields(type(config))
    hp = {n: jnp.asarray(getattr(config, n), jnp.float32) for n in names}
    reset = set(names) | set(also_reset)
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.name in reset}
    static = dataclasses.replace(config, **defaults)
    if not any(isinstance(v, jax.core.Tracer) for v in hp.values()):  # split inside a trace: not reusable
        _last_split = (config, also_reset, static, hp)
    return static, dict(hp)


def _coerce(name: str, kind: type, value: Any) -> Any:
    """Convert a YAML/Python value to the field's type, or raise UsageError naming the field."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise UsageError(name, f"expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise UsageError(name, f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                as_float = float(value)
            except ValueError:
                raise UsageError(name, f"expected an integer, got {value!r}") from None
            if as_float.is_integer():
                return int(as_float)
        raise UsageError(name, f"expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, bool):
            raise UsageError(name, f"expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UsageError(name, f"expected a number, got {value!r}") from None
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UsageError(name, f"expected a string, got {value!r}")
    raise TypeError(f"unsupported config field type {kind} for {name}")


def validate(config) -> None:
    """Check bounds and choices of every field; raise UsageError naming the first bad one."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        meta = f.metadata
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f.name, f"must be a finite number, got {value}")
        if meta.get("choices") and value not in meta["choices"]:
            raise UsageError(f.name, f"must be one of {', '.join(map(str, meta['choices']))}; got {value!r}")
        low, high = meta.get("low"), meta.get("high")
        if low is not None:
            too_low = value <= low if meta.get("low_exclusive") else value < low
            if too_low:
                bound = f"> {low}" if meta.get("low_exclusive") else f">= {low}"
                raise UsageError(f.name, f"must be {bound}; got {value}")
        if high is not None and value > high:
            raise UsageError(f.name, f"must be <= {high}; got {value}")
    check = getattr(config, "check", None)
    if check is not None:
        check()


def from_dict(cls, values: dict[str, Any], *, source: str = "config"):
    """Build a validated config from a plain dict; unknown names are a UsageError."""
    types_ = field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise UsageError(unknown[0], f"is not a field of {cls.__name__} (in {source}); "
                         f"known fields: {', '.join(sorted(types_))}")
    kwargs = {k: _coerce(k, types_[k], v) for k, v in values.items()}
    config = cls(**kwargs)
    validate(config)
    return config


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError("--config", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yamlsafe.load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise UsageError("--config", f"{where} is not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise UsageError("--config", f"{path} must hold a mapping of field: value")
    return data


def dump_yaml(config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


# Spellings users bring from CleanRL and Stable-Baselines3, accepted beside ours.
FLAG_ALIASES = {"env": ("--env-id",), "total_steps": ("--total-timesteps",)}


def add_config_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field, typed, with the field's help and default. Defaults are SUPPRESSed so
    that only the flags the user gave override a --config file. Booleans take a value
    (`--double-dqn false`), none (`--double-dqn`) or the negated form (`--no-double-dqn`)."""
    types_ = field_types(cls)
    group = parser.add_argument_group(f"{cls.__name__} fields")
    for f in dataclasses.fields(cls):
        kind = types_[f.name]
        meta = f.metadata
        extra = []
        if meta.get("low") is not None:
            extra.append(f"{'>' if meta.get('low_exclusive') else '>='} {meta['low']}")
        if meta.get("high") is not None:
            extra.append(f"<= {meta['high']}")
        help_text = f"{meta.get('help', '')} (default: {f.default}{'; ' + ', '.join(extra) if extra else ''})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            kwargs.update(type=_parse_bool, metavar="{true,false}", nargs="?", const=True)
        else:
            kwargs["type"] = kind
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        group.add_argument(flag_name(f.name), *FLAG_ALIASES.get(f.name, ()), **kwargs)
        if kind is bool:
            group.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_const",
                               const=False, default=argparse.SUPPRESS, help=f"Same as {flag_name(f.name)} false.")


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def config_from_args(cls, args: argparse.Namespace, file_values: dict[str, Any] | None = None,
                     source: str = "flags"):
    """Defaults < values from a YAML file < command-line flags."""
    values: dict[str, Any] = dict(file_values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return from_dict(cls, values, source=source)
