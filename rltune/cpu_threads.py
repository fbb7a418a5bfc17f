"""XLA's CPU thread pool sized for the process's share of the cores.

JAX's CPU client runs independent operations of a compiled program on a thread pool with one
thread per core it may use (the process's CPU affinity when the client starts). For rltune's
small programs (a 64x64 MLP, 4 environments) that parallelism is mostly handoffs and
spin-waiting: with two threads, one PPO CartPole trial used 4.5 ms of CPU per update (512 env
steps), with one thread 3.4 ms; a vmapped population of 16, 3.5 ms per member-update against
2.7 ms (`benchmarks/study_vs_peers.py` config, measured with time.process_time under load).
When a study's workers already fill the cores, every worker is better off with one thread.

`limit(threads)` must run before the process's first JAX computation. It narrows the CPU
affinity to `threads` cores while the client starts (the pool is sized then), and afterwards
gives every thread of the process its full affinity back, so the OS still places the worker
on whichever core is free. Linux only; elsewhere, or when JAX already started, it does nothing.
The local and population executors call it in each worker when their workers fill the cores
(`threads_per_worker`); RLTUNE_CPU_THREADS=N sets the count, 0 keeps JAX's default.
"""

from __future__ import annotations

import os

ENV_THREADS = "RLTUNE_CPU_THREADS"


def threads_per_worker(workers: int) -> int | None:
    """Threads each of `workers` processes should use (None: all cores, JAX's default).
    RLTUNE_CPU_THREADS overrides it (0: JAX's default)."""
    value = os.environ.get(ENV_THREADS, "").strip()
    if value.isdigit():
        return int(value) or None
    cores = available_cores()
    if not cores or workers <= 1:
        return None
    threads = max(1, len(cores) // workers)
    return threads if threads < len(cores) else None


def available_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return []


def _backend_started() -> bool:
    import sys

    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(bridge is not None and getattr(bridge, "_backends", None))


def cpu_platform_allowed() -> bool:
    """False where JAX may not start a CPU client: JAX_PLATFORMS (or jax_platforms) names
    platforms and "cpu" is not among them, e.g. JAX_PLATFORMS=cuda on a GPU machine."""
    import jax

    platforms = jax.config.jax_platforms  # None or "": every platform JAX finds
    return not platforms or "cpu" in [p.strip() for p in platforms.split(",")]


def limit(threads: int | None, first_core: int = 0) -> bool:
    """Start JAX's CPU client with a `threads`-thread pool; True when it did. `first_core`
    spreads workers over the cores while their clients start (worker i: cores from i*threads)."""
    cores = available_cores()
    if threads is None or not cores or threads >= len(cores) or _backend_started() or not cpu_platform_allowed():
        return False
    start = (first_core * threads) % len(cores)
    narrow = {cores[(start + i) % len(cores)] for i in range(threads)}
    full = set(cores)
    os.sched_setaffinity(0, narrow)
    try:
        import jax

        jax.devices("cpu")  # creates the CPU client: its thread pool takes the narrowed affinity
    finally:
        for tid in os.listdir("/proc/self/task"):  # the pool's threads included
            try:
                os.sched_setaffinity(int(tid), full)
            except OSError:  # a thread that ended meanwhile
                pass
    return True

