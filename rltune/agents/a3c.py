"""Asynchronous advantage actor-critic (A3C, Mnih et al. 2016) with GA3C's trainer queue
(Babaeizadeh et al. 2017).

`num_actors` actor processes (spawned) each step their own `num_envs` environments (compiled
gymnax rollouts of `t_max` steps on gymnax ids, the Gymnasium host loop otherwise: the pieces of
rltune/agents/_onpolicy.py) with a copy of the policy, and put every rollout on one bounded
queue. The learner (the training process) takes rollouts from the queue in arrival order and
applies a2c's update to each: policy + value loss - entropy bonus, one RMSprop/Adam step. After
every update it publishes the new parameters in shared memory; an actor reads the newest ones
when it starts a rollout. An actor therefore acts with parameters that lag: the *policy lag* of
a rollout is the learner's version (updates done) when it learns from the rollout minus the
version the actor acted with. The queue's size bounds it (an actor waits while the queue is
full); `policy_lag_mean` and `policy_lag_max` report it per segment, over the rollouts learned
from; `max_policy_lag` drops staler ones (`stale_rollouts` counts them).

Lagging rollouts are off-policy data. With `correction: vtrace` (the default) the learner turns
the behaviour log-probs the actors recorded and its own log-probs into truncated importance
weights (V-trace, Espeholt et al. 2018, rho_bar = c_bar = 1, lambda = `gae_lambda`) for the
value targets and the policy gradient (`importance_weight` reports their mean); `none` uses
a2c's GAE targets as if the rollout were on-policy. V is always re-evaluated with the learner's
parameters, and without lag both give exactly a2c's update (the ratios are 1). On Pendulum
(with `bounded_mean`, which keeps the Gaussian mean inside the action bounds) a fixed lag of 1
to 4 updates mostly broke learning without the correction and mostly not with it: README,
"On-policy agents".

No batched prediction (GA3C's predictor process): every actor evaluates its small network on
its own batch of `num_envs` observations, which costs less than a round trip through a queue to
a shared predictor on CPUs.

One update takes `rollouts_per_update` rollouts (1 by default; GA3C's minimum training batch),
concatenated along the env axis: `rollouts_per_update * num_envs * t_max` env steps (env steps
count what the learner learned from; rollouts still queued when a run ends are dropped). The actors start with the
first `train_segment` and stop at `close(state)` (the runner calls it when a run ends) or when
the training process exits or dies (parent-death signal), so none outlives its run. (Linux sends
that signal when the *thread* that started the actors ends: call `train_segment` from a thread
that lives as long as the run, not from a short-lived pool thread.) Not for
the population executor (the actors are processes, not a vmappable program).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing as mp
import os
import queue as queue_module
import signal
import weakref
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from rltune.agents import _onpolicy as on
from rltune.agents import a2c
from rltune.agents.episodes import EpisodeStats, init_episode_stats
from rltune.config import param
from rltune.envs import EnvInfo, env_info


@dataclass(frozen=True)
class A3CConfig(a2c.A2CConfig):
    num_envs: int = param(4, "Environments per actor process (vectorized, auto-reset); all actors "
                          "together step num_actors * num_envs.", low=1, static=True)
    num_actors: int = param(2, "Actor processes, each with its own environments and a lagging copy "
                            "of the policy.", low=1, static=True)
    queue_size: int = param(2, "Rollouts the trainer queue holds; actors wait while it is full, so "
                            "it bounds the policy lag.", low=1, static=True)
    rollouts_per_update: int = param(1, "Rollouts (from any actors) the learner batches into one "
                                     "update (GA3C's minimum training batch): fewer, larger updates "
                                     "and less lag counted in updates.", low=1, static=True)

    max_policy_lag: int = param(0, "Drop (not learn from) rollouts whose policy lag exceeds this; 0: "
                                "learn from all. Guards against a rollout from a long-descheduled "
                                "actor; dropped rollouts are counted (stale_rollouts).", low=0, static=True)

    correction: str = param("vtrace", "Off-policy correction of lagging rollouts: vtrace (IMPALA's "
                            "V-trace, truncated importance weights rho_bar = c_bar = 1, for the value "
                            "targets and the policy gradient) or none (a2c's targets as if on-policy). "
                            "Both give a2c's update on a rollout without lag.",
                            choices=("vtrace", "none"), static=True)

    @property
    def batch_size(self) -> int:
        return self.rollouts_per_update * self.num_envs * self.t_max


Config = A3CConfig
split_config = on.split_config
make_network = a2c.make_network
# a2c's, plus the mean truncated importance weight min(1, pi/mu) of the learned steps: 1 on
# policy, lower the further the learner has moved from the policies that acted.
METRIC_NAMES = (*a2c.METRIC_NAMES, "importance_weight")
LAG_METRICS = ("policy_lag_mean", "policy_lag_max", "stale_rollouts")


# ---------------------------------------------------------------- the learner's update
def _update(config: A3CConfig, info: EnvInfo, network, hp, params, opt_state, traj, last_obs, rng, update):
    """a2c's gradient step with targets from the learner's current parameters: V on every
    observation re-evaluated, and with `correction` vtrace the behaviour log-probs the actors
    recorded (`traj.log_prob`) turned into V-trace targets and importance-weighted advantages."""
    del rng
    traj = traj._replace(reward=traj.reward * hp["reward_scale"])
    net_out, values = network.apply(params, traj.obs)
    log_prob, _ = on.distribution_terms(net_out, info, traj.action)
    _, last_value = network.apply(params, last_obs)
    _, final_values = network.apply(params, traj.final_obs)
    rewards = on.bootstrapped_rewards(traj, final_values, hp["gamma"])
    log_ratios = log_prob - traj.log_prob
    weight_seen = jnp.minimum(1.0, jnp.exp(log_ratios)).mean()
    if config.correction == "none":
        log_ratios = jnp.zeros_like(log_ratios)  # ratios 1: V-trace is GAE (a2c's targets)
    targets, adv, rho = jax.lax.stop_gradient(
        on.vtrace(log_ratios, rewards, values, traj.done, last_value, hp["gamma"], hp["gae_lambda"]))
    params, opt_state, metrics = a2c.gradient_step(config, info, network, hp, params, opt_state,
                                                   traj._replace(value=values), adv, targets, rho, update)
    return params, opt_state, {**metrics, "importance_weight": weight_seen}


def make_algo(config: A3CConfig, info: EnvInfo) -> on.Algo:
    network = make_network(config, info)
    return on.Algo(network=network, optimizer=functools.partial(a2c._optimizer, config),
                   update=functools.partial(_update, config, info, network), metric_names=METRIC_NAMES)


@functools.lru_cache(maxsize=None)
def learner_fn(config: A3CConfig, info: EnvInfo):
    """Jitted `learn(hp, state, traj) -> (state, metrics, flat params)`: the update on a batch
    of rollouts (`state.obs` holds their last observations); the flat parameters are what
    actors read."""
    algo = make_algo(config, info)

    @jax.jit
    def learn(hp, state: on.OnPolicyState, traj: on.Transition):
        state, metrics = on.learn(config, algo, hp, state, traj)
        return state, metrics, ravel_pytree(state.params)[0]

    return learn


class Rollout(NamedTuple):
    """An actor's message to the learner: one rollout and the episodes that ended in it."""

    actor_id: int
    version: int  # of the parameters the actor acted with (the learner's updates done then)
    traj: on.Transition  # numpy arrays, (t_max, num_envs, ...)
    last_obs: np.ndarray  # (num_envs, ...): the observations after the rollout, to bootstrap from
    episode_returns: np.ndarray  # of the episodes completed during the rollout
    episode_lengths: np.ndarray


def add_episodes(stats: EpisodeStats, returns, lengths) -> EpisodeStats:
    """Append completed episodes (reported by an actor) to the learner's ring buffers."""
    out, lens, count = np.array(stats.returns), np.array(stats.lengths), int(stats.count)
    for ret, length in zip(returns, lengths):
        out[count % out.shape[0]], lens[count % lens.shape[0]] = ret, length
        count += 1
    return stats.replace(returns=out, lengths=lens, count=np.asarray(count, np.int32))


class Learner:
    """Consumes actor rollouts, `rollouts_per_update` an update, and keeps the segment's sums
    (losses, policy lag per rollout, episodes)."""

    def __init__(self, config: A3CConfig, state: on.OnPolicyState):
        static, self.hp = split_config(config)
        self.learn = learner_fn(static, env_info(config.env, config.backend))
        self.state = state
        self.version = int(state.update)
        self.episodes = jax.tree.map(np.asarray, state.episodes)
        self.sums = {k: 0.0 for k in METRIC_NAMES}
        self.lags: list[int] = []  # one per rollout
        self.per_update = config.rollouts_per_update
        self.max_lag = config.max_policy_lag
        self.stale = 0

    def too_stale(self, rollout: Rollout) -> bool:
        """Whether to drop `rollout` (lag above max_policy_lag); its episodes count either way."""
        if self.max_lag and self.version - rollout.version > self.max_lag:
            self.stale += 1
            self.episodes = add_episodes(self.episodes, rollout.episode_returns, rollout.episode_lengths)
            return True
        return False

    def step(self, rollouts):
        """One update on `rollouts_per_update` Rollouts (or tuples of their fields), batched along
        the env axis; returns the new flat parameters and their version."""
        rollouts = [Rollout._make(r) for r in rollouts]
        for r in rollouts:
            self.lags.append(self.version - r.version)
            self.episodes = add_episodes(self.episodes, r.episode_returns, r.episode_lengths)
        traj = on.Transition(*(np.concatenate(column, 1) for column in zip(*(r.traj for r in rollouts))))
        last_obs = np.concatenate([r.last_obs for r in rollouts], 0)
        state = self.state.replace(obs=jnp.asarray(last_obs, jnp.float32))
        self.state, metrics, flat = self.learn(self.hp, state, traj)
        self.sums = {k: self.sums[k] + metrics[k] for k in self.sums}
        self.version += 1
        return flat, self.version

    def metrics(self) -> dict:
        n = max(len(self.lags) // self.per_update, 1)
        out = {k: v / n for k, v in self.sums.items()}
        out["policy_lag_mean"] = float(np.mean(self.lags)) if self.lags else 0.0
        out["policy_lag_max"] = float(max(self.lags, default=0))
        out["stale_rollouts"] = float(self.stale)
        return {**out, **on._episode_metrics(self.episodes, np)}


# ---------------------------------------------------------------- actors
class Actor:
    """One actor's environments and rollout function (runs in an actor process; tests run it
    in-process). Its envs and rng are seeded from the run's seed and the actor's index."""

    def __init__(self, config: A3CConfig, actor_id: int):
        self.actor_id = actor_id
        self.info = env_info(config.env, config.backend)
        # Window: at most one episode per env and step ends inside a rollout.
        window = config.num_envs * config.t_max
        own = dataclasses.replace(config, seed=config.seed * 1000 + actor_id + 1, reward_window=window)
        self.static = split_config(own)[0]
        state = on.init(make_algo, own, jax.random.fold_in(jax.random.PRNGKey(config.seed), actor_id + 1))
        self.unravel = ravel_pytree(state.params)[1]
        algo = make_algo(self.static, self.info)
        if self.info.backend == "gymnax":
            self._rollout = jax.jit(lambda s: on.rollout(self.static, self.info, algo, s))
            self.state = state
        else:
            self.venv, self.rng = state.host, state.rng
            self.episodes = jax.tree.map(np.asarray, state.episodes)
            self._act = on.host_fns(make_algo, self.static, self.info)[0]

    def collect(self, params, version: int) -> Rollout:
        """One rollout of t_max steps with `params` (of `version`): the message for the learner."""
        if self.info.backend == "gymnax":
            before = int(self.state.episodes.count)
            self.state, traj = self._rollout(self.state.replace(params=params))
            episodes, last_obs = jax.device_get(self.state.episodes), self.state.obs
        else:
            before = int(self.episodes.count)
            traj, self.rng, self.episodes = on.host_rollout(self._act, self.venv, params, self.rng, self.episodes,
                                                            self.static.t_max)
            episodes, last_obs = self.episodes, self.venv.obs
        window = episodes.returns.shape[0]
        new = (before + np.arange(int(episodes.count) - before)) % window
        return Rollout(actor_id=self.actor_id, version=version,
                       traj=jax.tree.map(np.asarray, jax.device_get(traj)), last_obs=np.asarray(last_obs),
                       episode_returns=np.asarray(episodes.returns)[new],
                       episode_lengths=np.asarray(episodes.lengths)[new])


class ParamBox:
    """The newest parameters (flat float32) and their version, in shared memory under a lock."""

    def __init__(self, ctx, size: int):
        self._data = ctx.RawArray("f", size)
        self._version = ctx.RawValue("q", -1)
        self._lock = ctx.Lock()

    def publish(self, flat, version: int) -> None:
        flat = np.asarray(flat, np.float32)
        with self._lock:
            np.frombuffer(self._data, np.float32)[:] = flat
            self._version.value = version

    def read_newer(self, version: int):
        """(version, flat params), or (version, None) when nothing newer than `version`."""
        with self._lock:
            if self._version.value == version:
                return version, None
            return self._version.value, np.frombuffer(self._data, np.float32).copy()


def _die_with(parent_pid: int) -> None:
    """Linux parent-death signal: killed (SIGKILL) the moment the learner's process dies."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os._exit(1)


def actor_main(actor_id: int, config: A3CConfig, box: ParamBox, rollouts, stop, parent_pid: int) -> None:
    _die_with(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's; it stops us
    jax.config.update("jax_platforms", "cpu")  # a small policy: the accelerator is the learner's
    try:
        actor = Actor(config, actor_id)
        version, params = -1, None
        while not stop.is_set():
            newer, flat = box.read_newer(version)
            if flat is not None:
                version, params = newer, actor.unravel(jnp.asarray(flat))
            rollout = actor.collect(params, version)
            while not stop.is_set():
                try:
                    rollouts.put(rollout, timeout=0.2)
                    break
                except queue_module.Full:
                    continue
    finally:
        rollouts.cancel_join_thread()  # exit even if the learner no longer reads


@contextlib.contextmanager
def _children_allowed():
    """multiprocessing refuses to start children from a daemonic process, and the local
    executor's trial workers are daemonic. The rule is there so no child outlives its parent;
    the actors ensure that themselves (parent-death signal, `close`), so it is lifted while
    they start."""
    config = mp.current_process()._config
    daemon = config.get("daemon", False)
    config["daemon"] = False
    try:
        yield
    finally:
        config["daemon"] = daemon


def _stop_actors(procs, stop, rollouts) -> None:
    stop.set()
    for proc in procs:
        proc.join(timeout=5)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
    rollouts.close()
    rollouts.cancel_join_thread()


class ActorPool:
    """The actor processes, the trainer queue and the shared parameters."""

    def __init__(self, config: A3CConfig, params, version: int):
        ctx = mp.get_context("spawn")
        flat = np.asarray(ravel_pytree(params)[0])
        self.box = ParamBox(ctx, flat.size)
        self.box.publish(flat, version)
        self.rollouts = ctx.Queue(maxsize=config.queue_size)
        self.stop = ctx.Event()
        self.procs = [ctx.Process(target=actor_main, name=f"rltune-a3c-actor-{i}", daemon=True,
                                  args=(i, config, self.box, self.rollouts, self.stop, os.getpid()))
                      for i in range(config.num_actors)]
        # registered first: if a later actor fails to start, the ones already running are stopped
        self._finalize = weakref.finalize(self, _stop_actors, self.procs, self.stop, self.rollouts)
        try:
            with _children_allowed():
                for proc in self.procs:
                    proc.start()
        except BaseException:
            self._finalize()
            raise

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def get(self) -> Rollout:
        """The next rollout; raises RuntimeError if an actor died (its traceback is on stderr),
        also while the others keep the queue full: training goes on with every actor or not at all."""
        while True:
            for i, proc in enumerate(self.procs):
                if proc.exitcode is not None:
                    raise RuntimeError(f"a3c actor {i} exited with code {proc.exitcode}") from None
            try:
                return self.rollouts.get(timeout=1.0)
            except queue_module.Empty:
                continue

    def close(self) -> None:
        self._finalize()


# ---------------------------------------------------------------- the agent contract (see _api.py)
def init(config: A3CConfig, rng=None) -> on.OnPolicyState:
    """The learner's state; the actors start with the first `train_segment` (a state used only
    as a checkpoint template or for evaluation starts none)."""
    info = env_info(config.env, config.backend)
    rng = jax.random.PRNGKey(config.seed) if rng is None else rng
    static, hp = split_config(config)
    rng, key = jax.random.split(rng)
    params, opt_state = on._init_learner_jit(make_algo, static, info, key, hp)
    return on.OnPolicyState(params=params, opt_state=opt_state, env_state=jnp.zeros(()),
                            obs=jnp.zeros((config.rollouts_per_update * config.num_envs, *info.obs_shape),
                                          jnp.float32), rng=rng,
                            episodes=init_episode_stats(config.num_actors * config.num_envs, config.reward_window),
                            update=jnp.zeros((), jnp.int32), env_steps=jnp.zeros((), jnp.int32))


def _abstract_segment(config: A3CConfig, state: on.OnPolicyState):
    """Under jax.eval_shape (the contract check) no process can run: one learner update on a
    zero rollout of the right shapes gives the segment's state and metrics structure."""
    info = env_info(config.env, config.backend)
    static, hp = split_config(config)
    t, n = config.t_max, config.rollouts_per_update * config.num_envs
    zeros = lambda *shape, dtype=jnp.float32: jnp.zeros((t, n, *shape), dtype)  # noqa: E731
    action = zeros(dtype=jnp.int32) if info.discrete else zeros(info.num_actions)
    traj = on.Transition(zeros(*info.obs_shape), action, zeros(), zeros(), zeros(), zeros(dtype=bool),
                         zeros(dtype=bool), zeros(*info.obs_shape))
    state, metrics, _ = learner_fn(static, info)(hp, state, traj)
    return state, {**metrics, **{k: jnp.zeros(()) for k in LAG_METRICS}, **on._episode_metrics(state.episodes)}


def train_segment(config: A3CConfig, state: on.OnPolicyState, num_updates: int):
    """Learn from the next `num_updates` rollouts of the actors (started on the first call)."""
    if isinstance(state.update, jax.core.Tracer):
        return _abstract_segment(config, state)
    pool = state.host if state.host is not None else ActorPool(config, state.params, int(state.update))
    learner = Learner(config, state.replace(host=None))
    try:
        for _ in range(num_updates):
            batch = []
            while len(batch) < config.rollouts_per_update:
                rollout = pool.get()
                if not learner.too_stale(rollout):
                    batch.append(rollout)
            flat, version = learner.step(batch)
            pool.box.publish(flat, version)
    except BaseException:
        pool.close()
        raise
    state = learner.state.replace(episodes=jax.tree.map(jnp.asarray, learner.episodes), host=pool)
    return state, learner.metrics()


def close(state: on.OnPolicyState) -> None:
    """Stop the actors (the runner calls this when a run ends)."""
    if state is not None and state.host is not None:
        state.host.close()


def policy_fn(config: A3CConfig, info: EnvInfo):
    return on.policy_fn(make_algo, config, info)
