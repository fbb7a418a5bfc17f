"""The study driver never loses work or leaves a mess: one driver per study directory, no
process outlives the driver, resume re-runs exactly what was interrupted, timeouts."""

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

from helpers import alive, wait_for
from rltune.cli import main

TINY_TRAINER = Path(__file__).parent / "trainers" / "tiny_trainer.py"


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def rows(study_dir):
    try:
        with (Path(study_dir) / "trials.csv").open() as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        return []


SPEC = """
    name: slow
    command: [{python}, {trainer}, --steps, "{steps}", --sleep, "{sleep}"]
    metric: reward
    trainer: {{job_dir: true}}
    search_space:
      learning_rate: {{type: float, low: 1.0e-4, high: 1.0e-2, scale: log}}
    trials: {trials}
    parallel: 2
    sampler: {{name: random, seed: 0}}
"""


def slow_spec(tmp_path, trials=6, steps=4, sleep=0.25, extra=""):
    text = textwrap.dedent(SPEC.format(python=sys.executable, trainer=TINY_TRAINER, trials=trials, steps=steps,
                                       sleep=sleep)) + textwrap.dedent(extra)
    return write(tmp_path / "spec.yaml", text)


def start_driver(spec, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "rltune", "tune", str(spec), "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def trainer_and_worker_pids(out):
    pids = set()
    for trial in (Path(out) / "trials").glob("*"):
        for name in ("pid", "job/trainer.pid"):
            path = trial / name
            if path.exists() and path.read_text().strip():
                pids.add(int(path.read_text()))
    return pids


def running_trainers(out):
    return lambda: any(alive(int(p.read_text())) for p in Path(out).glob("trials/*/job/trainer.pid")
                       if p.read_text().strip())


# ---------------------------------------------------------------- one driver per study directory
def test_a_second_driver_on_the_same_study_is_refused_with_the_holders_pid(tmp_path):
    spec = slow_spec(tmp_path, trials=2, steps=400, sleep=0.2)
    out = tmp_path / "study"
    first = start_driver(spec, out)
    try:
        assert wait_for(lambda: (out / "study.db").exists() and (out / "lock").exists())
        for extra in ((), ("--resume",)):
            second = subprocess.run([sys.executable, "-m", "rltune", "tune", str(spec), "--out", str(out), *extra],
                                    capture_output=True, text=True, timeout=120)
            assert second.returncode == 2
            assert f"pid {first.pid}" in second.stderr or "already holds a study" in second.stderr
            assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first driver is untouched and goes on
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert {r["state"] for r in rows(out)} <= {"COMPLETE", "FAIL"}


def test_two_fresh_drivers_racing_for_one_directory(tmp_path):
    spec = slow_spec(tmp_path, trials=2, steps=2, sleep=0.05)
    out = tmp_path / "study"
    procs = [start_driver(spec, out) for _ in range(2)]
    codes = sorted(p.wait(timeout=180) for p in procs)
    assert codes == [0, 2]
    assert len(rows(out)) == 2 and all(r["state"] == "COMPLETE" for r in rows(out))


# ---------------------------------------------------------------- no process outlives the driver
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_worker_or_trainer_outlives_the_driver(tmp_path, sig):
    spec = slow_spec(tmp_path, trials=4, steps=200, sleep=0.2)
    out = tmp_path / "study"
    driver = start_driver(spec, out)
    assert wait_for(running_trainers(out))
    pids = trainer_and_worker_pids(out)
    assert len(pids) >= 2
    driver.send_signal(sig)
    driver.communicate(timeout=60)
    if sig == signal.SIGTERM:  # handled like Ctrl-C: running trials recorded as interrupted
        assert driver.returncode == 130
        assert any(r["reason"] == "interrupted" for r in rows(out))
    assert wait_for(lambda: not any(alive(p) for p in pids), timeout=15), \
        [p for p in pids if alive(p)]


# ---------------------------------------------------------------- resume
def test_resume_reruns_interrupted_trials_and_never_replays_the_sampler(tmp_path):
    spec = slow_spec(tmp_path, trials=6, steps=4, sleep=0.3)
    out = tmp_path / "study"
    driver = start_driver(spec, out)
    assert wait_for(lambda: sum(r["state"] == "COMPLETE" for r in rows(out)) >= 2)
    driver.send_signal(signal.SIGINT)
    driver.communicate(timeout=60)
    interrupted = {r["learning_rate"] for r in rows(out) if r["reason"] == "interrupted"}
    assert interrupted
    assert main(["tune", str(spec), "--out", str(out), "--resume"]) == 0  # in this process: no JAX import to wait for
    after = rows(out)
    complete = [r for r in after if r["state"] == "COMPLETE"]
    assert len(complete) == 6
    lrs = [r["learning_rate"] for r in complete]
    assert len(set(lrs)) == 6  # no configuration ran twice
    assert interrupted <= set(lrs)  # each interrupted one ran again, with its parameters


def test_grid_study_resumed_runs_every_point_exactly_once(tmp_path):
    spec = write(tmp_path / "grid.yaml", f"""
        name: grid
        command: [{sys.executable}, {TINY_TRAINER}, --steps, "3", --sleep, "0.3"]
        metric: reward
        trainer: {{job_dir: true}}
        search_space:
          learning_rate: {{grid: [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03]}}
        trials: 6
        parallel: 2
        sampler: grid
    """)
    out = tmp_path / "study"
    driver = start_driver(spec, out)
    assert wait_for(lambda: sum(r["state"] == "COMPLETE" for r in rows(out)) >= 2)
    driver.send_signal(signal.SIGINT)
    driver.communicate(timeout=60)
    assert main(["tune", str(spec), "--out", str(out), "--resume"]) == 0
    complete = sorted(float(r["learning_rate"]) for r in rows(out) if r["state"] == "COMPLETE")
    assert complete == [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03]


def test_resume_rebuilds_the_schedulers_rungs(tmp_path):
    from rltune.tune.driver import StudyDriver
    from rltune.tune.spec import load_spec

    spec_path = slow_spec(tmp_path, trials=3, steps=5, sleep=0.0,
                          extra="budget_steps: 50\nscheduler: {name: asha, min_steps: 10, reduction_factor: 2}\n")
    out = tmp_path / "study"
    assert main(["tune", str(spec_path), "--out", str(out)]) == 0
    driver = StudyDriver(load_spec(spec_path), out, resume=True)
    study = optuna.load_study(study_name="slow", storage=f"sqlite:///{out / 'study.db'}")
    for t in study.get_trials():
        driver._replay(t)
    # the first rung (10 steps) holds the three trials' values again, as in the first run
    assert driver.scheduler.boundaries()[0] == 10
    assert len(driver.scheduler._rungs[0]) == 3


# ---------------------------------------------------------------- timeouts
def test_trial_timeout_kills_a_hanging_trainer_and_the_study_goes_on(tmp_path):
    spec = slow_spec(tmp_path, trials=2, steps=1000, sleep=1.0, extra="trial_timeout: 2\nmax_failed_trials: 5\n")
    out = tmp_path / "study"
    start = time.time()
    assert main(["tune", str(spec), "--out", str(out)]) == 1  # every trial failed
    assert time.time() - start < 60
    table = rows(out)
    assert len(table) == 2 and all(r["reason"] == "timeout after 2 s" for r in table)
    assert not any(alive(p) for p in trainer_and_worker_pids(out) if p != os.getpid())


def test_max_time_stops_the_study_and_resume_finishes_it(tmp_path):
    spec = slow_spec(tmp_path, trials=4, steps=6, sleep=0.5, extra="max_time: 4\n")
    out = tmp_path / "study"
    start = time.time()
    main(["tune", str(spec), "--out", str(out)])
    assert time.time() - start < 60
    assert any(r["reason"] == "interrupted" for r in rows(out))


def test_corrupt_study_db_is_a_usage_error(tmp_path, capsys):
    spec = slow_spec(tmp_path, trials=1, steps=1, sleep=0)
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(spec), "--out", str(out), "--resume"])
    assert exc.value.code == 2
    assert "study.db" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["lock", "study.db"]  # spec.yaml not written
