"""DQN, DDPG, TD3, C2A2: probe environments with known values, and smoke runs per env family."""

import jax
import numpy as np
import pytest

from rltune.agents import c2a2, ddpg, dqn, td3
from rltune.agents import _actor_critic as ac
from rltune.agents import _offpolicy as off
from rltune.config import from_dict

SMALL = {"hidden_size": 32, "buffer_size": 2_000, "batch_size": 64, "learning_starts": 64}
CONTINUOUS = {"td3": td3, "ddpg": ddpg, "c2a2": c2a2}


def make(module, **kw):
    return from_dict(module.Config, {**SMALL, **kw})


def train(module, config):
    state = module.init(config)
    return module.train_segment(config, state, config.num_updates)


def q_values(config, params, obs):
    network = dqn.make_network(config, off.agent_info(config))
    return np.asarray(network.apply(params, np.asarray(obs, np.float32)))


# ---------------------------------------------------------------- probes with known answers
def test_dqn_learns_one_step_q_values_exactly():
    # One-step episodes: Q(s, a) = reward: 1 for the action matching the sign, 0 otherwise.
    config = make(dqn, env="Probe-Sign-v0", num_envs=4, total_steps=6_000, learning_rate=3e-3, train_freq=1,
                  update_target=100, exploration_fraction=0.5)
    state, metrics = train(dqn, config)
    q = q_values(config, state.params, [[1.0], [-1.0]])
    np.testing.assert_allclose(q, [[0.0, 1.0], [1.0, 0.0]], atol=0.1)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["episode_return"]) > 0.7


def test_dqn_bootstraps_from_the_true_final_observation_on_truncation():
    # Reward 1 forever, truncated every 10 steps: Q = 1 / (1 - 0.8) = 5 for both actions. Treating
    # truncation as termination would give about 1 / (1 - 0.8 * 0.9) = 3.6.
    config = make(dqn, env="Probe-Truncation-v0", num_envs=4, total_steps=16_000, learning_rate=3e-3,
                  gamma=0.8, train_freq=1, update_target=100, end_e=1.0)  # uniform actions: both learn
    state, _ = train(dqn, config)
    np.testing.assert_allclose(q_values(config, state.params, [[0.0]]), [[5.0, 5.0]], atol=0.3)


def test_dqn_q_converges_to_known_values_and_never_passes_the_bound():
    # Probe-Chain-v0: reward 1 per step, terminated after 50 steps, so Q(t, a) = (1 - g^(50-t))/(1-g)
    # <= 1/(1-g) = 100. The default loss must converge to those values without overshooting; the
    # Huber loss on these unclipped returns is what made DQN diverge on CartPole, and the probe
    # catches it (Q passes the bound).
    t = np.arange(50)
    true = ((1 - 0.99 ** (50 - t)) / (1 - 0.99))[:, None]
    obs = (t / 50.0)[:, None]
    peak = {}
    for loss in ("auto", "huber"):
        config = make(dqn, env="Probe-Chain-v0", num_envs=4, total_steps=24_000, learning_rate=1e-3,
                      buffer_size=10_000, learning_starts=1_000, train_freq=1, update_target=100, loss=loss)
        state, peak[loss] = dqn.init(config), 0.0
        for _ in range(3):
            state, _ = dqn.train_segment(config, state, config.num_updates // 3)
            q = q_values(config, state.params, obs)
            peak[loss] = max(peak[loss], float(q.max()))
        if loss == "auto":
            np.testing.assert_allclose(q, np.broadcast_to(true, q.shape), atol=3.0)
    assert peak["auto"] < 100 * 1.05
    assert peak["huber"] > 100 * 1.1


@pytest.mark.parametrize("name", ["td3", "ddpg", "c2a2"])
def test_actor_critic_finds_the_best_continuous_action(name):
    # Reward 1 - (a - x/2)^2 in one-step episodes: best action x/2, Q(x, x/2) = 1.
    module = CONTINUOUS[name]
    config = make(module, env="Probe-Continuous-v0", num_envs=4, total_steps=6_000, learning_rate=3e-3,
                  learning_starts=256)
    state, metrics = train(module, config)
    x = np.linspace(-1, 1, 9, dtype=np.float32)[:, None]
    act = module.policy_fn(config, None)
    action = np.asarray(act(state.params, x, jax.random.PRNGKey(0), True))
    np.testing.assert_allclose(action, x / 2, atol=0.1)
    actor, critic = ac.networks(config, off.agent_info(config))
    q = np.asarray(critic.apply(state.params["critic"]["q1"], x, x / 2))
    np.testing.assert_allclose(q, 1.0, atol=0.1)
    assert np.isfinite(float(metrics["loss"]))


def test_c2a2_acts_with_the_actor_of_larger_q():
    config = make(c2a2, env="Probe-Continuous-v0", total_steps=100)
    state = c2a2.init(config)
    actor, critic = ac.networks(config, off.agent_info(config))
    obs = np.linspace(-1, 1, 5, dtype=np.float32)[:, None]
    params = state.params
    chosen = np.asarray(ac.best_action(actor, critic, c2a2.VARIANT, params, obs))
    for i in range(len(obs)):
        a1, a2 = (np.asarray(actor.apply(params[n], obs[i:i + 1])) for n in ("actor", "actor2"))
        q1, q2 = (float(ac.min_q(critic, c2a2.VARIANT, params["critic"], obs[i:i + 1], a)[0]) for a in (a1, a2))
        np.testing.assert_allclose(chosen[i], (a1 if q1 >= q2 else a2)[0], rtol=1e-5)


# ---------------------------------------------------------------- compiled-path properties
def test_segments_equal_one_long_run_and_traced_hyperparameters_share_a_compile():
    config = make(td3, env="Pendulum-v1", total_steps=400, learning_starts=100, num_envs=2)
    a, _ = td3.train_segment(config, td3.init(config), 200)
    b = td3.init(config)
    for n in (50, 100, 50):
        b, _ = td3.train_segment(config, b, n)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    other = make(td3, env="Pendulum-v1", total_steps=400, learning_starts=100, num_envs=2, learning_rate=1e-2,
                 tau=0.5, exploration_noise=0.3)
    assert td3.split_config(config)[0] == td3.split_config(other)[0]


def test_loss_is_zero_before_learning_starts_and_dqn_schedules_are_traced():
    config = make(dqn, env="CartPole-v1", total_steps=50, learning_starts=1_000)
    state, metrics = train(dqn, config)
    assert float(metrics["loss"]) == 0.0 and int(state.grad_steps) == 0
    other = make(dqn, env="CartPole-v1", total_steps=50, learning_starts=1_000, update_target=20_000,
                 learning_rate=1e-4, start_e=0.5, end_e=0.1, exploration_fraction=0.2, gamma=0.9)
    assert dqn.split_config(config)[0] == dqn.split_config(other)[0]  # one compiled program


# ---------------------------------------------------------------- smoke runs per env family
def _smoke(module, env, steps=300, **kw):
    config = make(module, env=env, total_steps=steps, **{"learning_starts": 100, **kw})
    state, metrics = train(module, config)
    assert int(state.env_steps) == config.num_updates * config.num_envs
    assert int(state.grad_steps) > 0 and np.isfinite(float(metrics["loss"]))
    info = off.agent_info(config)
    obs = np.zeros((2, *info.obs_shape), np.uint8 if len(info.obs_shape) == 3 else np.float32)
    action = np.asarray(module.policy_fn(config, info)(state.params, obs, jax.random.PRNGKey(0), False))
    assert action.shape[0] == 2
    return state, metrics


@pytest.mark.parametrize("backend", ["gymnax", "gymnasium"])
def test_dqn_smoke_cartpole(backend):
    state, _ = _smoke(dqn, "CartPole-v1", backend=backend, num_envs=2, double_dqn=True)
    assert (state.host is None) == (backend == "gymnax")


@pytest.mark.parametrize("name", ["td3", "ddpg", "c2a2"])
def test_actor_critic_smoke_gymnasium_pendulum(name):
    # The gymnax family is covered by the probe tests and the segment test (gymnax Pendulum).
    _smoke(CONTINUOUS[name], "Pendulum-v1", backend="gymnasium", num_envs=2)


@pytest.mark.parametrize("name", ["td3", "ddpg", "c2a2"])
def test_actor_critic_smoke_box2d(name):
    pytest.importorskip("Box2D")
    _smoke(CONTINUOUS[name], "LunarLanderContinuous-v3", steps=200)


def test_dqn_smoke_box2d():
    pytest.importorskip("Box2D")
    _smoke(dqn, "LunarLander-v3", steps=200)


def test_dqn_smoke_atari_breakout():
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    state, _ = _smoke(dqn, "ALE/Breakout-v5", steps=160, buffer_size=200, batch_size=8, learning_starts=64,
                      train_freq=4)
    assert state.replay.obs.dtype == np.uint8 and state.replay.obs.shape[1:] == (4, 84, 84)


# ---------------------------------------------------------------- runner and checkpoints
@pytest.mark.parametrize("backend", ["gymnax", "gymnasium"])
def test_runner_checkpoints_and_resumes(tmp_path, backend):
    from rltune import checkpoint
    from rltune.runner import RunOptions
    from rltune.runner import train as run

    config = make(dqn, env="CartPole-v1", backend=backend, total_steps=400, learning_starts=100, save_replay=True)
    summary = run("dqn", config, tmp_path, options=RunOptions(segment_steps=200, eval_episodes=2))
    assert summary["status"] == "completed" and summary["env_steps"] == 400
    payload = checkpoint.read(tmp_path / "checkpoints" / "last.msgpack")
    saved = payload["state"]
    for key in ("params", "target_params", "opt_state", "grad_steps", "update", "env_steps"):
        assert key in saved
    assert int(saved["replay"]["size"]) == 400
    restored = checkpoint.restore_state(dqn.init(config), payload)
    assert int(restored.update) == 400 and int(restored.replay.size) == 400
    np.testing.assert_array_equal(np.asarray(restored.replay.obs), np.asarray(saved["replay"]["obs"]))
    longer = make(dqn, env="CartPole-v1", backend=backend, total_steps=600, learning_starts=100, save_replay=True)
    summary = run("dqn", longer, tmp_path, options=RunOptions(segment_steps=200, eval_episodes=0), resume=True)
    assert summary["env_steps"] == 600
    assert int(checkpoint.read(tmp_path / "checkpoints" / "last.msgpack")["state"]["replay"]["size"]) == 600


def test_replay_is_left_out_of_checkpoints_by_default(tmp_path):
    from flax import serialization

    config = make(td3, env="Pendulum-v1", total_steps=200, learning_starts=50)
    state, _ = train(td3, config)
    saved = serialization.to_state_dict(state)
    assert saved["replay"] == {}
    restored = serialization.from_state_dict(td3.init(config), saved)
    assert int(restored.replay.size) == 0 and int(restored.update) == 200


# ---------------------------------------------------------------- exploration noise
def test_ou_noise_has_the_stationary_variance_and_autocorrelation_of_its_ar1_form():
    # x' = (1 - theta dt) x + sigma sqrt(dt) e: with theta dt = 0.1, a = 0.9, the stationary
    # variance is sigma^2 dt / (1 - a^2) and the lag-1 autocorrelation a.
    theta, sigma, dt = 1.0, 0.5, 0.1
    a = 1 - theta * dt

    def step(x, key):
        x = ac.ou_step(x, key, theta, sigma, dt)
        return x, x

    _, xs = jax.lax.scan(step, np.zeros(512, np.float32), jax.random.split(jax.random.PRNGKey(0), 600))
    xs = np.asarray(xs[100:])  # past the burn-in (0.9^100 ~ 3e-5)
    var = sigma ** 2 * dt / (1 - a ** 2)
    assert abs(xs.mean()) < 0.02
    np.testing.assert_allclose(xs.var(), var, rtol=0.05)
    lag1 = (xs[1:] * xs[:-1]).mean() / xs.var()
    np.testing.assert_allclose(lag1, a, atol=0.01)


@pytest.mark.parametrize("backend", ["gymnax", "gymnasium"])
def test_ou_noise_state_is_carried_and_reset_at_episode_end(backend):
    # Pendulum episodes are truncated at 200 steps: the noise is live mid-episode, zero right after.
    config = make(td3, env="Pendulum-v1", backend=backend, total_steps=400, learning_starts=0,
                  noise_type="ou", exploration_noise=0.5)
    state = td3.init(config)
    state, _ = td3.train_segment(config, state, 150)
    assert np.all(np.asarray(state.noise) != 0.0)
    state, _ = td3.train_segment(config, state, 50)
    np.testing.assert_array_equal(np.asarray(state.noise), 0.0)
    gaussian = make(td3, env="Pendulum-v1", backend=backend, total_steps=400, learning_starts=0)
    state, _ = td3.train_segment(gaussian, td3.init(gaussian), 150)
    np.testing.assert_array_equal(np.asarray(state.noise), 0.0)  # Gaussian noise keeps no state


def test_a_resumed_gymnasium_run_starts_its_new_episodes_with_zero_ou_noise(tmp_path):
    # The checkpoint is taken 150 steps into 200-step Pendulum episodes, with their noise; the
    # resumed run's Gymnasium envs are new (reset, not checkpointed), so its noise starts at zero.
    from rltune.runner import RunOptions, load_last
    from rltune.runner import train as run

    config = make(td3, env="Pendulum-v1", backend="gymnasium", num_envs=2, total_steps=300,
                  noise_type="ou", exploration_noise=0.5)
    run("td3", config, tmp_path, options=RunOptions(segment_steps=300, eval_episodes=0))
    resumed, _ = load_last("td3", config, tmp_path)
    assert np.all(np.asarray(resumed.noise) != 0.0)  # the interrupted episodes' noise, as saved
    from_zero, _ = load_last("td3", config, tmp_path)
    from_zero = from_zero.replace(noise=np.zeros_like(from_zero.noise))
    resumed, _ = td3.train_segment(config, resumed, 1)
    from_zero, _ = td3.train_segment(config, from_zero, 1)
    np.testing.assert_array_equal(np.asarray(resumed.noise), np.asarray(from_zero.noise))
    assert np.all(np.asarray(resumed.noise) != 0.0)
    np.testing.assert_array_equal(np.asarray(resumed.episodes.running_length), 1)  # and so do their lengths
