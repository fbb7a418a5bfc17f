"""Environments: gymnax (fully compiled) and Gymnasium (host loop), chosen by id.

`resolve_backend(env_id, backend)` picks gymnax when the id exists there, else Gymnasium.
`env_info(env_id, backend)` describes observation and action spaces the same way for both.
"""

from __future__ import annotations

import functools
import importlib.machinery
import types
from dataclasses import dataclass

from rltune.errors import UsageError

# gymnax ids whose dynamics match a Gymnasium environment: trained on gymnax, evaluated on the
# Gymnasium reference simulator so a result cannot hide in our own env code.
GYMNASIUM_TWIN = {
    "CartPole-v1": "CartPole-v1",
    "Acrobot-v1": "Acrobot-v1",
    "MountainCar-v0": "MountainCar-v0",
    "MountainCarContinuous-v0": "MountainCarContinuous-v0",
    "Pendulum-v1": "Pendulum-v1",
}


@dataclass(frozen=True)
class EnvInfo:
    env_id: str
    backend: str  # "gymnax" | "gymnasium"
    obs_shape: tuple[int, ...]
    discrete: bool
    num_actions: int  # number of discrete actions, or action dimension when continuous
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()


# Modules gymnax imports for rendering only (its envs' `render`): matplotlib (pyplot, and colors
# for Pong's palette) and seaborn (with scipy.stats) are most of gymnax's import time, paid again
# by every process that imports it: 0.12 s for matplotlib alone, on the way to a worker's first
# compile. While gymnax imports, they are stand-in modules (parents before children); gymnax
# keeps the stand-ins it imported (its `plt`, `colors`, `sns`), which import the real module on
# first attribute use, so rendering still works. The stand-ins leave sys.modules as soon as
# gymnax is imported: any other `import matplotlib...` in the process imports the real modules.
_RENDER_ONLY = ("matplotlib", "matplotlib.pyplot", "matplotlib.colors", "seaborn")


class _Deferred(types.ModuleType):
    def __getattr__(self, attr):  # only for attributes not set here: the real module's
        import importlib

        if attr == "__path__":  # `from matplotlib import colors` asking whether it is a package: no
            raise AttributeError(attr)
        _remove_stand_ins()  # used while gymnax imports: the real modules from now on
        return getattr(importlib.import_module(self.__name__), attr)


def _remove_stand_ins() -> None:
    import sys

    for name in _RENDER_ONLY:
        if isinstance(sys.modules.get(name), _Deferred):
            del sys.modules[name]


@functools.lru_cache(maxsize=1)
def import_gymnax():
    """`import gymnax`, its rendering-only imports deferred until first used."""
    import importlib.util
    import sys

    stood_in, parents = [], []
    for name in _RENDER_ONLY:
        parent, _, child = name.rpartition(".")
        try:
            if name in sys.modules or importlib.util.find_spec(parent or name) is None:
                continue
        except (ImportError, ValueError):
            continue  # not installed: gymnax's own import says so
        stand_in = _Deferred(name)
        stand_in.__spec__ = importlib.machinery.ModuleSpec(name, None)  # read by `import` on a cached module
        sys.modules[name] = stand_in
        stood_in.append(name)
        if parent:
            parents.append((sys.modules[parent], child, stand_in))
            setattr(sys.modules[parent], child, stand_in)
    try:
        try:
            import gymnax
        finally:
            _remove_stand_ins()
            for parent_module, child, stand_in in parents:
                if parent_module.__dict__.get(child) is stand_in and not isinstance(parent_module, _Deferred):
                    delattr(parent_module, child)  # a real matplotlib imported earlier: as it was
    except ImportError:
        # A gymnax that imports another part of matplotlib than these: as it is, without stand-ins.
        if not stood_in:
            raise
        for name in [m for m in sys.modules if m == "gymnax" or m.startswith("gymnax.")]:
            del sys.modules[name]
        import gymnax
    return gymnax


@functools.lru_cache(maxsize=1)
def gymnax_ids() -> list[str]:
    gymnax = import_gymnax()

    from rltune.envs.probes import PROBES

    return list(gymnax.registered_envs) + list(PROBES)


def gymnasium_ids() -> list[str]:
    import gymnasium

    return list(gymnasium.registry.keys())


def resolve_backend(env_id: str, backend: str = "auto") -> str:
    in_gymnax = env_id in gymnax_ids()
    if backend == "gymnax":
        if not in_gymnax:
            raise UsageError("env", f"{env_id!r} is not a gymnax environment; use --backend gymnasium "
                             f"or one of: {', '.join(sorted(gymnax_ids())[:12])}, ...")
        return "gymnax"
    if backend == "auto" and in_gymnax:
        return "gymnax"
    _register_gymnasium_extras()
    if env_id not in gymnasium_ids():
        raise UsageError("env", f"unknown environment {env_id!r}: not a gymnax id and not a "
                         "registered Gymnasium id (Atari ids need ale-py, Box2D ids need box2d)")
    return "gymnasium"


def _register_gymnasium_extras() -> None:
    try:  # ale-py registers the ALE/ namespace on import, when installed
        import ale_py  # noqa: F401
        import gymnasium

        gymnasium.register_envs(ale_py)
    except ImportError:
        pass


@functools.lru_cache(maxsize=None)
def make_gymnax(env_id: str):
    gymnax = import_gymnax()

    from rltune.envs.probes import PROBES

    if env_id in PROBES:
        env = PROBES[env_id]()
        return env, env.default_params
    return gymnax.make(env_id)


@functools.lru_cache(maxsize=None)
def env_info(env_id: str, backend: str = "auto") -> EnvInfo:
    backend = resolve_backend(env_id, backend)
    if backend == "gymnax":
        env, params = make_gymnax(env_id)
        obs_space = env.observation_space(params)
        act_space = env.action_space(params)
        return _info(env_id, backend, obs_space, act_space)
    from rltune.envs.gym_vec import make_env

    env = make_env(env_id)  # wrapped as trained (Atari: 84x84 grayscale frame stack)
    try:
        return _info(env_id, backend, env.observation_space, env.action_space)
    finally:
        env.close()


def _info(env_id, backend, obs_space, act_space) -> EnvInfo:
    import numpy as np

    obs_shape = tuple(int(s) for s in obs_space.shape)
    if hasattr(act_space, "n"):
        return EnvInfo(env_id, backend, obs_shape, True, int(act_space.n))
    low = np.broadcast_to(np.asarray(act_space.low, dtype=np.float32), act_space.shape)
    high = np.broadcast_to(np.asarray(act_space.high, dtype=np.float32), act_space.shape)
    return EnvInfo(env_id, backend, obs_shape, False, int(np.prod(act_space.shape)),
                   tuple(float(x) for x in low.ravel()), tuple(float(x) for x in high.ravel()))
