"""The training loop shared by the replay-based agents (DQN, DDPG, TD3, C2A2).

An agent supplies the math as an `Algo` (pure functions built by `make_algo(config, info)`):
`init_learner`, `explore` (batched acting with exploration), `update` (one gradient step on a
sampled batch) and optionally a hard target copy every `target_every` env steps. This module
runs it on two execution paths with the same functions:

- compiled (gymnax envs): env steps, buffer inserts and updates of a whole segment inside one
  `jax.jit` (`lax.fori_loop`), the buffer carried in the state;
- host loop (Gymnasium envs): Python steps the vector env; only acting (one call per vector
  step) and learning (one call per `train_freq` vector steps) are jitted, and the buffer is
  numpy on the host (see rltune/replay.py).

One "update" for the runner is one vector step (`num_envs` env steps); gradient steps happen
every `train_freq` of them once the buffer holds `learning_starts` transitions.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rltune import replay as rb
from rltune.agents.episodes import (EpisodeStats, init_episode_stats, record_step, record_step_np,
                                   restart_episodes, window_mean)
from rltune.config import CommonConfig, param, split_traced
from rltune.envs import EnvInfo, env_info, make_gymnax
from rltune.envs import gym_vec
from rltune.errors import UsageError


@dataclass(frozen=True)
class OffPolicyConfig(CommonConfig):
    num_envs: int = param(1, "Parallel environments (vectorized, auto-reset).", low=1, static=True)
    buffer_size: int = param(1_000_000, "Replay buffer capacity (transitions).", low=1, static=True)
    batch_size: int = param(256, "Transitions per gradient step.", low=1, static=True)
    learning_starts: int = param(10_000, "Transitions in the buffer before learning starts.", low=0,
                                 static=True)
    train_freq: int = param(1, "Vector env steps between training phases.", low=1, static=True)
    gradient_steps: int = param(1, "Gradient steps per training phase.", low=1, static=True)
    gamma: float = param(0.99, "Discount factor.", low=0.0, high=1.0)
    save_replay: bool = param(False, "Save the replay buffer in checkpoints (else a resumed run "
                              "refills it before learning again).", static=True)

    @property
    def steps_per_update(self) -> int:
        return self.num_envs

    @property
    def num_updates(self) -> int:
        return max(1, self.total_steps // self.num_envs)


class Learner(NamedTuple):
    params: Any
    target_params: Any
    opt_state: Any
    grad_steps: jnp.ndarray


class Algo(NamedTuple):
    init_learner: Callable  # (rng, hp) -> Learner
    explore: Callable  # (hp, params, obs, rng, env_steps, noise) -> (batched action, noise)
    update: Callable  # (hp, learner, batch, rng) -> (learner, metrics)
    metric_names: tuple[str, ...]
    action_shape: tuple[int, ...]
    action_dtype: Any
    target_every: Callable | None = None  # hp -> env steps between hard target copies (None: no copies)


@dataclass
class HostEnv:
    """Host-side objects of the Gymnasium path (not checkpointed: rebuilt by init)."""

    venv: gym_vec.VecEnv
    np_rng: np.random.Generator


@struct.dataclass
class OffPolicyState:
    params: Any  # online networks: what policy_fn acts with
    target_params: Any
    opt_state: Any
    grad_steps: jnp.ndarray
    replay: rb.Replay
    env_state: Any  # gymnax env states (None on the host path)
    obs: Any  # current observations (None on the host path: the VecEnv keeps them)
    noise: Any  # per-env exploration noise state (OU noise; zeros otherwise), zero at each episode start
    rng: jnp.ndarray
    episodes: EpisodeStats
    update: Any  # vector env steps so far
    env_steps: Any
    host: HostEnv | None = struct.field(pytree_node=False, default=None)


# ---------------------------------------------------------------- static / traced split
def split_config(config) -> tuple[Any, dict[str, jnp.ndarray]]:
    """Static part (traced fields reset to defaults: one compile per shape) and traced scalars."""
    return split_traced(config)


def agent_info(config) -> EnvInfo:
    """env_info, with the wrapped observation space for Atari ids."""
    info = env_info(config.env, config.backend)
    if info.backend == "gymnasium" and gym_vec.is_atari(config.env):
        info = dataclasses.replace(info, obs_shape=gym_vec.ATARI_SHAPE)
    return info


def apply_lr(params, updates, lr):
    return jax.tree.map(lambda p, u: p - lr * u, params, updates)


def polyak(target, online, tau):
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


# ---------------------------------------------------------------- init
def init(make_algo, config, rng=None) -> OffPolicyState:
    info = agent_info(config)
    if rng is None:
        rng = jax.random.PRNGKey(config.seed)
    static, hp = split_config(config)
    rng, k_learn, k_env = jax.random.split(rng, 3)
    algo = make_algo(static, info)
    learner = _init_learner_jit(make_algo, static, info, k_learn, hp)
    host = info.backend != "gymnax"
    obs_dtype = np.uint8 if (host and gym_vec.is_atari(config.env)) else np.float32
    replay = rb.init(config.buffer_size, info.obs_shape,
                     obs_dtype, algo.action_shape, algo.action_dtype, host=host,
                     checkpoint=config.save_replay)
    noise = np.zeros((config.num_envs, *algo.action_shape), np.float32)
    common = dict(params=learner.params, target_params=learner.target_params, opt_state=learner.opt_state,
                  grad_steps=learner.grad_steps, replay=replay, rng=rng)
    if host:
        venv = gym_vec.VecEnv(config.env, config.num_envs, config.seed)
        episodes = jax.tree.map(np.asarray, init_episode_stats(config.num_envs, config.reward_window))
        return OffPolicyState(**common, env_state=None, obs=None, noise=noise, episodes=episodes,
                              update=np.zeros((), np.int64), env_steps=np.zeros((), np.int64),
                              host=HostEnv(venv, np.random.default_rng(config.seed)))
    env, env_params = make_gymnax(config.env)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_env, config.num_envs), env_params)
    return OffPolicyState(**common, env_state=env_state, obs=obs.astype(jnp.float32), noise=jnp.asarray(noise),
                          episodes=init_episode_stats(config.num_envs, config.reward_window),
                          update=jnp.zeros((), jnp.int32), env_steps=jnp.zeros((), jnp.int32))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init_learner_jit(make_algo, config, info, rng, hp) -> Learner:
    return make_algo(config, info).init_learner(rng, hp)


def _learner(state: OffPolicyState) -> Learner:
    return Learner(state.params, state.target_params, state.opt_state, state.grad_steps)


def _with_learner(state: OffPolicyState, learner: Learner) -> OffPolicyState:
    return state.replace(params=learner.params, target_params=learner.target_params,
                         opt_state=learner.opt_state, grad_steps=learner.grad_steps)


def _zero_sums(algo: Algo):
    return {k: jnp.zeros((), jnp.float32) for k in (*algo.metric_names, "train_phases")}


def _learn_on_batches(algo: Algo, hp, learner: Learner, batches, rng, sums):
    """Gradient steps over stacked batches (leading axis = gradient_steps); adds mean metrics."""

    def one(learner, xs):
        batch, key = xs
        return algo.update(hp, learner, batch, key)

    keys = jax.random.split(rng, jax.tree.leaves(batches)[0].shape[0])
    if len(keys) == 1:
        # One gradient step: no loop. XLA:CPU runs a convolution inside a loop body about 11x
        # slower than outside one (Nature CNN update, batch 32: 0.60 s vs 0.05 s of CPU), which
        # bounded DQN on Atari (learning every 4 steps) at ~15 env steps/s.
        learner, metrics = one(learner, jax.tree.map(lambda x: x[0], (batches, keys)))
        metrics = jax.tree.map(lambda x: x[None], metrics)
    else:
        learner, metrics = jax.lax.scan(one, learner, (batches, keys))
    sums = {k: sums[k] + (metrics[k].mean() if k in metrics else 1.0) for k in sums}
    return learner, sums


def _sync_target(algo: Algo, hp, learner: Learner, steps_before, steps_after) -> Learner:
    if algo.target_every is None:
        return learner
    every = jnp.maximum(algo.target_every(hp), 1)
    crossed = (steps_after // every) > (steps_before // every)
    target = jax.tree.map(lambda t, p: jnp.where(crossed, p, t), learner.target_params, learner.params)
    return learner._replace(target_params=target)


def _reset_noise(noise, done, xp=jnp):
    """Zero the noise state of the envs whose episode ended (as SB3 resets its action noise)."""
    return xp.where(done.reshape(done.shape + (1,) * (noise.ndim - 1)), 0.0, noise).astype(noise.dtype)


def _metrics(algo: Algo, sums, episodes: EpisodeStats, xp=jnp):
    n = xp.maximum(sums["train_phases"], 1.0)
    out = {k: sums[k] / n for k in algo.metric_names}  # 0.0 before learning starts
    out["episode_return"] = window_mean(jnp.asarray(episodes.returns), jnp.asarray(episodes.count))
    out["episode_length"] = window_mean(jnp.asarray(episodes.lengths, jnp.float32), jnp.asarray(episodes.count))
    out["episodes"] = episodes.count
    return out


# ---------------------------------------------------------------- compiled path (gymnax)
@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _segment_jit(make_algo, config, info: EnvInfo, hp, state: OffPolicyState, num_updates):
    algo = make_algo(config, info)
    env, env_params = make_gymnax(config.env)

    def vector_step(_, carry):
        state, sums = carry
        rng, k_act, k_env, k_sample, k_learn = jax.random.split(state.rng, 5)
        action, noise = algo.explore(hp, state.params, state.obs, k_act, state.env_steps, state.noise)
        keys = jax.random.split(k_env, config.num_envs)
        obs, env_state, reward, terminated, truncated, out = jax.vmap(
            env.step, in_axes=(0, 0, 0, None))(keys, state.env_state, action, env_params)
        reward = reward.astype(jnp.float32)
        replay = rb.add(state.replay, state.obs, action, reward, out["final_observation"].astype(jnp.float32),
                        terminated.astype(jnp.float32))
        steps_before = state.env_steps
        done = jnp.logical_or(terminated, truncated)
        state = state.replace(env_state=env_state, obs=obs.astype(jnp.float32), rng=rng, replay=replay,
                              noise=_reset_noise(noise, done), episodes=record_step(state.episodes, reward, done),
                              update=state.update + 1, env_steps=state.env_steps + config.num_envs)

        def learn(args):
            learner, sums = args
            batches = rb.sample(replay, k_sample, config.gradient_steps * config.batch_size)
            batches = jax.tree.map(lambda x: x.reshape((config.gradient_steps, config.batch_size, *x.shape[1:])),
                                   batches)
            return _learn_on_batches(algo, hp, learner, batches, k_learn, sums)

        do_learn = jnp.logical_and(state.update % config.train_freq == 0, replay.size >= config.learning_starts)
        learner, sums = jax.lax.cond(do_learn, learn, lambda args: args, (_learner(state), sums))
        learner = _sync_target(algo, hp, learner, steps_before, state.env_steps)
        return _with_learner(state, learner), sums

    state, sums = jax.lax.fori_loop(0, num_updates, vector_step, (state, _zero_sums(algo)))
    return state, _metrics(algo, sums, state.episodes)


# ---------------------------------------------------------------- host path (Gymnasium)
class _HostFns(NamedTuple):
    act: Callable
    learn: Callable
    sync: Callable
    metrics: Callable
    algo: Algo


@functools.lru_cache(maxsize=32)
def _host_fns(make_algo, config, info: EnvInfo) -> _HostFns:
    algo = make_algo(config, info)

    @jax.jit
    def act(hp, params, obs, rng, env_steps, noise):
        rng, key = jax.random.split(rng)
        action, noise = algo.explore(hp, params, obs, key, env_steps, noise)
        return action, noise, rng

    @jax.jit
    def learn(hp, learner, batches, rng, sums):
        rng, key = jax.random.split(rng)
        learner, sums = _learn_on_batches(algo, hp, learner, batches, key, sums)
        return learner, sums, rng

    @jax.jit
    def sync(learner):
        return learner._replace(target_params=learner.params)

    metrics = jax.jit(lambda sums, episodes: _metrics(algo, sums, episodes))
    return _HostFns(act, learn, sync, metrics, algo)


def _segment_host(make_algo, config, info: EnvInfo, hp, state: OffPolicyState, num_updates: int):
    fns = _host_fns(make_algo, config, info)
    algo = fns.algo
    venv, np_rng = state.host.venv, state.host.np_rng
    learner, rng, replay, episodes = _learner(state), state.rng, state.replay, state.episodes
    noise = np.asarray(state.noise)
    if venv.steps == 0:
        # Every env is at an episode's start: zero noise, as at every episode start. It matters
        # on resume, where the envs are new (reset by init) but the checkpoint holds the noise
        # (and running returns) of the episodes it interrupted.
        noise, episodes = np.zeros_like(noise), restart_episodes(episodes)
    update, env_steps = int(state.update), int(state.env_steps)
    sums = _zero_sums(algo)
    every = max(1, int(algo.target_every(hp))) if algo.target_every is not None else 0
    n_sample = config.gradient_steps * config.batch_size
    for _ in range(num_updates):
        obs = venv.obs
        action, noise, rng = fns.act(hp, learner.params, obs, rng, env_steps, noise)
        action, noise = np.asarray(action), np.asarray(noise)
        out = venv.step(action)
        replay = rb.add_np(replay, obs, action, out.train_reward, out.final_obs, out.train_terminated)
        episodes = record_step_np(episodes, out.reward, out.terminated | out.truncated)
        noise = _reset_noise(noise, np.asarray(out.terminated | out.truncated), np)
        steps_before, update, env_steps = env_steps, update + 1, env_steps + config.num_envs
        if update % config.train_freq == 0 and int(replay.size) >= config.learning_starts:
            batch = rb.sample_np(replay, np_rng, n_sample)
            batch = {k: v.reshape((config.gradient_steps, config.batch_size, *v.shape[1:])) for k, v in batch.items()}
            learner, sums, rng = fns.learn(hp, learner, batch, rng, sums)
        if every and env_steps // every > steps_before // every:
            learner = fns.sync(learner)
    state = _with_learner(state, learner).replace(
        rng=rng, replay=replay, noise=noise, episodes=episodes, update=np.asarray(update, np.int64),
        env_steps=np.asarray(env_steps, np.int64))
    return state, fns.metrics(sums, episodes)


# ---------------------------------------------------------------- entry point
def train_segment(make_algo, config, state: OffPolicyState, num_updates: int):
    """Run `num_updates` vector env steps (and the gradient steps due in them)."""
    static, hp = split_config(config)
    info = agent_info(config)
    if info.backend == "gymnax":
        return _segment_jit(make_algo, static, info, hp, state, jnp.asarray(num_updates, jnp.int32))
    if state.host is None:
        raise UsageError("env", "this state has no Gymnasium environments attached; build it with init()")
    return _segment_host(make_algo, static, info, hp, state, num_updates)
