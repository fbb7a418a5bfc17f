"""End-to-end tests of the tuning engine: built-in PPO trials, external trainers, faults, resume."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml

from helpers import wait_for
from rltune.cli import main

TINY_TRAINER = Path(__file__).parent / "trainers" / "tiny_trainer.py"


def rows(study_dir):
    with (Path(study_dir) / "trials.csv").open() as fh:
        return list(csv.DictReader(fh))


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


PPO_SPEC = """
    name: tiny-ppo
    agent: ppo
    env: CartPole-v1
    fixed: {num_envs: 4, num_steps: 32, hidden_size: 32}
    budget_steps: 12800
    search_space:
      learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3, scale: log}
      gamma: {type: float, low: 0.95, high: 0.999}
    trials: 6
    parallel: 2
    sampler: {name: random, seed: 0}
"""


def test_ppo_study_and_its_best_config_trains_again_to_the_same_result(tmp_path, capsys):
    spec = write(tmp_path / "spec.yaml", PPO_SPEC)
    out = tmp_path / "study"
    assert main(["tune", str(spec), "--out", str(out), "--eval-episodes", "2"]) == 0
    table = rows(out)
    assert len(table) == 6 and all(r["state"] == "COMPLETE" for r in table)
    assert len({r["learning_rate"] for r in table}) == 6  # really different configs
    for r in table:
        assert (out / "trials" / r["number"] / "metrics.jsonl").exists()
    storage = optuna.load_study(study_name="tiny-ppo", storage=f"sqlite:///{out / 'study.db'}")
    assert len(storage.get_trials()) == 6

    best = max(table, key=lambda r: float(r["reward"]))
    best_config = yaml.safe_load((out / "best_config.yaml").read_text())
    assert best_config["agent"] == "ppo" and best_config["learning_rate"] == pytest.approx(float(best["learning_rate"]))
    assert main(["train", "ppo", "--config", str(out / "best_config.yaml"), "--out", str(tmp_path / "again"),
                 "--eval-episodes", "2"]) == 0
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["reward"] == pytest.approx(float(best["reward"]), rel=1e-6)


def test_unknown_hyperparameter_is_rejected_before_any_trial(tmp_path, capsys):
    spec = write(tmp_path / "spec.yaml", PPO_SPEC.replace("gamma:", "gama:"))
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(spec), "--out", str(tmp_path / "study")])
    assert exc.value.code == 2
    assert "gama" in capsys.readouterr().err
    assert not (tmp_path / "study").exists()


def test_out_of_range_search_space_is_rejected(tmp_path, capsys):
    spec = write(tmp_path / "spec.yaml", PPO_SPEC.replace("high: 0.999", "high: 1.5"))
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(spec), "--out", str(tmp_path / "study")])
    assert exc.value.code == 2
    assert "search_space.gamma" in capsys.readouterr().err


CLOUD_SPEC = """
    trainingInput:
      scaleTier: BASIC
      hyperparameters:
        goal: MAXIMIZE
        hyperparameterMetricTag: reward
        maxTrials: 4
        maxParallelTrials: 2
        algorithm: RANDOM_SEARCH
        params:
        - parameterName: learning_rate
          type: DOUBLE
          minValue: 0.0001
          maxValue: 0.01
          scaleType: UNIT_LOG_SCALE
"""


@pytest.mark.parametrize("channel", ["tb", "hypertune", "both"])
def test_external_trainer_through_the_cloud_format(tmp_path, channel):
    spec = write(tmp_path / "hptuning.yaml", CLOUD_SPEC)
    out = tmp_path / "study"
    code = main(["tune", str(spec), "--out", str(out), "--", sys.executable, str(TINY_TRAINER),
                 "--steps", "3", "--channel", channel])
    assert code == 0
    table = rows(out)
    assert len(table) == 4 and all(r["state"] == "COMPLETE" for r in table)
    import math

    for r in table:
        lr = float(r["learning_rate"])
        assert float(r["reward"]) == pytest.approx(-((math.log10(lr) + 3) ** 2), abs=1e-5)
        env = json.loads((out / "trials" / r["number"] / "job" / "env.json").read_text())
        assert env["CLOUD_ML_TRIAL_ID"] == r["number"]
        assert json.loads(env["TF_CONFIG"])["task"]["trial"] == r["number"]
        assert (out / "trials" / r["number"] / "trainer.log").exists()
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    assert best["learning_rate"] == pytest.approx(
        max(table, key=lambda r: float(r["reward"]))["learning_rate"] and
        float(max(table, key=lambda r: float(r["reward"]))["learning_rate"]))


def test_killed_trial_is_failed_and_the_study_goes_on(tmp_path):
    spec = write(tmp_path / "hptuning.yaml", CLOUD_SPEC)
    out = tmp_path / "study"
    proc = subprocess.Popen([sys.executable, "-m", "rltune", "tune", str(spec), "--out", str(out), "--",
                             sys.executable, str(TINY_TRAINER), "--steps", "10", "--sleep", "0.3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_file = out / "trials" / "0" / "pid"
    assert wait_for(pid_file.exists)
    assert wait_for(lambda: (out / "trials" / "0" / "job" / "trainer.pid").exists())
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # the trial's worker process
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    table = {r["number"]: r for r in rows(out)}
    assert table["0"]["state"] == "FAIL" and "signal 9" in table["0"]["reason"]
    assert sum(r["state"] == "COMPLETE" for r in table.values()) == 3
    assert len(table) == 4


def test_failing_trainer_is_recorded_with_its_reason(tmp_path):
    spec = write(tmp_path / "hptuning.yaml", CLOUD_SPEC.replace("maxTrials: 4", "maxTrials: 2"))
    out = tmp_path / "study"
    assert main(["tune", str(spec), "--out", str(out), "--", sys.executable, str(TINY_TRAINER),
                 "--steps", "3", "--fail-at", "2"]) == 1  # no trial gave a result: an error
    table = rows(out)
    assert [r["state"] for r in table] == ["FAIL", "FAIL"]
    assert all("exit code 3" in r["reason"] for r in table)


def test_interrupted_study_resumes_without_losing_completed_trials(tmp_path, capsys):
    spec = write(tmp_path / "hptuning.yaml", CLOUD_SPEC.replace("maxTrials: 4", "maxTrials: 6"))
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "rltune", "tune", str(spec), "--out", str(out)]
    trainer = ["--", sys.executable, str(TINY_TRAINER), "--steps", "4", "--sleep", "0.25"]
    proc = subprocess.Popen(cmd + trainer, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def completed():
        try:
            return sum(r["state"] == "COMPLETE" for r in rows(out)) >= 2
        except (FileNotFoundError, KeyError):
            return False

    assert wait_for(completed)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    before = {r["number"]: r for r in rows(out) if r["state"] == "COMPLETE"}
    assert len(before) >= 2
    mtimes = {n: (out / "trials" / n / "trainer.log").stat().st_mtime for n in before}

    # Without --resume the existing study is refused, and nothing is touched (the same entry
    # point in this process: a subprocess only added a Python start and imports)
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main(cmd[3:] + trainer)
    assert refused.value.code == 2 and "--resume" in capsys.readouterr().err

    assert main(cmd[3:] + ["--resume"] + trainer) == 0
    after = rows(out)
    complete = [r for r in after if r["state"] == "COMPLETE"]
    assert len(complete) == 6
    for number, row in before.items():  # completed trials kept, not re-run
        match = next(r for r in after if r["number"] == number)
        assert match["state"] == "COMPLETE" and match["reward"] == row["reward"]
        assert (out / "trials" / number / "trainer.log").stat().st_mtime == mtimes[number]
    interrupted = [r for r in after if r["state"] == "FAIL"]
    assert all(r["reason"] == "interrupted" for r in interrupted)


def test_successive_halving_pauses_and_resumes_trials_from_checkpoints(tmp_path):
    spec = write(tmp_path / "spec.yaml", """
        name: sh
        agent: ppo
        env: CartPole-v1
        fixed: {num_envs: 4, num_steps: 32, hidden_size: 32}
        budget_steps: 16384
        search_space:
          learning_rate: {type: float, low: 1.0e-5, high: 3.0e-3, scale: log}
        trials: 4
        parallel: 2
        sampler: {name: random, seed: 0}
        scheduler: {name: successive_halving, reduction_factor: 2, min_steps: 4096}
    """)
    out = tmp_path / "study"
    assert main(["tune", str(spec), "--out", str(out), "--eval-episodes", "0"]) == 0
    table = rows(out)
    states = sorted(r["state"] for r in table)
    assert states.count("COMPLETE") == 1 and states.count("PRUNED") == 3
    winner = next(r for r in table if r["state"] == "COMPLETE")
    # the winner was paused at each rung and resumed from its checkpoint: steps never restart
    steps = [json.loads(line)["step"] for line in (out / "trials" / winner["number"] / "metrics.jsonl").open()]
    assert steps == sorted(steps) and steps[-1] == 16384 and 4096 in steps and 8192 in steps
    best_lr = max(table, key=lambda r: float(r["reward"]))["learning_rate"]
    assert winner["learning_rate"] == best_lr  # the best-scoring trial is the one never stopped


def test_hypertrick_stops_trials_early_in_a_live_study(tmp_path):
    spec = write(tmp_path / "spec.yaml", """
        name: ht
        agent: ppo
        env: CartPole-v1
        fixed: {num_envs: 4, num_steps: 32, hidden_size: 32}
        budget_steps: 10240
        search_space:
          learning_rate: {type: float, low: 1.0e-6, high: 3.0e-3, scale: log}
        trials: 8
        parallel: 2
        sampler: {name: random, seed: 1}
        scheduler: {name: hypertrick, num_phases: 5, r: 0.5}
    """)
    out = tmp_path / "study"
    assert main(["tune", str(spec), "--out", str(out), "--eval-episodes", "0"]) == 0
    table = rows(out)
    pruned = [r for r in table if r["state"] == "PRUNED"]
    assert pruned and all(int(r["steps"]) < 10240 for r in pruned)
    assert any(r["state"] == "COMPLETE" for r in table)


def test_max_failed_trials_stops_the_study(tmp_path):
    spec = write(tmp_path / "hptuning.yaml", CLOUD_SPEC.replace("maxTrials: 4", "maxTrials: 6")
                 .replace("maxParallelTrials: 2", "maxParallelTrials: 1\n        maxFailedTrials: 2"))
    out = tmp_path / "study"
    assert main(["tune", str(spec), "--out", str(out), "--", sys.executable, str(TINY_TRAINER),
                 "--steps", "3", "--fail-at", "1"]) == 1  # no result: an error
    assert [r["state"] for r in rows(out)] == ["FAIL", "FAIL"]


def test_resume_previous_job_reuses_its_completed_trials(tmp_path):
    trainer = ["--", sys.executable, str(TINY_TRAINER), "--steps", "2"]
    first = write(tmp_path / "first.yaml", CLOUD_SPEC.replace("maxTrials: 4", "maxTrials: 2"))
    assert main(["tune", str(first), "--out", str(tmp_path / "a"), *trainer]) == 0
    second = write(tmp_path / "second.yaml", CLOUD_SPEC.replace(
        "maxTrials: 4", f"maxTrials: 3\n        resumePreviousJobId: {tmp_path / 'a'}"))
    assert main(["tune", str(second), "--out", str(tmp_path / "b"), *trainer]) == 0
    table = rows(tmp_path / "b")
    assert len(table) == 3 and all(r["state"] == "COMPLETE" for r in table)
    previous = {r["learning_rate"] for r in rows(tmp_path / "a")}
    assert previous <= {r["learning_rate"] for r in table}
    assert len(list((tmp_path / "b" / "trials").iterdir())) == 1  # only one trial ran again


def test_scheduler_phases_can_be_counted_in_updates(tmp_path):
    spec = write(tmp_path / "spec.yaml", """
        name: units
        agent: ppo
        env: CartPole-v1
        fixed: {num_envs: 4, num_steps: 32, hidden_size: 32}
        budget_steps: 10240
        search_space:
          learning_rate: {type: float, low: 1.0e-6, high: 3.0e-3, scale: log}
        trials: 6
        parallel: 2
        sampler: {name: random, seed: 1}
        scheduler: {name: asha, unit: updates, min_steps: 10, reduction_factor: 2}
    """)
    out = tmp_path / "study"
    assert main(["tune", str(spec), "--out", str(out), "--eval-episodes", "0"]) == 0
    pruned = [r for r in rows(out) if r["state"] == "PRUNED"]
    # 10 updates of 4 x 32 steps = 1280 env steps: every stop lands on a rung in updates
    assert pruned and all(int(r["steps"]) % 1280 == 0 for r in pruned)


def test_unknown_scheduler_unit_is_a_usage_error(tmp_path, capsys):
    spec = write(tmp_path / "spec.yaml", PPO_SPEC + "    scheduler: {name: asha, unit: fortnights}\n")
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(spec), "--out", str(tmp_path / "study")])
    assert exc.value.code == 2 and "scheduler.unit" in capsys.readouterr().err


def test_intermediate_values_reach_the_storage_in_one_transaction_per_flush(tmp_path):
    from sqlalchemy import event

    from rltune.tune.spec import spec_from_dict
    from rltune.tune.storage import FLUSH_SECONDS, StudyStorage, storage_url

    spec = spec_from_dict({"name": "batched", "agent": "ppo", "env": "CartPole-v1", "trials": 2,
                           "search_space": {"gamma": {"type": "float", "low": 0.9, "high": 0.99}}})
    storage = StudyStorage(storage_url(spec, tmp_path, None), spec)
    study = storage.open(resume=False)
    trials = [storage.ask(), storage.ask()]
    assert storage.seconds_to_flush() is None  # nothing buffered
    for step in range(1, 11):
        for i, trial in enumerate(trials):
            storage.report(trial, float(step * (i + 1)), step * 100)
    assert 0.0 < storage.seconds_to_flush() <= FLUSH_SECONDS
    commits = []
    event.listen(storage._storage.engine, "commit", lambda conn: commits.append(1))
    storage.flush()
    assert len(commits) == 1 and storage.seconds_to_flush() is None
    stored = {t.number: t.intermediate_values for t in study.get_trials()}
    assert stored == {i: {step * 100: float(step * (i + 1)) for step in range(1, 11)} for i in range(2)}
    storage.report(trials[0], -1.0, 100)  # a step reported again (a retried trial) keeps its first value
    storage.flush()
    assert study.get_trials()[0].intermediate_values[100] == 1.0
    storage.finish(trials[0], "COMPLETE", 10.0, {"eval_mean": 1.0})
    assert study.get_trials()[0].state == optuna.trial.TrialState.COMPLETE


@pytest.mark.parametrize("own_statements", [True, False])
def test_storage_writes_the_rows_optuna_writes_and_optuna_reads_them_back(tmp_path, own_statements):
    """The driver writes intermediate values and user attributes with statements of its own: the
    rows must be the ones Optuna's own `Trial.report` / `set_user_attr` / `tell` write (compared
    row by row), read back the same through Optuna's public API, in one transaction each. Without
    them (a database other than SQLite or PostgreSQL), Optuna's own writes give the same rows."""
    import math
    import sqlite3

    from sqlalchemy import event

    from rltune.tune.spec import spec_from_dict
    from rltune.tune.storage import StudyStorage, storage_url

    spec = spec_from_dict({"name": "rows", "agent": "ppo", "env": "CartPole-v1", "trials": 2,
                           "search_space": {"gamma": {"type": "float", "low": 0.9, "high": 0.99}}})
    url = storage_url(spec, tmp_path, None)
    storage = StudyStorage(url, spec)
    storage.open(resume=False)
    assert storage._writer is not None  # SQLite: our statements, not Optuna's per-value fallback
    if not own_statements:
        storage._writer = None
    reference = optuna.create_study(storage=url, study_name="reference", direction="maximize")
    reports = [(1.5, 100), (math.nan, 200), (math.inf, 300), (-math.inf, 400), (-2.25, 500), (9.0, 100)]
    attrs = {"eval_mean": 1.0, "reason": None, "timeline": [[1.5, "start", 0]], "trial_dir": "/x"}
    commits = []
    event.listen(storage._storage.engine, "commit", lambda conn: commits.append(1))
    for state, value in (("COMPLETE", 7.0), ("PRUNED", None)):
        ours, theirs = storage.ask(), reference.ask()
        for v, step in reports:
            storage.report(ours, v, step)
            if step not in theirs.study._storage.get_trial(theirs._trial_id).intermediate_values:
                theirs.report(v, step)  # Optuna warns at a step reported twice, and keeps the first
        del commits[:]
        storage.flush()
        storage.set_attrs(ours, attrs)
        assert len(commits) == (2 if own_statements else 1 + len(attrs))  # the values, then the attributes
        storage.finish(ours, state, value, {})
        for key, v in attrs.items():
            theirs.set_user_attr(key, v)
        reference.tell(theirs, value, state=optuna.trial.TrialState[state])

    def table(study_name, sql):  # the rows of one study, by trial number, in the order written
        with sqlite3.connect(tmp_path / "study.db") as db:
            return db.execute(f"SELECT t.number, {sql} JOIN trials t USING (trial_id) JOIN studies s "
                              "USING (study_id) WHERE s.study_name = ? ORDER BY t.number, 2",
                              (study_name,)).fetchall()

    for sql in ("v.step, v.intermediate_value, v.intermediate_value_type FROM trial_intermediate_values v",
                "a.key, a.value_json FROM trial_user_attributes a",
                "t.state, tv.value, tv.value_type FROM trial_values tv"):
        assert table("rows", sql) == table("reference", sql), sql
    assert len(table("rows", "v.step FROM trial_intermediate_values v")) == 10
    loaded = {s: optuna.load_study(study_name=s, storage=url).trials for s in ("rows", "reference")}
    for ours, theirs in zip(*loaded.values()):
        assert str(ours.intermediate_values) == str(theirs.intermediate_values)
        assert ours.intermediate_values[100] == 1.5 and math.isnan(ours.intermediate_values[200])
        assert (ours.state, ours.value, ours.user_attrs) == (theirs.state, theirs.value, theirs.user_attrs)
    assert [t.value for t in loaded["rows"]] == [7.0, -2.25]  # a pruned trial: its last intermediate value


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_the_storage_asks_for_the_trials_optuna_would_give(tmp_path, sampler):
    """`StudyStorage.ask` skips Optuna's look for enqueued trials once none waits: the same
    trials, numbers and sampled values as `Study.ask` (an enqueued one comes first)."""
    from rltune.tune.samplers import make_sampler
    from rltune.tune.spec import spec_from_dict
    from rltune.tune.storage import StudyStorage, storage_url

    spec = spec_from_dict({"name": "asks", "agent": "ppo", "env": "CartPole-v1", "trials": 8,
                           "search_space": {"gamma": {"type": "float", "low": 0.9, "high": 0.99},
                                            "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2,
                                                              "scale": "log"}}})
    runs = []
    for own in (True, False):
        (tmp_path / str(own)).mkdir()
        storage = StudyStorage(storage_url(spec, tmp_path / str(own), None), spec)
        study = storage.open(resume=False)
        study.sampler = make_sampler(sampler, spec.space, 3)
        study.enqueue_trial({"gamma": 0.95, "learning_rate": 1e-3})
        asked = []
        for i in range(8):
            trial = storage.ask() if own else study.ask()
            asked.append((trial.number, spec.space.suggest(trial)))
            if i % 2:  # some finish, some keep running: the sampler sees both
                study.tell(trial, float(i))
        runs.append(asked)
    assert runs[0] == runs[1]
    assert runs[0][0] == (0, {"gamma": 0.95, "learning_rate": 1e-3})
