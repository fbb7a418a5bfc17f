"""Hyperparameter tuning: study specs (two file formats, one model), search spaces, samplers.

    from rltune.tune import load_spec, make_sampler
    spec = load_spec("examples/ppo_cartpole.yaml")
    sampler = make_sampler(spec.sampler.name, spec.space, spec.sampler.seed, **spec.sampler.options)

Names are imported on first use, so a trial worker importing ``rltune.tune.<module>`` does not
pay for Optuna.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SAMPLER_NAMES": "samplers",
    "gp_backend": "samplers",
    "make_sampler": "samplers",
    "Param": "space",
    "SearchSpace": "space",
    "categorical_param": "space",
    "discrete_param": "space",
    "float_param": "space",
    "int_param": "space",
    "SamplerSpec": "spec",
    "SchedulerSpec": "spec",
    "StudySpec": "spec",
    "check_runnable": "spec",
    "dump_spec": "spec",
    "load_spec": "spec",
    "spec_from_dict": "spec",
    "spec_to_dict": "spec",
    "validate_against_agent": "spec",
    "with_command": "spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rltune.tune' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"rltune.tune.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
