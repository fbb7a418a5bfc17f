"""Evaluate a policy for whole episodes, on Gymnasium (reference simulators) or gymnax."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rltune.envs import GYMNASIUM_TWIN, make_gymnax


@dataclass(frozen=True)
class EvalResult:
    returns: tuple[float, ...]
    lengths: tuple[int, ...]
    env_id: str
    backend: str

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))

    def summary(self) -> dict:
        r = np.asarray(self.returns)
        return {"episodes": len(r), "mean": float(r.mean()), "std": float(r.std()), "min": float(r.min()),
                "max": float(r.max()), "mean_length": float(np.mean(self.lengths)),
                "env": self.env_id, "backend": self.backend}


def eval_backend(env_id: str, train_backend: str) -> tuple[str, str]:
    """Gymnasium when the env has a Gymnasium twin (the reference simulator), else as trained."""
    if train_backend == "gymnax" and env_id in GYMNASIUM_TWIN:
        return GYMNASIUM_TWIN[env_id], "gymnasium"
    return env_id, train_backend


def evaluate(act: Callable, env_id: str, backend: str, episodes: int, seed: int = 0,
             max_parallel: int = 16) -> EvalResult:
    """`act(obs_batch) -> actions` (numpy in, numpy out). Every episode runs to its end."""
    if backend == "gymnax":
        return _evaluate_gymnax(act, env_id, episodes, seed)
    return _evaluate_gymnasium(act, env_id, episodes, seed, max_parallel)


def _evaluate_gymnasium(act, env_id, episodes, seed, max_parallel) -> EvalResult:
    from rltune.envs.gym_vec import make_env
    n = min(episodes, max_parallel)
    envs = [make_env(env_id) for _ in range(n)]  # wrapped as trained
    # Episode i runs on env i % n, so every env has a fixed quota and no episode is cut short.
    quota = [len(range(i, episodes, n)) for i in range(n)]
    next_episode = list(range(n))
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    running = np.zeros(n)
    length = np.zeros(n, dtype=int)
    returns, lengths = [], []
    active = [q > 0 for q in quota]
    try:
        while any(active):
            actions = np.asarray(act(np.stack(obs).astype(np.float32)))
            for i, env in enumerate(envs):
                if not active[i]:
                    continue
                ob, reward, terminated, truncated, _ = env.step(actions[i].item() if actions[i].ndim == 0 else actions[i])
                running[i] += float(reward)
                length[i] += 1
                if terminated or truncated:
                    returns.append(running[i])
                    lengths.append(int(length[i]))
                    running[i], length[i] = 0.0, 0
                    quota[i] -= 1
                    next_episode[i] += n
                    if quota[i] == 0:
                        active[i] = False
                        continue
                    ob, _ = env.reset(seed=seed + next_episode[i])
                obs[i] = ob
    finally:
        for env in envs:
            env.close()
    return EvalResult(tuple(float(r) for r in returns), tuple(lengths), env_id, "gymnasium")


def _evaluate_gymnax(act, env_id, episodes, seed) -> EvalResult:
    env, params = make_gymnax(env_id)
    keys = jax.random.split(jax.random.PRNGKey(seed), episodes)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    done = np.zeros(episodes, bool)
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=int)
    rng = jax.random.PRNGKey(seed + 1)
    while not done.all():
        action = jnp.asarray(act(np.asarray(obs, np.float32)))
        rng, k = jax.random.split(rng)
        obs, state, reward, terminated, truncated, _ = step(jax.random.split(k, episodes), state, action, params)
        live = ~done
        returns += np.where(live, np.asarray(reward), 0.0)
        lengths += live
        done |= np.asarray(terminated) | np.asarray(truncated)
    return EvalResult(tuple(returns.tolist()), tuple(lengths.tolist()), env_id, "gymnax")


def evaluate_compiled(policy: Callable, params, env_id: str, episodes: int, seed: int = 0) -> EvalResult:
    """Every episode of a gymnax env in one compiled program: `policy(params, obs_batch) ->
    actions` is traced into it, so an evaluation costs one dispatch instead of one per step
    (tuning trials; `evaluate` on the Gymnasium reference simulator stays the check of record).
    Episodes start and step with the keys `_evaluate_gymnax` uses (the same episodes); each runs
    to its end (termination or truncation), then is masked while the others finish."""
    run = _compiled_episodes(policy, env_id, episodes)
    returns, lengths = jax.device_get(run(params, np.int32(seed)))
    return EvalResult(tuple(np.asarray(returns, float).tolist()), tuple(np.asarray(lengths).tolist()), env_id,
                      "gymnax")


@functools.lru_cache(maxsize=32)
def _compiled_episodes(policy: Callable, env_id: str, episodes: int):
    env, env_params = make_gymnax(env_id)

    def run(params, seed):
        # the keys are made in the program (eagerly, each key op would be one more compile)
        reset_keys = jax.random.split(jax.random.PRNGKey(seed), episodes)
        k_steps = jax.random.PRNGKey(seed + 1)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(reset_keys, env_params)
        zeros = jnp.zeros(episodes, jnp.float32)
        carry = (obs, state, k_steps, zeros, jnp.zeros(episodes, jnp.int32), jnp.zeros(episodes, bool))

        def step(carry):
            obs, state, key, returns, lengths, done = carry
            key, k = jax.random.split(key)
            action = policy(params, obs.astype(jnp.float32))
            obs, state, reward, terminated, truncated, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k, episodes), state, action, env_params)
            live = ~done
            return (obs, state, key, returns + jnp.where(live, reward, 0.0), lengths + live,
                    done | terminated | truncated)

        carry = jax.lax.while_loop(lambda c: ~c[-1].all(), step, carry)
        return carry[3], carry[4]

    context = getattr(policy, "program_context", None)  # a policy that names its program: kept on disk
    if context is None:
        return jax.jit(run)
    from rltune.executable_cache import QUICK_COMPILE, Program

    return Program(jax.jit(run), "rltune.evaluate.episodes", context=(context, env_id, episodes),
                   compiler_options=QUICK_COMPILE)
