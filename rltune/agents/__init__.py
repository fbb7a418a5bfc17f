"""Agent registry: name -> module meeting the contract in rltune/agents/_api.py."""

from __future__ import annotations

from types import ModuleType

from rltune import compile_cache, threefry_cpu

compile_cache.enable()  # before any agent compiles: every process that trains reads the cache
threefry_cpu.use_unrolled()  # before any program is lowered: same random bits, faster on CPU

from rltune.agents import a2c, a3c, c2a2, ddpg, dqn, pg, ppo, td3  # noqa: E402
from rltune.errors import UsageError

AGENTS: dict[str, ModuleType] = {"ppo": ppo, "pg": pg, "a2c": a2c, "a3c": a3c, "dqn": dqn, "ddpg": ddpg,
                                 "td3": td3, "c2a2": c2a2}


def get_agent(name: str) -> ModuleType:
    try:
        return AGENTS[name]
    except KeyError:
        raise UsageError("agent", f"unknown agent {name!r}; choose one of: {', '.join(AGENTS)}") from None
