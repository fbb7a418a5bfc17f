"""Gymnasium vector environments for the host training loop, and the Atari wrapper stack.

`VecEnv` wraps `gymnasium.vector.SyncVectorEnv` in same-step auto-reset mode: when an episode
ends, `step` returns the reset observation in `obs` and the true last observation in
`final_obs`, so a truncated episode can bootstrap from where it really stopped.

Atari ids (`ALE/...`) get the standard DQN preprocessing: no-op reset (up to 30), frame skip 4
with a max-pool over the last two frames, 84x84 grayscale, a stack of 4 frames. For learning,
the step also reports clipped rewards (sign) and a life loss as the end of an episode
(episodic life, without resetting the game); the reported rewards and episode ends are the
raw game's (unclipped score over all lives).
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium
import numpy as np

ATARI_SHAPE = (4, 84, 84)  # frame stack, height, width (uint8)


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/") or "NoFrameskip" in env_id


class VecStep(NamedTuple):
    obs: np.ndarray  # next observation (the reset one where an episode ended)
    reward: np.ndarray  # raw reward, for reporting
    terminated: np.ndarray  # the episode ended (game over for Atari)
    truncated: np.ndarray
    final_obs: np.ndarray  # true last observation where an episode ended, else == obs
    train_reward: np.ndarray  # what the agent learns from (clipped for Atari)
    train_terminated: np.ndarray  # what zeroes the bootstrap (life loss too for Atari)


class LifeLoss(gymnasium.Wrapper):
    """Adds info['life_lost'] to an ALE env: episodic life for learning, without a reset."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._lives = info.get("lives", 0)
        info["life_lost"] = False
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = info.get("lives", 0)
        info["life_lost"] = bool(lives < self._lives)
        self._lives = lives
        return obs, reward, terminated, truncated, info


def make_env(env_id: str, **kwargs):
    """One Gymnasium env; Atari ids come wrapped (as trained and as evaluated)."""
    from rltune.envs import resolve_backend

    resolve_backend(env_id, "gymnasium")  # registers the ALE namespace when ale-py is there
    if not is_atari(env_id):
        return gymnasium.make(env_id, **kwargs)
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    env = gymnasium.make(env_id, frameskip=1, **kwargs)  # AtariPreprocessing skips (max-pooled)
    env = AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True,
                             terminal_on_life_loss=False, scale_obs=False)
    env = LifeLoss(env)
    return FrameStackObservation(env, 4)


def spaces(env_id: str):
    """(observation_space, action_space) of the wrapped env."""
    env = make_env(env_id)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


class VecEnv:
    """`num_envs` copies in one process, same-step auto-reset. Keeps the last observation."""

    def __init__(self, env_id: str, num_envs: int, seed: int):
        self.env_id = env_id
        self.num_envs = num_envs
        self.atari = is_atari(env_id)
        self._env = gymnasium.vector.SyncVectorEnv(
            [lambda: make_env(env_id) for _ in range(num_envs)],
            autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
        self.discrete = hasattr(self._env.single_action_space, "n")
        obs, _ = self._env.reset(seed=seed)
        self.obs = self._convert(obs)
        self.steps = 0  # vector steps since that reset: at 0 every env is at an episode's start

    def _convert(self, obs):
        return np.asarray(obs, np.uint8 if self.atari else np.float32)

    def step(self, actions) -> VecStep:
        actions = np.asarray(actions)
        if self.discrete:
            actions = actions.astype(np.int64)
        obs, reward, terminated, truncated, info = self._env.step(actions)
        obs = self._convert(obs)
        reward = np.asarray(reward, np.float32)
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        final_obs = obs
        if "_final_obs" in info:
            mask = info["_final_obs"]
            final_obs = obs.copy()
            for i in np.flatnonzero(mask):
                final_obs[i] = info["final_obs"][i]
        train_reward, train_terminated = reward, terminated
        if self.atari:
            train_reward = np.sign(reward)
            lost = np.asarray(info.get("life_lost", np.zeros(self.num_envs, bool)), bool)
            lost = lost & np.asarray(info.get("_life_lost", np.ones(self.num_envs, bool)), bool)
            train_terminated = terminated | lost
        self.obs = obs
        self.steps += 1
        return VecStep(obs, reward, terminated, truncated, final_obs, train_reward, train_terminated)

    def close(self) -> None:
        self._env.close()
