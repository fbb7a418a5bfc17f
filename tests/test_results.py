"""The trials table at 80 columns, the live view and ETA, and `rltune status` on a running study."""

import hashlib
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rltune.cli import main
from rltune.errors import UsageError
from rltune.tune.results import TrialRow, eta_seconds, fmt, read_study, render_live, render_table

TINY_TRAINER = Path(__file__).parent / "trainers" / "tiny_trainer.py"


@pytest.mark.parametrize("value, text", [
    (0.0012345, "1.23e-3"), (0.00999, "9.99e-3"), (0.95, "0.95"), (0.98765, "0.988"), (475.0, "475"),
    (-0.0381, "-0.0381"), (1234.5, "1.23e3"), (-1500.0, "-1.5e3"), (9.999e-5, "1e-4"), (0.0, "0"),
    (100_000, "100k"), (12_800, "12.8k"), (1_500_000, "1.5M"), (512, "512"), (None, "-"),
])
def test_numbers_have_three_significant_digits(value, text):
    assert fmt(value) == text


def _trials():
    names = ("learning_rate", "gamma", "ent_coef")
    rows = []
    for n in range(12):
        state = ["COMPLETE", "PRUNED", "FAIL"][n % 3]
        rows.append(TrialRow(number=n, state=state,
                             params={"learning_rate": 1.2345e-4 * (n + 1), "gamma": 0.95 + n / 300, "ent_coef": 0.0},
                             value=None if state == "FAIL" else 100.0 + 30 * n, step=100_000, wall_time=7.25 + n,
                             eval_mean=None if state == "FAIL" else 90.0 + 30 * n,
                             reason="worker killed by signal 9 while writing a checkpoint" if state == "FAIL" else None))
    return names, rows


def test_table_fits_80_columns_with_short_states_and_readable_params():
    names, rows = _trials()
    text = render_table(rows, names, "reward")
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), max(map(len, lines))
    assert "COMP" not in text and "…" not in text
    assert "1.23e-4" in lines[1] and " done " in lines[1] and " stop " in lines[2] and " fail " in lines[3]
    assert "0.00" not in text  # every learning rate readable
    best = [ln for ln in lines if ln.startswith("10*")]  # trial 10 (PRUNED, value 400) is the best
    assert best and "stop" in best[0]
    assert any(ln.startswith("best trial 10: reward 400 (eval 390)") for ln in lines)
    assert "learning_rate=1.36e-3" in text.split("best trial")[1]


def test_empty_columns_are_dropped_and_params_never_split_across_lines():
    names, rows = _trials()
    rows = [r for r in rows if r.state == "COMPLETE"]
    for r in rows:
        r.eval_mean = None
    lines = render_table(rows, names, "reward", width=60).splitlines()
    assert "eval" not in lines[0] and "reason" not in lines[0]
    assert all(len(line) <= 60 for line in lines)
    best_lines = lines[lines.index(next(ln for ln in lines if ln.startswith("best trial"))):]
    tokens = " ".join(best_lines).split()
    for name in names:  # every `name=value` pair is whole on one line
        assert any(line.split().count(t) for line in best_lines for t in tokens if t.startswith(name + "="))
    assert all(t.count("=") <= 1 for t in tokens)


def test_long_parameter_names_are_abbreviated_with_a_legend():
    names = ("very_long_parameter_name_one", "another_quite_long_parameter", "third_parameter_name_x",
             "fourth_parameter_name_y")
    rows = [TrialRow(number=0, state="COMPLETE", params={n: 0.5 for n in names}, value=1.0, step=10, wall_time=1.0)]
    lines = render_table(rows, names, "reward").splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].split()[2] == "vlpno" and any("vlpno=very_long_parameter_name_one" in ln for ln in lines)


def test_eta_from_the_pace_so_far():
    rows = [TrialRow(0, "COMPLETE"), TrialRow(1, "COMPLETE"), TrialRow(2, "RUNNING", step=50),
            TrialRow(3, "RUNNING", step=50)]
    # 3 trial-equivalents of work in 30 s; 10 - 3 = 7 left -> 70 s
    assert eta_seconds(rows, 10, 30.0, 100) == pytest.approx(70.0)
    assert eta_seconds([], 10, 30.0, 100) is None


def test_live_view_shows_best_so_far_eta_and_running_trials():
    rows = [TrialRow(0, "COMPLETE", {"learning_rate": 3e-4}, value=200.0, step=100),
            TrialRow(1, "RUNNING", {"learning_rate": 1e-3}, value=50.0, step=40, started=time.time() - 5)]
    text = render_live(rows, ["learning_rate"], name="s", num_trials=4, elapsed=10.0, budget_steps=100)
    assert "1/4 finished (1 done), 1 running" in text and "ETA 19s" in text  # 1.4 trials of work in 10 s, 2.6 left
    assert "best so far trial 0: reward 200 learning_rate=3e-4" in text
    running = text.splitlines()[-1].split()
    assert running[:5] == ["1", "run", "1e-3", "40", "50"]


def _digest(study_dir: Path) -> str:
    h = hashlib.sha256()
    for name in ("study.db", "study.db-wal"):
        path = study_dir / name
        if path.exists():
            h.update(path.read_bytes())
    return h.hexdigest()


def test_status_while_a_study_runs_in_another_process(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""
        name: watched
        trainer: {job_dir: true}
        metric: reward
        search_space:
          learning_rate: {type: float, low: 1.0e-5, high: 1.0e-1, scale: log}
        budget_steps: 80
        trials: 4
        parallel: 2
        sampler: {name: random, seed: 0}
    """))
    out = tmp_path / "study"
    proc = subprocess.Popen([sys.executable, "-m", "rltune", "tune", str(spec), "--out", str(out), "--",
                             sys.executable, str(TINY_TRAINER), "--steps", "8", "--sleep", "0.25"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen_running = None
    try:
        deadline = time.time() + 60
        while proc.poll() is None and time.time() < deadline:
            if (out / "study.db").exists():
                try:
                    view = read_study(out)
                except UsageError as exc:  # the driver is still creating the storage
                    assert "is starting" in str(exc)
                    time.sleep(0.2)
                    continue
                running = [r for r in view.trials if r.state == "RUNNING" and r.step]
                if running:
                    assert main(["status", str(out)]) == 0
                    text = capsys.readouterr().out
                    # status reads the study again: the trial may have ended meanwhile; look again
                    if any(ln.split()[1:2] == ["run"] and ln.split()[3] != "-" for ln in text.splitlines()
                           if ln[:1].isdigit()):
                        seen_running = text
                        break
            time.sleep(0.2)
        assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert seen_running is not None, "never saw a running trial with a step"
    lines = seen_running.splitlines()
    assert " running" in lines[0] and "ETA" in lines[0]
    header = next(ln for ln in lines if ln.startswith("#"))
    assert header.split()[:5] == ["#", "state", "learning_rate", "step", "reward"]
    rows = [ln.split() for ln in lines[lines.index(header) + 1:] if ln[:1].isdigit()]
    row = next(r for r in rows if r[1] == "run" and r[3] != "-")
    assert 10 <= int(row[3]) <= 80

    before = _digest(out)
    assert main(["status", str(out), "--table"]) == 0
    final = capsys.readouterr().out
    assert _digest(out) == before  # status wrote nothing
    assert final.startswith("study watched: 4/4 finished (4 done), 0 running")
    assert "ETA" not in final.splitlines()[0]
    assert final.count(" done ") == 4 and "best trial" in final


def test_status_of_a_directory_that_is_no_study_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["status", str(tmp_path)])
    assert exc.value.code == 2
    assert "no spec.yaml" in capsys.readouterr().err


def test_status_of_a_study_whose_storage_is_being_created(tmp_path, capsys):
    import sqlite3

    from rltune.tune.spec import dump_spec, spec_from_dict

    dump_spec(spec_from_dict({"name": "new", "command": ["true"], "search_space": {
        "x": {"type": "float", "low": 0.0, "high": 1.0}}}), tmp_path / "spec.yaml")
    sqlite3.connect(tmp_path / "study.db").close()  # the driver created the file, not yet the tables
    with pytest.raises(SystemExit) as exc:
        main(["status", str(tmp_path)])
    assert exc.value.code == 2 and "is starting" in capsys.readouterr().err
    assert (tmp_path / "study.db").stat().st_size == 0  # and status wrote nothing into it
