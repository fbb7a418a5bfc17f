"""Hyperparameter schedules: traced hyperparameters that change at given env steps.

A PBT study's best member trained with a schedule, not a constant; `best_config.yaml` holds
it as the config field ``hp_schedule`` and `rltune train --config` replays it. The value is a
JSON (or YAML flow) list of entries ``[step, {name: value, ...}]``, steps increasing, the
first at step 0; from each entry's step on, training uses its values. An optional third
element (an integer) folds the run's random key at that step, as the PBT copy that started
there did, so a replay draws the same random numbers as the member did.

    hp_schedule: '[[0, {"learning_rate": 0.001}], [20480, {"learning_rate": 0.0008}, 5]]'

Only traced hyperparameters may change: they are passed to the compiled program as arrays,
so a change costs no recompilation. Segments end on every entry's step.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, NamedTuple

import yaml

from rltune.errors import UsageError

FIELD = "hp_schedule"


class Entry(NamedTuple):
    step: int
    values: dict[str, float]
    fold: int | None = None


def parse(text: str) -> list[Entry]:
    """The entries of an `hp_schedule` string ("" -> [])."""
    if not text:
        return []
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(FIELD, f"is not a JSON/YAML list: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, list):
        raise UsageError(FIELD, "must be a list of [step, {name: value}] entries")
    entries = []
    for i, item in enumerate(data):
        where = f"{FIELD}[{i}]"
        if not isinstance(item, (list, tuple)) or len(item) not in (2, 3) or not isinstance(item[1], dict):
            raise UsageError(where, f"must be [step, {{name: value}}] (optionally a third integer), got {item!r}")
        step, values = item[0], item[1]
        fold = item[2] if len(item) == 3 else None
        if not _is_int(step) or step < 0:
            raise UsageError(where, f"the step must be an integer >= 0, got {step!r}")
        if fold is not None and (not _is_int(fold) or fold < 0):
            raise UsageError(where, f"the third element (random fold) must be an integer >= 0, got {fold!r}")
        if entries and step <= entries[-1].step:
            raise UsageError(where, f"steps must increase; {step} follows {entries[-1].step}")
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise UsageError(f"{where}.{name}", f"must be a number, got {value!r}")
        entries.append(Entry(int(step), {str(k): float(v) for k, v in values.items()}, fold))
    return entries


def check(config) -> None:
    """Validate `config.hp_schedule` against the config's fields (traced only, in bounds)."""
    from rltune.config import traced_fields, validate

    entries = parse(getattr(config, FIELD))
    traced = traced_fields(type(config))
    for i, entry in enumerate(entries):
        for name in entry.values:
            if name not in traced:
                raise UsageError(f"{FIELD}[{i}].{name}", f"only traced hyperparameters can change during "
                                 f"training; traced: {', '.join(traced)}")
        try:
            validate(dataclasses.replace(config, **{FIELD: ""}, **entry.values))
        except UsageError as exc:
            raise UsageError(f"{FIELD}[{i}]", str(exc)) from None


def steps(config) -> tuple[int, ...]:
    """Env steps at which a segment must end (the entries after step 0)."""
    return tuple(e.step for e in parse(getattr(config, FIELD, "")) if e.step > 0)


def apply(config, state, env_steps: int, applied: int) -> tuple[Any, Any, int]:
    """Before a segment starting at `env_steps`: apply the entries not yet applied whose step
    has been reached. Returns (config, state, entries applied so far)."""
    entries = parse(getattr(config, FIELD, ""))
    while applied < len(entries) and entries[applied].step <= env_steps:
        entry = entries[applied]
        config = dataclasses.replace(config, **entry.values)
        if entry.fold is not None and hasattr(state, "rng"):
            import jax

            state = state.replace(rng=jax.random.fold_in(state.rng, entry.fold))
        applied += 1
    return config, state, applied


def _is_int(x: Any) -> bool:
    return not isinstance(x, bool) and (isinstance(x, int) or (isinstance(x, float) and x.is_integer()))
