"""Study specs: the Cloud ML Engine fixture, the native format, errors, round trip, hooks."""

from pathlib import Path

import pytest
import yaml

from rltune.errors import UsageError
from rltune.tune import (
    SamplerSpec,
    SchedulerSpec,
    SearchSpace,
    StudySpec,
    check_runnable,
    discrete_param,
    dump_spec,
    float_param,
    int_param,
    load_spec,
    spec_from_dict,
    spec_to_dict,
    validate_against_agent,
    with_command,
)
from rltune.tune.gcp import spec_from_gcp
from rltune.tune.space import Param

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "hyperparam.yaml"
if not FIXTURE.exists():  # the shared folder sits beside the checkout (CI) or under /work
    FIXTURE = Path("/work/shared/fixtures/hyperparam.yaml")


def _write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _gcp(params: list | None = None, **hp) -> dict:
    if params is None:
        params = [{"parameterName": "lr", "type": "DOUBLE", "minValue": 0.1, "maxValue": 0.2}]
    return {"trainingInput": {"hyperparameters": {"params": params, **hp}}}


def _native(**over) -> dict:
    data = {"agent": "ppo", "search_space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "scale": "log"}}}
    data.update(over)
    return data


# ============================================================ Cloud ML Engine format
@pytest.mark.skipif(not FIXTURE.exists(), reason="shared fixture not found")
def test_fixture_loads_exactly():
    spec = load_spec(FIXTURE)
    assert spec.space == SearchSpace(
        (
            Param("update_target", "int", low=5000, high=20000, scale="log"),
            Param("init_eta", "float", low=0.8, high=0.95, scale="log"),
            Param("learning_rate", "float", low=1e-5, high=1e-3, scale="log"),
            Param("batch_size", "discrete", values=(4, 16, 32, 64, 128, 256, 512)),
        )
    )
    assert spec.goal == "maximize" and spec.metric == "reward"
    assert spec.num_trials == 40 and spec.parallel == 5
    assert spec.sampler == SamplerSpec("gp") and spec.scheduler == SchedulerSpec("fifo")
    assert spec.early_stopping is False
    assert spec.scale_tier == "BASIC_GPU"
    assert spec.agent is None and spec.command is None
    assert spec.max_failed_trials is None and spec.failed_trials_limit == 20
    assert spec.name == "hyperparam"


def test_gcp_defaults_and_mapping():
    spec = spec_from_gcp(_gcp())
    assert (spec.goal, spec.metric, spec.num_trials, spec.parallel) == ("maximize", "training/hptuning/metric", 1, 1)
    assert spec.sampler.name == "gp" and spec.failed_trials_limit == 1
    spec = spec_from_gcp(
        _gcp(
            goal="MINIMIZE",
            maxTrials=10,
            maxFailedTrials=3,
            enableTrialEarlyStopping=True,
            resumePreviousJobId="job_7",
            algorithm="RANDOM_SEARCH",
        )
    )
    assert spec.goal == "minimize" and spec.max_failed_trials == 3 and spec.early_stopping
    assert spec.resume_from == "job_7" and spec.sampler.name == "random"
    assert spec_from_gcp(_gcp(algorithm="ALGORITHM_UNSPECIFIED")).sampler.name == "gp"


def test_gcp_param_types_and_scales():
    params = [
        {"parameterName": "a", "type": "INTEGER", "minValue": 1, "maxValue": 9, "scaleType": "UNIT_REVERSE_LOG_SCALE"},
        {"parameterName": "b", "type": "DOUBLE", "minValue": 0, "maxValue": 1, "scaleType": "NONE"},
        {"parameterName": "c", "type": "CATEGORICAL", "categoricalValues": ["x", "y"]},
        {"parameterName": "d", "type": "DISCRETE", "discreteValues": [0.5, 1, 2], "scaleType": "UNIT_LINEAR_SCALE"},
    ]
    space = spec_from_gcp(_gcp(params)).space
    assert [(p.kind, p.scale) for p in space] == [
        ("int", "reverse_log"),
        ("float", "linear"),
        ("categorical", "linear"),
        ("discrete", "linear"),
    ]


def test_gcp_grid_with_double_names_the_param():
    params = [
        {"parameterName": "n", "type": "INTEGER", "minValue": 1, "maxValue": 3},
        {"parameterName": "lr", "type": "DOUBLE", "minValue": 0.1, "maxValue": 0.2},
    ]
    with pytest.raises(UsageError) as e:
        spec_from_gcp(_gcp(params, algorithm="GRID_SEARCH"))
    assert e.value.field == "trainingInput.hyperparameters.params[1].type"
    assert "'lr'" in str(e.value) and "DISCRETE" in str(e.value)
    ok = spec_from_gcp(_gcp(params[:1], algorithm="GRID_SEARCH"))
    assert ok.sampler.name == "grid"


P = "trainingInput.hyperparameters.params[0]"


@pytest.mark.parametrize(
    "param, field, words",
    [
        ({"parameterName": "x", "type": "DOUBLE", "minValue": 2, "maxValue": 1}, f"{P}.minValue", "greater than maxValue"),
        (
            {"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1, "scaleType": "UNIT_LOG_SCALE"},
            f"{P}.minValue",
            "> 0",
        ),
        ({"parameterName": "x", "type": "INTEGER", "minValue": 1.5, "maxValue": 3}, f"{P}.minValue", "integer"),
        ({"parameterName": "x", "type": "DOUBLE", "maxValue": 1}, f"{P}.minValue", "missing"),
        ({"parameterName": "x", "type": "DOUBLE", "minValue": "a", "maxValue": 1}, f"{P}.minValue", "number"),
        ({"parameterName": "x", "type": "CATEGORICAL", "categoricalValues": []}, f"{P}.categoricalValues", "non-empty"),
        ({"parameterName": "x", "type": "CATEGORICAL", "categoricalValues": [1]}, f"{P}.categoricalValues", "strings"),
        ({"parameterName": "x", "type": "DISCRETE", "discreteValues": []}, f"{P}.discreteValues", "non-empty"),
        ({"parameterName": "x", "type": "DISCRETE", "discreteValues": [4, 2]}, f"{P}.discreteValues", "increasing"),
        ({"parameterName": "x", "type": "DISCRETE"}, f"{P}.discreteValues", "missing"),
        ({"parameterName": "x", "type": "FLOAT", "minValue": 0, "maxValue": 1}, f"{P}.type", "DOUBLE"),
        ({"parameterName": "x", "minValue": 0, "maxValue": 1}, f"{P}.type", "missing"),
        (
            {"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1, "scaleType": "LOG"},
            f"{P}.scaleType",
            "UNIT_LOG_SCALE",
        ),
        ({"type": "DOUBLE", "minValue": 0, "maxValue": 1}, f"{P}.parameterName", "missing"),
        ({"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1, "step": 2}, f"{P}.step", "parameterName"),
        (
            {"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1, "discreteValues": [1]},
            f"{P}.discreteValues",
            "minValue",
        ),
    ],
)
def test_gcp_param_errors_name_the_field(param, field, words):
    with pytest.raises(UsageError) as e:
        spec_from_gcp(_gcp([param]))
    assert e.value.field == field
    assert words in str(e.value)


@pytest.mark.parametrize(
    "data, field, words",
    [
        (_gcp(maxTrials=0), "trainingInput.hyperparameters.maxTrials", ">= 1"),
        (_gcp(maxParallelTrials="two"), "trainingInput.hyperparameters.maxParallelTrials", "integer"),
        (_gcp(goal="BEST"), "trainingInput.hyperparameters.goal", "MAXIMIZE"),
        (_gcp(algorithm="BAYES"), "trainingInput.hyperparameters.algorithm", "GRID_SEARCH"),
        (_gcp(maxTrail=3), "trainingInput.hyperparameters.maxTrail", "maxTrials"),
        (_gcp(enableTrialEarlyStopping="yes"), "trainingInput.hyperparameters.enableTrialEarlyStopping", "True"),
        (_gcp(params=[]), "trainingInput.hyperparameters.params", "non-empty"),
        ({"trainingInput": {"scaleTier": "BASIC"}}, "trainingInput.hyperparameters", "missing"),
        ({"trainingInput": {"hyperparameters": {}, "pythonModule": "t.task"}}, "trainingInput.pythonModule", "--"),
        ({"trainingInput": {"hyperparametrs": {}}}, "trainingInput.hyperparametrs", "hyperparameters"),
        ({"trainingInput": {}, "extra": 1}, "extra", "trainingInput"),
    ],
)
def test_gcp_study_errors_name_the_field(data, field, words):
    with pytest.raises(UsageError) as e:
        spec_from_gcp(data)
    assert e.value.field == field
    assert words in str(e.value)


def test_gcp_duplicate_param_and_ignored_machine_fields():
    p = {"parameterName": "x", "type": "INTEGER", "minValue": 1, "maxValue": 2}
    with pytest.raises(UsageError) as e:
        spec_from_gcp(_gcp([p, p]))
    assert e.value.field.endswith("params[1].parameterName")
    data = _gcp([p])
    data["trainingInput"].update(masterType="complex_model_m", region="us-central1", scaleTier="CUSTOM")
    assert spec_from_gcp(data).scale_tier == "CUSTOM"


# ============================================================ native format
def test_native_full_spec():
    spec = spec_from_dict(
        {
            "name": "s",
            "agent": "ppo",
            "env": "CartPole-v1",
            "fixed": {"total_steps": 1000},
            "search_space": {
                "lr": {"type": "float", "low": "1e-5", "high": 1.0e-2, "scale": "log"},
                "n": {"type": "int", "low": 2, "high": 8},
                "act": {"type": "categorical", "values": ["tanh", "relu"]},
                "h": {"type": "discrete", "values": [32, 64]},
                "clip": {"grid": [0.1, 0.2]},
                "opt": ["adam", "sgd"],
                "w": {"low": 1, "high": 4},
            },
            "goal": "MINIMIZE",
            "trials": 8,
            "parallel": 2,
            "max_failed_trials": 3,
            "sampler": {"name": "tpe", "seed": 3, "n_startup_trials": 4},
            "scheduler": {"name": "hypertrick", "num_phases": 5, "r": 0.25},
            "budget_steps": 5000,
            "stop": {"metric_threshold": 475},
        }
    )
    assert spec.space["lr"].low == 1e-5  # YAML 1.1 reads 1e-5 as a string: accepted
    assert [p.kind for p in spec.space] == ["float", "int", "categorical", "discrete", "discrete", "categorical", "int"]
    assert spec.goal == "minimize" and spec.metric == "reward"
    assert spec.sampler == SamplerSpec("tpe", 3, {"n_startup_trials": 4})
    assert spec.scheduler == SchedulerSpec("hypertrick", {"num_phases": 5, "r": 0.25})
    assert spec.early_stopping is True  # implied by a scheduler other than fifo
    assert spec.stop == {"metric_threshold": 475} and spec.budget_steps == 5000


def test_native_defaults():
    spec = spec_from_dict(_native(), default_name="file-stem")
    assert spec.name == "file-stem" and spec.sampler == SamplerSpec("tpe")
    assert spec.scheduler.name == "fifo" and spec.early_stopping is False
    assert spec.executor == "local" and spec.num_trials == 1
    cmd = spec_from_dict({"command": "python train.py --x 1", "search_space": {"a": [1, 2]}})
    assert cmd.command == ("python", "train.py", "--x", "1")
    assert cmd.metric == "training/hptuning/metric"


@pytest.mark.parametrize(
    "over, field, words",
    [
        ({"trails": 3}, "trails", "trials"),
        ({"trials": 0}, "trials", ">= 1"),
        ({"parallel": 1.5}, "parallel", "integer"),
        ({"goal": "best"}, "goal", "maximize"),
        ({"sampler": "bayes"}, "sampler", "tpe"),
        ({"sampler": {"name": "tpe", "n_startup": 1}}, "sampler.n_startup", "n_startup_trials"),
        ({"scheduler": "pbt2"}, "scheduler", "hyperband"),
        ({"stop": {"reward": 3}}, "stop.reward", "metric_threshold"),
        ({"executor": "slurm"}, "executor", "ray"),
        ({"command": ["x"]}, "command", "not both"),
        ({"fixed": {"lr": 0.1}}, "fixed.lr", "search_space"),
        ({"fixed": [1]}, "fixed", "mapping"),
        ({"early_stopping": "yes"}, "early_stopping", "true or false"),
        ({"search_space": {"lr": {"type": "float", "low": 2, "high": 1}}}, "search_space.lr.low", "greater than"),
        ({"search_space": {"lr": {"type": "float", "low": 0, "high": 1, "scale": "log"}}}, "search_space.lr.low", "> 0"),
        ({"search_space": {"lr": {"type": "real", "low": 0, "high": 1}}}, "search_space.lr.type", "float"),
        ({"search_space": {"lr": {"type": "float", "low": 0, "high": 1, "scale": "ln"}}}, "search_space.lr.scale", "log"),
        ({"search_space": {"lr": {"low": 0, "hi": 1}}}, "search_space.lr.hi", "high"),
        ({"search_space": {"h": {"type": "discrete", "values": [2, 1]}}}, "search_space.h.values", "increasing"),
        ({"search_space": {"h": {"type": "discrete", "grid": []}}}, "search_space.h.grid", "non-empty"),
        ({"search_space": {"a": {"type": "categorical", "values": []}}}, "search_space.a.values", "non-empty"),
        ({"search_space": {"x": {"type": "float", "low": 0, "high": 1}}, "sampler": "grid"}, "search_space.x", "type: discrete"),
        ({"search_space": None}, "search_space", "mapping"),
        ({"search_space": {}}, "search_space", "empty"),
        ({"search_space": {"lr": "0.1"}}, "search_space.lr", "mapping"),
    ],
)
def test_native_errors_name_the_field(over, field, words):
    with pytest.raises(UsageError) as e:
        spec_from_dict(_native(**over))
    assert e.value.field == field
    assert words in str(e.value)


def test_unknown_top_level_field_lists_allowed(tmp_path):
    with pytest.raises(UsageError) as e:
        load_spec(_write(tmp_path, "agent: ppo\nsearch_space: {}\nlearning_rate: 3\n"))
    assert e.value.field == "learning_rate"
    assert "search_space" in str(e.value) and "trials" in str(e.value)


def test_missing_search_space(tmp_path):
    with pytest.raises(UsageError) as e:
        load_spec(_write(tmp_path, "agent: ppo\n"))
    assert e.value.field == "search_space"


# ============================================================ files
def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = _write(tmp_path, "agent: ppo\nsearch_space:\n  lr: {type: float, low: 1\n  x: [\n", "bad.yaml")
    with pytest.raises(UsageError) as e:
        load_spec(path)
    assert e.value.field.startswith("bad.yaml:")
    assert int(e.value.field.split(":")[1]) >= 3
    assert "YAML" in str(e.value)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(UsageError, match="no such"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(UsageError, match="mapping"):
        load_spec(_write(tmp_path, "- a\n- b\n"))


def test_native_round_trip(tmp_path):
    spec = StudySpec(
        name="rt",
        agent="ppo",
        env="CartPole-v1",
        fixed={"total_steps": 1000, "num_envs": 4},
        space=SearchSpace(
            (
                float_param("learning_rate", 1e-5, 1e-2, "log"),
                float_param("gamma", 0.9, 0.999, "reverse_log"),
                int_param("num_minibatches", 2, 8),
                discrete_param("hidden_size", [32, 64, 128]),
                Param("activation", "categorical", values=("tanh", "relu")),
            )
        ),
        goal="maximize",
        num_trials=16,
        parallel=2,
        max_failed_trials=4,
        sampler=SamplerSpec("tpe", 0, {"multivariate": True}),
        scheduler=SchedulerSpec("asha", {"reduction_factor": 3}),
        early_stopping=True,
        budget_steps=20000,
        stop={"metric_threshold": 475.0},
        resume_from="studies/old",
        storage="sqlite:///x.db",
        executor="population",
    )
    path = dump_spec(spec, tmp_path / "study" / "spec.yaml")
    assert load_spec(path) == spec
    assert spec_from_dict(spec_to_dict(spec)) == spec
    assert yaml.safe_load(path.read_text())["search_space"]["gamma"]["scale"] == "reverse_log"


@pytest.mark.skipif(not FIXTURE.exists(), reason="shared fixture not found")
def test_gcp_spec_round_trips_through_native(tmp_path):
    spec = with_command(load_spec(FIXTURE), ["python", "-m", "trainer.task"])
    assert load_spec(dump_spec(spec, tmp_path / "spec.yaml")) == spec


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_load(path):
    spec = load_spec(path)
    if spec.agent is None and spec.command is None:
        spec = with_command(spec, ["python", "-m", "trainer.task"])
    check_runnable(spec)


# ============================================================ command, runnable, agent hook
def test_with_command_and_check_runnable(tmp_path):
    path = _write(tmp_path, yaml.safe_dump(_gcp()))
    spec = load_spec(path)
    with pytest.raises(UsageError) as e:
        check_runnable(spec)
    assert "--" in str(e.value)
    spec = load_spec(path, command=["python", "-m", "trainer.task"])
    assert spec.command == ("python", "-m", "trainer.task")
    check_runnable(spec)
    with pytest.raises(UsageError, match="agent"):
        with_command(spec_from_dict(_native()), ["python"])
    with pytest.raises(UsageError, match="empty"):
        with_command(spec, [])


def test_validate_against_agent():
    spec = spec_from_dict(_native(fixed={"total_steps": 10}))
    validate_against_agent(spec, {"lr", "total_steps"})
    with pytest.raises(UsageError) as e:
        validate_against_agent(spec, {"learning_rate", "total_steps"})
    assert e.value.field == "search_space.lr" and "learning_rate" in str(e.value)
    with pytest.raises(UsageError) as e:
        validate_against_agent(spec, {"lr"})
    assert e.value.field == "fixed.total_steps"


def test_python_api_validation():
    space = SearchSpace.from_dict({"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "scale": "log"}})
    with pytest.raises(UsageError) as e:
        StudySpec(name="x", space=space, agent="ppo", command=("python",))
    assert e.value.field == "command"
    with pytest.raises(UsageError) as e:
        StudySpec(name="x", space=space, num_trials=0)
    assert e.value.field == "trials"
    assert StudySpec(name="x", space=space, num_trials=7).failed_trials_limit == 3


def test_every_example_spec_loads_and_prepares():
    import importlib.util
    from pathlib import Path

    from rltune.tune.spec import load_spec, with_command
    from rltune.tune.study import prepare

    examples = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        spec = load_spec(path)
        if spec.agent is None and spec.command is None:
            spec = with_command(spec, ["python", "-m", "trainer.task"])
        if spec.executor == "ray" and importlib.util.find_spec("ray") is None:
            continue  # the ray extra is not installed here
        prepare(spec)
