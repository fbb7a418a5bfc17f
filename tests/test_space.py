"""Search-space model: validation, Optuna mapping, reverse-log sampling, grids."""

import optuna
import pytest

from rltune.errors import UsageError
from rltune.tune.space import (
    Param,
    SearchSpace,
    categorical_param,
    discrete_param,
    float_param,
    int_param,
    mirrored_name,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _space() -> SearchSpace:
    return SearchSpace(
        (
            float_param("lr", 1e-5, 1e-2, "log"),
            float_param("gamma", 0.9, 0.999, "reverse_log"),
            int_param("layers", 1, 4),
            int_param("width", 16, 256, "reverse_log"),
            discrete_param("batch", [16, 32, 64]),
            categorical_param("act", ["tanh", "relu"]),
        )
    )


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, field, words",
    [
        (dict(kind="float", low=2.0, high=1.0), "p.low", "greater than"),
        (dict(kind="float", low=0.0, high=1.0, scale="log"), "p.low", "> 0"),
        (dict(kind="int", low=-1, high=3, scale="reverse_log"), "p.low", "> 0"),
        (dict(kind="int", low=1.5, high=3), "p.low", "integer"),
        (dict(kind="float", high=1.0), "p.low", "needs"),
        (dict(kind="categorical", values=()), "p.values", "non-empty"),
        (dict(kind="discrete", values=()), "p.values", "non-empty"),
        (dict(kind="discrete", values=(1, 4, 2)), "p.values", "strictly increasing"),
        (dict(kind="discrete", values=(1, 1)), "p.values", "strictly increasing"),
        (dict(kind="discrete", values=(1, "a")), "p.values", "numbers"),
        (dict(kind="categorical", values=("a", "a")), "p.values", "distinct"),
        (dict(kind="categorical", values=("a",), scale="log"), "p.scale", "no scale"),
        (dict(kind="double", low=0.0, high=1.0), "p.type", "unknown type"),
        (dict(kind="float", low=0.0, high=1.0, scale="exp"), "p.scale", "unknown scale"),
        (dict(kind="float", low=0.0, high=1.0, values=(1,)), "p.values", "not a list"),
    ],
)
def test_param_validation_names_the_field(kwargs, field, words):
    with pytest.raises(UsageError) as e:
        Param("p", **kwargs)
    assert e.value.field == field
    assert words in str(e.value)


def test_bad_names_and_duplicates():
    with pytest.raises(UsageError, match="identifier"):
        float_param("bad name", 0.0, 1.0)
    with pytest.raises(UsageError, match="reserved"):
        float_param(mirrored_name("x"), 0.0, 1.0)
    with pytest.raises(UsageError) as e:
        SearchSpace((float_param("x", 0, 1), int_param("x", 0, 1)))
    assert e.value.field == "search_space.x"


def test_float_bounds_are_floats_and_low_equal_high_is_allowed():
    p = float_param("x", 1, 1)
    assert p.low == 1.0 and isinstance(p.low, float)


# ---------------------------------------------------------------- optuna mapping
def test_distributions_and_names():
    dists = _space().to_optuna_distributions()
    assert list(dists) == ["lr", "gamma__mirrored", "layers", "width__mirrored", "batch", "act"]
    assert dists["lr"] == optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)
    assert dists["gamma__mirrored"] == optuna.distributions.FloatDistribution(0.9, 0.999, log=True)
    assert dists["width__mirrored"] == optuna.distributions.IntDistribution(16, 256, log=True)
    assert dists["batch"] == optuna.distributions.CategoricalDistribution((16, 32, 64))


def test_suggest_returns_real_values_and_records_them():
    space = _space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        values = space.suggest(trial)
        assert space.contains(values)
        assert isinstance(values["width"], int) and isinstance(values["layers"], int)
        frozen = study.tell(trial, 0.0)
        # the mirrored value is the optuna param; the real value is a user attr
        assert values["gamma"] == pytest.approx(0.9 + 0.999 - frozen.params["gamma__mirrored"])
        assert frozen.user_attrs["gamma"] == values["gamma"]
        assert frozen.user_attrs["width"] == 16 + 256 - frozen.params["width__mirrored"]
        assert "lr" not in frozen.user_attrs
        assert space.values_from_params(frozen.params) == values


def test_fixed_distributions_with_ask():
    space = _space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask(fixed_distributions=space.to_optuna_distributions())
    assert space.contains(space.values_from_params(trial.params))


def test_reverse_log_is_dense_near_the_max():
    space = SearchSpace((float_param("x", 1e-3, 1.0, "reverse_log"), int_param("n", 1, 1000, "reverse_log")))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    xs, ns = [], []
    for _ in range(400):
        trial = study.ask()
        v = space.suggest(trial)
        study.tell(trial, 0.0)
        xs.append(v["x"])
        ns.append(v["n"])
    assert all(1e-3 <= x <= 1.0 for x in xs)
    # mirrored log-uniform: P(x > 0.9) = log(0.101 / 0.001) / log(1000) ~ 0.67 (uniform: 0.1)
    assert sum(x > 0.9 for x in xs) / len(xs) > 0.55
    assert sum(x < 0.5 for x in xs) / len(xs) < 0.2
    assert sum(n > 900 for n in ns) / len(ns) > 0.55


def test_log_scale_is_dense_near_the_min():
    space = SearchSpace((float_param("x", 1e-3, 1.0, "log"),))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    xs = []
    for _ in range(300):
        trial = study.ask()
        xs.append(space.suggest(trial)["x"])
        study.tell(trial, 0.0)
    assert sum(x < 0.1 for x in xs) / len(xs) > 0.55


# ---------------------------------------------------------------- grid, contains, dict form
def test_grid_expands_ints_and_rejects_floats():
    space = SearchSpace((int_param("n", 2, 4), discrete_param("b", [8, 16]), categorical_param("a", ["x"])))
    assert space.grid() == {"n": [2, 3, 4], "b": [8, 16], "a": ["x"]}
    assert space.grid_size() == 6
    with pytest.raises(UsageError) as e:
        _space().grid()
    assert e.value.field == "search_space.lr"
    assert "type: discrete" in str(e.value)


def test_contains():
    p = discrete_param("b", [8, 16])
    assert p.contains(8) and not p.contains(9) and not p.contains(True)
    assert int_param("n", 1, 3).contains(2) and not int_param("n", 1, 3).contains(2.0)
    assert not float_param("x", 0, 1).contains(1.5)


def test_dict_round_trip():
    space = _space()
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert space.to_dict()["lr"] == {"type": "float", "low": 1e-5, "high": 1e-2, "scale": "log"}
    assert space["batch"].values == (16, 32, 64)
    assert space.names[0] == "lr" and len(space) == 6
