"""Gymnasium vector envs (same-step auto-reset, true final observations), Atari wrappers, the
replay buffer, and the host training loop on a Gymnasium probe."""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rltune import replay as rb
from rltune.agents import dqn
from rltune.config import from_dict
from rltune.envs.gym_vec import VecEnv


class Counter(gymnasium.Env):
    """Observation = steps taken this episode; reward 1; never terminates (truncated by TimeLimit)."""

    observation_space = gymnasium.spaces.Box(0.0, 100.0, (1,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([float(self.t)], np.float32), 1.0, False, False, {}


class Constant(Counter):
    """Observation always 0 (for a known value with truncation)."""

    def step(self, action):
        return np.array([0.0], np.float32), 1.0, False, False, {}


gymnasium.register("RltuneTest-Counter-v0", entry_point=Counter, max_episode_steps=5)
gymnasium.register("RltuneTest-Constant-v0", entry_point=Constant, max_episode_steps=10)


def test_auto_reset_returns_the_true_final_observation():
    venv = VecEnv("RltuneTest-Counter-v0", 2, seed=0)
    for t in range(1, 6):
        out = venv.step(np.zeros(2, np.int64))
    assert out.truncated.all() and not out.terminated.any()
    np.testing.assert_array_equal(out.final_obs[:, 0], [5.0, 5.0])  # where the episode stopped
    np.testing.assert_array_equal(out.obs[:, 0], [0.0, 0.0])  # the reset observation
    out = venv.step(np.zeros(2, np.int64))
    np.testing.assert_array_equal(out.final_obs, out.obs)


def test_host_loop_dqn_bootstraps_on_truncation():
    # Host path on a Gymnasium env: Q = 1 / (1 - 0.8) = 5 (3.6 if truncation were termination).
    config = from_dict(dqn.Config, {"env": "RltuneTest-Constant-v0", "num_envs": 4, "total_steps": 16_000,
                                    "learning_rate": 3e-3, "gamma": 0.8, "train_freq": 1, "update_target": 100,
                                    "end_e": 1.0, "hidden_size": 32, "buffer_size": 2_000, "batch_size": 64,
                                    "learning_starts": 64})
    state = dqn.init(config)
    assert state.host is not None
    state, metrics = dqn.train_segment(config, state, config.num_updates)
    assert float(metrics["episode_return"]) == 10.0 and float(metrics["episode_length"]) == 10.0
    q = dqn.make_network(config, dqn.off.agent_info(config)).apply(state.params, np.zeros((1, 1), np.float32))
    np.testing.assert_allclose(np.asarray(q), [[5.0, 5.0]], atol=0.3)


def test_replay_ring_numpy_and_jax_agree():
    buf_j = rb.init(5, (2,), np.float32, (), np.int32)
    buf_n = rb.init(5, (2,), np.float32, (), np.int32, host=True)
    for start in (0, 3, 6):  # the third batch wraps around
        obs = np.arange(start, start + 3, dtype=np.float32)[:, None].repeat(2, 1)
        args = (obs, np.arange(3, dtype=np.int32), np.ones(3, np.float32), obs + 1, np.zeros(3, np.float32))
        buf_j = rb.add(buf_j, *map(jnp.asarray, args))
        buf_n = rb.add_np(buf_n, *args)
    assert int(buf_j.size) == int(buf_n.size) == 5 and int(buf_j.pos) == int(buf_n.pos) == 4
    np.testing.assert_array_equal(np.asarray(buf_j.obs), buf_n.obs)
    np.testing.assert_array_equal(buf_n.obs[:, 0], [5, 6, 7, 8, 4])  # newest 5 of 0..8, in ring order
    batch = rb.sample(buf_j, jax.random.PRNGKey(0), 64)
    assert set(np.asarray(batch["obs"][:, 0]).tolist()) <= {4.0, 5.0, 6.0, 7.0, 8.0}
    np.testing.assert_array_equal(np.asarray(batch["next_obs"]), np.asarray(batch["obs"]) + 1)
    batch = rb.sample_np(buf_n, np.random.default_rng(0), 64)
    np.testing.assert_array_equal(batch["next_obs"], batch["obs"] + 1)


def test_atari_wrappers_clip_rewards_and_flag_life_loss():
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    venv = VecEnv("ALE/Breakout-v5", 1, seed=0)
    assert venv.obs.shape == (1, 4, 84, 84) and venv.obs.dtype == np.uint8
    rng = np.random.default_rng(0)
    saw_life_loss = saw_reward = False
    for _ in range(600):
        out = venv.step(rng.integers(0, 4, 1))
        np.testing.assert_array_equal(out.train_reward, np.sign(out.reward))
        assert not (out.terminated & ~out.train_terminated).any()
        saw_life_loss |= bool((out.train_terminated & ~out.terminated).any())
        saw_reward |= bool(out.reward.any())
        if out.terminated.any():
            break
    assert saw_life_loss  # a life lost ends the learning episode, not the game
