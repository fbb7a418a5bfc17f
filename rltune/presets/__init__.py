"""Tuned hyperparameters per (agent, env id), shipped with the package.

`rltune/presets/<agent>.yaml` maps env ids to config fields, in the spirit of RL Zoo's
`hyperparams/*.yml`. Each entry was found by an rltune study whose spec is kept beside it
(`specs/<agent>_<env>.yaml`; `rltune tune` on it -> `best_config.yaml` -> the entry), named in a
comment above the entry. `search_spaces.yaml` holds the default search space per agent used by
`rltune tune --agent A --env X`.

Config layering (`resolve_config`): defaults < preset < --config file < flags / keyword
arguments. `preset="none"` skips the preset; an env without one falls back to the defaults with
a note.
"""

from __future__ import annotations

import dataclasses
import functools
from importlib import resources
from typing import Any

import yaml

from rltune.errors import UsageError

PRESET_CHOICES = ("auto", "none")


@functools.lru_cache(maxsize=None)
def _read(name: str) -> dict[str, Any]:
    path = resources.files("rltune.presets") / name
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def presets(agent: str) -> dict[str, dict[str, Any]]:
    """{env id: fields} for an agent (empty when it has no preset file)."""
    return {env: dict(values or {}) for env, values in _read(f"{agent}.yaml").items()}


def preset(agent: str, env: str) -> dict[str, Any] | None:
    return presets(agent).get(env)


def default_search_space(agent: str) -> dict[str, Any]:
    """The agent's entry in search_spaces.yaml; an agent without one gets its learning rate
    (a decade either side of the default, log scale) and discount searched."""
    from rltune.agents import get_agent

    spaces = _read("search_spaces.yaml")
    if agent in spaces:
        return {k: dict(v) for k, v in spaces[agent].items()}
    fields = {f.name: f.default for f in dataclasses.fields(get_agent(agent).Config)}
    space: dict[str, Any] = {}
    if "learning_rate" in fields:
        lr = float(fields["learning_rate"])
        space["learning_rate"] = {"type": "float", "low": lr / 10, "high": lr * 10, "scale": "log"}
    if "gamma" in fields:
        space["gamma"] = {"type": "float", "low": 0.9, "high": 0.999}
    if not space:
        raise UsageError("--agent", f"{agent} has no default search space; give a spec file")
    return space


@dataclasses.dataclass(frozen=True)
class Resolved:
    config: Any
    preset: str | None  # "agent/env" when a preset was applied
    notes: tuple[str, ...]


def resolve_config(agent: str, overrides: dict[str, Any], file_values: dict[str, Any] | None = None,
                   *, preset_mode: str = "auto", source: str = "flags") -> Resolved:
    """defaults < preset (of the env the other layers name) < file_values < overrides."""
    from rltune.agents import get_agent
    from rltune.config import from_dict

    if preset_mode not in PRESET_CHOICES:
        raise UsageError("--preset", f"must be one of {', '.join(PRESET_CHOICES)}; got {preset_mode!r}")
    cls = get_agent(agent).Config
    file_values = dict(file_values or {})
    env = overrides.get("env", file_values.get("env", _default(cls, "env")))
    values: dict[str, Any] = {}
    notes: list[str] = []
    applied = None
    if preset_mode == "auto":
        found = preset(agent, env)
        if found is None:
            known = ", ".join(presets(agent)) or "none"
            notes.append(f"no preset for {agent} on {env}: using the defaults "
                         f"(presets for {agent}: {known}); --preset none silences this")
        else:
            values.update(found)
            applied = f"{agent}/{env}"
            notes.append(f"preset {applied} (rltune/presets/{agent}.yaml); flags and --config override it")
    values.update(file_values)
    values.update(overrides)
    config = from_dict(cls, values, source=source)
    return Resolved(config, applied, tuple(notes))


def _default(cls, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)
