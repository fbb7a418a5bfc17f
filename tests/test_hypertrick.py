"""HyperTrick: the spec's rule (specs/hypertrick.md) and the numbers it must reproduce."""

import math
import random

import pytest

from rltune.errors import UsageError
from rltune.schedulers import default_early_stopping, make_scheduler
from rltune.schedulers.hypertrick import (HyperTrickScheduler, hypertrick_decision,
                                          hypertrick_expected_alpha, hypertrick_free_arrivals)
from rltune.simulate import Curve, scheduler_factory, simulate


def run_study(num_workers: int, num_phases: int, r: float, rng: random.Random) -> float:
    """One study: i.i.d. uniform metrics, arrival order shuffled at every phase; its alpha."""
    sched = make_scheduler("hypertrick", max_steps=num_phases * 10, num_workers=num_workers,
                           num_phases=num_phases, r=r)
    bounds = sched.boundaries()
    alive, work = list(range(num_workers)), 0
    for phase in range(1, num_phases + 1):
        work += len(alive)
        if phase == num_phases:
            break
        rng.shuffle(alive)
        alive = [w for w in alive
                 if sched.on_report(w, bounds[phase - 1], rng.random()) == "continue"]
    return work / (num_workers * num_phases)


# ---------------------------------------------------------------- the talk's numbers


def test_expected_alpha_formula():
    assert hypertrick_expected_alpha(0.25, 10) == pytest.approx(0.3775, abs=5e-5)
    assert hypertrick_expected_alpha(0.25, 5) == pytest.approx(0.6102, abs=5e-5)


@pytest.mark.parametrize("num_phases, expected", [(10, 0.3775), (5, 0.6102)])
def test_mean_alpha_matches_expectation(num_phases, expected):
    rng = random.Random(1234)
    alphas = [run_study(200, num_phases, 0.25, rng) for _ in range(100)]
    assert abs(sum(alphas) / len(alphas) - expected) < 0.02


@pytest.mark.parametrize("num_workers, num_phases, reference, studies", [
    (16, 10, 0.412, 1500), (16, 5, 0.630, 1500), (100, 10, 0.384, 300), (100, 5, 0.617, 300)])
def test_mean_alpha_matches_reference_simulation(num_workers, num_phases, reference, studies):
    # The spec's reference simulation of the rule; rounding pushes small N above E[alpha].
    rng = random.Random(num_workers * 100 + num_phases)
    alphas = [run_study(num_workers, num_phases, 0.25, rng) for _ in range(studies)]
    mean = sum(alphas) / len(alphas)
    assert abs(mean - reference) < 0.006
    assert mean > hypertrick_expected_alpha(0.25, num_phases)


def test_mean_alpha_through_the_simulator():
    """The same figure when the discrete-event simulator drives the scheduler: i.i.d. uniform
    values at every phase end and random phase durations (arrival order independent of the
    metrics), more workers than slots."""
    rng = random.Random(99)
    num_workers, num_phases, phase_len = 120, 10, 100
    alphas = []
    for _ in range(12):
        curves = []
        for w in range(num_workers):
            steps = [phase_len * p for p in range(1, num_phases + 1)]
            durations = [rng.uniform(0.5, 1.5) for _ in steps]
            times = [sum(durations[: i + 1]) for i in range(num_phases)]
            curves.append(Curve(str(w), tuple(steps), tuple(rng.random() for _ in steps),
                                tuple(times)))
        factory = scheduler_factory("hypertrick", num_phases=num_phases, r=0.25)
        res = simulate(curves, factory, slots=40)
        work = sum(o.last_step for o in res.trials) / (num_workers * num_phases * phase_len)
        alphas.append(work)
    assert abs(sum(alphas) / len(alphas) - 0.3775) < 0.02


# ---------------------------------------------------------------- earliest arrivals


def test_free_arrival_counts():
    # N = 16, r = 0.25: ceil(16 * 0.5 * 0.75^(P-1)) = 8, 6, ceil(4.5) = 5, ceil(3.375) = 4
    assert [hypertrick_free_arrivals(16, 0.25, p) for p in (1, 2, 3, 4)] == [8, 6, 5, 4]
    # a whole-number bound is not pushed up by float noise: 100 * 0.5 * 0.75^2 = 28.125 -> 29,
    # 64 * 0.5 * 0.75^2 = 18 exactly -> 18
    assert hypertrick_free_arrivals(100, 0.25, 3) == 29
    assert hypertrick_free_arrivals(64, 0.25, 3) == 18


def test_earliest_arrivals_pass_whatever_their_metric():
    sched = HyperTrickScheduler(max_steps=1000, num_workers=16, num_phases=5, r=0.25)
    assert sched.boundaries() == [200, 400, 600, 800]
    # Each arrival is worse than all before it: the first 8 still continue ...
    decisions = [sched.on_report(w, 200, 100.0 - w) for w in range(8)]
    assert decisions == ["continue"] * 8
    # ... the 9th, worst so far, is in the bottom half: rank 1 <= floor(0.5 * 9) = 4
    assert sched.on_report(8, 200, -1.0) == "stop"
    # the 10th, best so far, continues
    assert sched.on_report(9, 200, 1000.0) == "continue"
    assert sched.stopped() == [8]


def test_pure_rule_earliest_arrival():
    # k = 8 <= 8 free arrivals at phase 1: continues even though it is the worst
    assert hypertrick_decision(8, 16, 0.25, 1, [5, 6, 7, 8, 9, 10, 11], 0.0)
    # at phase 2 only 6 pass free, so the 8th (worst) is judged and stopped
    assert not hypertrick_decision(8, 16, 0.25, 2, [5, 6, 7, 8, 9, 10, 11], 0.0)
    with pytest.raises(ValueError):
        hypertrick_decision(3, 16, 0.25, 1, [1.0], 0.0)


# ---------------------------------------------------------------- the quantile rule


def test_quantile_rule_boundary():
    # N = 2, phase 3: free = ceil(2 * 0.5 * 0.5625) = 1, so from k = 2 on every arrival is
    # judged. With earlier metrics 1..9 (k = 10), bottom quantile = rank <= floor(0.5*10) = 5.
    earlier = [float(x) for x in range(1, 10)]
    assert not hypertrick_decision(10, 2, 0.25, 3, earlier, 4.5)  # rank 5: stopped
    assert hypertrick_decision(10, 2, 0.25, 3, earlier, 5.5)      # rank 6: continues
    assert not hypertrick_decision(10, 2, 0.25, 3, earlier, 0.0)  # worst: stopped
    assert hypertrick_decision(10, 2, 0.25, 3, earlier, 99.0)     # best: continues


def test_quantile_small_k_and_ties():
    # k = 2: the worse of two is stopped; a tie counts in the worker's favour
    assert not hypertrick_decision(2, 2, 0.25, 3, [1.0], 0.5)
    assert hypertrick_decision(2, 2, 0.25, 3, [1.0], 1.5)
    assert hypertrick_decision(2, 2, 0.25, 3, [1.0], 1.0)
    # k = 3: floor(1.5) = 1, only the worst of three is stopped
    assert hypertrick_decision(3, 2, 0.25, 3, [1.0, 3.0], 2.0)
    assert not hypertrick_decision(3, 2, 0.25, 3, [1.0, 3.0], 0.0)
    # everyone equal (all trials at the maximum return): nobody is ever stopped
    assert all(hypertrick_decision(k, 2, 0.25, 3, [500.0] * (k - 1), 500.0)
               for k in range(2, 30))
    # NaN is the worst metric
    assert not hypertrick_decision(2, 2, 0.25, 3, [1.0], math.nan)


def test_goal_minimize_flips_comparisons():
    earlier = [float(x) for x in range(1, 10)]
    assert hypertrick_decision(10, 2, 0.25, 3, earlier, 4.5, "minimize")
    assert not hypertrick_decision(10, 2, 0.25, 3, earlier, 5.5, "minimize")
    sched = HyperTrickScheduler(goal="minimize", max_steps=100, num_workers=2, num_phases=5)
    bound = sched.boundaries()[2]  # phase 3: one free arrival
    assert sched.on_report(0, bound, 1.0) == "continue"
    assert sched.on_report(1, bound, 2.0) == "stop"      # higher loss is worse
    assert sched.on_report(2, bound, 0.5) == "continue"


def test_decide_on_arrival_and_report_steps():
    sched = HyperTrickScheduler(max_steps=1000, num_workers=1, num_phases=5, r=0.25)
    assert sched.on_report(0, 210, 1.0) == "continue"  # overshoot: counts for phase 1 (200)
    assert sched.on_report(0, 230, 1.0) == "continue"  # no new boundary: ignored
    assert sched.on_report(1, 200, 0.0) == "stop"
    assert sched.on_report(2, 200, 5.0) == "continue"  # a later, better report ...
    assert sched.stopped() == [1]                      # ... does not revisit the decision
    assert sched.on_report(1, 400, 9.0) == "stop"      # a stopped trial stays stopped
    assert sched.paused() == [] and sched.resumable() == []


# ---------------------------------------------------------------- construction


def test_bad_parameters_name_the_field():
    for params, field in [({"r": 0.0}, "scheduler.r"), ({"r": 1.0}, "scheduler.r"),
                          ({"r": "x"}, "scheduler.r"), ({"num_phases": 0}, "scheduler.num_phases"),
                          ({"num_phases": 2.5}, "scheduler.num_phases"),
                          ({"num_workers": 0}, "scheduler.num_workers"),
                          ({"phases": 3}, "scheduler.phases")]:
        with pytest.raises(UsageError) as e:
            make_scheduler("hypertrick", max_steps=100, num_trials=4, **params)
        assert e.value.field == field
    with pytest.raises(UsageError) as e:
        make_scheduler("hypertrick", max_steps=100)
    assert e.value.field == "scheduler.num_workers"
    with pytest.raises(UsageError) as e:
        make_scheduler("hypertrick", max_steps=100, num_trials=4, goal="up")
    assert e.value.field == "scheduler.goal"


def test_num_workers_overrides_num_trials_and_default_early_stopping():
    sched = make_scheduler("hypertrick", max_steps=100, num_trials=4, num_workers=9,
                           goal="MINIMIZE")
    assert sched.num_workers == 9 and sched.goal == "minimize"
    default = default_early_stopping(max_steps=500_000, num_trials=16)
    assert isinstance(default, HyperTrickScheduler)
    assert (default.num_workers, default.num_phases, default.r) == (16, 5, 0.25)
    assert default.boundaries() == [100_000, 200_000, 300_000, 400_000]
    assert default_early_stopping(max_steps=3, num_trials=4).num_phases == 3
