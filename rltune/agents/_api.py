"""The agent contract: what every module in `rltune.agents.AGENTS` provides.

The runner (rltune/runner.py), the population executor (rltune/tune/executors/population.py), evaluation
and `load_agent` (rltune/policy.py) and checkpoints rely on exactly this, nothing else:

Module attributes
- `Config`: a frozen dataclass subclassing `rltune.config.CommonConfig` whose fields are all
  declared with `param()` (help text, bounds, static/traced mark: the CLI is generated from
  it). Derived sizes are properties, never fields set at run time:
    `steps_per_update` env steps one update advances (the runner's unit for segments),
    `num_updates` updates in a whole run (`total_steps` // `steps_per_update`, at least 1).
  An optional `check()` raises `UsageError` for inconsistent values (called by `validate`).
- `init(config, rng=None) -> state`: a fresh training state (rng defaults to the seed's key).
- `train_segment(config, state, num_updates) -> (state, metrics)`: `num_updates` updates.
- `split_config(config) -> (static, hp)`: `static` is the config with every traced field (and
  anything else that is no part of the compiled program, e.g. the seed) reset to its default,
  hashable, so configs of equal shapes share one compiled program; `hp` maps every traced field
  name to a float32 scalar array. Inside jit a traced hyperparameter is read from `hp` only.
- `policy_fn(config, info) -> act`: `act(params, obs_batch, rng, deterministic) -> actions`,
  batched, jitted, the actions as the environment takes them (continuous ones within bounds;
  `deterministic`: greedy / the Gaussian's mean, used by evaluation).
- optional `population_segment(static, info) -> segment`: `segment(hp, state, num_updates)`
  with a leading member axis on every argument (vmapped); its presence is what makes the agent
  available to the population executor. Members have equal `static` parts.
- optional `close(state)`: releases what a state holds outside the process's arrays (a3c's
  actor processes); the runner calls it when a run ends, however it ends.

State (a flax struct / pytree; checkpoints serialize its array leaves, never a pickle)
- `params`: what `policy_fn`'s act takes (saved in checkpoints, read back by `load_agent`);
- `update`: updates done (int scalar); `env_steps`: env steps done (int scalar);
- `episodes`: `rltune.agents.episodes.EpisodeStats`, whose ring buffers are
  `config.reward_window` long;
- host-only objects (Gymnasium vector envs) in a non-pytree field, rebuilt by `init`.

Metrics (a dict of scalars returned by `train_segment`)
- `loss` (a NaN or infinite value fails the trial as diverged), `episode_return` and
  `episode_length` (means over the last `reward_window` completed episodes, NaN before the
  first one; the runner reports `episode_return` as `reward`), `episodes` (completed so far),
  plus any agent-specific scalars.

`contract_problems` checks a module's attributes and Config; `trace_problems` runs `init`,
`train_segment` and `policy_fn` abstractly (`jax.eval_shape`: shapes, no compile, no compute)
on a config and checks the state and metrics. tests/test_agent_api.py applies both to every
registered agent.
"""

from __future__ import annotations

import dataclasses
import inspect
from types import ModuleType

REQUIRED_FUNCTIONS = {"init": 2, "train_segment": 3, "split_config": 1, "policy_fn": 2}
OPTIONAL_FUNCTIONS = {"population_segment": 2, "close": 1}
CONFIG_PROPERTIES = ("steps_per_update", "num_updates")
STATE_FIELDS = ("params", "update", "env_steps", "episodes")
METRICS = ("loss", "episode_return", "episode_length", "episodes")


def _positional(fn) -> int:
    params = inspect.signature(fn).parameters.values()
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def contract_problems(name: str, module: ModuleType) -> list[str]:
    """What `module` lacks of the contract's attributes (an empty list: nothing)."""
    from rltune.config import CommonConfig

    problems = []
    config_cls = getattr(module, "Config", None)
    if config_cls is None or not dataclasses.is_dataclass(config_cls):
        problems.append(f"{name}: Config must be a dataclass")
    else:
        if not issubclass(config_cls, CommonConfig):
            problems.append(f"{name}: Config must subclass rltune.config.CommonConfig")
        if not config_cls.__dataclass_params__.frozen:
            problems.append(f"{name}: Config must be frozen")
        for f in dataclasses.fields(config_cls):
            if not f.metadata.get("help"):
                problems.append(f"{name}: Config.{f.name} must be declared with param() and a help text")
        for prop in CONFIG_PROPERTIES:
            if not hasattr(config_cls, prop):
                problems.append(f"{name}: Config needs the property {prop}")
    for fn_name, arity in {**REQUIRED_FUNCTIONS, **OPTIONAL_FUNCTIONS}.items():
        fn = getattr(module, fn_name, None)
        if fn is None:
            if fn_name in REQUIRED_FUNCTIONS:
                problems.append(f"{name}: missing {fn_name}()")
            continue
        if not callable(fn) or _positional(fn) < arity:
            problems.append(f"{name}: {fn_name} must take {arity} positional arguments")
    return problems


def trace_problems(name: str, module: ModuleType, config) -> list[str]:
    """Run the module abstractly on `config` (a gymnax env) and check state, metrics, split and
    policy shapes against the contract."""
    import jax
    import jax.numpy as jnp

    from rltune.config import traced_fields
    from rltune.envs import env_info

    problems = []
    if not (isinstance(config.steps_per_update, int) and config.steps_per_update > 0):
        problems.append(f"{name}: steps_per_update must be a positive int, got {config.steps_per_update!r}")
    if not (isinstance(config.num_updates, int) and config.num_updates >= 1):
        problems.append(f"{name}: num_updates must be an int >= 1, got {config.num_updates!r}")
    static, hp = module.split_config(config)
    try:
        hash(static)
    except TypeError:
        problems.append(f"{name}: split_config's static part must be hashable (it keys the compile cache)")
    if set(hp) != set(traced_fields(type(config))):
        problems.append(f"{name}: split_config's hp keys {sorted(hp)} are not the traced fields "
                        f"{sorted(traced_fields(type(config)))}")
    if any(jnp.asarray(v).dtype != jnp.float32 or jnp.shape(v) != () for v in hp.values()):
        problems.append(f"{name}: split_config's hp values must be float32 scalars")
    state = jax.eval_shape(lambda: module.init(config))
    for f in STATE_FIELDS:
        if not hasattr(state, f):
            problems.append(f"{name}: state lacks the field {f}")
    if problems:
        return problems
    if state.episodes.returns.shape != (config.reward_window,):
        problems.append(f"{name}: the episode window is {state.episodes.returns.shape}, "
                        f"not reward_window = {config.reward_window}")
    new_state, metrics = jax.eval_shape(lambda s: module.train_segment(config, s, 1), state)
    if jax.tree.structure(new_state) != jax.tree.structure(state):
        problems.append(f"{name}: train_segment changes the state's structure")
    for m in METRICS:
        if m not in metrics:
            problems.append(f"{name}: train_segment's metrics lack {m!r}")
        elif metrics[m].shape != ():
            problems.append(f"{name}: metric {m!r} must be a scalar, got shape {metrics[m].shape}")
    info = env_info(config.env, config.backend)
    act = module.policy_fn(config, info)
    obs = jax.ShapeDtypeStruct((3, *info.obs_shape), jnp.float32)
    for deterministic in (True, False):
        actions = jax.eval_shape(lambda p, o: act(p, o, jax.random.PRNGKey(0), deterministic), state.params, obs)
        want = (3,) if info.discrete else (3, info.num_actions)
        if actions.shape != want:
            problems.append(f"{name}: policy_fn's act returns shape {actions.shape} for 3 observations, "
                            f"expected {want}")
    if hasattr(module, "population_segment"):
        segment = module.population_segment(static, info)
        stack = lambda tree: jax.tree.map(  # noqa: E731
            lambda x: jax.ShapeDtypeStruct((2, *x.shape), x.dtype), tree)
        n = jax.ShapeDtypeStruct((2,), jnp.int32)
        pop_state, pop_metrics = jax.eval_shape(segment, stack(hp), stack(state), n)
        if jax.tree.structure(pop_state) != jax.tree.structure(state):
            problems.append(f"{name}: population_segment changes the state's structure")
        if any(pop_metrics[m].shape != (2,) for m in METRICS if m in pop_metrics):
            problems.append(f"{name}: population_segment's metrics need a member axis")
    return problems
