"""Population-based training: the pure decisions, the in-place copy inside a population, a
diverged member replaced by a copy, lineage and schedule in the study, and the replay of the
best member's schedule with `rltune train --config best_config.yaml`."""

import dataclasses
import json
import math
import random
import textwrap
from collections import Counter
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from rltune import hp_schedule
from rltune.agents import ppo
from rltune.cli import main
from rltune.config import from_dict
from rltune.errors import UsageError
from rltune.runner import TrialRecorder, load_last
from rltune.schedulers import make_scheduler
from rltune.schedulers.pbt import (Mutation, explore_value, parse_mutations, quantile_size, rank_members,
                                   split_quantiles)
from rltune.tune.executors.base import TrialTask
from rltune.tune.executors.population import Member, PBTRun, Population, _run_segment, _set_slot

TINY = {"num_envs": 4, "num_steps": 16, "num_minibatches": 2, "update_epochs": 2, "hidden_size": 16,
        "total_steps": 64 * 8, "env": "CartPole-v1"}
LR = {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "scale": "log"}}


# ---------------------------------------------------------------- pure decisions
def test_ranking_and_quantiles():
    values = {0: 1.0, 1: 5.0, 2: math.nan, 3: 3.0, 4: 5.0, 5: 0.0, 6: 2.0, 7: 4.0}
    assert rank_members(values) == [1, 4, 7, 3, 6, 0, 5, 2]  # NaN last, ties by id
    assert rank_members(values, "minimize")[:2] == [5, 0]
    assert quantile_size(8, 0.25) == 2 and quantile_size(3, 0.25) == 1 and quantile_size(16, 0.5) == 8
    assert split_quantiles(values, 0.25) == ([2, 5], [1, 4])
    # a failed member takes a bottom place; between intervals only the failed are replaced
    assert split_quantiles(values, 0.25, failed=[7]) == ([2, 7], [1, 4])
    assert split_quantiles(values, 0.25, failed=[7], only_failed=True) == ([7], [1, 4])


def test_exploit_explore_copies_from_the_top_and_is_seeded():
    mutations = {"learning_rate": LR["learning_rate"], "gamma": {"type": "float", "low": 0.9, "high": 0.999}}
    values = {m: float(m) for m in range(16)}
    hps = {m: {"learning_rate": 1e-3 * (1 + m % 3), "gamma": 0.95, "ent_coef": 0.01 * m} for m in range(16)}

    def decide(seed):
        sched = make_scheduler("pbt", max_steps=100, interval=10, mutations=mutations, seed=seed)
        return sched.exploit_explore(values, hps)

    first = decide(3)
    assert [c.member for c in first] == [0, 1, 2, 3] and {c.source for c in first} <= {12, 13, 14, 15}
    for c in first:
        assert c.hps["ent_coef"] == hps[c.source]["ent_coef"]  # not mutated: copied as it is
        assert 1e-4 <= c.hps["learning_rate"] <= 1e-2 and 0.9 <= c.hps["gamma"] <= 0.999
    assert decide(3) == first and decide(4) != first


@pytest.mark.parametrize("spec", [
    {"type": "float", "low": 1e-4, "high": 1e-2, "scale": "log"},
    {"type": "float", "low": 0.0, "high": 0.3},
    {"type": "float", "low": 0.9, "high": 0.999, "scale": "reverse_log"},
    {"type": "int", "low": 1, "high": 5},
    {"type": "discrete", "values": [0.1, 0.2, 0.4]},
])
def test_explore_stays_within_bounds(spec):
    m = parse_mutations({"x": spec})["x"]
    rng = random.Random(0)
    inside = (lambda v: v in m.values) if m.values else (lambda v: m.low <= v <= m.high)
    value = m.values[0] if m.values else m.high
    seen = set()
    for _ in range(500):
        for p in (0.0, 0.5, 1.0):
            value = explore_value(m, value, rng, p, (0.5, 3.0))  # a random walk pushing at both ends
            assert inside(value), value
            seen.add(value)
    assert len(seen) > 2
    # perturbing by factors alone, from the top and the bottom of the range, is clipped
    if not m.values:
        assert explore_value(m, m.high, random.Random(1), 0.0, (10.0,)) == m.high
        assert m.low <= explore_value(m, m.low, random.Random(1), 0.0, (0.01,)) <= m.high


# ---------------------------------------------------------------- inside the population
def _population(tmp_path, configs):
    pop = Population("ppo", len(configs))
    for slot, config in enumerate(configs):
        task = TrialTask(trial_id=10 + slot, trial_dir=str(tmp_path / str(slot)), params={}, agent="ppo")
        recorder = TrialRecorder("ppo", config, tmp_path / str(slot))
        pop.admit(Member(task, config, recorder, slot, (64 * 2,), 2), ppo.init(from_dict(
            ppo.PPOConfig, {**TINY, "seed": slot})))
    return pop


def _host(tree, slot):
    return jax.tree.map(lambda x: np.asarray(x[slot]), jax.device_get(tree))


def test_exploit_copies_exactly_the_chosen_member_and_nothing_else(tmp_path):
    configs = [from_dict(ppo.PPOConfig, {**TINY, "learning_rate": lr}) for lr in (1e-3, 2e-3, 3e-3)]
    pop = _population(tmp_path, configs)
    pop.step()
    programs = ppo.population_segment(*pop.key).cache_size()  # other tests may have run other shapes
    before = [(_host(pop.states, s), _host(pop.hps, s)) for s in range(3)]
    pop.exploit({0: (2, {"learning_rate": 4e-3}, 10)})
    after = [(_host(pop.states, s), _host(pop.hps, s)) for s in range(3)]
    for slot in (1, 2):  # untouched
        for a, b in zip(jax.tree.leaves(before[slot]), jax.tree.leaves(after[slot])):
            np.testing.assert_array_equal(a, b)
    state0, hp0 = after[0]
    src_state, src_hp = before[2]
    rng_src = src_state.rng
    for a, b in zip(jax.tree.leaves(state0.replace(rng=rng_src)), jax.tree.leaves(src_state)):
        np.testing.assert_array_equal(a, b)  # weights, optimizer moments, envs, episodes: the source's
    np.testing.assert_array_equal(state0.rng, np.asarray(jax.random.fold_in(rng_src, 10)))
    assert not np.array_equal(state0.rng, rng_src)
    assert float(hp0["learning_rate"]) == np.float32(4e-3)
    assert {k: float(v) for k, v in hp0.items() if k != "learning_rate"} == \
        {k: float(v) for k, v in src_hp.items() if k != "learning_rate"}
    pop.step()  # the population trains on with the copy, in the same compiled program
    assert ppo.population_segment(*pop.key).cache_size() == programs


class _Outbox(list):
    def put(self, msg):
        self.append(msg)


def test_a_diverged_member_is_replaced_by_an_exploit_copy(tmp_path):
    config = from_dict(ppo.PPOConfig, TINY)
    pop = _population(tmp_path, [config, config, config])
    state1 = jax.tree.map(lambda x: x[1], pop.states)
    bad = state1.replace(params=jax.tree.map(lambda p: p * np.nan, state1.params))
    _, hp = ppo.split_config(config)
    pop.states, pop.hps = _set_slot(pop.states, pop.hps, 1, bad, hp)
    pbt = PBTRun(make_scheduler("pbt", max_steps=512, interval=128, mutations=LR), ("learning_rate",), 3, True)
    outbox, decisions = _Outbox(), {}

    def receive(block):
        decisions.update({m[2]: "continue" for m in outbox if m[0] == "report"})
        return True

    _run_segment(pop, 0, outbox, decisions, receive, pbt)
    kinds = sorted((m[0], m[2]) for m in outbox)
    assert kinds == [("exploited", 11), ("report", 10), ("report", 12)]
    _, trial, step, source, hps, reason = next(m[1:] for m in outbox if m[0] == "exploited")
    assert reason == "diverged" and source in (10, 12) and step == 64 * 2
    assert 1e-4 <= hps["learning_rate"] <= 1e-2
    assert sorted(pop.members) == [0, 1, 2]  # it keeps its slot and trains on
    copied = _host(pop.states, 1).params
    for a, b in zip(jax.tree.leaves(copied), jax.tree.leaves(_host(pop.states, source - 10).params)):
        np.testing.assert_array_equal(a, b)
    outbox.clear()
    _run_segment(pop, 0, outbox, decisions, receive, pbt)  # the copy trains like the others
    assert sorted(m[2] for m in outbox if m[0] == "report") == [10, 11, 12]
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(_host(pop.states, 1).params))


# ---------------------------------------------------------------- a study and its replay
STUDY = """
    name: pbt
    agent: ppo
    env: CartPole-v1
    fixed: {num_envs: 4, num_steps: 16, num_minibatches: 2, update_epochs: 2, hidden_size: 16}
    budget_steps: 1536
    search_space:
      learning_rate: {type: float, low: 1.0e-4, high: 3.0e-2, scale: log}
      ent_coef: {type: float, low: 0.0, high: 0.05}
    trials: 4
    executor: population
    sampler: {name: random, seed: 2}
    scheduler:
      name: pbt
      interval: 256
      quantile: 0.5
      resample_probability: 0.5
      mutations: {learning_rate: {type: float, low: 1.0e-4, high: 3.0e-2, scale: log}}
"""


def _curve(trial_dir):
    return {json.loads(line)["step"]: json.loads(line)["reward"] for line in (trial_dir / "metrics.jsonl").open()}


def _lineage_curve(out, number, until=None):
    """Rewards along a member's lineage: its source's before each copy, its own after."""
    pbt = json.loads((out / "trials" / str(number) / "pbt.json").read_text())
    own = _curve(out / "trials" / str(number))
    copies = [c for c in pbt["pbt_lineage"] if until is None or c["step"] <= until]
    if not copies:
        return {s: v for s, v in own.items() if until is None or s <= until}
    last = copies[-1]
    curve = _lineage_curve(out, last["from"], last["step"])
    curve.update({s: v for s, v in own.items() if s > last["step"] and (until is None or s <= until)})
    return curve


def _assert_replay_follows_lineage(out, number, run, *, last_step, rel_tol):
    """`rltune train` of the study's best_config.yaml (member `number`'s hp_schedule) retraces
    that member's training curve along its lineage; returns the member's curve."""
    assert main(["train", "ppo", "--config", str(out / "best_config.yaml"), "--out", str(run),
                 "--eval-episodes", "0"]) == 0
    replay, member = _curve(run), _lineage_curve(out, number)
    common = sorted(set(replay) & set(member))
    assert len(common) >= 5 and common[-1] == last_step
    for step in common:
        a, b = replay[step], member[step]
        assert (a is None and b is None) or abs(a - b) <= rel_tol * max(1.0, abs(b)), (step, a, b)
    return member


def test_pbt_study_records_lineage_and_its_best_schedule_replays(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(STUDY))
    out = tmp_path / "study"
    assert main(["tune", str(spec), "--out", str(out), "--eval-episodes", "1"]) == 0
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    summary = json.loads((out / "summary.json").read_text())
    number = summary["best"]["number"]
    pbt = json.loads((out / "trials" / str(number) / "pbt.json").read_text())
    copies = sum(len(json.loads((out / "trials" / str(n) / "pbt.json").read_text())["pbt_lineage"])
                 for n in range(4))
    assert copies >= 5  # 2 of 4 members copy at each of the 5 intervals
    import optuna

    stored = optuna.load_study(study_name="pbt", storage=f"sqlite:///{out / 'study.db'}").trials[number]
    assert stored.user_attrs["pbt_schedule"] == pbt["pbt_schedule"]
    assert json.loads(best["hp_schedule"]) == pbt["pbt_schedule"]
    # the replay: one ordinary run of the best member's schedule
    member = _assert_replay_follows_lineage(out, number, tmp_path / "replay", last_step=1536,
                                            rel_tol=1e-3)  # vmapped vs single program: rounding
    assert any(v is not None for v in member.values())


# ---------------------------------------------------------------- input errors (exit 2)
@pytest.mark.parametrize("change, field, words", [
    ({"scheduler": {"name": "pbt", "mutations": {"hidden_size": {"type": "int", "low": 8, "high": 64}}}},
     "scheduler.mutations.hidden_size", "static"),
    ({"scheduler": {"name": "pbt", "mutations": {"num_envs": {"type": "int", "low": 2, "high": 8}}}},
     "scheduler.mutations.num_envs", "fixed per population"),
    ({"scheduler": {"name": "pbt", "mutations": {"nope": {"low": 0, "high": 1}}}}, "scheduler.mutations.nope",
     "not a hyperparameter"),
    ({"scheduler": {"name": "pbt", "mutations": {"gamma": {"low": 0.5, "high": 1.5}}}},
     "scheduler.mutations.gamma", "invalid"),
    ({"scheduler": {"name": "pbt", "mutations": {"learning_rate": {"low": 0, "high": 1, "scale": "log"}}}},
     "scheduler.mutations.learning_rate.low", "log"),
    ({"scheduler": {"name": "pbt", "quantile": 0.7}}, "scheduler.quantile", "0.5"),
    ({"scheduler": {"name": "pbt", "perturb": 1.2}}, "scheduler.perturb", "list"),
    ({"executor": "ray", "population": True}, "population", "one trial per actor"),
    ({"search_space": {"activation": {"type": "categorical", "values": ["tanh", "relu"]}}},
     "search_space.activation",
     "static"),
])
def test_bad_pbt_specs_exit_2_naming_the_field(tmp_path, capsys, change, field, words):
    data = yaml.safe_load(textwrap.dedent(STUDY))
    data.update(change)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data))
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(spec), "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and field in err and words in err, err
    assert not (tmp_path / "s").exists()


def test_external_trainers_cannot_take_part(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""
        command: [python, train.py]
        search_space: {x: {type: float, low: 0, high: 1}}
        budget_steps: 100
        scheduler: {name: pbt, interval: 10}
    """))
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(spec), "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "external trainers cannot take part" in err


@pytest.mark.parametrize("text, field", [
    ("[[0, {learning_rate: 0.001}], [0, {learning_rate: 0.002}]]", "hp_schedule[1]"),
    ("[[0, {hidden_size: 32}]]", "hp_schedule[0].hidden_size"),
    ("[[0, {gamma: 1.5}]]", "hp_schedule[0]"),
    ("{a: 1}", "hp_schedule"),
    ("[[-5, {gamma: 0.9}]]", "hp_schedule[0]"),
])
def test_bad_hp_schedules_are_usage_errors(text, field):
    with pytest.raises(UsageError) as exc:
        from_dict(ppo.PPOConfig, {**TINY, "hp_schedule": text})
    assert exc.value.field == field


def test_hp_schedule_changes_traced_values_at_its_steps():
    config = from_dict(ppo.PPOConfig, {**TINY, "hp_schedule": "[[0, {gamma: 0.9}], [128, {gamma: 0.8}, 3]]"})
    assert hp_schedule.steps(config) == (128,)
    state = ppo.init(config)
    c, s, applied = hp_schedule.apply(config, state, 0, 0)
    assert (c.gamma, applied) == (0.9, 1) and np.array_equal(s.rng, state.rng)
    c, s, applied = hp_schedule.apply(c, s, 128, applied)
    assert (c.gamma, applied) == (0.8, 2)
    np.testing.assert_array_equal(s.rng, jax.random.fold_in(state.rng, 3))
    assert ppo.split_config(c)[0] == ppo.split_config(config)[0]  # one compiled program for all
    assert isinstance(Mutation("x", low=0, high=1).clip(2.0), float)


@pytest.mark.parametrize("kwargs, field", [({"resume": True}, "--resume"), ({"population_size": 3}, "--population-size")])
def test_pbt_needs_a_fresh_study_and_the_whole_population_at_once(tmp_path, kwargs, field):
    from rltune.tune.driver import StudyDriver
    from rltune.tune.spec import spec_from_dict

    spec = spec_from_dict(yaml.safe_load(textwrap.dedent(STUDY)))
    with pytest.raises(UsageError) as exc:
        StudyDriver(spec, tmp_path / "s", **kwargs)
    assert exc.value.field == field
    assert not (tmp_path / "s").exists()


def test_simulate_refuses_pbt_and_leaves_it_out_by_default():
    from rltune.schedulers import SCHEDULERS
    from rltune.simulate import parse_scheduler_spec

    with pytest.raises(UsageError) as exc:
        parse_scheduler_spec("pbt")
    assert exc.value.field == "scheduler" and "cannot replay" in str(exc.value)
    assert "pbt" in SCHEDULERS and not SCHEDULERS["pbt"].replays_curves


# ---------------------------------------------------------------- through checkpoints (local, Ray)
def _checkpointed_member(tmp_path, number, seed, lr):
    config = from_dict(ppo.PPOConfig, {**TINY, "seed": seed, "learning_rate": lr})
    recorder = TrialRecorder("ppo", config, tmp_path / str(number))
    state, _ = ppo.train_segment(config, ppo.init(config), 2)
    recorder.best_reward, recorder.wall_before = float(seed), 10.0 * seed  # its own history
    recorder.save("best", state)
    recorder.save("last", state)
    (tmp_path / str(number) / "metrics.jsonl").write_text(f'{{"step": 128, "reward": {seed}}}\n')
    recorder.close()
    return config


def _files(trial_dir):
    return {p.relative_to(trial_dir): p.read_bytes() for p in sorted(trial_dir.rglob("*")) if p.is_file()}


def test_local_exploit_copies_exactly_the_chosen_checkpoint_and_nothing_else(tmp_path):
    from rltune import checkpoint
    from rltune.config import to_dict
    from rltune.tune.pbt_rounds import CheckpointPBT

    configs = {n: _checkpointed_member(tmp_path, n, seed=n + 1, lr=1e-3 * (n + 1)) for n in range(4)}
    settings = {"goal": "maximize", "max_steps": 512,
                "params": {"interval": 128, "quantile": 0.25, "mutations": LR, "seed": 0}}
    rounds = CheckpointPBT(settings, ["ent_coef", "learning_rate"], lambda n: tmp_path / str(n))
    for n, config in configs.items():
        rounds.start(n, config)
        rounds.arrive(n, value=float(n), step=128)  # member 0 is the worst, 3 the best
    before = {n: _files(tmp_path / str(n)) for n in range(4)}
    last = lambda n: checkpoint.read(tmp_path / str(n) / "checkpoints" / "last.msgpack")  # noqa: E731
    source_payload = last(3)

    copies, lost = rounds.round(lambda n, hps: to_dict(dataclasses.replace(configs[n], **hps)))
    assert lost == [] and rounds.ready == [0, 1, 2, 3]
    assert [(c.trial_id, c.source, c.step, c.reason) for c in copies] == [(0, 3, 128, "exploit")]
    hps = copies[0].hps
    assert 1e-4 <= hps["learning_rate"] <= 1e-2 and hps["learning_rate"] != 4e-3  # explored
    assert np.float32(hps["ent_coef"]) == np.float32(configs[3].ent_coef)  # not mutated: the source's
    assert rounds.config(0) == hps and np.float32(rounds.config(1)["learning_rate"]) == np.float32(2e-3)
    for n in (1, 2, 3):  # untouched, source included
        assert _files(tmp_path / str(n)) == before[n]
    after = _files(tmp_path / "0")
    changed = {name for name in after if after[name] != before[0][name]}
    assert changed == {Path("checkpoints/last.msgpack")}  # its best, metrics, logs stay
    copied = last(0)
    src, got = _flat(source_payload["state"]), _flat(copied["state"])
    assert src.keys() == got.keys() and "rng" in src
    for key in src:
        if key == "rng":
            np.testing.assert_array_equal(got[key], jax.random.fold_in(src[key], 0))  # folded with the member
        else:
            np.testing.assert_array_equal(got[key], src[key])  # weights, optimizer, envs, counters
    assert copied["extra"] == {**_extra(before[0]), "env_steps": source_payload["extra"]["env_steps"]}
    assert copied["config"] == to_dict(dataclasses.replace(configs[0], **hps))
    # the copy resumes in an ordinary run: it trains on from the source's step with the new values
    state, _ = load_last("ppo", dataclasses.replace(configs[0], **hps), tmp_path / "0")
    assert int(state.env_steps) == 128


def test_local_pbt_barrier_waits_for_members_not_yet_resumed(tmp_path):
    """With 2 slots for 4 members, two can pause at a boundary in the same poll while the other
    two, decided in the last round, have not resumed yet: nothing runs, yet the barrier must
    wait for them (a round over two members used to copy one of them, then another round over
    the other two a second: two copies at one boundary where the quantile makes one)."""
    from rltune.tune.driver import StudyDriver, _Running
    from rltune.tune.spec import spec_from_dict
    from rltune.tune.study import TrialRecord

    spec = spec_from_dict(yaml.safe_load(textwrap.dedent(LOCAL_STUDY)))
    driver = StudyDriver(spec, tmp_path / "study")
    for n in range(4):
        params = {"learning_rate": 1e-3 * (n + 1)}
        _checkpointed_member(tmp_path / "study" / "trials", n, seed=n + 1, lr=params["learning_rate"])
        record = TrialRecord(number=n, params=params, state="PAUSED", step=256)
        driver.records[n] = record
        driver.paused[n] = _Running(None, record, since=None)
        driver.lineage.start(n, params)
        driver.pbt_rounds.start(n, from_dict(ppo.PPOConfig, {**TINY, **params}))
    driver.pbt_rounds.ready = [2, 3]  # decided at 256, not resumed yet
    for n in (0, 1):
        driver.pbt_rounds.arrive(n, float(n), 512)
    driver._pbt_round()
    assert sorted(driver.pbt_rounds.waiting) == [0, 1] and driver.pbt_rounds.ready == [2, 3]
    driver.pbt_rounds.ready = []  # 2 and 3 resumed, and reach 512 too
    for n in (2, 3):
        driver.pbt_rounds.arrive(n, float(n), 512)
    driver._pbt_round()
    assert not driver.pbt_rounds.waiting and driver.pbt_rounds.ready == [0, 1, 2, 3]
    copies = [(e["step"], e["from"]) for n in range(4) for e in driver.lineage.attrs(n)["pbt_lineage"]]
    assert copies == [(512, 3)]  # one round: the worst of the four copies the best


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = value
    return out


def _extra(files):
    from flax import serialization

    return serialization.msgpack_restore(files[Path("checkpoints/last.msgpack")])["extra"]


LOCAL_STUDY = """
    name: pbt-local
    agent: ppo
    env: CartPole-v1
    fixed: {num_envs: 4, num_steps: 16, num_minibatches: 2, update_epochs: 2, hidden_size: 16, anneal_lr: false}
    budget_steps: 1024
    search_space:  # one member's rate makes its loss NaN at once: it must be replaced, not fail
      learning_rate: {type: categorical, values: [1.0e-3, 3.0e-3, 1.0e-2, 1.0e+20]}
    trials: 4
    parallel: 2
    executor: local
    sampler: {name: grid, seed: 0}
    scheduler:
      name: pbt
      interval: 256
      quantile: 0.25
      mutations: {learning_rate: {type: float, low: 1.0e-4, high: 3.0e-2, scale: log}}
"""


def test_local_pbt_study_replaces_a_diverged_member_and_its_best_schedule_replays(tmp_path):
    import optuna

    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(LOCAL_STUDY))
    out = tmp_path / "study"
    assert main(["tune", str(spec), "--out", str(out), "--eval-episodes", "1"]) == 0
    stored = optuna.load_study(study_name="pbt-local", storage=f"sqlite:///{out / 'study.db'}").trials
    assert [t.state.name for t in stored] == ["COMPLETE"] * 4
    pbt = {t.number: json.loads((out / "trials" / str(t.number) / "pbt.json").read_text()) for t in stored}
    for t in stored:
        assert t.user_attrs["pbt_schedule"] == pbt[t.number]["pbt_schedule"]
        assert t.user_attrs["pbt_lineage"] == pbt[t.number]["pbt_lineage"]
        steps = sorted(_curve(out / "trials" / str(t.number)))
        assert steps[-1] == 1024 and len(steps) == len(set(steps))
    nan_member = next(t.number for t in stored if t.params["learning_rate"] == 1e20)
    for t in stored:  # paused at every interval boundary (the NaN member where it diverged instead of 256)
        pauses = [p["step"] for p in t.user_attrs["pauses"]]
        assert pauses == ([0, 512, 768] if t.number == nan_member else [256, 512, 768]), (t.number, pauses)
    first = pbt[nan_member]["pbt_lineage"][0]
    assert first["reason"] == "diverged" and first["step"] == 256 and first["from"] != nan_member
    assert 1e-4 <= first["hps"]["learning_rate"] <= 3e-2
    # a copy at each of the 3 interval boundaries (the diverged member's the first time): one
    # bottom-quantile member (of 4) a round, all four at the barrier (see the test above)
    copies = Counter(e["step"] for p in pbt.values() for e in p["pbt_lineage"])
    assert copies == {256: 1, 512: 1, 768: 1}, {n: p["pbt_lineage"] for n, p in pbt.items()}
    # the best member's schedule replays as one ordinary run, the same single-trial program:
    # the same curve along its lineage
    number = json.loads((out / "summary.json").read_text())["best"]["number"]
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    assert json.loads(best["hp_schedule"]) == pbt[number]["pbt_schedule"]
    _assert_replay_follows_lineage(out, number, tmp_path / "replay", last_step=1024, rel_tol=1e-5)


# ---------------------------------------------------------------- PB2: the GP-bandit explore
def test_pb2_bandit_finds_the_best_region_and_pending_points_lower_its_bonus():
    from rltune.schedulers import pb2

    rng = random.Random(0)
    x = np.array([[1.0, u] for u in np.linspace(0, 1, 9)])
    y = -(x[:, 1] - 0.7) ** 2  # the metric grows most at 0.7
    gp = pb2.fit(x, y)
    first = pb2.select(gp, 2.0, 1, rng, [])
    assert abs(first[0] - 0.7) < 0.1
    pending = np.array([[2.0, *first]])
    point = np.array([[2.0, *first]])
    _, alone = pb2.predict(gp, point)
    _, with_pending = pb2.predict(gp, point, pending)
    assert with_pending[0] < 0.8 * alone[0]  # a member chosen earlier in the round lowers the bonus there
    far = np.array([[2.0, 0.1]])
    assert pb2.predict(gp, far, pending)[1][0] > 0.95 * pb2.predict(gp, far)[1][0]  # and not far from it


def test_pb2_explore_moves_the_copies_towards_the_best_rate():
    """Members whose metric grows most with a learning rate near 3e-3 (made-up dynamics):
    after a few rounds the bandit sends every copy there, inside the range."""
    sched = make_scheduler("pbt", max_steps=1000, interval=100, quantile=0.25, explore="pb2", seed=1,
                           mutations={"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-1, "scale": "log"}})
    rng = random.Random(0)
    lrs = {m: math.exp(rng.uniform(math.log(1e-5), math.log(1e-1))) for m in range(8)}
    values = {m: 0.0 for m in range(8)}
    chosen = []
    for _ in range(6):
        values = {m: values[m] + 10 - (math.log10(lrs[m]) + 2.5) ** 2 for m in range(8)}
        choices = sched.exploit_explore(values, {m: {"learning_rate": lrs[m]} for m in range(8)})
        for c in choices:
            values[c.member] = values[c.source]
            lrs[c.member] = c.hps["learning_rate"]
        chosen.append([c.hps["learning_rate"] for c in choices])
    assert all(1e-5 <= lr <= 1e-1 for lrs_ in chosen for lr in lrs_)
    assert all(abs(math.log10(lr) + 2.5) < 0.75 for lr in chosen[-1]), chosen[-1]
    with pytest.raises(UsageError) as exc:
        make_scheduler("pbt", max_steps=1000, explore="bayes")
    assert exc.value.field == "scheduler.explore"
