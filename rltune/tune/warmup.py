"""A cold study's workers compile each program once between them, not once each.

Every worker of a study needs the same compiled programs for a static config: the state's
init, the training segment and the compiled evaluation (for PPO CartPole, cold: 1.9 s, 3.5 s
and 1.2 s; the population's vmapped segment 5.2 s). Left alone, two workers on two cores each
compile all of them at the same time, and half of that work is thrown away.

Instead, before its first trial of a static config, a worker walks the programs in its own
rotation (worker i starts at program i) and compiles a program only when no other worker is
compiling it: a file lock per program, next to JAX's persistent compilation cache. A program
another worker holds is taken up last, once that worker is done; by then it is in the cache,
so it loads instead of compiling. With two workers and the three programs above, one compiles
the segment while the other compiles init and the evaluation: both are ready when the
segment is (about 3.6 s instead of 6.6 s each).

A program here is the real call on placeholder inputs of the real shapes (zeros; a segment of
0 updates, an evaluation of all-zero weights), so it also fills the process's own jit caches:
the trial's first calls neither trace nor compile again. Warming up is only an optimization:
a program that fails here is skipped, and the trial compiles it as it would have anyway.
Without the persistent cache (`RLTUNE_COMPILE_CACHE=0`) there is nothing to share: skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

_done: set[str] = set()  # lock keys of the programs this process has run (or failed to: not retried)
_warmed: set[str] = set()  # config keys whose trial programs this process has gone through


@dataclass(frozen=True)
class Program:
    name: str
    run: Callable[[], Any]


def trial_programs(agent: str, config, eval_episodes: int) -> list[Program]:
    """What a trial of `config` compiles on the local executor; [] when it is not a compiled
    (gymnax) on-policy trial, whose programs are all known in advance."""
    module = _compiled_on_policy(agent, config)
    if module is None:
        return []
    abstract = _abstract_init(module, config)
    programs = [Program("init", lambda: module.init(config))]
    state = _placeholder(abstract)
    if state is not None:
        programs.append(Program("segment", lambda: module.train_segment(config, state, 0)))
    return programs + _evaluation(agent, config, abstract.params, eval_episodes)


def population_programs(population, config, eval_episodes: int) -> list[Program]:
    """What a population worker compiles for members of `config`: a member's init, the vmapped
    segment and the evaluation. (A new population's members are stacked on the host, so the
    program that writes a member into a running population's slot is left to the first
    member that joins one.)"""
    import jax
    import numpy as np

    module = _compiled_on_policy(population.agent, config)
    if module is None:
        return []
    abstract = _abstract_init(module, config)
    _, hp = module.split_config(config)
    # the population stacks host (numpy) copies: no weak types (Population.admit)
    one = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)
    hp = {k: np.asarray(v) for k, v in jax.device_get(hp).items()}
    capacity = population.capacity

    def stacked():
        return jax.device_put(jax.tree.map(lambda x: np.zeros((capacity, *x.shape), x.dtype), (one, hp)))

    def segment():
        states, hps = stacked()
        return module.population_segment(*population.static_key(config))(hps, states, np.zeros(capacity, np.int32))

    # The segment second: worker 1 starts on it (the longest compile) with nothing before it,
    # while worker 0 takes the others in turn.
    return [Program("init", lambda: module.init(config)),
            Program("population_segment", segment),
            *_evaluation(population.agent, config, abstract.params, eval_episodes)]


def warm_up_trial(task, worker_id: int) -> None:
    """Before a local worker's trial: its programs, compiles shared (a no-op once warm)."""
    _guarded(lambda: _warm_up_trial(task, worker_id))


def warm_up_population(population, task, worker_id: int) -> None:
    """Before a population worker admits its first members of a static config."""
    _guarded(lambda: _warm_up_population(population, task, worker_id))


def _guarded(warm_up: Callable[[], None]) -> None:
    """Warming up is an optimization: whatever fails in it (a read-only or lock-less cache
    directory, a config the trial will reject) leaves the trial to compile as it always did."""
    try:
        warm_up()
    except Exception as exc:  # noqa: BLE001
        print(f"rltune: compile warm-up skipped ({type(exc).__name__}: {exc})", file=sys.stderr)


def _warm_up_trial(task, worker_id: int) -> None:
    config = _task_config(task)
    if config is None:
        return
    key = config_key("trial", task.agent, config, str(task.eval_episodes))
    if key in _warmed:  # every later trial of this static config: nothing to trace (eval_shape) again
        return
    _warmed.add(key)
    compile_shared(trial_programs(task.agent, config, task.eval_episodes), key, worker_id)


def _warm_up_population(population, task, worker_id: int) -> None:
    config = _task_config(task)
    if config is not None:
        programs = population_programs(population, config, task.eval_episodes)
        extra = f"{population.capacity}|{task.eval_episodes}"
        compile_shared(programs, config_key("population", population.agent, config, extra), worker_id)


def _task_config(task):
    """The task's agent config, or None (an external trainer, or a config the trial will
    reject with its own message)."""
    from rltune.agents import get_agent
    from rltune.config import from_dict

    if task.command is not None or task.agent is None or task.resume:
        return None
    try:
        return from_dict(get_agent(task.agent).Config, task.config, source=f"trial {task.trial_id}")
    except Exception:  # noqa: BLE001 - reported by the trial itself
        return None


def compile_shared(programs: list[Program], key: str, worker_id: int) -> list[str]:
    """Run `programs`, sharing their compiles with the study's other workers (see above).
    `key` names the static config. Returns the names of the programs this worker compiled or
    loaded (a program that failed is left to the trial)."""
    from rltune import compile_cache

    cache = compile_cache.enable()
    if cache is None or not programs:
        return []
    locks = cache / "locks"
    try:
        locks.mkdir(parents=True, exist_ok=True)
    except OSError:
        return []
    from rltune.profile import phase

    with phase("compile"):
        return _compile_in_turn(programs, key, worker_id, locks)


def _compile_in_turn(programs: list[Program], key: str, worker_id: int, locks: Path) -> list[str]:
    from rltune.profile import phase

    start = worker_id % len(programs)
    order = programs[start:] + programs[:start]
    ran, deferred = [], []
    for program in order:
        lock_key = _lock_key(key, program.name)
        if lock_key in _done:
            continue
        handle = open(locks / f"{lock_key}.lock", "a")
        if not _try_lock(handle):  # another worker is compiling it: take it up last, from the cache
            deferred.append((program, lock_key, handle))
            continue
        ran += _run_locked(program, lock_key, handle)
    for program, lock_key, handle in deferred:
        with phase("wait"):  # for the other worker's compile to finish
            deadline = time.monotonic() + WAIT_SECONDS
            while not _try_lock(handle) and time.monotonic() < deadline:
                time.sleep(0.02)
        ran += _run_locked(program, lock_key, handle)  # locked, or the other worker is stuck: compile
    return ran


# A worker waits this long for another's compile (a stopped or hung worker must not hold up the
# study); then it compiles the program itself.
WAIT_SECONDS = 300.0


def _try_lock(handle) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _run_locked(program: Program, lock_key: str, handle) -> list[str]:
    """Run `program` (its lock held, normally) and release the lock. A program that fails is
    not tried again in this process: the trial compiles it as it would have anyway."""
    import jax

    _done.add(lock_key)
    try:
        jax.block_until_ready(program.run())
        return [program.name]
    except Exception as exc:  # noqa: BLE001 - an optimization: the trial compiles it itself
        print(f"rltune: warm-up of {program.name} skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
        return []
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def config_key(kind: str, agent: str, config, extra: str = "") -> str:
    """Names a static config's programs: equal for every worker of a study that trains it."""
    import jax

    from rltune.agents import get_agent

    static, _ = get_agent(agent).split_config(config)
    return f"{kind}|{agent}|{static!r}|{extra}|jax {jax.__version__}|{os.environ.get('XLA_FLAGS', '')}"


def _lock_key(key: str, name: str) -> str:
    return hashlib.sha256(f"{key}|{name}".encode()).hexdigest()[:32]


def _compiled_on_policy(agent: str, config):
    """The agent's module when its trials on `config.env` are compiled on-policy segments."""
    from rltune.agents import get_agent
    from rltune.envs import env_info

    module = get_agent(agent)
    if not hasattr(module, "population_segment"):  # the on-policy family: compiled segments
        return None
    return module if env_info(config.env, config.backend).backend == "gymnax" else None


def _abstract_init(module, config):
    """The shapes of `module.init(config)`'s state: from the executable cache when init's
    program is there (no tracing), else `jax.eval_shape`."""
    from rltune import executable_cache

    with executable_cache.shapes_only():
        return module.init(config)


def _placeholder(abstract):
    """Zeros shaped like `abstract` (jax.eval_shape's output), weak types included (a jit call
    with another weak type would trace and compile a second program); None when it cannot be
    matched."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    def zeros(s):
        if s.weak_type:
            return jax.lax.broadcast(jnp.asarray(s.dtype.type(0).item()), s.shape)
        return np.zeros(s.shape, s.dtype)

    try:
        value = jax.tree.map(zeros, abstract)
    except (TypeError, ValueError):  # an extended dtype (typed PRNG keys): not worth guessing
        return None
    same = all((v.shape, v.dtype, bool(getattr(v, "weak_type", False))) == (s.shape, s.dtype, s.weak_type)
               for v, s in zip(jax.tree.leaves(value), jax.tree.leaves(abstract)))
    return value if same else None


def _evaluation(agent: str, config, abstract_params, eval_episodes: int) -> list[Program]:
    """The trial's final evaluation on the env as trained, with all-zero weights."""
    import jax
    import numpy as np

    from rltune.runner import evaluate_params

    if eval_episodes <= 0:
        return []

    def run():
        params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract_params)
        return evaluate_params(agent, config, params, eval_episodes, 0, reference=False)

    return [Program("evaluate", run)]
