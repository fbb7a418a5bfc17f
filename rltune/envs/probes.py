"""Probe environments with known answers, as gymnax environments (compiled path).

- `Probe-Truncation-v0`: observation 0, reward 1 every step, never terminates, truncated after
  10 steps. With correct bootstrapping on truncation, V = 1 / (1 - gamma) at every step.
- `Probe-Countdown-v0`: episodes of length 1, 2, 3, 1, 2, 3, ... per env (reward 1 per step),
  terminating: the episode returns are known exactly, for auto-reset bookkeeping tests.
- `Probe-Sign-v0`: observation +1 or -1 at random, one-step episodes; reward 1 for action 1
  when the observation is +1 and for action 0 when it is -1. The optimal policy is known.
- `Probe-Chain-v0`: observation t / 50 at step t, reward 1 every step, terminated after 50
  steps whatever the actions: Q(t, a) = (1 - gamma^(50 - t)) / (1 - gamma) for both actions, never
  above 1 / (1 - gamma). A regression that down-weights the rare terminal transition (Huber loss
  on returns >> 1) overshoots it without bound.
- `Probe-Continuous-v0`: observation x uniform in [-1, 1], one-step episodes, a continuous
  action a in [-1, 1] with reward 1 - (a - x / 2)^2: the best action is x / 2 (reward 1) and
  Q(x, a) equals the reward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class ProbeState(environment.EnvState):
    obs: jnp.ndarray
    target: jnp.ndarray  # episode length (Countdown) or the sign (Sign)
    episode: jnp.ndarray


@struct.dataclass
class ProbeParams(environment.EnvParams):
    max_steps_in_episode: int = 10


CHAIN_LENGTH = 50


class _Probe(environment.Environment):
    kind = ""

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams(max_steps_in_episode=10 if self.kind == "truncation" else 100)

    def reset_env(self, key, params, episode=0):
        if self.kind == "chain":
            obs = jnp.zeros((1,), jnp.float32)
            return obs, ProbeState(time=0, obs=obs, target=jnp.asarray(CHAIN_LENGTH, jnp.float32),
                                   episode=jnp.asarray(episode, jnp.int32))
        sign = jnp.where(jax.random.bernoulli(key), 1.0, -1.0)
        obs = jnp.array([sign if self.kind == "sign" else 0.0], jnp.float32)
        target = sign if self.kind == "sign" else jnp.asarray(episode % 3 + 1, jnp.float32)
        state = ProbeState(time=0, obs=obs, target=target, episode=jnp.asarray(episode, jnp.int32))
        return obs, state

    def step_env(self, key, state: ProbeState, action, params):
        if self.kind == "sign":
            reward = jnp.where((action == 1) == (state.target > 0), 1.0, 0.0)
            terminated = jnp.asarray(True)
        else:
            reward = jnp.asarray(1.0)
            terminated = (jnp.asarray(state.time + 1, jnp.float32) >= state.target) if self.kind in (
                "countdown", "chain") else jnp.asarray(False)
        state = state.replace(time=state.time + 1)
        if self.kind == "chain":
            state = state.replace(obs=jnp.full((1,), state.time / CHAIN_LENGTH, jnp.float32))
        return state.obs, state, reward, terminated, {}

    def step(self, key, state, action, params=None):
        # As gymnax's step, but the next episode of this env knows its index (Countdown lengths).
        params = self.default_params if params is None else params
        obs_st, state_st, reward, terminated, info = self.step_env(key, state, action, params)
        truncated = state_st.time >= params.max_steps_in_episode
        done = jnp.logical_or(terminated, truncated)
        obs_re, state_re = self.reset_env(key, params, state.episode + 1)
        state = jax.tree.map(lambda a, b: jax.lax.select(done, a, b), state_re, state_st)
        obs = jax.lax.select(done, obs_re, obs_st)
        return obs, state, reward, terminated, truncated, {"final_observation": obs_st}

    def observation_space(self, params):
        return spaces.Box(-1.0, 1.0, (1,), jnp.float32)

    def action_space(self, params):
        return spaces.Discrete(2)

    @property
    def num_actions(self) -> int:
        return 2


class Truncation(_Probe):
    kind = "truncation"


class Countdown(_Probe):
    kind = "countdown"


class Sign(_Probe):
    kind = "sign"


class Chain(_Probe):
    kind = "chain"


@struct.dataclass
class ContinuousState(environment.EnvState):
    obs: jnp.ndarray


class Continuous(environment.Environment):
    """One-step episodes with a known best continuous action (x / 2) and Q(x, a) = reward."""

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams(max_steps_in_episode=1)

    def reset_env(self, key, params):
        obs = jax.random.uniform(key, (1,), jnp.float32, -1.0, 1.0)
        return obs, ContinuousState(time=0, obs=obs)

    def step_env(self, key, state: ContinuousState, action, params):
        reward = 1.0 - (jnp.reshape(action, ()) - state.obs[0] / 2) ** 2
        state = state.replace(time=state.time + 1)
        return state.obs, state, reward, jnp.asarray(True), {}

    def step(self, key, state, action, params=None):
        params = self.default_params if params is None else params
        k_step, k_reset = jax.random.split(key)
        obs_st, state_st, reward, terminated, _ = self.step_env(k_step, state, action, params)
        obs_re, state_re = self.reset_env(k_reset, params)
        return obs_re, state_re, reward, terminated, jnp.asarray(False), {"final_observation": obs_st}

    def observation_space(self, params):
        return spaces.Box(-1.0, 1.0, (1,), jnp.float32)

    def action_space(self, params):
        return spaces.Box(-1.0, 1.0, (1,), jnp.float32)


PROBES = {"Probe-Truncation-v0": Truncation, "Probe-Countdown-v0": Countdown, "Probe-Sign-v0": Sign, "Probe-Chain-v0": Chain,
          "Probe-Continuous-v0": Continuous}
