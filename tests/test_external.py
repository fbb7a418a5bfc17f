"""External-command trials (rltune.tune.external) and the hypertune metric file (rltune.hypertune)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rltune import hypertune
from rltune.errors import UsageError
from rltune.tune.external import _MetricChannels, build_argv, build_env, run_external_trial

TRAINER = Path(__file__).parent / "trainers" / "tiny_trainer.py"
COMMAND = [sys.executable, str(TRAINER)]
sys.path.insert(0, str(TRAINER.parent))
from tiny_trainer import expected_history  # noqa: E402


def run(tmp_path, params, tag="reward", **kw):
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("timeout", 30)
    return run_external_trial(COMMAND, params, 7, tmp_path / "trial_7", tag, **kw)


# ---------------------------------------------------------------------------------------------
# argv and environment
# ---------------------------------------------------------------------------------------------


def test_build_argv_formats_and_orders_flags(tmp_path):
    params = {"lr": 0.0003, "batch_size": 64, "tiny": 1e-05, "use_gae": True, "off": np.False_,
              "algo": "ppo", "gamma": np.float32(0.99), "n": np.int64(3), "one": 1.0}
    argv = build_argv(["python", "-m", "trainer.task", "--user=1"], params, tmp_path / "job")
    assert argv[:5] == ["python", "-m", "trainer.task", "--user=1", f"--job-dir={tmp_path / 'job'}"]
    assert argv[5:] == ["--algo=ppo", "--batch_size=64", f"--gamma={float(np.float32(0.99))!r}",
                        "--lr=0.0003", "--n=3", "--off=false", "--one=1.0", "--tiny=1e-05",
                        "--use_gae=true"]
    assert float(argv[7].split("=")[1]) == float(np.float32(0.99))  # round-trips exactly


@pytest.mark.parametrize("params", [{"a b": 1}, {"x": [1, 2]}, {"": 1}])
def test_build_argv_rejects_unusable_params(tmp_path, params):
    with pytest.raises(UsageError):
        build_argv(["t"], params, tmp_path)


def test_build_env(tmp_path):
    env = build_env(7, tmp_path / "job", tmp_path / "m.metrics", base_env={"HOME": "/h"})
    assert env["HOME"] == "/h"
    assert json.loads(env["TF_CONFIG"])["task"] == {"type": "master", "index": 0, "trial": "7"}
    assert env["CLOUD_ML_TRIAL_ID"] == "7"
    assert env["CLOUD_ML_HP_METRIC_FILE"] == str(tmp_path / "m.metrics")
    assert env["CLOUD_ML_JOB_DIR"] == str(tmp_path / "job")


# ---------------------------------------------------------------------------------------------
# hypertune reporter and readers
# ---------------------------------------------------------------------------------------------


def test_hypertune_reports_json_lines(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "out.metrics"
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(path))
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "12")
    ht = hypertune.HyperTune()
    ht.report_hyperparameter_tuning_metric("reward", 1.5, 100)
    ht.report_hyperparameter_tuning_metric(hyperparameter_metric_tag="loss", metric_value=np.float32(2),
                                           global_step=100)
    ht.report_hyperparameter_tuning_metric("reward", 0.1, 200)
    first = json.loads(path.read_text().splitlines()[0])
    assert first["reward"] == 1.5 and first["global_step"] == 100 and first["trial"] == "12"
    assert isinstance(first["timestamp"], float)
    assert hypertune.read_metric_file(path, "reward") == [(100, 1.5), (200, 0.1)]
    assert hypertune.read_metric_file(path, "loss") == [(100, 2.0)]


def test_metric_tail_partial_lines_and_rewrites(tmp_path):
    path = tmp_path / "out.metrics"
    tail = hypertune.MetricTail(path, "m")
    assert tail.poll() == []
    line = lambda v, s, t: json.dumps({"m": str(v), "global_step": str(s), "timestamp": t}) + "\n"
    path.write_text(line(1, 10, 1.0) + line(2, 20, 2.0)[:9])  # original helper: strings
    assert tail.poll() == [(10, 1.0)]
    assert hypertune.read_metric_file(path, "m") == [(10, 1.0)]  # partial line dropped
    path.write_text(line(1, 10, 1.0) + line(2, 20, 2.0) + "not json\n")
    assert tail.poll() == [(20, 2.0)]
    # the original helper rewrites the file with its last N reports: nothing is repeated
    path.write_text(line(2, 20, 2.0) + line(3, 30, 3.0))
    assert tail.poll() == [(30, 3.0)]


# ---------------------------------------------------------------------------------------------
# run_external_trial with the tiny trainer
# ---------------------------------------------------------------------------------------------


def test_hypertune_channel_and_environment(tmp_path):
    seen = []
    result = run(tmp_path, {"learning_rate": 0.01, "steps": 4, "verbose": True},
                 report=lambda s, v: seen.append((s, v)))
    expected = expected_history(0.01, 4)
    assert result.status == "completed", result.reason
    assert result.history == expected == seen
    assert (result.step, result.metric) == expected[-1] and result.metric == pytest.approx(-1.0)
    assert result.returncode == 0 and result.reason is None and result.wall_time > 0
    trial_dir = tmp_path / "trial_7"
    env = json.loads((trial_dir / "job" / "env.json").read_text())
    assert env["CLOUD_ML_TRIAL_ID"] == "7"
    assert json.loads(env["TF_CONFIG"])["task"]["trial"] == "7"
    assert env["CLOUD_ML_HP_METRIC_FILE"] == str(trial_dir / "hypertune.metrics")
    assert env["CLOUD_ML_JOB_DIR"] == str(trial_dir / "job")
    assert "step 40:" in (trial_dir / "trainer.log").read_text()


def test_tensorboard_channel(tmp_path):
    result = run(tmp_path, {"learning_rate": 1e-4, "steps": 3, "channel": "tb"})
    assert result.status == "completed", result.reason
    assert result.history == [(s, float(np.float32(v))) for s, v in expected_history(1e-4, 3)]


def test_both_channels_are_not_counted_twice(tmp_path):
    result = run(tmp_path, {"learning_rate": 1e-3, "steps": 3, "channel": "both"})
    assert result.status == "completed", result.reason
    assert result.history == expected_history(1e-3, 3)


def test_nonzero_exit_fails(tmp_path):
    result = run(tmp_path, {"steps": 5, "fail-at": 3})
    assert (result.status, result.reason, result.returncode) == ("failed", "exit code 3", 3)
    assert result.metric is None and len(result.history) == 2
    assert "failing at step 3" in (tmp_path / "trial_7" / "trainer.log").read_text()


def test_killed_by_signal_fails(tmp_path):
    pid_file = tmp_path / "trial_7" / "job" / "trainer.pid"

    def kill_it(step, value):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)

    result = run(tmp_path, {"steps": 50, "sleep": 0.2}, report=kill_it)
    assert (result.status, result.reason, result.returncode) == ("failed", "killed by signal 9", -9)


def test_report_stop_stops_early(tmp_path):
    result = run(tmp_path, {"learning_rate": 0.1, "steps": 50, "sleep": 0.1},
                 report=lambda step, value: "stop" if step >= 20 else None)
    assert result.status == "stopped"
    assert result.history == expected_history(0.1, 50)[:2]
    assert (result.step, result.metric) == result.history[-1]
    assert result.returncode == -signal.SIGTERM  # terminated long before its 50 steps


def test_nan_metric_fails(tmp_path):
    result = run(tmp_path, {"steps": 5, "nan-at": 3, "sleep": 0.05})
    assert (result.status, result.reason) == ("failed", "metric is NaN at step 30")
    assert result.metric is None


def test_no_metric_fails(tmp_path):
    result = run(tmp_path, {"steps": 2, "tag": "loss"})
    assert (result.status, result.reason) == ("failed", "no metric 'reward' reported")
    assert result.returncode == 0


def test_timeout_kills_even_a_trainer_that_ignores_sigterm(tmp_path):
    command = [sys.executable, "-c",
               "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)",
               "--"]
    start = time.monotonic()
    result = run_external_trial(command, {}, 1, tmp_path / "t", "m", poll_interval=0.05,
                                timeout=0.5, grace_period=0.3)
    assert (result.status, result.reason) == ("failed", "timeout after 0.5s")
    assert result.returncode == -signal.SIGKILL
    assert time.monotonic() - start < 5


def test_missing_command_fails(tmp_path):
    result = run_external_trial(["/nonexistent/trainer"], {}, 1, tmp_path / "t", "m")
    assert result.status == "failed" and "cannot start" in result.reason
    assert result.returncode is None


def test_leftovers_of_an_earlier_run_are_ignored(tmp_path):
    first = run(tmp_path, {"learning_rate": 0.01, "steps": 2, "channel": "both"})
    second = run(tmp_path, {"learning_rate": 0.01, "steps": 2, "channel": "tb"})
    assert len(first.history) == len(second.history) == 2


def test_channel_choice_prefers_hypertune_written_a_poll_later(tmp_path):
    from tensorboardX import SummaryWriter

    metric_file, job_dir = tmp_path / "h.metrics", tmp_path / "job"
    channels = _MetricChannels(metric_file, job_dir, "m")
    writer = SummaryWriter(str(job_dir))
    writer.add_scalar("m", 0.5, 1)
    writer.flush()
    assert channels.poll() == []  # TensorBoard alone: wait one poll for the hypertune file
    hypertune.HyperTune(metric_file).report_hyperparameter_tuning_metric("m", 0.1, 1)
    assert channels.poll() == [(1, 0.1)] and channels.source == "hypertune"
    writer.add_scalar("m", 0.7, 2)
    writer.close()
    assert channels.poll() == []

    tb_only = _MetricChannels(tmp_path / "none.metrics", job_dir, "m")
    assert tb_only.poll() == []
    assert tb_only.poll() == [(1, 0.5), (2, float(np.float32(0.7)))]
    assert tb_only.source == "tensorboard"


def test_read_metric_file_keeps_a_complete_last_line_without_newline(tmp_path):
    path = tmp_path / "out.metrics"
    path.write_text('{"m": 1.0, "global_step": 1}\n{"m": 2.5, "global_step": 2}')
    assert hypertune.read_metric_file(path, "m") == [(1, 1.0), (2, 2.5)]
    assert hypertune.read_metric_file(tmp_path / "missing", "m") == []


# ---------------------------------------------------------------------------------------------
# Any command line: flag styles, templates, working directory, events under runs/, aggregation
# ---------------------------------------------------------------------------------------------

from rltune.tune.external import (  # noqa: E402
    TrainerOptions, aggregate, check_command, kill_trial_trainer, placeholders)

KEBAB = Path(__file__).parent / "trainers" / "kebab_trainer.py"
from kebab_trainer import expected_scores  # noqa: E402
from helpers import alive as _alive  # noqa: E402
from helpers import wait_for  # noqa: E402


def test_flag_styles_kebab_case_and_job_dir_on_request(tmp_path):
    params = {"learning_rate": 0.5, "num_layers": 2}
    space = TrainerOptions(flag_style="space", kebab_case=True)
    assert build_argv(["t"], params, tmp_path, options=space) == [
        "t", "--learning-rate", "0.5", "--num-layers", "2"]
    assert build_argv(["t"], params, tmp_path, options=TrainerOptions()) == [
        "t", "--learning_rate=0.5", "--num_layers=2"]  # native default: no --job-dir
    assert build_argv(["t"], params, tmp_path, options=TrainerOptions(job_dir=True, flag_style="space")) == [
        "t", "--job-dir", str(tmp_path), "--learning_rate", "0.5", "--num_layers", "2"]


def test_command_template_fills_placeholders_and_appends_nothing(tmp_path):
    command = ["train", "--lr={learning_rate}", "--out", "{trial_dir}/x", "--seed", "{seed}", "{{literal}}",
               "--id={trial_id}"]
    assert placeholders(command) == ["learning_rate", "trial_dir", "seed", "trial_id"]
    argv = build_argv(command, {"learning_rate": 1e-05}, tmp_path / "job",
                      options=TrainerOptions(job_dir=True), context={"trial_id": 4, "trial_dir": "/d"})
    assert argv == ["train", "--lr=1e-05", "--out", "/d/x", "--seed", "4", "{literal}", "--id=4"]
    # a `seed` hyperparameter (or fixed value) wins over the trial number
    assert build_argv(["t", "{seed}"], {"seed": 9}, tmp_path, context={"trial_id": 4}) == ["t", "9"]


@pytest.mark.parametrize("command, values, field, words", [
    (["t", "{lr}"], {"learning_rate": None}, "command[1]", "unknown placeholder {lr}"),
    (["t", "{learning_rate}"], {"learning_rate": None, "layers": None}, "search_space.layers", "no {layers}"),
    (["t", "{trial_dir}"], {"trial_dir": None}, "search_space.trial_dir", "filled in by rltune"),
    (["t"], {"a b": None}, "search_space.a b", "flag name"),
])
def test_check_command_names_the_field(command, values, field, words):
    with pytest.raises(UsageError) as err:
        check_command(command, values, searched=tuple(values))
    assert err.value.field == field and words in str(err.value)


def test_fixed_values_must_be_scalars():
    with pytest.raises(UsageError, match="fixed.layers"):
        check_command(["t"], {"layers": [1, 2]})


def test_aggregate_rules():
    values = [1.0, 5.0, 2.0, 3.0]
    assert aggregate(values) == 3.0
    assert aggregate(values, "max") == 5.0 and aggregate(values, "min") == 1.0
    assert aggregate(values, "mean_last_2") == 2.5 and aggregate(values, "mean_last_10") == 2.75
    for bad in ("mean", "mean_last_0", "best", 3):
        with pytest.raises(UsageError, match="trainer.aggregate"):
            TrainerOptions(aggregate=bad)
    with pytest.raises(UsageError, match="trainer.flag_style"):
        TrainerOptions.from_dict({"flag_style": "colon"})
    with pytest.raises(UsageError, match="trainer.cwdir"):
        TrainerOptions.from_dict({"cwdir": "trial"})


def test_strict_kebab_trainer_in_its_trial_dir_with_events_under_runs(tmp_path, monkeypatch):
    """A trainer that rejects unknown flags, wants `--learning-rate VALUE`, writes its events
    under runs/<name>/ of its cwd; rltune runs it with a relative trial dir and reads the max."""
    monkeypatch.chdir(tmp_path)
    options = TrainerOptions(flag_style="space", kebab_case=True, cwd="trial", aggregate="max")
    seen = []
    result = run_external_trial([sys.executable, str(KEBAB)], {"learning_rate": 0.01}, 3,
                                Path("study/trials/3"), "episode/score", poll_interval=0.05, timeout=30,
                                fixed={"num_layers": 3, "run_name": "exp1", "out_json": "args.json"},
                                options=options, report=lambda s, v: seen.append((s, v)))
    assert result.status == "completed", (result.reason, (tmp_path / "study/trials/3/trainer.log").read_text())
    scores = [float(np.float32(v)) for v in expected_scores(0.01, 4)]
    assert [v for _, v in result.history] == scores
    assert result.metric == max(scores) and result.metric != scores[-1]
    assert seen == [(100 * k, max(scores[:k])) for k in range(1, 5)]  # the running objective
    trial_dir = tmp_path / "study/trials/3"
    args = json.loads((trial_dir / "args.json").read_text())
    assert (args["num_layers"], args["run_name"], args["cwd"]) == (3, "exp1", str(trial_dir))
    assert list((trial_dir / "runs" / "exp1").glob("events*"))
    env = json.loads(json.dumps(build_env(3, trial_dir / "job", trial_dir / "m")))
    assert Path(env["CLOUD_ML_JOB_DIR"]).is_absolute()


def test_template_command_drives_the_strict_trainer(tmp_path):
    command = [sys.executable, str(KEBAB), "--learning-rate={learning_rate}", "--run-name", "trial-{trial_id}",
               "--out-json", "{trial_dir}/args.json"]
    result = run_external_trial(command, {"learning_rate": 0.1}, 5, tmp_path / "t5", "episode/score",
                                poll_interval=0.05, timeout=30,
                                options=TrainerOptions(cwd="trial", aggregate="mean_last_2"))
    assert result.status == "completed", result.reason
    scores = [float(np.float32(v)) for v in expected_scores(0.1, 4)]
    assert result.metric == pytest.approx((scores[-1] + scores[-2]) / 2)
    assert json.loads((tmp_path / "t5" / "args.json").read_text())["run_name"] == "trial-5"


def test_the_strict_trainer_refuses_the_cloud_convention(tmp_path):
    """The service's default argv (--job-dir, --name=value) is an error for this trainer."""
    result = run_external_trial([sys.executable, str(KEBAB)], {"learning_rate": 0.1}, 1, tmp_path / "t",
                                "episode/score", poll_interval=0.05, timeout=30)
    assert (result.status, result.reason) == ("failed", "exit code 2")


def _child_pids(trial_dir: Path) -> tuple[int, int]:
    assert wait_for(lambda: (trial_dir / "child.pid").exists(), 20, interval=0.05)
    return int((trial_dir / "trainer.pid").read_text()), int((trial_dir / "child.pid").read_text())


@pytest.mark.parametrize("way_out", ["stop", "exception", "timeout"])
def test_every_exit_path_kills_the_trainers_process_group(tmp_path, way_out):
    trial_dir = tmp_path / "t"
    pids = []

    def report(step, value):
        pids.extend(_child_pids(trial_dir))
        if way_out == "exception":
            raise RuntimeError("driver went away")
        return "stop" if way_out == "stop" else None

    kw = dict(poll_interval=0.05, grace_period=1.0, fixed={"steps": 200, "sleep": 0.1, "spawn_child": True},
              options=TrainerOptions(flag_style="space", kebab_case=True, cwd="trial"), report=report,
              timeout=1.5 if way_out == "timeout" else 60)
    command = [sys.executable, str(KEBAB)]
    if way_out == "exception":
        with pytest.raises(RuntimeError):
            run_external_trial(command, {"learning_rate": 0.1}, 1, trial_dir, "episode/score", **kw)
    else:
        result = run_external_trial(command, {"learning_rate": 0.1}, 1, trial_dir, "episode/score", **kw)
        expected = {"stop": "stopped early at step 100", "timeout": "timeout after 1.5s"}[way_out]
        assert result.reason == expected
    assert pids and wait_for(lambda: not any(_alive(p) for p in pids), 5, interval=0.05)
    assert not (trial_dir / "trainer.pgid").exists()


_RUNNER = """
import sys
from pathlib import Path
from rltune.tune.external import TrainerOptions, run_external_trial
run_external_trial([sys.executable, {kebab!r}], {{"learning_rate": 0.1}}, 1, Path({trial!r}), "episode/score",
                   fixed={{"steps": 500, "sleep": 0.1, "spawn_child": True}}, poll_interval=0.05,
                   options=TrainerOptions(flag_style="space", kebab_case=True, cwd="trial"))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_trainer_dies_with_a_terminated_worker(tmp_path, sig):
    """SIGTERM to the process running the trial kills the trainer's group on the way out;
    after SIGKILL (no way out) `kill_trial_trainer` does it from the trial dir's pgid file."""
    trial_dir = tmp_path / "t"
    code = _RUNNER.format(kebab=str(KEBAB), trial=str(trial_dir))
    worker = subprocess_run(code)
    trainer, child = _child_pids(trial_dir)
    worker.send_signal(sig)
    assert worker.wait(timeout=20) == -sig
    if sig == signal.SIGKILL:
        assert _alive(trainer) and _alive(child)  # orphans, until someone kills their group
        assert kill_trial_trainer(trial_dir, grace_period=1.0)
    assert wait_for(lambda: not _alive(trainer) and not _alive(child), 10, interval=0.05)
    assert not (trial_dir / "trainer.pgid").exists()
    assert not kill_trial_trainer(trial_dir)


def subprocess_run(code: str):
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def test_native_spec_drives_the_strict_trainer_end_to_end(tmp_path):
    """`rltune tune` with a `trainer:` block and `fixed:` values: the strict kebab-case trainer
    gets exactly its flags, runs in its trial dir, and its max score is the trial's value."""
    from rltune.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""
name: strict
command: [{sys.executable}, {KEBAB}]
metric: episode/score
trainer: {{flag_style: space, kebab_case: true, cwd: trial, aggregate: max}}
fixed: {{num_layers: 2, run_name: e2e, out_json: args.json}}
search_space:
  learning_rate: {{type: float, low: 1.0e-4, high: 1.0e-2, scale: log}}
trials: 2
parallel: 2
sampler: {{name: random, seed: 0}}
""")
    out = tmp_path / "study"
    assert main(["tune", str(spec), "--out", str(out)]) == 0
    import csv

    with (out / "trials.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["state"] for r in table] == ["COMPLETE", "COMPLETE"]
    for r in table:
        lr = float(r["learning_rate"])
        assert float(r["episode/score"]) == pytest.approx(max(expected_scores(lr, 4)), abs=1e-5)
        args = json.loads((out / "trials" / r["number"] / "args.json").read_text())
        assert (args["num_layers"], args["run_name"]) == (2, "e2e")
