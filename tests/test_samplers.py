"""Samplers by name: each one yields in-bounds values on a small in-memory study."""

import importlib.util
import warnings

import optuna
import pytest

from rltune.errors import UsageError
from rltune.tune.samplers import SAMPLER_NAMES, gp_backend, make_sampler
from rltune.tune.space import SearchSpace, categorical_param, discrete_param, float_param, int_param

optuna.logging.set_verbosity(optuna.logging.WARNING)
HAS_CMAES = importlib.util.find_spec("cmaes") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None

MIXED = SearchSpace(
    (
        float_param("lr", 1e-5, 1e-2, "log"),
        float_param("gamma", 0.9, 0.999, "reverse_log"),
        float_param("ent", 0.0, 0.05),
        int_param("layers", 1, 4),
        int_param("steps", 16, 512, "log"),
        discrete_param("batch", [16, 32, 64]),
        categorical_param("act", ["tanh", "relu"]),
    )
)
GRIDDABLE = SearchSpace(
    (int_param("layers", 1, 3), int_param("width", 8, 9, "reverse_log"), categorical_param("act", ["tanh", "relu"]))
)


def _run(sampler: optuna.samplers.BaseSampler, space: SearchSpace, n: int = 8) -> list[dict]:
    study = optuna.create_study(sampler=sampler, direction="maximize")
    configs = []
    for i in range(n):
        trial = study.ask()
        config = space.suggest(trial)
        assert space.contains(config), config
        study.tell(trial, float((i * 7) % 5))  # any deterministic objective
        configs.append(config)
    return configs


@pytest.mark.parametrize("name", ["random", "tpe", "gp", "qmc"])
def test_sampler_stays_in_bounds(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        configs = _run(make_sampler(name, MIXED, seed=0), MIXED)
    assert len(configs) == 8


def test_samplers_are_reproducible_with_a_seed():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("random", "tpe", "qmc"):
            assert _run(make_sampler(name, MIXED, seed=3), MIXED, 4) == _run(make_sampler(name, MIXED, seed=3), MIXED, 4)


def test_grid_enumerates_every_point():
    sampler = make_sampler("grid", GRIDDABLE, seed=0)
    assert isinstance(sampler, optuna.samplers.GridSampler)
    configs = _run(sampler, GRIDDABLE, GRIDDABLE.grid_size())
    assert len({tuple(sorted(c.items())) for c in configs}) == 3 * 2 * 2


def test_grid_rejects_a_float_param():
    with pytest.raises(UsageError) as e:
        make_sampler("grid", MIXED, seed=0)
    assert e.value.field == "search_space.lr"
    assert "type: discrete" in str(e.value)


def test_unknown_sampler_lists_the_choices():
    with pytest.raises(UsageError) as e:
        make_sampler("bayes", MIXED, seed=0)
    for name in SAMPLER_NAMES:
        assert name in str(e.value)


def test_unknown_option_is_a_usage_error():
    with pytest.raises(UsageError) as e:
        make_sampler("tpe", MIXED, seed=0, n_startup=3)
    assert e.value.field == "sampler.n_startup" and "n_startup_trials" in str(e.value)
    sampler = make_sampler("tpe", MIXED, seed=0, n_startup_trials=2, multivariate=True)
    _run(sampler, MIXED, 4)


@pytest.mark.skipif(HAS_TORCH, reason="torch is installed: the real GPSampler is used")
def test_gp_falls_back_to_multivariate_tpe_without_torch():
    assert gp_backend() == "TPESampler(multivariate=True)"
    with pytest.warns(UserWarning, match="PyTorch"):
        sampler = make_sampler("gp", MIXED, seed=0)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._multivariate is True


@pytest.mark.skipif(not HAS_CMAES, reason="the cmaes package is not installed")
def test_cmaes_stays_in_bounds():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _run(make_sampler("cmaes", MIXED, seed=0), MIXED)


@pytest.mark.skipif(HAS_CMAES, reason="the cmaes package is installed")
def test_cmaes_without_its_package_says_what_to_install():
    with pytest.raises(UsageError, match="pip install cmaes"):
        make_sampler("cmaes", MIXED, seed=0)


def test_grid_works_with_study_optimize_too():
    sampler = make_sampler("grid", GRIDDABLE, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: float(GRIDDABLE.suggest(t)["layers"]), n_trials=50)
    assert len(study.trials) == GRIDDABLE.grid_size()  # optimize stops at the end of the grid
