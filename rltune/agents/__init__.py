"""Agent registry: name -> module with `Config`, `init`, `train_segment`, `policy_fn`."""

from __future__ import annotations

from types import ModuleType

from rltune import compile_cache

compile_cache.enable()  # before any agent compiles: every process that trains reads the cache

from rltune.agents import c2a2, ddpg, dqn, ppo, td3  # noqa: E402
from rltune.errors import UsageError

AGENTS: dict[str, ModuleType] = {"ppo": ppo, "dqn": dqn, "ddpg": ddpg, "td3": td3, "c2a2": c2a2}


def get_agent(name: str) -> ModuleType:
    try:
        return AGENTS[name]
    except KeyError:
        raise UsageError("agent", f"unknown agent {name!r}; choose one of: {', '.join(AGENTS)}") from None
