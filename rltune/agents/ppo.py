"""Proximal Policy Optimization (clipped surrogate, GAE), fully compiled on gymnax envs.

`init(config, rng) -> PPOState` and `train_segment(config, state, num_updates)` run whole
updates (rollout + GAE + epochs of minibatch SGD) inside one `jax.jit`. Traced hyperparameters
(learning rate, gamma, ...) are passed as arrays, so trials that differ only in them share one
compiled program, and a population can vmap over them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from rltune import hp_schedule
from rltune.agents.episodes import (EpisodeStats, init_episode_stats, record_step, record_step_np,
                                   window_mean)
from rltune.config import CommonConfig, param, split_traced
from rltune.envs import EnvInfo, env_info, make_gymnax
from rltune.errors import UsageError
from rltune.networks import ActorCritic


@dataclass(frozen=True)
class PPOConfig(CommonConfig):
    learning_rate: float = param(2.5e-4, "Adam learning rate.", low=0.0, low_exclusive=True)
    anneal_lr: bool = param(True, "Decay the learning rate linearly to 0 over total_steps.", static=True)
    num_steps: int = param(128, "Rollout length per environment per update.", low=1, static=True)
    num_minibatches: int = param(4, "Minibatches per epoch.", low=1, static=True)
    update_epochs: int = param(4, "Epochs of SGD per update.", low=1, static=True)
    gamma: float = param(0.99, "Discount factor.", low=0.0, high=1.0)
    gae_lambda: float = param(0.95, "GAE lambda.", low=0.0, high=1.0)
    clip_eps: float = param(0.2, "PPO clip range for the ratio (and the value function).", low=0.0)
    ent_coef: float = param(0.01, "Entropy bonus coefficient.", low=0.0)
    vf_coef: float = param(0.5, "Value loss coefficient.", low=0.0)
    max_grad_norm: float = param(0.5, "Gradient clipping by global norm.", low=0.0, low_exclusive=True)
    hidden_size: int = param(64, "Units per hidden layer (actor and critic).", low=1, static=True)
    hidden_layers: int = param(2, "Hidden layers (actor and critic).", low=1, static=True)
    activation: str = param("tanh", "Hidden activation.", choices=("tanh", "relu"), static=True)
    hp_schedule: str = param("", "Traced hyperparameters changing during training, applied by the runner "
                             "(a PBT study's best_config.yaml holds one): JSON list of [step, {name: value}]; "
                             "see rltune/hp_schedule.py.", static=True)

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def steps_per_update(self) -> int:
        return self.batch_size

    @property
    def num_updates(self) -> int:
        return max(1, self.total_steps // self.batch_size)

    def check(self) -> None:
        hp_schedule.check(self)
        if self.batch_size % self.num_minibatches:
            raise UsageError("num_minibatches", f"must divide num_envs * num_steps = {self.batch_size}; "
                             f"got {self.num_minibatches}")


Config = PPOConfig


@struct.dataclass
class PPOState:
    params: Any
    opt_state: Any
    env_state: Any
    obs: jnp.ndarray
    rng: jnp.ndarray
    episodes: EpisodeStats
    update: jnp.ndarray  # updates done so far
    env_steps: jnp.ndarray
    # Gymnasium path only: the vectorized envs live on the host (not checkpointed; a resumed
    # run starts fresh episodes).
    host: Any = struct.field(pytree_node=False, default=None)


class Transition(NamedTuple):
    obs: jnp.ndarray
    action: jnp.ndarray
    log_prob: jnp.ndarray
    value: jnp.ndarray
    reward: jnp.ndarray
    done: jnp.ndarray
    truncated: jnp.ndarray
    final_obs: jnp.ndarray


# ---------------------------------------------------------------- static / traced split
def split_config(config: PPOConfig) -> tuple[PPOConfig, dict[str, jnp.ndarray]]:
    """Static part (traced fields reset to defaults, so equal shapes hit one compile cache entry)
    and the traced hyperparameters as float32 arrays."""
    # The seed only feeds `init` (through its rng argument), so it is no part of the program either.
    return split_traced(config, also_reset=("seed", "hp_schedule"))


def make_network(config: PPOConfig, info: EnvInfo) -> ActorCritic:
    return ActorCritic(hidden=(config.hidden_size,) * config.hidden_layers,
                       action_dim=info.num_actions, discrete=info.discrete,
                       activation=config.activation, obs_ndim=len(info.obs_shape))


def _optimizer(hp) -> optax.GradientTransformation:
    # The learning rate is applied by hand (see _apply_updates) so it can be a traced value.
    return optax.chain(optax.clip_by_global_norm(hp["max_grad_norm"]), optax.scale_by_adam(eps=1e-5))


# ---------------------------------------------------------------- policy math
def _distribution_terms(net_out, info: EnvInfo, action):
    """log pi(action) and entropy, for categorical or diagonal Gaussian policies."""
    if info.discrete:
        logits = net_out
        log_probs = jax.nn.log_softmax(logits)
        log_prob = jnp.take_along_axis(log_probs, action[..., None].astype(jnp.int32), -1)[..., 0]
        entropy = -(jnp.exp(log_probs) * log_probs).sum(-1)
        return log_prob, entropy
    mean, log_std = net_out
    var = jnp.exp(2 * log_std)
    log_prob = (-((action - mean) ** 2) / (2 * var) - log_std - 0.5 * jnp.log(2 * jnp.pi)).sum(-1)
    entropy = (log_std + 0.5 * (1.0 + jnp.log(2 * jnp.pi))).sum(-1)
    return log_prob, entropy


def sample_action(net_out, info: EnvInfo, rng):
    if info.discrete:
        return jax.random.categorical(rng, net_out)
    mean, log_std = net_out
    return mean + jnp.exp(log_std) * jax.random.normal(rng, mean.shape)


def greedy_action(net_out, info: EnvInfo):
    if info.discrete:
        return jnp.argmax(net_out, -1)
    return net_out[0]


def env_action(action, info: EnvInfo):
    """What the environment receives: continuous actions are clipped to the action bounds."""
    if info.discrete:
        return action
    return jnp.clip(action, jnp.asarray(info.action_low), jnp.asarray(info.action_high))


# ---------------------------------------------------------------- init
def init(config: PPOConfig, rng=None) -> PPOState:
    info = env_info(config.env, config.backend)
    if rng is None:
        rng = jax.random.PRNGKey(config.seed)
    static, hp = split_config(config)
    if info.backend == "gymnax":
        return _init_jit(static, info, rng, hp)
    from rltune.envs.gym_vec import VecEnv

    venv = VecEnv(config.env, config.num_envs, config.seed)
    rng, k_net = jax.random.split(rng)
    params, opt_state = _init_learner_jit(static, info, k_net, hp)
    return PPOState(params=params, opt_state=opt_state, env_state=jnp.zeros(()), obs=jnp.asarray(venv.obs),
                    rng=rng, episodes=init_episode_stats(config.num_envs), update=jnp.zeros((), jnp.int32),
                    env_steps=jnp.zeros((), jnp.int32), host=venv)


def _init_learner(config: PPOConfig, info: EnvInfo, key, hp):
    """Network parameters and optimizer state: shared by both paths' init."""
    params = make_network(config, info).init(key, jnp.zeros(info.obs_shape, jnp.float32))
    return params, _optimizer(hp).init(params)


_init_learner_jit = jax.jit(_init_learner, static_argnums=(0, 1))


@partial(jax.jit, static_argnums=(0, 1))
def _init_jit(config: PPOConfig, info: EnvInfo, rng, hp) -> PPOState:
    env, env_params = make_gymnax(config.env)
    rng, k_net, k_env = jax.random.split(rng, 3)
    params, opt_state = _init_learner(config, info, k_net, hp)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_env, config.num_envs), env_params)
    return PPOState(params=params, opt_state=opt_state, env_state=env_state,
                    obs=obs.astype(jnp.float32), rng=rng,
                    episodes=init_episode_stats(config.num_envs),
                    update=jnp.zeros((), jnp.int32), env_steps=jnp.zeros((), jnp.int32))


# ---------------------------------------------------------------- rollout
def _rollout(config: PPOConfig, info: EnvInfo, network, state: PPOState):
    env, env_params = make_gymnax(config.env)

    def env_step(carry, _):
        state = carry
        rng, k_act, k_env = jax.random.split(state.rng, 3)
        net_out, value = network.apply(state.params, state.obs)
        action = sample_action(net_out, info, k_act)
        log_prob, _ = _distribution_terms(net_out, info, action)
        keys = jax.random.split(k_env, config.num_envs)
        obs, env_state, reward, terminated, truncated, env_out = jax.vmap(
            env.step, in_axes=(0, 0, 0, None))(keys, state.env_state, env_action(action, info), env_params)
        done = jnp.logical_or(terminated, truncated)
        transition = Transition(state.obs, action, log_prob, value, reward.astype(jnp.float32),
                                done, jnp.logical_and(truncated, jnp.logical_not(terminated)),
                                env_out["final_observation"].astype(jnp.float32))
        state = state.replace(env_state=env_state, obs=obs.astype(jnp.float32), rng=rng,
                              episodes=record_step(state.episodes, reward, done))
        return state, transition

    return jax.lax.scan(env_step, state, None, config.num_steps)


def _advantages(config, hp, network, params, traj: Transition, last_obs):
    """GAE over the rollout. A truncated episode bootstraps from its true last observation."""
    _, last_value = network.apply(params, last_obs)
    _, final_values = network.apply(params, traj.final_obs)
    reward = traj.reward + hp["gamma"] * final_values * traj.truncated

    def backward(carry, t):
        gae, next_value = carry
        not_done = 1.0 - t[2]
        delta = t[0] + hp["gamma"] * next_value * not_done - t[1]
        gae = delta + hp["gamma"] * hp["gae_lambda"] * not_done * gae
        return (gae, t[1]), gae

    _, adv = jax.lax.scan(backward, (jnp.zeros_like(last_value), last_value),
                          (reward, traj.value, traj.done.astype(jnp.float32)), reverse=True)
    return adv, adv + traj.value


# ---------------------------------------------------------------- loss and update
def _loss(params, network, info, hp, batch):
    traj, adv, targets = batch
    net_out, value = network.apply(params, traj.obs)
    log_prob, entropy = _distribution_terms(net_out, info, traj.action)

    v_clipped = traj.value + jnp.clip(value - traj.value, -hp["clip_eps"], hp["clip_eps"])
    v_loss = 0.5 * jnp.maximum((value - targets) ** 2, (v_clipped - targets) ** 2).mean()

    log_ratio = log_prob - traj.log_prob
    ratio = jnp.exp(log_ratio)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg_loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - hp["clip_eps"], 1 + hp["clip_eps"]) * adv).mean()
    ent = entropy.mean()
    total = pg_loss + hp["vf_coef"] * v_loss - hp["ent_coef"] * ent
    approx_kl = ((ratio - 1) - log_ratio).mean()
    clip_frac = (jnp.abs(ratio - 1) > hp["clip_eps"]).mean()
    return total, {"loss": total, "policy_loss": pg_loss, "value_loss": v_loss, "entropy": ent,
                   "approx_kl": approx_kl, "clip_fraction": clip_frac}


def _current_lr(config: PPOConfig, hp, update):
    if not config.anneal_lr:
        return hp["learning_rate"]
    frac = 1.0 - update.astype(jnp.float32) / config.num_updates
    return hp["learning_rate"] * jnp.maximum(frac, 0.0)


def _sgd(config, info, network, hp, state: PPOState, traj, adv, targets):
    tx = _optimizer(hp)
    lr = _current_lr(config, hp, state.update)
    flat = jax.tree.map(lambda x: x.reshape((config.batch_size, *x.shape[2:])), (traj, adv, targets))

    def minibatch_step(carry, batch):
        params, opt_state = carry
        grads, metrics = jax.grad(_loss, has_aux=True)(params, network, info, hp, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
        return (params, opt_state), metrics

    def epoch(carry, rng):
        perm = jax.random.permutation(rng, config.batch_size)
        shuffled = jax.tree.map(
            lambda x: x[perm].reshape((config.num_minibatches, config.minibatch_size, *x.shape[1:])), flat)
        return jax.lax.scan(minibatch_step, carry, shuffled)

    rng, k_epochs = jax.random.split(state.rng)
    (params, opt_state), metrics = jax.lax.scan(
        epoch, (state.params, state.opt_state), jax.random.split(k_epochs, config.update_epochs))
    metrics = jax.tree.map(jnp.mean, metrics)
    return state.replace(params=params, opt_state=opt_state, rng=rng), metrics


def _one_update(config: PPOConfig, info: EnvInfo, hp, state: PPOState):
    network = make_network(config, info)
    state, traj = _rollout(config, info, network, state)
    return _learn(config, info, hp, state, traj)


def _learn(config: PPOConfig, info: EnvInfo, hp, state: PPOState, traj: Transition):
    """GAE and the SGD epochs on a collected rollout: shared by the compiled and host paths."""
    network = make_network(config, info)
    adv, targets = _advantages(config, hp, network, state.params, traj, state.obs)
    state, metrics = _sgd(config, info, network, hp, state, traj, adv, targets)
    state = state.replace(update=state.update + 1, env_steps=state.env_steps + config.batch_size)
    return state, metrics


METRIC_NAMES = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")


@partial(jax.jit, static_argnums=(0, 1))
def _segment_jit(config: PPOConfig, info: EnvInfo, hp, state: PPOState, num_updates):
    """`num_updates` is traced: any segment length reuses the same compiled program."""

    def body(_, carry):
        state, sums = carry
        state, metrics = _one_update(config, info, hp, state)
        return state, {k: sums[k] + metrics[k] for k in METRIC_NAMES}

    zeros = {k: jnp.zeros((), jnp.float32) for k in METRIC_NAMES}
    state, sums = jax.lax.fori_loop(0, num_updates, body, (state, zeros))
    metrics = {k: v / jnp.maximum(num_updates, 1) for k, v in sums.items()}
    metrics["episode_return"] = window_mean(state.episodes.returns, state.episodes.count)
    metrics["episode_length"] = window_mean(state.episodes.lengths.astype(jnp.float32), state.episodes.count)
    metrics["episodes"] = state.episodes.count
    return state, metrics


@functools.lru_cache(maxsize=None)
def population_segment(static: PPOConfig, info: EnvInfo):
    """`segment(hp, state, num_updates)` vmapped over population members: every argument has a
    leading member axis (num_updates too: a member with 0 updates is left as it is)."""
    return jax.jit(jax.vmap(lambda hp, state, n: _segment_jit(static, info, hp, state, n)))


def train_segment(config: PPOConfig, state: PPOState, num_updates: int):
    """Run `num_updates` updates. Returns the new state and the segment's mean metrics plus the
    last-100-episode moving averages (`episode_return`, `episode_length`)."""
    static, hp = split_config(config)
    info = env_info(config.env, config.backend)
    if info.backend == "gymnax":
        return _segment_jit(static, info, hp, state, jnp.asarray(num_updates, jnp.int32))
    if state.host is None:
        raise UsageError("env", "this PPO state has no Gymnasium environments attached; build it with init()")
    return _segment_host(static, info, hp, state, num_updates)


# ---------------------------------------------------------------- Gymnasium host loop
@functools.lru_cache(maxsize=None)
def _host_fns(config: PPOConfig, info: EnvInfo):
    """Jitted pieces of the host loop: one act call per vector step, one learn call per update."""
    network = make_network(config, info)

    @jax.jit
    def act(params, obs, rng):
        rng, key = jax.random.split(rng)
        net_out, value = network.apply(params, obs)
        action = sample_action(net_out, info, key)
        log_prob, _ = _distribution_terms(net_out, info, action)
        return action, env_action(action, info), log_prob, value, rng

    @jax.jit
    def learn(hp, state: PPOState, traj: Transition):
        state, metrics = _learn(config, info, hp, state, traj)
        return state, metrics

    return act, learn


def _segment_host(config: PPOConfig, info: EnvInfo, hp, state: PPOState, num_updates: int):
    act, learn = _host_fns(config, info)
    venv = state.host
    state = state.replace(host=None)  # jitted functions see only arrays
    episodes = jax.tree.map(np.asarray, state.episodes)
    sums = {k: 0.0 for k in METRIC_NAMES}
    for _ in range(num_updates):
        columns = {k: [] for k in Transition._fields}
        obs, rng = venv.obs, state.rng
        for _ in range(config.num_steps):
            action, to_env, log_prob, value, rng = act(state.params, obs, rng)
            out = venv.step(np.asarray(to_env))
            done = out.terminated | out.truncated
            for key, val in (("obs", obs), ("action", action), ("log_prob", log_prob), ("value", value),
                             ("reward", out.train_reward), ("done", out.train_terminated | out.truncated),
                             ("truncated", out.truncated & ~out.terminated), ("final_obs", out.final_obs)):
                columns[key].append(val)
            episodes = record_step_np(episodes, out.reward, done)
            obs = out.obs
        traj = Transition(*(jnp.stack([jnp.asarray(v) for v in columns[k]]) for k in Transition._fields))
        traj = traj._replace(obs=traj.obs.astype(jnp.float32), final_obs=traj.final_obs.astype(jnp.float32))
        state = state.replace(obs=jnp.asarray(obs, jnp.float32), rng=rng)
        state, metrics = learn(hp, state, traj)
        sums = {k: sums[k] + metrics[k] for k in METRIC_NAMES}
    metrics = {k: v / max(num_updates, 1) for k, v in sums.items()}
    metrics["episode_return"] = window_mean(episodes.returns, episodes.count)
    metrics["episode_length"] = window_mean(episodes.lengths.astype(np.float32), episodes.count)
    metrics["episodes"] = episodes.count
    state = state.replace(episodes=jax.tree.map(jnp.asarray, episodes), host=venv)
    return state, metrics


# ---------------------------------------------------------------- acting
def policy_fn(config: PPOConfig, info: EnvInfo):
    """A jitted `act(params, obs, rng, deterministic) -> action` for evaluation and load_agent."""
    return _policy(split_config(config)[0], info)


@functools.lru_cache(maxsize=None)
def _policy(config: PPOConfig, info: EnvInfo):
    network = make_network(config, info)

    @partial(jax.jit, static_argnums=(3,))
    def act(params, obs, rng, deterministic: bool):
        net_out, _ = network.apply(params, obs)
        action = greedy_action(net_out, info) if deterministic else sample_action(net_out, info, rng)
        return env_action(action, info)

    return act


def np_params(state: PPOState):
    return jax.tree.map(np.asarray, state.params)
