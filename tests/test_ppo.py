import jax
import numpy as np
import pytest

from rltune.agents import ppo
from rltune.config import from_dict

TINY = {"num_envs": 4, "num_steps": 16, "num_minibatches": 2, "update_epochs": 2, "hidden_size": 16}


def make(**kw):
    return from_dict(ppo.PPOConfig, {**TINY, **kw})


def test_truncation_bootstraps_to_the_infinite_horizon_value():
    # Reward 1 forever, truncated every 10 steps: V = 1 / (1 - 0.9) = 10 everywhere. Without the
    # bootstrap on truncation the critic would learn a finite-horizon mean value of about 5.
    config = make(env="Probe-Truncation-v0", gamma=0.9, gae_lambda=1.0, learning_rate=3e-3,
                  total_steps=40_000, anneal_lr=False, ent_coef=0.0)
    state = ppo.init(config)
    state, _ = ppo.train_segment(config, state, config.num_updates)
    info = ppo.env_info(config.env, "auto")
    _, value = ppo.make_network(config, info).apply(state.params, np.zeros((1, 1), np.float32))
    assert abs(float(value[0]) - 10.0) < 1.0


def test_learns_the_sign_probe_policy():
    config = make(env="Probe-Sign-v0", learning_rate=3e-3, total_steps=20_000)
    state = ppo.init(config)
    state, metrics = ppo.train_segment(config, state, config.num_updates)
    assert float(metrics["episode_return"]) > 0.95
    act = ppo.policy_fn(config, ppo.env_info(config.env, "auto"))
    actions = act(state.params, np.array([[1.0], [-1.0]], np.float32), jax.random.PRNGKey(0), True)
    assert np.asarray(actions).tolist() == [1, 0]


def test_segments_equal_one_long_run():
    config = make(env="CartPole-v1", total_steps=64 * 6)
    a = ppo.init(config)
    a, _ = ppo.train_segment(config, a, 6)
    b = ppo.init(config)
    for n in (2, 1, 3):
        b, _ = ppo.train_segment(config, b, n)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_learning_rate_changes_training_but_not_the_compiled_program():
    base = make(env="CartPole-v1", total_steps=64 * 2)
    other = make(env="CartPole-v1", total_steps=64 * 2, learning_rate=1e-2)
    assert ppo.split_config(base)[0] == ppo.split_config(other)[0]  # same static part: one compile
    a, _ = ppo.train_segment(base, ppo.init(base), 2)
    b, _ = ppo.train_segment(other, ppo.init(other), 2)
    diff = max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
               for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)))
    assert diff > 1e-4


def test_continuous_actions_train_on_pendulum():
    config = make(env="Pendulum-v1", total_steps=64 * 2)
    state, metrics = ppo.train_segment(config, ppo.init(config), 2)
    assert np.isfinite(float(metrics["loss"]))
    act = ppo.policy_fn(config, ppo.env_info("Pendulum-v1", "auto"))
    action = np.asarray(act(state.params, np.zeros((3, 3), np.float32), jax.random.PRNGKey(0), False))
    assert action.shape == (3, 1) and np.all(np.abs(action) <= 2.0)


@pytest.mark.parametrize("field,value", [("num_minibatches", 3)])
def test_inconsistent_sizes_are_rejected(field, value):
    from rltune.errors import UsageError

    with pytest.raises(UsageError) as exc:
        make(**{field: value})
    assert exc.value.field == field


def test_gymnasium_host_loop_trains_and_resumes(tmp_path):
    from rltune.runner import RunOptions, train

    config = make(env="CartPole-v1", backend="gymnasium", total_steps=64 * 4)
    opts = RunOptions(segment_steps=128, eval_episodes=2)
    first = train("ppo", make(env="CartPole-v1", backend="gymnasium", total_steps=128), tmp_path, options=opts)
    assert first["env_steps"] == 128 and np.isfinite(first["metrics"]["loss"])
    resumed = train("ppo", config, tmp_path, options=opts, resume=True)
    assert resumed["env_steps"] == 256 and resumed["eval"]["backend"] == "gymnasium"
    assert resumed["metrics"]["episodes"] > 0


def test_host_loop_update_equals_the_compiled_update():
    """Same rollout in, same parameters out: the host loop's jitted learn step is the compiled path's."""
    from rltune.agents import _onpolicy as on

    config = make(env="CartPole-v1", total_steps=64)
    static, hp = ppo.split_config(config)
    info = ppo.env_info("CartPole-v1", "auto")
    state = ppo.init(config)
    algo = ppo.make_algo(static, info)
    state_after, traj = on.rollout(static, info, algo, state)
    compiled, _ = on.learn(static, algo, hp, state_after, traj)
    _, learn, _ = on.host_fns(ppo.make_algo, static, info)
    hosted, _ = learn(hp, state_after, traj)
    for a, b in zip(jax.tree.leaves(compiled.params), jax.tree.leaves(hosted.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_logged_learning_rate_is_the_compiled_schedule():
    """learning_rate_at (numpy, for the logs) gives the float32 value the update uses."""
    import jax.numpy as jnp

    from rltune.agents import _onpolicy as on

    config = from_dict(ppo.Config, {"env": "CartPole-v1", "total_steps": 100_000, "learning_rate": 3.7e-4})
    for update in (0, 1, 97, config.num_updates - 1, config.num_updates, config.num_updates + 5):
        compiled = on.linear_decay(jnp.float32(config.learning_rate), jnp.asarray(update), config.num_updates)
        assert ppo.learning_rate_at(config, update) == float(compiled)
