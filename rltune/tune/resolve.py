"""From a study spec to what the driver runs: every check on the user's input (before anything is
written), the built-in agent's config per trial, the trial budget and the scheduler."""

from __future__ import annotations

from typing import Any

from rltune.errors import UsageError
from rltune.tune.spec import StudySpec


def prepare(spec: StudySpec) -> StudySpec:
    """Every check that can fail on the user's input, before anything is written. The first
    thing a study driver does: its JAX starts here, without taking an accelerator's memory."""
    from rltune.tune.executors.local import keep_driver_off_accelerator_memory, start_forkserver
    from rltune.tune.spec import check_runnable

    keep_driver_off_accelerator_memory()  # the workers need the GPU's memory, not the driver
    if spec.executor in ("local", "population"):
        start_forkserver()  # it imports the workers' modules while the checks below import ours

    check_runnable(spec)
    if spec.agent is not None:
        import dataclasses

        from rltune.agents import get_agent
        from rltune.config import from_dict
        from rltune.envs import env_info
        from rltune.tune.spec import validate_against_agent

        module = get_agent(spec.agent)
        names = {f.name for f in dataclasses.fields(module.Config)}
        validate_against_agent(spec, names, agent=spec.agent)
        base = base_config(spec)
        from_dict(module.Config, base, source="fixed")
        # Every end of every searched range must make a valid config (e.g. gamma <= 1).
        for p in spec.space:
            for value in _extremes(p):
                try:
                    from_dict(module.Config, {**base, p.name: value}, source="search_space")
                except UsageError as exc:
                    raise UsageError(f"search_space.{p.name}", f"value {value!r} is invalid for the agent: "
                                     f"{exc}") from None
        env_info(base.get("env", "CartPole-v1"), base.get("backend", "auto"))
    check_pbt(spec)
    check_executor(spec)
    return spec


# ---------------------------------------------------------------- population-based training
def check_pbt(spec: StudySpec) -> None:
    """PBT needs a built-in agent (rltune copies its checkpoints), traced hyperparameters only."""
    if spec.scheduler.name != "pbt":
        return
    if spec.agent is None:
        raise UsageError("scheduler", "pbt copies weights and optimizer state between members, which "
                         "rltune cannot do inside an external trainer: external trainers cannot take part; "
                         "use a built-in agent (agent: ppo)")
    if spec.executor == "ray" and spec.population:
        raise UsageError("population", "scheduler pbt on Ray copies members through checkpoints, one trial "
                         "per actor: set population: false (or use executor: population on one machine)")
    from rltune.config import static_fields

    config_cls = _agent_module(spec).Config
    static = static_fields(config_cls) - {"seed"}  # the seed only feeds init: members may differ in it
    for p in spec.space:
        if p.name in static:
            raise UsageError(f"search_space.{p.name}", f"{p.name} is static (it fixes array shapes), and a "
                             "PBT population shares one compiled program: move it to fixed:")
    mutations = pbt_mutations(spec)
    if not mutations:
        raise UsageError("scheduler.mutations", "nothing to explore: give mutations, or search at least one "
                         "traced hyperparameter (such as learning_rate) in search_space")
    from rltune.config import from_dict, traced_fields

    traced = traced_fields(config_cls)
    base = base_config(spec)
    for name, m in mutations.items():
        field = f"scheduler.mutations.{name}"
        if name in static:
            raise UsageError(field, f"{name} is static (it fixes array shapes), so it is fixed per population "
                             f"and cannot change during training; PBT mutates traced ones: {', '.join(traced)}")
        if name not in traced:
            raise UsageError(field, f"is not a hyperparameter of {spec.agent}; traced ones: {', '.join(traced)}")
        for value in ([m.low, m.high] if m.kind in ("float", "int") else list(m.values)):
            try:
                from_dict(config_cls, {**base, name: value}, source="scheduler.mutations")
            except UsageError as exc:
                raise UsageError(field, f"value {value!r} is invalid for the agent: {exc}") from None


def _agent_module(spec: StudySpec):
    from rltune.agents import get_agent

    return get_agent(spec.agent)


def pbt_mutations(spec: StudySpec) -> dict:
    """The scheduler's mutations, or by default every traced hyperparameter of the search
    space with its range."""
    from rltune.config import traced_fields
    from rltune.schedulers.pbt import Mutation, parse_mutations

    given = spec.scheduler.params.get("mutations")
    if given is not None:
        return parse_mutations(given)
    traced = set(traced_fields(_agent_module(spec).Config))
    return {p.name: Mutation(p.name, p.kind, p.low, p.high, p.scale, tuple(p.values))
            for p in spec.space if p.name in traced}


def pbt_settings(spec: StudySpec, scheduler) -> dict | None:
    """What a population worker needs to run PBT (sent with every TrialTask), or None."""
    if spec.scheduler.name != "pbt":
        return None
    import dataclasses

    from rltune.config import traced_fields

    mutations = pbt_mutations(spec)
    traced = set(traced_fields(_agent_module(spec).Config))
    names = sorted(set(mutations) | {p.name for p in spec.space if p.name in traced})
    params = {k: v for k, v in spec.scheduler.params.items() if k != "unit"}
    params["mutations"] = {name: {k: v for k, v in dataclasses.asdict(m).items()
                                  if k in ("low", "high", "scale", "values") and v not in (None, ())}
                           | {"type": m.kind} for name, m in mutations.items()}
    params.setdefault("seed", spec.sampler.seed or 0)
    params["interval"] = scheduler.interval
    return {"goal": spec.goal, "max_steps": scheduler.max_steps, "num_trials": spec.num_trials,
            "params": params, "names": names}


def check_executor(spec: StudySpec) -> None:
    from rltune.tune.executors.base import EXECUTOR_NAMES

    if spec.executor not in EXECUTOR_NAMES:
        raise UsageError("executor", f"unknown executor {spec.executor!r}: choose one of {', '.join(EXECUTOR_NAMES)}")
    if spec.executor == "population" or spec.population:
        from rltune.tune.executors.population import population_support

        if spec.agent is None or not population_support(spec.agent):
            from rltune.agents import AGENTS

            able = ", ".join(name for name in AGENTS if population_support(name))
            raise UsageError("executor", "a population needs a built-in agent that supports it "
                             f"({able}); got {spec.agent or 'an external command'}: use executor local")
    if spec.executor == "ray":
        from rltune.tune.executors.ray import check_ray_available

        check_ray_available()


def _extremes(p) -> list:
    if p.kind in ("float", "int"):
        return [p.low, p.high]
    return list(p.values)


def base_config(spec: StudySpec) -> dict[str, Any]:
    base = dict(spec.fixed)
    if spec.env:
        base["env"] = spec.env
    if spec.budget_steps:
        base["total_steps"] = spec.budget_steps
    return base


def agent_config(spec: StudySpec, params: dict[str, Any] | None = None):
    """The built-in agent's config for this study: fixed settings, env, budget, then `params`."""
    from rltune.agents import get_agent
    from rltune.config import from_dict

    return from_dict(get_agent(spec.agent).Config, {**base_config(spec), **(params or {})})


def trial_budget(spec: StudySpec) -> int:
    if spec.agent is None:
        return int(spec.budget_steps or 0)
    return agent_config(spec).total_steps


SCHEDULER_UNITS = ("steps", "updates")


def steps_per_unit(spec: StudySpec) -> int:
    """Env steps in one unit of the scheduler's rungs/phases (`scheduler: {unit: updates}`)."""
    unit = spec.scheduler.params.get("unit", "steps")
    if unit not in SCHEDULER_UNITS:
        raise UsageError("scheduler.unit", f"must be one of {', '.join(SCHEDULER_UNITS)}; got {unit!r}")
    if unit == "steps":
        return 1
    if spec.agent is None:
        raise UsageError("scheduler.unit", "updates are known only for built-in agents; an external "
                         "trainer's unit is the step it reports (use unit: steps)")
    return agent_config(spec).steps_per_update


def make_scheduler_for(spec: StudySpec):
    from rltune.schedulers import default_early_stopping, make_scheduler

    budget = trial_budget(spec) // steps_per_unit(spec)
    params = {k: v for k, v in spec.scheduler.params.items() if k != "unit"}
    if spec.scheduler.name == "fifo" and spec.early_stopping:
        if budget <= 0:
            raise UsageError("budget_steps", "early stopping of external trials needs budget_steps "
                             "(the steps at which the trainer reports)")
        return default_early_stopping(budget, spec.num_trials, spec.goal)
    if spec.scheduler.name != "fifo" and budget <= 0:
        raise UsageError("budget_steps", f"scheduler {spec.scheduler.name!r} needs budget_steps for "
                         "external trials")
    return make_scheduler(spec.scheduler.name, goal=spec.goal, max_steps=max(budget, 1),
                          num_trials=spec.num_trials, **params)


