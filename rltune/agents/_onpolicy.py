"""The training loop shared by the on-policy agents (PPO, A2C, REINFORCE).

An agent supplies its math as an `Algo`, built by `make_algo(config, info)`: the actor-critic
`network` (obs -> (policy output, value)), the `optimizer` (hp -> optax transform; the learning
rate is applied by the update so it stays a traced value) and `update`, one learning step on a
collected rollout. This module owns everything else, on two execution paths with the same
functions:

- compiled (gymnax envs): rollout (`lax.scan` over `rollout_length` vector steps) and update of
  a whole segment inside one `jax.jit` (`lax.fori_loop` over updates); `population_segment`
  vmaps that program over the members of a population;
- host loop (Gymnasium envs): Python steps the vector env; acting (one call per vector step)
  and learning (one call per update) are jitted, and learning is the compiled path's function.

Both paths reset finished envs at once (auto-reset) and record, per step, whether the episode
was truncated and its true last observation, so returns bootstrap from V(final obs) on a
truncation and stop at a termination (`returns_with_bootstrap`, `gae`).

One "update" for the runner is one rollout: `num_envs * rollout_length` env steps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rltune import executable_cache
from rltune.agents.episodes import (EpisodeStats, init_episode_stats, record_step, record_step_np,
                                   restart_episodes, window_mean)
from rltune.config import CommonConfig, split_traced
from rltune.envs import EnvInfo, env_info, make_gymnax
from rltune.errors import UsageError


@dataclass(frozen=True)
class OnPolicyConfig(CommonConfig):
    """Sizes every on-policy agent derives from its own fields (no fields of its own, so each
    agent keeps its field order and names)."""

    @property
    def rollout_length(self) -> int:
        """Vector env steps per update (PPO's num_steps, A2C's t_max)."""
        raise NotImplementedError

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.rollout_length

    @property
    def steps_per_update(self) -> int:
        return self.batch_size

    @property
    def num_updates(self) -> int:
        return max(1, self.total_steps // self.batch_size)


class Algo(NamedTuple):
    network: Any  # flax module: obs -> (policy output, value); see rltune.networks.ActorCritic
    optimizer: Callable  # hp -> optax.GradientTransformation (without the learning rate)
    # (hp, params, opt_state, traj, last_obs, rng, update) -> (params, opt_state, metrics):
    # one learning step on a rollout; `update` counts the updates done (for schedules).
    update: Callable
    metric_names: tuple[str, ...]  # keys of update's metrics; "loss" among them


@struct.dataclass
class OnPolicyState:
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
    """One vector step of a rollout (leading axes: time, env)."""

    obs: jnp.ndarray
    action: jnp.ndarray
    log_prob: jnp.ndarray
    value: jnp.ndarray
    reward: jnp.ndarray
    done: jnp.ndarray  # terminated or truncated: the next obs starts a new episode
    truncated: jnp.ndarray  # truncated and not terminated: bootstrap from V(final_obs)
    final_obs: jnp.ndarray  # the true last observation of a finished episode


# ---------------------------------------------------------------- static / traced split
def split_config(config) -> tuple[Any, dict[str, jnp.ndarray]]:
    """Static part (traced fields reset to defaults, so equal shapes hit one compile cache entry)
    and the traced hyperparameters as float32 arrays."""
    # The seed only feeds `init` (through its rng argument), so it is no part of the program either.
    return split_traced(config, also_reset=("seed", "hp_schedule"))  # a schedule is applied between segments


# ---------------------------------------------------------------- policy math
def distribution_terms(net_out, info: EnvInfo, action):
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
    """Evaluation action: the most probable discrete action, or the Gaussian's mean."""
    if info.discrete:
        return jnp.argmax(net_out, -1)
    return net_out[0]


def env_action(action, info: EnvInfo):
    """What the environment receives: continuous actions are clipped to the action bounds (the
    unclipped sample is what log pi is computed on)."""
    if info.discrete:
        return action
    return jnp.clip(action, jnp.asarray(info.action_low), jnp.asarray(info.action_high))


# ---------------------------------------------------------------- returns
def bootstrapped_rewards(traj: Transition, final_values, gamma):
    """Rewards with gamma * V(final obs) added where an episode was truncated (not terminated)."""
    return traj.reward + gamma * final_values * traj.truncated


def gae(rewards, values, dones, last_value, gamma, lam):
    """Generalized advantage estimates over a rollout (time-major). lam = 1: n-step returns up to
    the rollout's end minus V; values = 0 and last_value = 0: discounted reward-to-go."""

    def backward(carry, t):
        adv, next_value = carry
        reward, value, done = t
        not_done = 1.0 - done
        delta = reward + gamma * next_value * not_done - value
        adv = delta + gamma * lam * not_done * adv
        return (adv, value), adv

    _, adv = jax.lax.scan(backward, (jnp.zeros_like(last_value), last_value),
                          (rewards, values, dones.astype(jnp.float32)), reverse=True)
    return adv


def advantages(network, params, traj: Transition, last_obs, gamma, lam):
    """GAE advantages and value targets; a truncated episode bootstraps from its true last
    observation, the rollout's end from V(last_obs)."""
    _, last_value = network.apply(params, last_obs)
    _, final_values = network.apply(params, traj.final_obs)
    adv = gae(bootstrapped_rewards(traj, final_values, gamma), traj.value, traj.done, last_value, gamma, lam)
    return adv, adv + traj.value


def vtrace(log_ratios, rewards, values, dones, last_value, gamma, lam, rho_bar=1.0, c_bar=1.0):
    """V-trace (Espeholt et al. 2018, IMPALA) over a rollout (time-major) collected by a
    behaviour policy mu and learned by pi: `log_ratios` = log pi(a) - log mu(a).

    With rho = min(rho_bar, pi/mu), c = lam * min(c_bar, pi/mu), discount = gamma * (1 - done):
      target_t = V_t + delta_t + discount_t c_t (target_{t+1} - V_{t+1}),
      delta_t  = rho_t (r_t + discount_t V_{t+1} - V_t),
    (V_T = `last_value`, target_T = V_T), and the policy-gradient advantage
      adv_t = r_t + discount_t (lam target_{t+1} + (1 - lam) V_{t+1}) - V_t,
    to be weighted by rho_t in the loss. Returns (targets, adv, rho). With equal policies
    (ratios 1) the targets are GAE(lam)'s and adv is GAE(lam)'s advantage (lam = 1: n-step
    returns), so a rollout without lag gets a2c's update. Rewards carry the truncation
    bootstrap already (`bootstrapped_rewards`)."""
    ratios = jnp.exp(log_ratios)
    rho = jnp.minimum(rho_bar, ratios)
    c = lam * jnp.minimum(c_bar, ratios)
    discount = gamma * (1.0 - dones.astype(jnp.float32))
    next_values = jnp.concatenate([values[1:], last_value[None]], 0)
    deltas = rho * (rewards + discount * next_values - values)

    def backward(acc, t):
        delta, disc, c_t = t
        acc = delta + disc * c_t * acc
        return acc, acc

    _, corrections = jax.lax.scan(backward, jnp.zeros_like(last_value), (deltas, discount, c), reverse=True)
    targets = values + corrections
    next_targets = jnp.concatenate([targets[1:], last_value[None]], 0)
    adv = rewards + discount * (lam * next_targets + (1.0 - lam) * next_values) - values
    return targets, adv, rho


def episode_ends_in_rollout(done):
    """Mask of the steps whose episode ends inside the rollout (their Monte-Carlo return is
    known): a done at this step or a later one of the same env."""
    return jnp.flip(jax.lax.cummax(jnp.flip(done.astype(jnp.float32), 0), axis=0), 0)


def linear_decay(lr, update, num_updates: int):
    """Learning rate decayed linearly to 0 over the run."""
    return lr * jnp.maximum(1.0 - update.astype(jnp.float32) / num_updates, 0.0)


def apply_lr(params, updates, lr):
    return jax.tree.map(lambda p, u: p - lr * u, params, updates)


def update_obs_stats(params, obs):
    """Merge a rollout's observations into the running mean/variance of a network built with
    `normalize_obs` (Chan et al.'s parallel update); other parameters are returned unchanged."""
    if "obs_stats" not in params:
        return params
    stats = params["obs_stats"]
    x = obs.reshape((-1, stats["mean"].shape[0])).astype(jnp.float32)
    n = jnp.asarray(x.shape[0], jnp.float32)
    batch_mean, batch_var = x.mean(0), x.var(0)
    total = stats["count"] + n
    delta = batch_mean - stats["mean"]
    mean = stats["mean"] + delta * n / total
    m2 = stats["var"] * stats["count"] + batch_var * n + delta ** 2 * stats["count"] * n / total
    return {**params, "obs_stats": {"mean": mean, "var": m2 / total, "count": total}}


# ---------------------------------------------------------------- init
def init(make_algo, config, rng=None) -> OnPolicyState:
    info = env_info(config.env, config.backend)
    if rng is None:
        rng = jax.random.PRNGKey(config.seed)
    static, hp = split_config(config)
    if info.backend == "gymnax":
        return _init_jit(make_algo, static, info, rng, hp)
    from rltune.envs.gym_vec import VecEnv

    venv = VecEnv(config.env, config.num_envs, config.seed)
    rng, k_net = jax.random.split(rng)
    params, opt_state = _init_learner_jit(make_algo, static, info, k_net, hp)
    return OnPolicyState(params=params, opt_state=opt_state, env_state=jnp.zeros(()), obs=jnp.asarray(venv.obs),
                         rng=rng, episodes=init_episode_stats(config.num_envs, config.reward_window),
                         update=jnp.zeros((), jnp.int32), env_steps=jnp.zeros((), jnp.int32), host=venv)


def _init_learner(make_algo, config, info: EnvInfo, key, hp):
    """Network parameters and optimizer state: shared by both paths' init."""
    algo = make_algo(config, info)
    params = algo.network.init(key, jnp.zeros(info.obs_shape, jnp.float32))
    return params, algo.optimizer(hp).init(params)


_init_learner_jit = jax.jit(_init_learner, static_argnums=(0, 1, 2))


@executable_cache.program("rltune.agents._onpolicy.init", static_argnums=(0, 1, 2),
                          compiler_options=executable_cache.QUICK_COMPILE)  # runs once per trial
def _init_jit(make_algo, config, info: EnvInfo, rng, hp) -> OnPolicyState:
    env, env_params = make_gymnax(config.env)
    rng, k_net, k_env = jax.random.split(rng, 3)
    params, opt_state = _init_learner(make_algo, config, info, k_net, hp)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_env, config.num_envs), env_params)
    return OnPolicyState(params=params, opt_state=opt_state, env_state=env_state,
                         obs=obs.astype(jnp.float32), rng=rng,
                         episodes=init_episode_stats(config.num_envs, config.reward_window),
                         update=jnp.zeros((), jnp.int32), env_steps=jnp.zeros((), jnp.int32))


# ---------------------------------------------------------------- rollout and learning
def _act(algo: Algo, info: EnvInfo, params, obs, key):
    net_out, value = algo.network.apply(params, obs)
    action = sample_action(net_out, info, key)
    log_prob, _ = distribution_terms(net_out, info, action)
    return action, env_action(action, info), log_prob, value


def rollout(config, info: EnvInfo, algo: Algo, state: OnPolicyState):
    """`rollout_length` vector steps on gymnax envs (auto-reset), as time-major Transitions."""
    env, env_params = make_gymnax(config.env)

    def env_step(state, _):
        rng, k_act, k_env = jax.random.split(state.rng, 3)
        action, to_env, log_prob, value = _act(algo, info, state.params, state.obs, k_act)
        keys = jax.random.split(k_env, config.num_envs)
        obs, env_state, reward, terminated, truncated, env_out = jax.vmap(
            env.step, in_axes=(0, 0, 0, None))(keys, state.env_state, to_env, env_params)
        done = jnp.logical_or(terminated, truncated)
        transition = Transition(state.obs, action, log_prob, value, reward.astype(jnp.float32),
                                done, jnp.logical_and(truncated, jnp.logical_not(terminated)),
                                env_out["final_observation"].astype(jnp.float32))
        state = state.replace(env_state=env_state, obs=obs.astype(jnp.float32), rng=rng,
                              episodes=record_step(state.episodes, reward, done))
        return state, transition

    return jax.lax.scan(env_step, state, None, config.rollout_length)


def learn(config, algo: Algo, hp, state: OnPolicyState, traj: Transition):
    """One update on a collected rollout: shared by the compiled and host paths."""
    rng, key = jax.random.split(state.rng)
    params, opt_state, metrics = algo.update(hp, state.params, state.opt_state, traj, state.obs, key,
                                             state.update)
    # The next rollout normalizes with statistics that include this one (the update above used
    # the ones it was collected with, so log pi of the rollout stays consistent).
    params = update_obs_stats(params, traj.obs)
    state = state.replace(params=params, opt_state=opt_state, rng=rng, update=state.update + 1,
                          env_steps=state.env_steps + config.steps_per_update)
    return state, metrics


def _episode_metrics(episodes: EpisodeStats, xp=jnp) -> dict:
    return {"episode_return": window_mean(episodes.returns, episodes.count),
            "episode_length": window_mean(episodes.lengths.astype(xp.float32), episodes.count),
            "episodes": episodes.count}


# ---------------------------------------------------------------- compiled path (gymnax)
@executable_cache.program("rltune.agents._onpolicy.segment", static_argnums=(0, 1, 2))
def _segment_jit(make_algo, config, info: EnvInfo, hp, state: OnPolicyState, num_updates):
    """`num_updates` is traced: any segment length reuses the same compiled program."""
    algo = make_algo(config, info)

    def body(_, carry):
        state, sums = carry
        state, traj = rollout(config, info, algo, state)
        state, metrics = learn(config, algo, hp, state, traj)
        return state, {k: sums[k] + metrics[k] for k in algo.metric_names}

    zeros = {k: jnp.zeros((), jnp.float32) for k in algo.metric_names}
    state, sums = jax.lax.fori_loop(0, num_updates, body, (state, zeros))
    metrics = {k: v / jnp.maximum(num_updates, 1) for k, v in sums.items()}
    return state, {**metrics, **_episode_metrics(state.episodes)}


@functools.lru_cache(maxsize=None)
def population_segment(make_algo, static, info: EnvInfo):
    """`segment(hp, state, num_updates)` vmapped over population members: every argument has a
    leading member axis (num_updates too: a member with 0 updates is left as it is)."""
    segment = jax.jit(jax.vmap(lambda hp, state, n: _segment_jit(make_algo, static, info, hp, state, n)))
    return executable_cache.Program(segment, "rltune.agents._onpolicy.population_segment",
                                    context=(make_algo, static, info))


# ---------------------------------------------------------------- host path (Gymnasium)
@functools.lru_cache(maxsize=None)
def host_fns(make_algo, config, info: EnvInfo):
    """Jitted pieces of the host loop: one act call per vector step, one learn call per update."""
    algo = make_algo(config, info)

    @jax.jit
    def act(params, obs, rng):
        rng, key = jax.random.split(rng)
        return (*_act(algo, info, params, obs, key), rng)

    @jax.jit
    def learn_jit(hp, state: OnPolicyState, traj: Transition):
        return learn(config, algo, hp, state, traj)

    return act, learn_jit, algo


def host_rollout(act, venv, params, rng, episodes: EpisodeStats, rollout_length: int):
    """`rollout_length` steps of a Gymnasium vector env acted on by `params` (numpy episode
    statistics). Returns the time-major Transitions, the next rng and the statistics; the env
    keeps the last observation (`venv.obs`, the bootstrap observation)."""
    columns = {k: [] for k in Transition._fields}
    obs = venv.obs
    for _ in range(rollout_length):
        action, to_env, log_prob, value, rng = act(params, obs, rng)
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
    return traj, rng, episodes


def _segment_host(make_algo, config, info: EnvInfo, hp, state: OnPolicyState, num_updates: int):
    act, learn_jit, algo = host_fns(make_algo, config, info)
    venv = state.host
    state = state.replace(host=None)  # jitted functions see only arrays
    episodes = jax.tree.map(np.asarray, state.episodes)
    if venv.steps == 0:  # new envs (a resumed run's): the checkpoint's episodes in progress are gone
        episodes = restart_episodes(episodes)
    sums = {k: 0.0 for k in algo.metric_names}
    for _ in range(num_updates):
        traj, rng, episodes = host_rollout(act, venv, state.params, state.rng, episodes, config.rollout_length)
        state = state.replace(obs=jnp.asarray(venv.obs, jnp.float32), rng=rng)
        state, metrics = learn_jit(hp, state, traj)
        sums = {k: sums[k] + metrics[k] for k in algo.metric_names}
    metrics = {k: v / max(num_updates, 1) for k, v in sums.items()}
    metrics.update(_episode_metrics(episodes, np))
    state = state.replace(episodes=jax.tree.map(jnp.asarray, episodes), host=venv)
    return state, metrics


# ---------------------------------------------------------------- entry points
def train_segment(make_algo, config, state: OnPolicyState, num_updates: int):
    """Run `num_updates` updates. Returns the new state and the segment's mean metrics plus the
    moving averages over the last `reward_window` episodes (`episode_return`, `episode_length`)."""
    static, hp = split_config(config)
    info = env_info(config.env, config.backend)
    if info.backend == "gymnax":
        return _segment_jit(make_algo, static, info, hp, state, _updates_array(num_updates))
    if state.host is None:
        raise UsageError("env", "this state has no Gymnasium environments attached; build it with init()")
    return _segment_host(make_algo, static, info, hp, state, num_updates)


def _updates_array(num_updates):
    """A segment length as the int32 array the compiled segment takes, made once per length: a
    run has one or two lengths, and an eager conversion per segment costs a dispatch."""
    array = _UPDATES.get(num_updates) if type(num_updates) is int else None
    if array is None:
        array = jnp.asarray(num_updates, jnp.int32)
        if type(num_updates) is int and not isinstance(array, jax.core.Tracer) and len(_UPDATES) < 64:
            _UPDATES[num_updates] = array
    return array


_UPDATES: dict[int, jax.Array] = {}


def policy_fn(make_algo, config, info: EnvInfo):
    """A jitted `act(params, obs, rng, deterministic) -> action` for evaluation and load_agent."""
    return _policy(make_algo, split_config(config)[0], info)


@functools.lru_cache(maxsize=None)
def _policy(make_algo, config, info: EnvInfo):
    network = make_algo(config, info).network

    # a plain jit (not an executable_cache.Program): called once per env step, where jit's
    # C++ dispatch (~50 us) matters and a Program's Python-level call (~200 us) would not do
    @functools.partial(jax.jit, static_argnums=(3,))
    def act(params, obs, rng, deterministic: bool):
        net_out, _ = network.apply(params, obs)
        action = greedy_action(net_out, info) if deterministic else sample_action(net_out, info, rng)
        return env_action(action, info)

    return act
