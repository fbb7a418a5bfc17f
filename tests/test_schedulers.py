"""Schedulers on synthetic curves with known answers, the pure rules, the barrier protocol."""

import random

import pytest

from rltune.errors import UsageError
from rltune.schedulers import (SCHEDULERS, asha_promotable, make_scheduler, median_decision,
                               scheduler_params, successive_halving_survivors)
from rltune.schedulers.hyperband import HyperBandScheduler, hyperband_bracket_sizes, interleave
from rltune.schedulers.successive_halving import SuccessiveHalvingScheduler
from rltune.simulate import Curve, scheduler_factory, simulate

MAX_STEPS = 2700
EARLY = ("median", "asha", "successive_halving", "hyperband", "hypertrick")
PARAMS = {"median": {"min_trials": 3}, "asha": {}, "successive_halving": {},
          "hyperband": {}, "hypertrick": {}, "fifo": {}}


def ranked_curves(n: int, goal: str = "maximize") -> list[Curve]:
    """Curve q has quality q (0 worst, n-1 best) at every step: the ranking never changes.
    For "minimize" the values are losses, so the best curve has the lowest values."""
    steps = tuple(range(100, MAX_STEPS + 1, 100))
    curves = []
    for q in range(n):
        sign = 1 if goal == "maximize" else -1
        values = tuple(sign * (q + 1) * s / MAX_STEPS for s in steps)
        curves.append(Curve(f"q{q}", steps, values))
    return curves


def outcome(result, label):
    return next(o for o in result.trials if o.trial == label).state


@pytest.mark.parametrize("goal", ["maximize", "minimize"])
@pytest.mark.parametrize("name", EARLY)
def test_best_curve_is_never_stopped(name, goal):
    curves = ranked_curves(16, goal)
    factory = scheduler_factory(name, goal=goal, **PARAMS[name])
    rng = random.Random(0)
    for _ in range(10):
        order = rng.sample(curves, len(curves))
        res = simulate(order, factory, slots=4)
        assert outcome(res, "q15") == "completed"
        assert res.best_trial == "q15"
        assert res.stopped > 0


@pytest.mark.parametrize("goal", ["maximize", "minimize"])
@pytest.mark.parametrize("name", EARLY)
def test_worst_curves_are_stopped(name, goal):
    curves = ranked_curves(16, goal)
    factory = scheduler_factory(name, goal=goal, **PARAMS[name])
    rng = random.Random(1)
    for _ in range(10):
        # the worst three arrive last (the earliest arrivals of ASHA / median / HyperTrick are
        # protected, and hyperband's rung-free bracket lets its trials run)
        order = rng.sample(curves[3:], 13) + [curves[2], curves[1], curves[0]]
        res = simulate(order, factory, slots=4)
        states = [outcome(res, f"q{q}") for q in range(3)]
        if name == "hyperband":
            assert states.count("stopped") >= 2
        else:
            assert states == ["stopped"] * 3


def test_fifo_stops_nothing():
    res = simulate(ranked_curves(8), scheduler_factory("fifo"), slots=3)
    assert res.stopped == 0 and res.completed == 8 and res.alpha == 1.0
    assert make_scheduler("fifo", max_steps=10).boundaries() == []


def test_successive_halving_known_answer():
    # 16 trials, eta = 3, rungs 100, 300, 900: keep 5, then 1, then 1 -> only the best finishes
    factory = scheduler_factory("successive_halving", min_steps=100, reduction_factor=3)
    res = simulate(random.Random(3).sample(ranked_curves(16), 16), factory, slots=5)
    assert [o.trial for o in res.trials if o.state == "completed"] == ["q15"]
    survivors_rung0 = sorted(o.trial for o in res.trials if o.last_step > 100)
    assert survivors_rung0 == sorted(f"q{q}" for q in range(11, 16))


def test_asha_known_answer_best_first():
    # arrivals in decreasing quality: each later arrival is worse than the top 1/eta -> stopped
    factory = scheduler_factory("asha", min_steps=100, reduction_factor=3)
    res = simulate(ranked_curves(9)[::-1], factory, slots=1)
    assert [o.state for o in res.trials] == ["completed"] + ["stopped"] * 8
    assert all(o.last_step == 100 for o in res.trials[1:])


# ---------------------------------------------------------------- pure rules


def test_asha_promotable():
    assert asha_promotable(1.0, [1.0], 3)                   # first arrival continues
    assert not asha_promotable(1.0, [2.0, 1.0], 3)          # top max(1, 2 // 3) = 1
    assert asha_promotable(2.0, [2.0, 2.0], 3)              # ties count in its favour
    assert asha_promotable(5.0, [9, 8, 7, 6, 5, 1], 3) is False  # keep 2 of 6
    assert asha_promotable(8.0, [9, 8, 7, 6, 5, 1], 3)
    assert asha_promotable(1.0, [2.0, 1.0], 3, goal="minimize")


def test_median_decision():
    assert median_decision(0.0, [1.0, 2.0], min_trials=3)   # too few others: continue
    assert not median_decision(1.0, [1.0, 2.0, 3.0], min_trials=3)
    assert median_decision(2.0, [1.0, 2.0, 3.0], min_trials=3)
    assert median_decision(1.0, [1.0, 2.0, 3.0], goal="minimize", min_trials=3)


def test_median_uses_best_so_far_and_warmup():
    sched = make_scheduler("median", max_steps=100, interval_steps=10, warmup_steps=30,
                           min_trials=1)
    assert sched.boundaries() == list(range(10, 100, 10))
    assert sched.on_report(0, 10, 5.0) == "continue"
    assert sched.on_report(1, 10, 1.0) == "continue"   # before warmup: never stopped
    sched.on_report(0, 30, 5.0)
    assert sched.on_report(1, 30, 1.0) == "stop"
    sched.on_report(0, 20, 5.0)  # (no new boundary for trial 0: ignored)
    sched2 = make_scheduler("median", max_steps=100, interval_steps=10, min_trials=1)
    sched2.on_report(0, 10, 9.0)
    sched2.on_report(1, 10, 9.0)
    sched2.on_report(0, 20, 5.0)
    assert sched2.on_report(1, 20, 4.0) == "continue"  # its best so far (9) beats the median


def test_successive_halving_survivors_ties_go_to_earlier_report():
    reports = [(0, 1.0), (1, 3.0), (2, 3.0), (3, 0.0), (4, 2.0), (5, 2.0)]
    assert successive_halving_survivors(reports, 3) == [1, 2]
    assert successive_halving_survivors(reports, 2) == [1, 2, 4]
    assert successive_halving_survivors(reports, 3, goal="minimize") == [3, 0]
    assert successive_halving_survivors([(7, 1.0)], 3) == [7]


# ---------------------------------------------------------------- the barrier protocol


def test_barrier_pause_resume_and_stop():
    sched = SuccessiveHalvingScheduler(max_steps=90, num_trials=3, min_steps=10,
                                       reduction_factor=3)
    assert sched.boundaries() == [10, 30]
    assert sched.on_report(0, 10, 9.0) == "pause"
    assert sched.on_report(1, 10, 1.0) == "pause"
    assert sched.paused() == [0, 1] and sched.resumable() == []
    assert sched.on_report(2, 10, 5.0) == "stop"       # completes the rung: decided at once
    assert sched.paused() == [] and sched.resumable() == [0]
    assert sched.stopped() == [1, 2]
    assert sched.on_report(0, 30, 9.0) == "continue"   # alone at rung 1: no waiting
    assert sched.resumable() == []
    sched.on_complete(0)


def test_barrier_releases_when_a_trial_fails():
    sched = SuccessiveHalvingScheduler(max_steps=90, num_trials=3, min_steps=10)
    assert sched.on_report(0, 10, 1.0) == "pause"
    assert sched.on_report(1, 10, 2.0) == "pause"
    sched.on_complete(2)                                # failed before rung 0
    assert sched.resumable() == [1] and sched.stopped() == [0]
    with pytest.raises(ValueError):
        sched.on_report(3, 10, 1.0)                    # a 4th trial: more than num_trials


def test_barrier_withdraws_a_paused_trial_that_is_given_up():
    sched = SuccessiveHalvingScheduler(max_steps=90, num_trials=3, min_steps=10)
    assert sched.on_report(0, 10, 9.0) == "pause"
    assert sched.on_report(0, 12, 9.0) == "pause"     # still waiting
    sched.on_complete(0)                                # cancelled while paused
    assert sched.paused() == []
    assert sched.on_report(1, 10, 1.0) == "pause"
    assert sched.on_report(2, 10, 2.0) == "continue"   # rung complete with 1 and 2 only
    assert sched.stopped() == [1]


def test_hyperband_brackets():
    assert hyperband_bracket_sizes(16, 3, 3) == [9, 4, 2, 1]
    for n in (1, 5, 17, 100):
        assert sum(hyperband_bracket_sizes(n, 3, 3)) == n
    deal = interleave([9, 4, 2, 1])
    assert len(deal) == 16 and deal[0] == 0 and sorted(set(deal)) == [0, 1, 2, 3]
    sched = HyperBandScheduler(max_steps=2700, num_trials=16, min_steps=100)
    assert sched.boundaries() == [100, 300, 900]
    assert [b.boundaries() for b in sched.brackets] == [[100, 300, 900], [300, 900], [900], []]
    # a trial of bracket 1 is not judged at step 100
    brackets = [sched.bracket_of(t) for t in range(16)]
    t1 = brackets.index(1)
    assert sched.on_report(t1, 100, 0.0) == "continue"


# ---------------------------------------------------------------- construction


def test_every_scheduler_builds_with_defaults():
    for name in SCHEDULERS:
        sched = make_scheduler(name, max_steps=1000, num_trials=16)
        bounds = sched.boundaries()
        assert bounds == sorted(bounds) and all(0 < b < 1000 for b in bounds)
        assert isinstance(scheduler_params(name), dict)


@pytest.mark.parametrize("name, params, field", [
    ("nope", {}, "scheduler.name"),
    ("asha", {"reduction_factor": 1}, "scheduler.reduction_factor"),
    ("asha", {"min_steps": 0}, "scheduler.min_steps"),
    ("asha", {"eta": 3}, "scheduler.eta"),
    ("median", {"min_trials": 0}, "scheduler.min_trials"),
    ("median", {"warmup_steps": -1}, "scheduler.warmup_steps"),
    ("successive_halving", {"num_trials": None}, "scheduler.num_trials"),
    ("hyperband", {"num_trials": None}, "scheduler.num_trials"),
    ("fifo", {"max_steps": 0}, "scheduler.max_steps"),
])
def test_bad_parameters_raise_usage_error(name, params, field):
    params = {"max_steps": 1000, "num_trials": 8, **params}
    with pytest.raises(UsageError) as e:
        make_scheduler(name, **params)
    assert e.value.field == field
