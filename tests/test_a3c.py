"""a3c: the learner's update is a2c's, policy lag and episode accounting, training with two
actor processes on a probe with a known value, and no actor outliving its run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from rltune.agents import _onpolicy as on
from rltune.agents import a2c, a3c
from rltune.config import from_dict
from rltune.envs import env_info

TINY = {"num_envs": 4, "t_max": 8, "hidden_size": 16}


@pytest.mark.parametrize("batched", [1, 2])
def test_the_learners_update_on_rollouts_is_a2cs(batched):
    # a2c's rollout on 4 envs, handed to the learner whole or as 2 actors' rollouts of 2 envs
    # batched into one update (rollouts_per_update): the same update.
    common = {"t_max": 8, "hidden_size": 16, "env": "CartPole-v1", "total_steps": 3200, "gae_lambda": 0.95}
    a2c_config = from_dict(a2c.Config, {**common, "num_envs": 4})
    a3c_config = from_dict(a3c.Config, {**common, "num_envs": 4 // batched, "rollouts_per_update": batched})
    info = env_info("CartPole-v1")
    static, hp = on.split_config(a2c_config)
    algo = a2c.make_algo(static, info)
    state, traj = jax.jit(lambda s: on.rollout(static, info, algo, s))(a2c.init(a2c_config))
    want, want_metrics = on.learn(static, algo, hp, state, traj)

    learner = a3c.Learner(a3c_config, a3c.init(a3c_config).replace(params=state.params, opt_state=state.opt_state))
    envs = np.split(np.arange(4), batched)
    messages = [(i, 0, tuple(np.asarray(x)[:, e] for x in traj), np.asarray(state.obs)[e], [], [])
                for i, e in enumerate(envs)]
    flat, version = learner.step(messages)
    for got, expected in zip(jax.tree.leaves(learner.state.params), jax.tree.leaves(want.params)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-6)
    assert float(learner.sums["loss"]) == pytest.approx(float(want_metrics["loss"]), rel=1e-5)
    np.testing.assert_allclose(flat, ravel_pytree(want.params)[0], rtol=1e-5, atol=1e-6)
    assert version == 1 and int(learner.state.env_steps) == 32 and learner.lags == [0] * batched
    assert np.abs(np.asarray(flat) - np.asarray(ravel_pytree(state.params)[0])).max() > 0


VTRACE_ROLLOUT = {"rewards": [1.0, 2.0, 3.0], "values": [0.5, 1.0, 1.5], "last_value": 2.0, "gamma": 0.9,
                  "ratios": [0.5, 2.0, 1.0]}  # pi/mu: rho = c = (0.5, 1, 1) after truncation at 1


def _vtrace(dones, lam, ratios=VTRACE_ROLLOUT["ratios"]):
    r = VTRACE_ROLLOUT
    out = on.vtrace(np.log(np.asarray(ratios, np.float32)), np.asarray(r["rewards"], np.float32),
                    np.asarray(r["values"], np.float32), np.asarray(dones, bool),
                    np.asarray(r["last_value"], np.float32), r["gamma"], lam)
    return [np.asarray(x) for x in out]


def test_vtrace_by_hand_with_truncated_ratios_and_an_episode_end():
    # deltas rho (r + 0.9 V' - V): 0.5 (1 + 0.9 - 0.5) = 0.7, 2 + 1.35 - 1 = 2.35, 3 + 1.8 - 1.5 = 3.3
    # lam 1: corrections 3.3; 2.35 + 0.9 * 3.3 = 5.32; 0.7 + 0.9 * 0.5 * 5.32 = 3.094
    targets, adv, rho = _vtrace([0, 0, 0], 1.0)
    np.testing.assert_allclose(targets, [3.594, 6.32, 4.8], rtol=1e-6)
    # adv = r + 0.9 * target' - V (target' of the last step: V(last obs) = 2)
    np.testing.assert_allclose(adv, [1 + 0.9 * 6.32 - 0.5, 2 + 0.9 * 4.8 - 1.0, 3.3], rtol=1e-6)
    np.testing.assert_allclose(rho, [0.5, 1.0, 1.0])
    # An episode ends at step 1: nothing flows back across it (delta_1 = 2 - 1 = 1).
    targets, adv, _ = _vtrace([0, 1, 0], 1.0)
    np.testing.assert_allclose(targets, [0.5 + 0.7 + 0.9 * 0.5 * 1.0, 2.0, 4.8], rtol=1e-6)
    np.testing.assert_allclose(adv, [1 + 0.9 * 2.0 - 0.5, 1.0, 3.3], rtol=1e-6)
    # lam 0.5: c = (0.25, 0.5, 0.5); corrections 3.3, 2.35 + 0.45 * 3.3 = 3.835, 0.7 + 0.225 * 3.835;
    # adv mixes target' and V' half and half.
    targets, adv, _ = _vtrace([0, 0, 0], 0.5)
    np.testing.assert_allclose(targets, [0.5 + 0.7 + 0.225 * 3.835, 1.0 + 3.835, 4.8], rtol=1e-6)
    np.testing.assert_allclose(adv, [1 + 0.9 * (0.5 * 4.835 + 0.5 * 1.0) - 0.5, 2 + 0.9 * (0.5 * 4.8 + 0.5 * 1.5) - 1.0,
                                     3.3], rtol=1e-6)


@pytest.mark.parametrize("lam", [1.0, 0.9])
def test_vtrace_without_lag_is_gae(lam):
    # Equal policies (log ratios 0): the targets and advantages are a2c's GAE(lam) ones.
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(2, 16, 3)).astype(np.float32)
    dones = rng.random((16, 3)) < 0.2
    last_value = rng.normal(size=3).astype(np.float32)
    targets, adv, rho = on.vtrace(np.zeros((16, 3), np.float32), rewards, values, dones, last_value, 0.95, lam)
    want = on.gae(rewards, values, dones, last_value, 0.95, lam)
    np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(targets, want + values, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(rho) == 1.0)


def test_a_stale_rollout_is_importance_weighted_and_none_ignores_the_lag():
    # Pendulum (Gaussian): a fresh rollout has weights 1; one acted with the parameters of an
    # update ago has weights below 1, and correction none learns from it unweighted.
    common = {**TINY, "env": "Pendulum-v1", "total_steps": 3200, "learning_rate": 0.05, "anneal_lr": False}
    configs = {c: from_dict(a3c.Config, {**common, "correction": c}) for c in ("vtrace", "none")}
    actor = a3c.Actor(configs["vtrace"], 0)
    learners = {c: a3c.Learner(config, a3c.init(configs["vtrace"])) for c, config in configs.items()}
    params0 = learners["vtrace"].state.params
    fresh, stale = actor.collect(params0, 0), actor.collect(params0, 0)
    for learner in learners.values():
        learner.step([fresh])
        assert float(learner.sums["importance_weight"]) == pytest.approx(1.0, abs=1e-5)
        learner.step([stale])  # lag 1
        assert 0.0 < float(learner.sums["importance_weight"]) - 1.0 < 0.99
    got = {c: ravel_pytree(learner.state.params)[0] for c, learner in learners.items()}
    assert np.abs(np.asarray(got["vtrace"]) - np.asarray(got["none"])).max() > 1e-4


def test_bounded_mean_keeps_the_gaussian_mean_inside_the_action_bounds():
    config = from_dict(a2c.Config, {"env": "Pendulum-v1", "hidden_size": 8, "bounded_mean": True})
    info = env_info("Pendulum-v1")
    network = a2c.make_network(config, info)
    params = network.init(jax.random.PRNGKey(0), np.zeros(3, np.float32))
    params = jax.tree.map(lambda x: x * 100.0, params)  # a mean far past the bounds unbounded
    (mean, _), _ = network.apply(params, np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32) * 10)
    assert np.all(np.abs(np.asarray(mean)) <= 2.0) and np.abs(np.asarray(mean)).max() > 1.9
    unbounded = a2c.make_network(from_dict(a2c.Config, {"env": "Pendulum-v1", "hidden_size": 8}), info)
    (raw, _), _ = unbounded.apply(params, np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32) * 10)
    np.testing.assert_allclose(mean, 2.0 * np.tanh(raw), rtol=1e-5, atol=1e-6)


def test_policy_lag_and_episodes_are_accounted_per_rollout():
    # Probe-Truncation-v0: episodes of exactly 10 steps with return 10.
    config = from_dict(a3c.Config, {**TINY, "env": "Probe-Truncation-v0", "total_steps": 3200, "reward_window": 50})
    actor = a3c.Actor(config, 0)
    learner = a3c.Learner(config, a3c.init(config))
    params = learner.state.params
    stale = [actor.collect(params, 0), actor.collect(params, 0)]  # both acted with version 0
    for message in stale:
        learner.step([message])
    fresh = actor.collect(learner.state.params, learner.version)  # version 2, learned at 2
    learner.step([fresh])
    assert learner.lags == [0, 1, 0]
    metrics = learner.metrics()
    assert metrics["policy_lag_mean"] == pytest.approx(1 / 3) and metrics["policy_lag_max"] == 1.0
    # 3 rollouts x 8 steps: each of the 4 envs finished 2 episodes of 10 steps.
    assert int(metrics["episodes"]) == 8
    assert metrics["episode_return"] == pytest.approx(10.0) and metrics["episode_length"] == pytest.approx(10.0)
    assert metrics["stale_rollouts"] == 0


def test_rollouts_staler_than_max_policy_lag_are_dropped_but_their_episodes_count():
    config = from_dict(a3c.Config, {**TINY, "env": "Probe-Truncation-v0", "total_steps": 3200, "max_policy_lag": 1})
    actor = a3c.Actor(config, 0)
    learner = a3c.Learner(config, a3c.init(config))
    old = [actor.collect(learner.state.params, 0) for _ in range(3)]  # 24 steps: 8 episodes end
    learner.step([old[0]])
    learner.step([old[1]])  # lag 1: learned from
    assert learner.too_stale(old[2])  # lag 2
    assert not learner.too_stale(actor.collect(learner.state.params, learner.version))
    metrics = learner.metrics()
    assert learner.lags == [0, 1] and metrics["stale_rollouts"] == 1 and learner.version == 2
    assert int(metrics["episodes"]) == 8


def _actors():
    import multiprocessing as mp

    return [p for p in mp.active_children() if p.name.startswith("rltune-a3c-actor")]


def test_two_actors_learn_the_value_of_a_constant_reward_probe_and_stop_with_the_run(tmp_path):
    from rltune.policy import load_agent
    from rltune.runner import RunOptions, train

    # Reward 1 forever, truncated every 10 steps: V = 1 / (1 - 0.9) = 10 (the truncation
    # bootstraps), whatever the lag.
    config = from_dict(a3c.Config, {**TINY, "env": "Probe-Truncation-v0", "gamma": 0.9, "learning_rate": 2e-2,
                                    "anneal_lr": False, "total_steps": 8_000, "ent_coef": 0.0, "num_actors": 2})
    summary = train("a3c", config, tmp_path, options=RunOptions(segment_steps=2_000, eval_episodes=1))
    assert _actors() == []  # the runner closed them
    assert summary["env_steps"] == 8_000 - 8_000 % 32
    assert 0 <= summary["metrics"]["policy_lag_mean"] <= summary["metrics"]["policy_lag_max"]
    agent = load_agent(tmp_path, "last")
    _, value = a3c.make_network(config, agent.info).apply(agent.params, np.zeros((1, 1), np.float32))
    assert abs(float(value[0]) - 10.0) < 0.5


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_a_killed_training_process_leaves_no_actor_behind(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    trainer = subprocess.Popen([sys.executable, "-m", "rltune", "train", "a3c", "--env", "CartPole-v1",
                                "--total-steps", "100000000", "--hidden-size", "8", "--num-actors", "2",
                                "--out", str(tmp_path / "run")], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            actors = [c for c in _children(trainer.pid)
                      if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text(errors="replace")]
            if len(actors) == 2:
                break
            assert trainer.poll() is None, "the trainer exited early"
            time.sleep(0.5)
        else:
            pytest.fail("the actors did not start")
        time.sleep(3)  # training under way (or still starting: either way they must go with it)
        os.kill(trainer.pid, signal.SIGKILL)
        trainer.wait()
        # a running actor dies at once (its parent-death signal); one still importing under load
        # sets that signal later and then finds its parent gone: allow for that start-up
        deadline = time.time() + 60
        while time.time() < deadline and any(_alive(a) for a in actors):
            time.sleep(0.1)
        assert not any(_alive(a) for a in actors)
    finally:
        if trainer.poll() is None:
            trainer.kill()


def test_the_population_executor_refuses_a3c():
    from rltune.errors import UsageError
    from rltune.tune.resolve import check_executor
    from rltune.tune.spec import spec_from_dict

    spec = spec_from_dict({"name": "x", "agent": "a3c", "env": "CartPole-v1", "budget_steps": 1000, "trials": 2,
                           "search_space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}},
                           "executor": "population"})
    with pytest.raises(UsageError) as exc:
        check_executor(spec)
    assert exc.value.field == "executor" and "a2c" in str(exc.value) and "a3c" in str(exc.value)


def test_a_gymnasium_actor_feeds_the_learner():
    # The host-loop actor (Gymnasium envs) produces the same message as a compiled one.
    config = from_dict(a3c.Config, {**TINY, "env": "CartPole-v1", "backend": "gymnasium", "total_steps": 3200})
    actor = a3c.Actor(config, 0)
    learner = a3c.Learner(config, a3c.init(config))
    message = actor.collect(learner.state.params, 0)
    assert message[2][0].shape == (8, 4, 4) and message[3].shape == (4, 4)  # (t_max, envs, obs), last obs
    learner.step([message])
    assert int(learner.state.env_steps) == 32 and learner.lags == [0]
