"""Optuna samplers by name. rltune does not implement samplers; it picks Optuna's.

| name   | sampler                                                                    |
|--------|----------------------------------------------------------------------------|
| random | ``RandomSampler``                                                          |
| grid   | ``GridSampler`` over every value of the discrete/categorical/int params     |
| tpe    | ``TPESampler`` (the native format's default)                                |
| gp     | ``GPSampler`` (Bayesian optimisation, the Cloud format's default) when      |
|        | PyTorch is importable; otherwise ``TPESampler(multivariate=True)``, see below |
| cmaes  | ``CmaEsSampler`` (needs the ``cmaes`` package)                              |
| qmc    | ``QMCSampler`` (Sobol by default; needs scipy)                              |

GP fallback: Optuna's ``GPSampler`` needs PyTorch, which rltune does not install (several GB
with CUDA). Without it, ``gp`` gives a multivariate TPE sampler: also sequential model-based
(Bayesian) optimisation that models the parameters jointly, with no extra dependency. A warning
says so, and `gp_backend()` tells which one is in use so a study can record it.

Grid and ask/tell: Optuna's ``GridSampler`` calls ``study.stop()`` after the last grid point,
which raises RuntimeError outside ``study.optimize`` (the trial is stored, but ``tell`` raises).
rltune's driver uses ask/tell, so ``grid`` gives a GridSampler subclass that skips that stop
there; the driver ends the study with ``sampler.is_exhausted(study)`` or ``num_trials``.

Options (``sampler: {name: tpe, seed: 0, n_startup_trials: 5}``) are passed to the Optuna
constructor as keyword arguments; unknown ones are a UsageError listing the accepted ones.
"""

from __future__ import annotations

import importlib.util
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import optuna

from rltune.errors import UsageError
from rltune.tune.space import SearchSpace

__all__ = ["SAMPLER_NAMES", "AskTellGridSampler", "gp_backend", "make_sampler", "check_sampler_options"]

SAMPLER_NAMES = ("random", "grid", "tpe", "gp", "cmaes", "qmc")


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def gp_backend() -> str:
    """"GPSampler" when PyTorch is importable, else "TPESampler(multivariate=True)"."""
    return "GPSampler" if _has_module("torch") else "TPESampler(multivariate=True)"


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler, usable with ask/tell to the end of the grid (see the module doc)."""

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
        try:
            super().after_trial(study, trial, state, values)
        except RuntimeError as e:  # `Study.stop` outside study.optimize
            if "Study.stop" not in str(e):
                raise


def _constructor(name: str) -> tuple[Callable[..., optuna.samplers.BaseSampler], dict[str, Any]]:
    """Optuna class and the defaults rltune adds, for a sampler name (already validated)."""
    s = optuna.samplers
    if name == "gp" and gp_backend() != "GPSampler":
        return s.TPESampler, {"multivariate": True}
    table: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
        "random": s.RandomSampler,
        "grid": AskTellGridSampler,
        "tpe": s.TPESampler,
        "gp": s.GPSampler,
        "cmaes": s.CmaEsSampler,
        "qmc": s.QMCSampler,
    }
    return table[name], {}


# Annotation words of Optuna's constructors (they are strings: `from __future__ import
# annotations`) -> the YAML value types that satisfy them. Others (Callable, BaseSampler,
# np.ndarray, FrozenTrial) take Python objects, which a spec file cannot hold.
_YAML_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,), "int": (int,), "float": (int, float), "str": (str,), "None": (type(None),),
    "dict": (dict,), "list": (list,), "Sequence": (list,), "Mapping": (dict,),
}


def _option_type_error(annotation: Any, value: Any) -> str | None:
    """Why `value` cannot be given for a parameter annotated `annotation` (None: it can)."""
    if annotation is inspect.Parameter.empty or not isinstance(annotation, str):
        return None  # unannotated: Optuna's own checks apply
    accepted: list[type] = []
    for word in (part.strip() for part in annotation.split("|")):
        kinds = _YAML_TYPES.get(word.split("[", 1)[0])
        if kinds is not None:
            accepted.extend(kinds)
    if not accepted or accepted == [type(None)]:
        return f"takes a Python object ({annotation}), which a spec file cannot give"
    if isinstance(value, bool) and bool not in accepted:
        return f"expects {annotation}, got {value!r}"
    if not isinstance(value, tuple(accepted)):
        return f"expects {annotation}, got {type(value).__name__} {value!r}"
    return None


def check_sampler_options(name: str, options: dict[str, Any], *, field: str = "sampler") -> None:
    """Raise UsageError for an unknown sampler name, an option its constructor lacks, or an
    option value of the wrong type (checked against Optuna's annotations, before any study
    directory exists)."""
    if name not in SAMPLER_NAMES:
        raise UsageError(f"{field}", f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    cls, _ = _constructor(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "seed", "search_space"}
    for key in options:
        if key not in accepted:
            fallback = name == "gp" and cls is not optuna.samplers.GPSampler
            note = " (gp falls back to TPE: PyTorch is not installed)" if fallback else ""
            raise UsageError(
                f"{field}.{key}",
                f"unknown option for sampler {name!r}{note}; accepted: {', '.join(sorted(accepted))}",
            )
        problem = _option_type_error(inspect.signature(cls.__init__).parameters[key].annotation, options[key])
        if problem:
            raise UsageError(f"{field}.{key}", problem)


def make_sampler(
    name: str, space: SearchSpace, seed: int | None = None, **options: Any
) -> optuna.samplers.BaseSampler:
    """Build the Optuna sampler called ``name`` for ``space`` (see the module doc)."""
    check_sampler_options(name, options)
    if name == "cmaes" and not _has_module("cmaes"):
        raise UsageError("sampler", "the cmaes sampler needs the `cmaes` package: pip install cmaes")
    if name == "qmc" and not _has_module("scipy"):
        raise UsageError("sampler", "the qmc sampler needs scipy: pip install scipy")
    cls, defaults = _constructor(name)
    if name == "gp" and cls is not optuna.samplers.GPSampler:
        warnings.warn(
            "sampler 'gp': Optuna's GPSampler needs PyTorch, which is not installed; "
            "using TPESampler(multivariate=True) instead",
            stacklevel=2,
        )
    kwargs = {**defaults, **options}
    try:
        if name == "grid":
            return cls(space.grid(), seed=seed, **kwargs)
        return cls(seed=seed, **kwargs)
    except (TypeError, ValueError) as exc:  # a value Optuna refuses (e.g. a negative count)
        if isinstance(exc, UsageError):
            raise
        raise UsageError("sampler", f"Optuna's {cls.__name__} refused the options {options}: {exc}") from None
