"""The population executor: members vmapped in one program, each still a trial of its own."""

import json
import textwrap

import jax
import numpy as np
import pytest

from rltune.agents import ppo
from rltune.cli import main
from rltune.config import from_dict
from rltune.policy import load_agent
from rltune.runner import EvaluationStopped, TrialRecorder, evaluate_params
from rltune.tune.executors.population import Member, Population, _run_segment, _set_slot
from rltune.tune.executors.base import TrialTask

TINY = {"num_envs": 4, "num_steps": 16, "num_minibatches": 2, "update_epochs": 2, "hidden_size": 16,
        "total_steps": 64 * 8, "env": "CartPole-v1"}


def _population(tmp_path, configs):
    pop = Population("ppo", len(configs))
    for slot, config in enumerate(configs):
        task = TrialTask(trial_id=slot, trial_dir=str(tmp_path / str(slot)), params={}, agent="ppo")
        recorder = TrialRecorder("ppo", config, tmp_path / str(slot))
        pop.admit(Member(task, config, recorder, slot, (), 2), ppo.init(config))
    return pop


def test_each_member_trains_with_its_own_hyperparameters(tmp_path):
    configs = [from_dict(ppo.PPOConfig, {**TINY, "learning_rate": lr, "gamma": g})
               for lr, g in ((1e-3, 0.99), (3e-2, 0.9))]
    pop = _population(tmp_path, configs)
    states, metrics, n, _ = pop.step()
    assert n == {0: 2, 1: 2}
    for slot, config in enumerate(configs):
        alone, _ = ppo.train_segment(config, ppo.init(config), 2)
        member = jax.tree.map(lambda x: x[slot], states.params)
        for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(member)):
            np.testing.assert_allclose(np.asarray(a), b, rtol=2e-4, atol=2e-5)
    first = jax.tree.leaves(jax.tree.map(lambda x: x[0], states.params))
    second = jax.tree.leaves(jax.tree.map(lambda x: x[1], states.params))
    assert max(float(np.abs(a - b).max()) for a, b in zip(first, second)) > 1e-3


def test_a_new_population_is_stacked_on_the_host_as_slot_writes_would_stack_it(tmp_path):
    configs = [from_dict(ppo.PPOConfig, {**TINY, "learning_rate": lr, "seed": seed})
               for lr, seed in ((1e-3, 0), (3e-2, 1))]
    pop = Population("ppo", 3)
    for slot, config in enumerate(configs):
        task = TrialTask(trial_id=slot, trial_dir=str(tmp_path / str(slot)), params={}, agent="ppo")
        pop.admit(Member(task, config, TrialRecorder("ppo", config, tmp_path / str(slot)), slot, (), 2),
                  ppo.init(config))
        assert pop._host is not None  # nothing sent to the device yet
    # what the slot-write program makes of the same members: the first in every slot, then each in its own
    first = jax.tree.map(np.asarray, jax.device_get((ppo.init(configs[0]), ppo.split_config(configs[0])[1])))
    states, hps = jax.device_put(jax.tree.map(lambda x: np.repeat(x[None], 3, axis=0), first))
    second = jax.tree.map(np.asarray, jax.device_get((ppo.init(configs[1]), ppo.split_config(configs[1])[1])))
    states, hps = _set_slot(states, hps, 1, *second)
    for a, b in zip(jax.tree.leaves((states, hps)), jax.tree.leaves((pop.states, pop.hps))):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(np.asarray(a), np.asarray(b))
    assert pop._host is None


class _Outbox(list):
    def put(self, msg):
        self.append(msg)


def test_a_diverged_member_fails_alone(tmp_path):
    config = from_dict(ppo.PPOConfig, TINY)
    pop = _population(tmp_path, [config, config])
    # Member 1's weights become NaN (what a diverging learning rate does, made certain here).
    state1 = jax.tree.map(lambda x: x[1], pop.states)
    bad = state1.replace(params=jax.tree.map(lambda p: p * np.nan, state1.params))
    _, hp = ppo.split_config(config)
    pop.states, pop.hps = _set_slot(pop.states, pop.hps, 1, bad, hp)
    outbox, decisions = _Outbox(), {}

    def receive(block):
        decisions.update({m[2]: "continue" for m in outbox if m[0] == "report"})
        return True

    _run_segment(pop, 0, outbox, decisions, receive)
    kinds = {m[2]: m[0] for m in outbox}
    assert kinds == {0: "report", 1: "failed"}
    assert "diverged" in next(m[3] for m in outbox if m[0] == "failed")
    assert list(pop.members) == [0]  # the slot is free for the next trial
    assert json.loads((tmp_path / "1" / "summary.json").read_text())["status"] == "failed"


def test_population_study_refills_slots_and_records_every_member(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""
        name: pop
        agent: ppo
        env: CartPole-v1
        fixed: {num_envs: 4, num_steps: 32, hidden_size: 32}
        budget_steps: 10240
        search_space:
          learning_rate: {type: float, low: 1.0e-6, high: 3.0e-3, scale: log}
          ent_coef: {type: float, low: 0.0, high: 0.05}
        trials: 7
        executor: population
        sampler: {name: random, seed: 1}
        scheduler: {name: hypertrick, num_phases: 4, r: 0.5}
    """))
    out = tmp_path / "study"
    assert main(["tune", str(spec), "--out", str(out), "--population-size", "3", "--eval-episodes", "2"]) == 0
    import csv

    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 7
    assert {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    assert any(r["state"] == "PRUNED" for r in rows) and any(r["state"] == "COMPLETE" for r in rows)
    pids = {(out / "trials" / r["number"] / "pid").read_text() for r in rows}
    assert len(pids) == 1  # one process trained them all
    for r in rows:
        trial = out / "trials" / r["number"]
        assert (trial / "checkpoints" / "last.msgpack").exists() and (trial / "metrics.jsonl").exists()
        steps = [json.loads(line)["step"] for line in (trial / "metrics.jsonl").open()]
        assert steps[-1] == int(r["steps"])
        if r["state"] == "COMPLETE":
            assert int(r["steps"]) == 10240


def test_population_executor_rejects_external_commands(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""
        command: [python, train.py]
        search_space: {x: {type: float, low: 0, high: 1}}
        executor: population
    """))
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(spec), "--out", str(tmp_path / "s")])
    assert exc.value.code == 2 and "executor" in capsys.readouterr().err


def test_parallel_2_splits_the_population_over_two_processes_and_profiles_them(tmp_path):
    """On a CPU a vmapped program runs on one core: `parallel: 2` runs two shards. The study's
    profile (STUDY/profile.json) accounts for both workers' time by phase."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""
        name: shards
        agent: ppo
        env: CartPole-v1
        fixed: {num_envs: 4, num_steps: 16, num_minibatches: 2, update_epochs: 1, hidden_size: 16}
        budget_steps: 1024
        search_space:
          learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, scale: log}
        trials: 4
        parallel: 2
        executor: population
        sampler: {name: random, seed: 0}
    """))
    out = tmp_path / "study"
    assert main(["tune", str(spec), "--out", str(out), "--eval-episodes", "3"]) == 0
    pids = {(out / "trials" / str(n) / "pid").read_text() for n in range(4)}
    assert len(pids) == 2  # two shards, two trials each (the emptiest shard takes the next trial)
    for n in range(4):
        summary = json.loads((out / "trials" / str(n) / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["eval"]["backend"] == "gymnax"
    profile = json.loads((out / "profile.json").read_text())
    assert profile["worker_processes"] == 2
    workers = profile["workers"]
    assert workers["train"] > 0 and workers["compile"] > 0 and workers["eval"] > 0
    busy = sum(v for k, v in workers.items() if k not in ("wall", "cpu"))
    assert abs(busy - workers["wall"]) < 0.05 * workers["wall"]  # every second in some phase
    assert 0 < workers["cpu"] and 0 < profile["driver"]["cpu"]  # CPU seconds next to the wall ones
    # the best trial checked on the reference simulator, as `rltune eval` would (the check may
    # start before the last trial ends, when a shard idles: it must be the final best's)
    summary = json.loads((out / "summary.json").read_text())
    best = summary["best_reference_eval"]
    assert best["backend"] == "gymnasium" and best["episodes"] == 3
    assert best["trial"] == summary["best"]["number"]
    agent = load_agent(out / "trials" / str(best["trial"]), which="last")
    assert {"trial": best["trial"], **evaluate_params(agent.agent, agent.config, agent.params, 3, 10_000)} == best
    # an early check that a better trial overtook is stopped at its next step
    asked = []
    with pytest.raises(EvaluationStopped):
        evaluate_params(agent.agent, agent.config, agent.params, 3, 10_000,
                        stop=lambda: asked.append(1) or len(asked) > 5)
    assert len(asked) == 6
