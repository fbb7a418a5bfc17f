"""The discrete-event simulator: hand-computable cases, curve loading, the command line."""

import argparse
import json
import math

import pytest

from rltune.errors import UsageError
from rltune.schedulers import Scheduler
from rltune.simulate import (Curve, add_arguments, compare, load_curves, parse_scheduler_spec,
                             run, scheduler_factory, simulate, synthetic_curves)


def line(trial, end, value_at_end, value_at_5=0.0, sps=1.0):
    """Points at step 5 and at `end`, one second per step unless told."""
    return Curve(trial, (5, end), (value_at_5, value_at_end), None, sps)


# ---------------------------------------------------------------- hand-computed cases


def test_fifo_two_slots_three_trials():
    # slot 1: a [0, 10] then c [10, 40]; slot 2: b [0, 20]
    curves = [line("a", 10, 1.0), line("b", 20, 3.0), line("c", 30, 2.0)]
    res = simulate(curves, scheduler_factory("fifo"), slots=2)
    assert res.wall_time == 40.0
    assert res.alpha == 1.0 and res.compute == 60.0 and res.full_compute == 60.0
    assert (res.best_score, res.best_trial, res.time_to_best) == (3.0, "b", 20.0)
    assert res.stopped == 0 and res.completed == 3
    assert res.utilisation == pytest.approx(60 / 80)


def test_asha_stop_frees_a_slot():
    # rung at step 5 (eta 4, budget 20). t=5: a reports (first: continues), b reports worse
    # (top max(1, 2 // 4) = 1: stopped) and c starts on its slot; t=10: c reports best ->
    # continues; a ends at 20, c at 25. compute 20 + 5 + 20 = 45 of 60.
    curves = [line("a", 20, 1.0, 0.5), line("b", 20, 9.0, 0.1), line("c", 20, 2.0, 0.9)]
    res = simulate(curves, scheduler_factory("asha", min_steps=5, reduction_factor=4), slots=2)
    assert res.wall_time == 25.0
    assert res.alpha == pytest.approx(0.75)
    assert [o.state for o in res.trials] == ["completed", "stopped", "completed"]
    # b's final 9.0 was never reached; its last report (0.1) is what counts
    assert (res.best_score, res.best_trial, res.time_to_best) == (2.0, "c", 25.0)


def test_pause_frees_the_slot_and_resume_waits():
    # synchronous SH, rung at 10 (eta 2, budget 20), 3 trials on 2 slots. t=10: a, b pause,
    # c starts; t=20: c completes the rung, keep max(1, 3 // 2) = 1 = a; c stopped, b stopped;
    # a resumes at 20 and ends at 30. compute 10 + 10 + 10 + 10 = 40 of 60.
    curves = [Curve(t, (10, 20), (v, v)) for t, v in (("a", 3.0), ("b", 1.0), ("c", 2.0))]
    factory = scheduler_factory("successive_halving", min_steps=10, reduction_factor=2)
    res = simulate(curves, factory, slots=2)
    assert res.wall_time == 30.0
    assert res.alpha == pytest.approx(40 / 60)
    assert res.pauses == 2
    assert [o.state for o in res.trials] == ["completed", "stopped", "stopped"]
    assert [o.end_time for o in res.trials] == [30.0, 20.0, 20.0]


def test_switch_cost_is_paid_by_each_resumed_trial():
    # as above, with a resume costing 4 s: a resumes at 20, pays 4 s, ends at 34; a never-pausing
    # scheduler (fifo) is unaffected
    curves = [Curve(t, (10, 20), (v, v)) for t, v in (("a", 3.0), ("b", 1.0), ("c", 2.0))]
    factory = scheduler_factory("successive_halving", min_steps=10, reduction_factor=2)
    res = simulate(curves, factory, slots=2, switch_cost=4.0)
    assert res.wall_time == 34.0 and res.compute == 44.0
    fifo = scheduler_factory("fifo")
    assert simulate(curves, fifo, slots=2, switch_cost=4.0).wall_time == simulate(curves, fifo, slots=2).wall_time
    with pytest.raises(UsageError, match="switch-cost"):
        simulate(curves, factory, slots=2, switch_cost=-1)


def test_per_point_times_include_startup():
    # 4 s before step 0 is done (compile), then 1 s per 10 steps
    c = Curve("x", (0, 10, 20), (0.0, 1.0, 2.0), (4.0, 5.0, 6.0))
    assert c.time_at(0) == 4.0 and c.time_at(15) == pytest.approx(5.5)
    res = simulate([c, c], scheduler_factory("fifo"), slots=1)
    assert res.wall_time == 12.0 and res.compute == 12.0
    d = Curve("y", (10, 20), (1.0, 2.0), (2.0, 3.0))  # no step 0: starts at (0, 0)
    assert d.time_at(5) == pytest.approx(1.0)


def test_curve_shorter_than_budget_ends_early():
    curves = [line("a", 20, 1.0), line("b", 10, 5.0)]
    res = simulate(curves, scheduler_factory("hypertrick", num_phases=2), slots=2)
    assert [o.last_step for o in res.trials] == [20, 10]
    assert res.completed == 2


def test_value_at_uses_last_point_at_or_before():
    c = Curve("x", (10, 20, 30), (1.0, 2.0, 3.0))
    assert [c.value_at(s) for s in (5, 10, 19, 20, 35)] == [1.0, 1.0, 1.0, 2.0, 3.0]


class NeverResumes(Scheduler):
    """Pauses everyone at step 5 and never lets them go."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self._bounds = [5]

    def _decide(self, trial_id, index, value):
        return "pause"


def test_stuck_barrier_is_an_error():
    with pytest.raises(RuntimeError, match="paused"):
        simulate([line("a", 10, 1.0)], lambda n, m: NeverResumes(max_steps=m), slots=1)


def test_compare_is_deterministic_and_samples_workers():
    curves = synthetic_curves(12, max_steps=10_000, points=10, seed=3)
    factories = {"fifo": scheduler_factory("fifo"), "asha": scheduler_factory("asha")}
    a = compare(curves, factories, 3, workers=5, seeds=3, seed=7)
    b = compare(curves, factories, 3, workers=5, seeds=3, seed=7)
    assert a == b
    assert all(len(r.trials) == 5 for runs in a.values() for r in runs)
    assert len({tuple(o.trial for o in r.trials) for r in a["fifo"]}) == 3  # 3 orderings
    assert all(r.alpha == 1.0 for r in a["fifo"])
    with pytest.raises(UsageError) as e:
        compare(curves, factories, 3, workers=13)
    assert e.value.field == "workers"
    with pytest.raises(UsageError) as e:
        simulate(curves, factories["fifo"], 0)
    assert e.value.field == "slots"


# ---------------------------------------------------------------- loading curves


def test_load_csv_with_and_without_time(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("trial,step,value,time\n1,20,2.0,4\n1,10,1.0,2\n2,10,0.5,1\n2,20,0.7,2\n")
    curves = load_curves(p)
    assert [c.trial for c in curves] == ["1", "2"]
    assert curves[0].steps == (10, 20) and curves[0].values == (1.0, 2.0)
    assert curves[0].times == (2.0, 4.0)
    q = tmp_path / "d.csv"
    q.write_text("trial,step,value\na,10,1\na,20,2\n")
    (c,) = load_curves(q, seconds_per_step=0.5)
    assert c.times is None and c.time_at(20) == 10.0


def test_load_json(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"curves": [
        {"trial": 0, "points": [[10, 1.0], [20, 2.0]], "seconds_per_step": 0.1},
        {"trial": "b", "points": [[10, 1.0, 3.0], [20, 2.0, 5.0]]}]}))
    a, b = load_curves(p)
    assert a.trial == "0" and a.time_at(20) == pytest.approx(2.0)
    assert b.times == (3.0, 5.0)


def test_load_study_directory(tmp_path):
    for tid, rewards in (("0", [1.0, 2.0]), ("1", [3.0])):
        d = tmp_path / "trials" / tid
        d.mkdir(parents=True)
        lines = [json.dumps({"event": "start"})]
        lines += [json.dumps({"step": 100 * (i + 1), "reward": r}) for i, r in enumerate(rewards)]
        (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    curves = load_curves(tmp_path)
    assert [(c.trial, c.steps, c.values) for c in curves] == [
        ("0", (100, 200), (1.0, 2.0)), ("1", (100,), (3.0,))]


@pytest.mark.parametrize("name, text, field", [
    ("missing.csv", None, "curves"),
    ("bad.json", "{not json", "curves"),
    ("shape.json", '{"runs": []}', "curves"),
    ("empty.json", '{"curves": []}', "curves"),
    ("pts.json", '{"curves": [{"trial": 1}]}', "curves[0]"),
    ("val.json", '{"curves": [{"trial": 1, "points": [[10, "x"]]}]}', "curves[0].points"),
    ("dup.json", '{"curves": [{"trial": 1, "points": [[10, 1], [10, 2]]}]}', "curves[0].points"),
    ("cols.csv", "trial,step\n1,10\n", "curves"),
    ("num.csv", "trial,step,value\n1,10,abc\n", "curves.1"),
    ("step.csv", "trial,step,value\n1,2.5,1\n", "curves.1"),
    ("time.csv", "trial,step,value,time\n1,10,1,5\n1,20,1,\n", "curves.1"),
    ("back.csv", "trial,step,value,time\n1,10,1,5\n1,20,1,4\n", "curves.1"),
    ("zero.csv", "trial,step,value\n1,0,1\n", "curves.1"),
])
def test_bad_curve_files_raise_usage_error(tmp_path, name, text, field):
    p = tmp_path / name
    if text is not None:
        p.write_text(text)
    with pytest.raises(UsageError) as e:
        load_curves(p)
    assert e.value.field == field


def test_study_directory_without_trials(tmp_path):
    with pytest.raises(UsageError) as e:
        load_curves(tmp_path)
    assert e.value.field == "curves"


# ---------------------------------------------------------------- command line


def cli(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args(argv))


def test_cli_prints_table(tmp_path, capsys):
    p = tmp_path / "c.csv"
    rows = ["trial,step,value"] + [f"{t},{s},{t * s / 100}" for t in range(5)
                                   for s in range(10, 101, 10)]
    p.write_text("\n".join(rows) + "\n")
    out_json = tmp_path / "out.json"
    assert cli([str(p), "--scheduler", "fifo", "--scheduler", "hypertrick:num_phases=4",
                "--scheduler", "asha", "--workers", "4", "--slots", "2", "--seeds", "2",
                "--output", str(out_json)]) == 0
    out = capsys.readouterr().out
    for word in ("fifo", "hypertrick:num_phases=4", "asha", "wall time", "alpha",
                 "best score", "time to best", "4 workers on 2 slots"):
        assert word in out
    saved = json.loads(out_json.read_text())
    assert saved["results"]["fifo"]["alpha"] == 1.0
    assert len(saved["runs"]["asha"]) == 2


def test_cli_default_runs_all_schedulers(tmp_path, capsys):
    p = tmp_path / "c.json"
    curves = synthetic_curves(6, max_steps=1000, points=10)
    p.write_text(json.dumps({"curves": [
        {"trial": c.trial, "points": [list(x) for x in zip(c.steps, c.values)]}
        for c in curves]}))
    assert cli([str(p), "--slots", "3"]) == 0
    out = capsys.readouterr().out
    assert "successive_halving" in out and "hyperband" in out


@pytest.mark.parametrize("argv, field", [
    (["--workers", "9"], "workers"),
    (["--seeds", "0"], "seeds"),
    (["--slots", "0"], "slots"),
    (["--scheduler", "bogus"], "scheduler"),
    (["--scheduler", "asha:eta=3"], "scheduler.eta"),
    (["--scheduler", "hypertrick:r"], "scheduler"),
])
def test_cli_bad_arguments(tmp_path, argv, field):
    p = tmp_path / "c.csv"
    p.write_text("trial,step,value\n1,10,1\n1,20,2\n2,10,1\n2,20,3\n")
    with pytest.raises(UsageError) as e:
        cli([str(p)] + argv)
    assert e.value.field == field


def test_parse_scheduler_spec():
    assert parse_scheduler_spec("hypertrick:num_phases=10,r=0.25") == (
        "hypertrick", {"num_phases": 10, "r": 0.25})
    assert parse_scheduler_spec("fifo") == ("fifo", {})


def test_synthetic_curves_are_seeded():
    a, b = synthetic_curves(4, seed=1), synthetic_curves(4, seed=1)
    assert a == b and a != synthetic_curves(4, seed=2)
    assert all(0 <= v <= 500 and not math.isnan(v) for c in a for v in c.values)
