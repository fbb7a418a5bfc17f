"""Load a trained agent from a checkpoint and act with it (RLlib's compute_action)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from rltune import checkpoint
from rltune.agents import get_agent
from rltune.config import from_dict
from rltune.errors import UsageError
from rltune.envs import EnvInfo, env_info


@dataclass
class LoadedAgent:
    agent: str
    config: Any
    info: EnvInfo
    params: Any
    env_steps: int
    path: Path
    _act: Any = None
    _rng: Any = None
    _step: Any = None

    def act(self, obs, deterministic: bool = True):
        """One observation -> one action; a batch (leading axis) -> a batch of actions."""
        obs = np.asarray(obs, np.float32)
        single = obs.shape == self.info.obs_shape
        batch = obs[None] if single else obs
        actions, self._rng = self._step(self.params, batch, self._rng, deterministic)
        actions = np.asarray(actions)
        return actions[0] if single else actions

    __call__ = act


@functools.lru_cache(maxsize=8)
def _act_and_next_key(act):
    """`act` with a key split from `rng`, and the key to keep, compiled as one program: one
    dispatch per call instead of an eager split (~0.1 ms of Python) and the act, with the same
    keys and actions. Kept for the last few `act`s (an agent's LoadedAgent holds its own)."""

    @functools.partial(jax.jit, static_argnums=(3,))
    def step(params, obs, rng, deterministic: bool):
        rng, key = jax.random.split(rng)
        return act(params, obs, key, deterministic), rng

    return step


def load_agent(path: str | Path, which: str = "best") -> LoadedAgent:
    """`path`: a checkpoint file, or a run/trial directory (its best checkpoint by default)."""
    ckpt = checkpoint.find(path, which)
    payload = checkpoint.read(ckpt)
    module = get_agent(payload["agent"])
    config = from_dict(module.Config, payload["config"], source=str(ckpt))
    info = env_info(config.env, config.backend)
    # Keys and shapes checked against what the config builds: a crafted file fails here, by name.
    expected = serialization.to_state_dict(checkpoint.state_shapes(module, config))
    if "params" not in payload["state"]:
        raise UsageError("checkpoint", f"{ckpt}: state.params is missing (a damaged or crafted file)")
    checkpoint.check_tree(expected["params"], payload["state"]["params"], "state.params")
    host = _host_device()
    params = jax.device_put(jax.tree.map(np.asarray, payload["state"]["params"]), host)
    act = module.policy_fn(config, info)
    return LoadedAgent(agent=payload["agent"], config=config, info=info, params=params,
                       env_steps=int(payload["extra"].get("env_steps", 0)), path=ckpt, _act=act,
                       _rng=jax.device_put(jax.random.PRNGKey(config.seed + 12345), host),
                       _step=_act_and_next_key(act))


def _host_device():
    """Where a loaded agent acts: the CPU, where JAX may use it (None: JAX's default device).
    `act` is called an observation at a time from a host loop; on an accelerator each call
    launches kernels and copies the observation over and the action back. On an H200, one
    CartPole action took 1.24 ms with the params as numpy arrays (copied over on every call),
    1.03 ms with them on the GPU and 0.22 ms with them on the CPU. The computation follows the
    committed params and key, so the observation joins them there."""
    from rltune.cpu_threads import cpu_platform_allowed

    return jax.devices("cpu")[0] if cpu_platform_allowed() else None
