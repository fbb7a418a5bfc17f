"""JAX's persistent compilation cache, on by default, so a second run or study starts warm.

Compiled XLA programs are kept in the user's cache directory (`$XDG_CACHE_HOME/rltune/jax`,
else `~/.cache/rltune/jax`; `RLTUNE_COMPILE_CACHE_DIR` moves it). JAX keys every entry by the
program itself, the JAX/XLA versions, the backend and the compile options, so a changed
program, config shape or upgrade never loads a stale executable: it compiles and adds an entry.
`RLTUNE_COMPILE_CACHE=0` (or `rltune --no-compile-cache ...`) turns it off; workers and Ray
actors started by a driver inherit the setting through the environment. The same switch and
directory hold rltune's executable cache (rltune/executable_cache.py: whole programs, loaded
without tracing).

Measured on 2 shared CPU cores (load ~15): a PPO CartPole first segment took 32.3 s to compile
cold and 6.3 s with the cache warm.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_SWITCH = "RLTUNE_COMPILE_CACHE"
ENV_DIR = "RLTUNE_COMPILE_CACHE_DIR"
_enabled: Path | None = None


def cache_dir() -> Path:
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rltune" / "jax"


def enabled_by_environment() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def enable() -> Path | None:
    """Turn the cache on for this process (idempotent); returns its directory, or None when off
    or when the directory cannot be created (a read-only home: JAX then just compiles)."""
    global _enabled
    if _enabled is not None or not enabled_by_environment():
        return _enabled
    import jax

    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    # rltune's programs are few and reused: cache every one, however quick its compile
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _enabled = path
    return path
