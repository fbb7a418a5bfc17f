"""Hostile and mistaken input to `rltune tune/train/eval`: exit 2 naming the field, nothing
written (issue 13, defects 5-10). Each test fails on the code before the fix."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from rltune import checkpoint
from rltune.cli import main
from rltune.errors import UsageError
from rltune.schedulers import make_scheduler
from rltune.tune.checks import check_study_db
from rltune.tune.spec import dump_spec, load_spec, spec_differences, spec_to_dict

TRAINER = ["--", sys.executable, "-c", "pass"]
EXTERNAL = """
    name: ext
    command: [python, train.py]
    search_space:
      learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, scale: log}
    trials: 2
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def exits_2(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


# ---------------------------------------------------------------- 7. duplicate YAML keys
@pytest.mark.parametrize("text, line", [
    ("name: a\ntrials: 2\nagent: ppo\nsearch_space: {lr: [1, 2]}\ntrials: 500\n", 5),
    ("agent: ppo\nsearch_space:\n  learning_rate: [1, 2]\n  learning_rate: [3, 4]\n", 4),
    ("trainingInput:\n  hyperparameters:\n    maxTrials: 2\n    maxTrials: 5\n", 4),
])
def test_duplicate_keys_are_refused_with_their_line(tmp_path, text, line):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        load_spec(path)
    assert err.value.field == f"spec.yaml:{line}" and "duplicate key" in str(err.value)


def test_duplicate_keys_in_a_train_config_file(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("learning_rate: 0.1\nlearning_rate: 0.2\n")
    err = exits_2(["train", "ppo", "--config", str(config), "--out", str(tmp_path / "run")], capsys)
    assert "--config" in err and "duplicate key 'learning_rate'" in err
    assert not (tmp_path / "run").exists()


def test_merge_keys_may_still_be_overridden():
    from rltune import yamlsafe

    assert yamlsafe.load("base: &b {a: 1, b: 2}\nx:\n  <<: *b\n  b: 3\n")["x"] == {"a": 1, "b": 3}


# ---------------------------------------------------------------- 9. categorical values
@pytest.mark.parametrize("values, words", [
    ("[adam, null]", "null"),
    ("[1, 1.0]", "one value to Optuna"),
    ("[true, 1, x]", "one value to Optuna"),
    ("[0, false]", "one value to Optuna"),
])
def test_unusable_categorical_values_exit_2(tmp_path, capsys, values, words):
    spec = write(tmp_path / "s.yaml", f"""
        command: [python, t.py]
        search_space:
          opt: {{type: categorical, values: {values}}}
    """)
    err = exits_2(["tune", str(spec), "--out", str(tmp_path / "study")], capsys)
    assert "search_space.opt.values" in err and words in err
    assert not (tmp_path / "study").exists()


# ---------------------------------------------------------------- 10. impossible schedulers
@pytest.mark.parametrize("name, params, field", [
    ("asha", {"min_steps": 1000}, "scheduler.min_steps"),
    ("hyperband", {"min_steps": 5000}, "scheduler.min_steps"),
    ("successive_halving", {"min_steps": 1000}, "scheduler.min_steps"),
    ("median", {"warmup_steps": 1000}, "scheduler.warmup_steps"),
    ("median", {"interval_steps": 2000}, "scheduler.interval_steps"),
    ("asha", {}, "budget_steps"),  # max_steps 1: no room for any rung
])
def test_rungs_beyond_the_budget_are_refused(name, params, field):
    max_steps = 1 if field == "budget_steps" else 1000
    with pytest.raises(UsageError) as err:
        make_scheduler(name, max_steps=max_steps, num_trials=9, **params)
    assert err.value.field == field


def test_impossible_scheduler_in_a_spec_exits_2_before_writing(tmp_path, capsys):
    spec = write(tmp_path / "s.yaml", EXTERNAL + "    budget_steps: 100\n    scheduler: {name: hyperband, "
                 "min_steps: 500}\n")
    err = exits_2(["tune", str(spec), "--out", str(tmp_path / "study"), *TRAINER[:0]], capsys)
    assert "scheduler.min_steps" in err and "budget" in err
    assert not (tmp_path / "study").exists()


# ---------------------------------------------------------------- 8. names, metric default
@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "..", "x\\y"])
def test_a_study_name_cannot_leave_the_studies_dir(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    spec = write(tmp_path / "s.yaml", EXTERNAL.replace("name: ext", f"name: {name!r}"))
    err = exits_2(["tune", str(spec)], capsys)
    assert "name:" in err and "plain name" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_trainer_after_dashes_defaults_the_metric_to_the_hypertune_tag(tmp_path):
    spec = write(tmp_path / "s.yaml", "search_space: {lr: {type: float, low: 0.1, high: 0.2}}\n")
    assert load_spec(spec, command=["python", "t.py"]).metric == "training/hptuning/metric"
    assert load_spec(spec).metric == "reward"


def test_fixed_values_for_an_external_trainer_must_be_flag_values(tmp_path, capsys):
    spec = write(tmp_path / "s.yaml", EXTERNAL + "    fixed: {layers: [64, 64]}\n")
    err = exits_2(["tune", str(spec), "--out", str(tmp_path / "study")], capsys)
    assert "fixed.layers" in err


def test_trainer_block_round_trips_and_the_cloud_format_keeps_job_dir(tmp_path):
    spec = write(tmp_path / "s.yaml", EXTERNAL + "    trainer: {flag_style: space, kebab_case: true, cwd: trial, "
                 "aggregate: mean_last_5}\n")
    loaded = load_spec(spec)
    assert loaded.trainer.flag_style == "space" and loaded.trainer.aggregate == "mean_last_5"
    assert not loaded.trainer.job_dir
    dump_spec(loaded, tmp_path / "out.yaml")
    assert load_spec(tmp_path / "out.yaml") == loaded
    cloud = write(tmp_path / "c.yaml", """
        trainingInput:
          hyperparameters:
            params: [{parameterName: lr, type: DOUBLE, minValue: 0.1, maxValue: 0.2}]
    """)
    assert load_spec(cloud).trainer.job_dir


# ---------------------------------------------------------------- 5. tune: tracebacks -> exit 2
def test_out_naming_a_file(tmp_path, capsys):
    spec = write(tmp_path / "s.yaml", EXTERNAL)
    (tmp_path / "taken").write_text("data")
    err = exits_2(["tune", str(spec), "--out", str(tmp_path / "taken")], capsys)
    assert "--out" in err and "is a file" in err
    assert (tmp_path / "taken").read_text() == "data"


@pytest.mark.parametrize("option, words", [
    ("n_startup_trials: many", "expects int"),
    ("n_startup_trials: true", "expects int"),
    ("gamma: 3", "Python object"),
])
def test_sampler_option_of_the_wrong_type_exits_2_before_the_study_dir(tmp_path, capsys, option, words):
    spec = write(tmp_path / "s.yaml", EXTERNAL + f"    sampler: {{name: tpe, {option}}}\n")
    err = exits_2(["tune", str(spec), "--out", str(tmp_path / "study")], capsys)
    assert "sampler." in err and words in err
    assert not (tmp_path / "study").exists()


def test_storage_that_is_not_a_url(tmp_path, capsys):
    spec = write(tmp_path / "s.yaml", EXTERNAL)
    err = exits_2(["tune", str(spec), "--out", str(tmp_path / "study"), "--storage", "notaurl://x"], capsys)
    assert "storage" in err and "notaurl" in err
    assert not (tmp_path / "study").exists()


def _stored_study(tmp_path: Path, db: bytes | None) -> tuple[Path, Path]:
    spec = write(tmp_path / "s.yaml", EXTERNAL)
    study = tmp_path / "study"
    dump_spec(load_spec(spec), study / "spec.yaml")
    if db is not None:
        (study / "study.db").write_bytes(db)
    return spec, study


@pytest.mark.parametrize("db, words", [
    (b"", "is empty"),
    (b"this is not sqlite at all" * 100, "not a readable SQLite database"),
])
def test_resume_with_a_corrupt_study_db(tmp_path, capsys, db, words):
    spec, study = _stored_study(tmp_path, db)
    err = exits_2(["tune", str(spec), "--out", str(study), "--resume"], capsys)
    assert "--resume" in err and words in err
    assert (study / "study.db").read_bytes() == db  # untouched


def test_check_study_db_wants_optuna_tables_and_the_study(tmp_path):
    import sqlite3

    import optuna

    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(UsageError, match="not an Optuna study database"):
        check_study_db(path)
    good = tmp_path / "good.db"
    optuna.create_study(study_name="a", storage=f"sqlite:///{good}")
    check_study_db(good, "a")
    with pytest.raises(UsageError, match="holds no study 'b'"):
        check_study_db(good, "b")


def test_resume_after_a_param_rename_refuses_and_keeps_spec_yaml(tmp_path, capsys):
    spec, study = _stored_study(tmp_path, None)
    before = (study / "spec.yaml").read_text()
    spec.write_text(spec.read_text().replace("learning_rate:", "lr:"))
    err = exits_2(["tune", str(spec), "--out", str(study), "--resume", "--trials", "5"], capsys)
    assert "search_space.learning_rate: removed" in err and "search_space.lr: added" in err
    assert (study / "spec.yaml").read_text() == before


def test_spec_differences_ignores_what_a_resume_may_change(tmp_path):
    old = spec_to_dict(load_spec(write(tmp_path / "s.yaml", EXTERNAL)))
    new = {**old, "trials": 50, "parallel": 4, "sampler": "random"}
    assert spec_differences(old, new) == []
    new = {**old, "name": "other", "goal": "minimize",
           "search_space": {"learning_rate": {**old["search_space"]["learning_rate"], "high": 0.1}}}
    assert spec_differences(old, new) == [
        "name: 'ext' -> 'other'", "search_space.learning_rate.high: 0.01 -> 0.1",
        "goal: 'maximize' -> 'minimize'"]


# ---------------------------------------------------------------- 5, 6. train / eval
TINY = {"num_envs": 2, "num_steps": 8, "num_minibatches": 1, "update_epochs": 1, "hidden_size": 8,
        "total_steps": 64}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory with a real last/best checkpoint of a tiny PPO config (no training)."""
    from flax import serialization

    from rltune.agents import ppo
    from rltune.config import from_dict, to_dict

    run = tmp_path_factory.mktemp("runs") / "run"
    config = from_dict(ppo.PPOConfig, TINY)
    state = ppo.init(config)
    for which in ("last", "best"):
        checkpoint.save(run / "checkpoints" / checkpoint.FILE_NAME[which], agent="ppo",
                        config=to_dict(config), state=state, extra={"env_steps": 0})
    (run / "config.yaml").write_text(yaml.safe_dump({"agent": "ppo", **to_dict(config)}))
    return run, serialization.to_state_dict(state), to_dict(config)


def test_train_into_an_existing_run_needs_resume(run_dir, capsys):
    run, _, _ = run_dir
    before = sorted(p.name for p in run.rglob("*"))
    err = exits_2(["train", "ppo", "--out", str(run), "--total-steps", "64"], capsys)
    assert "--out" in err and f"--resume {run}" in err
    assert sorted(p.name for p in run.rglob("*")) == before


def test_resume_refuses_a_static_change_and_keeps_config_yaml(run_dir, capsys):
    run, _, _ = run_dir
    before = (run / "config.yaml").read_text()
    err = exits_2(["train", "ppo", "--resume", str(run), "--hidden-size", "16"], capsys)
    assert "--hidden-size" in err and "hidden_size is 8" in err
    assert (run / "config.yaml").read_text() == before


def _crafted(tmp_path: Path, run_dir, edit) -> Path:
    run, state, config = run_dir
    state = {k: v for k, v in state.items()}
    edit(state)
    path = tmp_path / "crafted.msgpack"
    checkpoint.save(path, agent="ppo", config=config, state=state, extra={})
    return path


def test_checkpoint_without_params(tmp_path, run_dir, capsys):
    path = _crafted(tmp_path, run_dir, lambda s: s.pop("params"))
    err = exits_2(["eval", str(path), "--episodes", "1"], capsys)
    assert "checkpoint" in err and "params is missing" in err


def test_checkpoint_with_wrong_shapes(tmp_path, run_dir, capsys):
    from rltune import load_agent
    from rltune.agents import ppo
    from rltune.config import from_dict

    def widen(state):
        params = state["params"]["params"] if "params" in state["params"] else state["params"]
        first = next(iter(params.values()))
        layer = next(iter(first.values()))
        layer["kernel"] = np.zeros((4, 99), np.float32)

    path = _crafted(tmp_path, run_dir, widen)
    err = exits_2(["eval", str(path), "--episodes", "1"], capsys)
    assert "checkpoint" in err and "(4, 99)" in err
    with pytest.raises(UsageError, match=r"\(4, 99\)"):
        load_agent(path)
    with pytest.raises(UsageError, match=r"\(4, 99\)"):  # the resume path checks too
        checkpoint.restore_state(ppo.init(from_dict(ppo.PPOConfig, TINY)), checkpoint.read(path))


def test_trainer_block_with_a_builtin_agent_is_refused(tmp_path):
    spec = write(tmp_path / "s.yaml", "agent: ppo\nsearch_space: {learning_rate: [0.1, 0.2]}\ntrainer: {cwd: trial}\n")
    with pytest.raises(UsageError) as err:
        load_spec(spec)
    assert err.value.field == "trainer"


def test_an_ou_step_past_its_mean_is_refused_before_the_run_dir(tmp_path, capsys):
    out = tmp_path / "run"
    err = exits_2(["train", "td3", "--env", "Pendulum-v1", "--noise-type", "ou", "--ou-theta", "150",
                   "--ou-dt", "0.01", "--out", str(out)], capsys)
    assert "ou_theta" in err and "at most 1" in err and "--ou-dt" in err
    assert not out.exists()
