"""pg and a2c on probe environments with known answers, and a2c in a population."""

import jax
import numpy as np
import pytest

from rltune.agents import a2c, pg
from rltune.config import from_dict
from rltune.envs import env_info

PG_TINY = {"num_envs": 4, "batch_size": 64, "hidden_size": 16}
A2C_TINY = {"num_envs": 4, "t_max": 8, "hidden_size": 16}


def _value_at_zero(module, config, state):
    _, value = module.make_network(config, env_info(config.env)).apply(state.params, np.zeros((1, 1), np.float32))
    return float(value[0])


@pytest.mark.parametrize("module,tiny", [(pg, PG_TINY), (a2c, A2C_TINY)], ids=["pg", "a2c"])
def test_value_of_a_constant_reward_env_bootstraps_through_truncation(module, tiny):
    # Reward 1 forever, truncated every 10 steps: V = 1 / (1 - 0.9) = 10 everywhere. Ending the
    # return at the truncation instead would give the finite-horizon mean, about 6.5.
    extra = {"anneal_lr": False} if module is a2c else {}
    config = from_dict(module.Config, {**tiny, **extra, "env": "Probe-Truncation-v0", "gamma": 0.9,
                                       "learning_rate": 2e-2, "total_steps": 8_000, "ent_coef": 0.0})
    state, _ = module.train_segment(config, module.init(config), config.num_updates)
    assert abs(_value_at_zero(module, config, state) - 10.0) < 0.5


@pytest.mark.parametrize("module,tiny", [(pg, PG_TINY), (a2c, A2C_TINY)], ids=["pg", "a2c"])
def test_gaussian_policy_moves_to_the_rewarding_action(module, tiny):
    # One-step episodes, reward 1 - (a - x/2)^2: the mean of the Gaussian must go to x / 2.
    config = from_dict(module.Config, {**tiny, "env": "Probe-Continuous-v0", "learning_rate": 1e-2,
                                       "total_steps": 12_000, "ent_coef": 0.0})
    state = module.init(config)
    act = module.policy_fn(config, env_info(config.env))
    obs = np.array([[-0.8], [0.0], [0.8]], np.float32)
    before = np.asarray(act(state.params, obs, jax.random.PRNGKey(0), True))[:, 0]
    state, metrics = module.train_segment(config, state, config.num_updates)
    after = np.asarray(act(state.params, obs, jax.random.PRNGKey(0), True))[:, 0]
    np.testing.assert_allclose(after, [-0.4, 0.0, 0.4], atol=0.1)
    assert np.abs(before - [-0.4, 0.0, 0.4]).max() > 0.3  # it moved there, it did not start there
    sampled = np.asarray(act(state.params, np.repeat(obs, 200, 0), jax.random.PRNGKey(1), False))
    assert np.all(np.abs(sampled) <= 1.0)  # actions clipped to the bounds


@pytest.mark.parametrize("module,tiny", [(pg, PG_TINY), (a2c, A2C_TINY)], ids=["pg", "a2c"])
def test_learns_the_sign_probe_policy(module, tiny):
    config = from_dict(module.Config, {**tiny, "env": "Probe-Sign-v0", "learning_rate": 1e-2,
                                       "total_steps": 4_000})
    state, metrics = module.train_segment(config, module.init(config), config.num_updates)
    assert float(metrics["episode_return"]) > 0.95
    act = module.policy_fn(config, env_info(config.env))
    actions = act(state.params, np.array([[1.0], [-1.0]], np.float32), jax.random.PRNGKey(0), True)
    assert np.asarray(actions).tolist() == [1, 0]


def test_pg_counts_only_steps_whose_episode_ends_in_the_rollout():
    from rltune.agents import _onpolicy as on

    done = np.array([[0, 0], [1, 0], [0, 0], [0, 1], [0, 0]], bool)  # (time, env)
    np.testing.assert_array_equal(np.asarray(on.episode_ends_in_rollout(done)),
                                  [[1, 1], [1, 1], [0, 1], [0, 1], [0, 0]])


def test_a2c_members_train_with_their_own_hyperparameters(tmp_path):
    from rltune.runner import TrialRecorder
    from rltune.tune.executors.population import Member, Population
    from rltune.tune.executors.base import TrialTask

    configs = [from_dict(a2c.Config, {**A2C_TINY, "total_steps": 32 * 8, "learning_rate": lr, "gamma": g})
               for lr, g in ((1e-3, 0.99), (3e-2, 0.9))]
    pop = Population("a2c", len(configs))
    for slot, config in enumerate(configs):
        task = TrialTask(trial_id=slot, trial_dir=str(tmp_path / str(slot)), params={}, agent="a2c")
        pop.admit(Member(task, config, TrialRecorder("a2c", config, tmp_path / str(slot)), slot, (), 3),
                  a2c.init(config))
    states, metrics, n, _ = pop.step()
    assert n == {0: 3, 1: 3}
    for slot, config in enumerate(configs):
        alone, alone_metrics = a2c.train_segment(config, a2c.init(config), 3)
        member = jax.tree.map(lambda x: x[slot], states.params)
        for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(member)):
            np.testing.assert_allclose(np.asarray(a), b, rtol=2e-4, atol=2e-5)
        assert float(metrics["loss"][slot]) == pytest.approx(float(alone_metrics["loss"]), rel=1e-4)
    assert int(states.env_steps[0]) == 3 * 32


def test_a2c_shared_torso_and_adam_train():
    config = from_dict(a2c.Config, {**A2C_TINY, "env": "CartPole-v1", "total_steps": 32 * 2,
                                    "shared_torso": True, "optimizer": "adam"})
    state, metrics = a2c.train_segment(config, a2c.init(config), 2)
    assert np.isfinite(float(metrics["loss"]))
    names = set(state.params["params"])
    assert "MLP_0" not in names and "Dense_0" in names  # one torso of Dense layers, two heads


def test_pg_rejects_a_batch_that_num_envs_does_not_divide():
    from rltune.errors import UsageError

    with pytest.raises(UsageError) as exc:
        from_dict(pg.Config, {"num_envs": 3, "batch_size": 64})
    assert exc.value.field == "batch_size"


def test_a2c_gymnasium_host_loop_gaussian_trains_loads_and_resumes(tmp_path):
    from rltune.policy import load_agent
    from rltune.runner import RunOptions, load_last, train

    config = from_dict(a2c.Config, {**A2C_TINY, "env": "Pendulum-v1", "backend": "gymnasium", "total_steps": 32 * 3,
                                    "reward_window": 5})
    summary = train("a2c", config, tmp_path, options=RunOptions(segment_steps=64, eval_episodes=1))
    assert summary["env_steps"] == 96 and np.isfinite(summary["metrics"]["loss"])
    agent = load_agent(tmp_path)
    action = agent.act(np.zeros(3, np.float32))
    assert action.shape == (1,) and abs(float(action[0])) <= 2.0
    # Resumed 24 steps into each env's episode: the new envs' episodes count from their start.
    state, _ = load_last("a2c", config, tmp_path)
    np.testing.assert_array_equal(np.asarray(state.episodes.running_length), 24)
    state, _ = a2c.train_segment(config, state, 1)
    np.testing.assert_array_equal(np.asarray(state.episodes.running_length), 8)


def test_observation_statistics_merge_batches_exactly():
    from rltune.agents import _onpolicy as on

    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(8, 4, 3)).astype(np.float32) for _ in range(3)]
    params = {"params": {}, "obs_stats": {"mean": np.zeros(3, np.float32), "var": np.ones(3, np.float32),
                                          "count": np.float32(1e-4)}}
    for batch in batches:  # one rollout (time, env, features) per update
        params = on.update_obs_stats(params, batch)
    seen = np.concatenate([b.reshape(-1, 3) for b in batches])
    np.testing.assert_allclose(float(params["obs_stats"]["count"]), len(seen), rtol=1e-5)
    np.testing.assert_allclose(params["obs_stats"]["mean"], seen.mean(0), rtol=1e-4)
    np.testing.assert_allclose(params["obs_stats"]["var"], seen.var(0), rtol=1e-3)


def test_training_updates_the_statistics_once_per_rollout_and_not_by_gradient():
    config = from_dict(a2c.Config, {**A2C_TINY, "env": "CartPole-v1", "total_steps": 32 * 3, "normalize_obs": True})
    state, _ = a2c.train_segment(config, a2c.init(config), 3)
    stats = state.params["obs_stats"]
    assert float(stats["count"]) == pytest.approx(96, rel=1e-4)
    assert np.all(np.asarray(stats["var"]) != 1.0) and np.all(np.abs(np.asarray(stats["mean"])) < 1.0)


def test_mujoco_hopper_host_loop_saves_observation_statistics_that_load_agent_applies(tmp_path):
    import dataclasses

    from rltune.agents import ppo
    from rltune.policy import load_agent
    from rltune.runner import RunOptions, train

    config = from_dict(ppo.Config, {"env": "Hopper-v5", "num_envs": 2, "num_steps": 16, "num_minibatches": 2,
                                    "update_epochs": 1, "hidden_size": 16, "total_steps": 64,
                                    "normalize_obs": True})
    summary = train("ppo", config, tmp_path, options=RunOptions(segment_steps=32, eval_episodes=1))
    assert summary["env_steps"] == 64 and summary["eval"]["backend"] == "gymnasium"
    agent = load_agent(tmp_path, "last")
    stats = agent.params["obs_stats"]
    assert float(stats["count"]) == pytest.approx(64, rel=1e-3)
    obs = np.random.default_rng(0).normal(size=(5, 11)).astype(np.float32)
    normalized = np.clip((obs - stats["mean"]) / np.sqrt(stats["var"] + 1e-8), -10, 10)
    plain = dataclasses.replace(ppo.make_network(config, agent.info), normalize_obs=False)
    (mean, _), _ = plain.apply({"params": agent.params["params"]}, normalized)
    np.testing.assert_allclose(agent.act(obs), np.clip(np.asarray(mean), -1, 1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,tiny", [("pg", {"batch_size": 32}), ("a2c", {"t_max": 8})])
def test_mujoco_smoke_pg_and_a2c_train_evaluate_and_load(tmp_path, name, tiny):
    # The MuJoCo family (Gymnasium host loop, Gaussian policy, normalized observations) end to
    # end: train, evaluate in Gymnasium, load the checkpoint and act inside the action bounds
    # (ppo: test_mujoco_hopper_host_loop_saves_observation_statistics_that_load_agent_applies).
    from rltune.agents import get_agent
    from rltune.policy import load_agent
    from rltune.runner import RunOptions, train

    module = get_agent(name)
    config = from_dict(module.Config, {**tiny, "env": "Reacher-v5", "num_envs": 2, "hidden_size": 8,
                                       "total_steps": 64, "normalize_obs": True})
    summary = train(name, config, tmp_path, options=RunOptions(segment_steps=32, eval_episodes=1))
    assert summary["env_steps"] == 64 and summary["eval"]["backend"] == "gymnasium"
    assert np.isfinite(summary["metrics"]["loss"]) and np.isfinite(summary["eval"]["mean"])
    agent = load_agent(tmp_path, "last")
    action = np.asarray(agent.act(np.zeros(10, np.float32)))
    assert action.shape == (2,) and np.all(np.abs(action) <= 1.0)
