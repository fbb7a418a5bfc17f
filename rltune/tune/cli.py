"""`rltune tune [SPEC.yaml] [options] [-- trainer command ...]`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from importlib import resources
from pathlib import Path

from rltune.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Run a tuning study. SPEC is a native study file or a Cloud ML Engine hptuning "
                     "YAML (trainingInput: ...); without SPEC a small built-in PPO CartPole study runs. "
                     "An external trainer command follows `--`.")
    p.add_argument("spec", nargs="?", help="Study spec YAML (default: the built-in PPO CartPole study).")
    p.epilog = "Example: rltune tune hptuning.yaml -- python -m trainer.task --steps=100000"
    p.add_argument("--trials", type=int, help="Number of trials (overrides the spec).")
    p.add_argument("--parallel", type=int, help="Trials run at once (overrides the spec).")
    p.add_argument("--out", help="Study directory (default studies/<name>).")
    p.add_argument("--resume", action="store_true", help="Continue the study in --out; completed trials are kept.")
    p.add_argument("--storage", help="SQLAlchemy URL of the Optuna storage (default: SQLite file in the study dir).")
    p.add_argument("--sampler", help="Override the sampler: random, grid, tpe, gp, cmaes, qmc.")
    p.add_argument("--seed", type=int, help="Sampler seed.")
    p.add_argument("--budget-steps", type=int, help="Env steps per trial (overrides the spec).")
    p.add_argument("--executor", choices=("local", "population"),
                   help="local: one process per parallel trial; population: trials vmapped in one process.")
    p.add_argument("--population-size", type=int,
                   help="Members trained at once by the population executor (default: from memory and trials).")
    p.add_argument("--eval-episodes", type=int, default=10,
                   help="Evaluation episodes at the end of each built-in trial (0 to skip).")
    p.add_argument("--agent", help="Tune this built-in agent without a spec file: its default search "
                                   "space (rltune/presets/search_spaces.yaml) from its preset for --env.")
    p.add_argument("--env", help="Environment id for --agent (default: the agent's default env).")
    p.add_argument("--scheduler", help="Override the early-stopping scheduler: fifo, median, asha, "
                                       "successive_halving, hyperband, hypertrick (default parameters).")


def agent_spec_dict(agent: str, env: str | None) -> dict:
    """A native spec for `--agent A --env X`: the agent's default search space over its preset
    for X (or its defaults), 20 trials, 2 at a time, TPE. Flags such as --trials override it."""
    from rltune.agents import get_agent
    from rltune.presets import default_search_space, preset

    module = get_agent(agent)
    env = env or next(f.default for f in dataclasses.fields(module.Config) if f.name == "env")
    space = default_search_space(agent)
    fixed = {k: v for k, v in (preset(agent, env) or {}).items() if k not in space}
    return {"name": f"{agent}-{env.replace('/', '_')}", "agent": agent, "env": env, "fixed": fixed,
            "search_space": space, "metric": "reward", "goal": "maximize", "trials": 20, "parallel": 2,
            "sampler": {"name": "tpe", "seed": 0}, "scheduler": "fifo"}


def load(args) -> "StudySpec":  # noqa: F821
    from rltune.tune.spec import SamplerSpec, SchedulerSpec, load_spec, spec_from_dict

    if args.spec:  # a spec file wins over --agent / --env
        if args.agent or args.env:
            print(f"note: {args.spec} defines the study; --agent and --env are ignored")
        spec = load_spec(args.spec, command=args.trainer or None)
    elif args.agent or args.env:
        if args.trainer:
            raise UsageError("--agent", "tunes a built-in agent; an external trainer needs a spec file")
        spec = spec_from_dict(agent_spec_dict(args.agent or "ppo", args.env))
    else:
        with resources.as_file(resources.files("rltune.tune") / "default_study.yaml") as path:
            spec = load_spec(path, command=args.trainer or None)
    overrides = {}
    for flag, field in (("trials", "num_trials"), ("parallel", "parallel"), ("budget_steps", "budget_steps")):
        value = getattr(args, flag)
        if value is not None:
            if value < 1:
                raise UsageError(f"--{flag.replace('_', '-')}", "must be >= 1")
            overrides[field] = value
    if args.sampler or args.seed is not None:
        overrides["sampler"] = SamplerSpec(args.sampler or spec.sampler.name,
                                           args.seed if args.seed is not None else spec.sampler.seed,
                                           spec.sampler.options if not args.sampler else {})
    if args.scheduler:
        overrides["scheduler"] = SchedulerSpec(args.scheduler.lower())
        overrides["early_stopping"] = args.scheduler.lower() != "fifo"
    if args.storage:
        overrides["storage"] = args.storage
    if args.executor:
        overrides["executor"] = args.executor
    return dataclasses.replace(spec, **overrides) if overrides else spec


def run(args) -> int:
    from rltune.tune.study import StudyDriver, prepare

    if args.eval_episodes < 0:
        raise UsageError("--eval-episodes", "must be >= 0")
    spec = prepare(load(args))
    if args.population_size is not None and args.population_size < 1:
        raise UsageError("--population-size", "must be >= 1")
    study_dir = Path(args.out or f"studies/{spec.name}")
    driver = StudyDriver(spec, study_dir, storage=args.storage, resume=args.resume,
                         live=sys.stdout.isatty(), eval_episodes=args.eval_episodes,
                         population_size=args.population_size)
    result = driver.run()
    print_result(driver, result)
    return 130 if result.interrupted else 0


def print_result(driver, result) -> None:
    from rich.console import Console
    from rich.table import Table

    from rltune.tune.study import format_value as _fmt

    spec = driver.spec
    console = Console()
    table = Table(title=f"study {spec.name}: {len(result.records)} trials")
    names = list(spec.space.names)
    for col in ("trial", "state", *names, spec.metric, "eval", "steps", "wall s", "reason"):
        table.add_column(col)
    best_number = result.best.number if result.best else None
    for r in result.records:
        style = "bold green" if r.number == best_number else None
        table.add_row(str(r.number), r.state, *(_fmt(r.params.get(n)) for n in names), _fmt(r.value),
                      _fmt(r.eval_mean), _fmt(r.step), _fmt(r.wall_time), r.reason or "", style=style)
    console.print(table)
    if result.best:
        b = result.best
        console.print(f"best trial {b.number}: {spec.metric} = {b.value:.4g}"
                      + (f", eval return {b.eval_mean:.1f}" if b.eval_mean is not None else "")
                      + f"; params {b.params}")
        console.print(f"best config: {result.study_dir / 'best_config.yaml'}")
    else:
        console.print("no trial completed")
    console.print(f"trials table: {result.study_dir / 'trials.csv'}; storage: {driver.storage_url}")
    if result.interrupted:
        console.print(f"interrupted: resume with `rltune tune <same spec> --out "
                      f"{result.study_dir} --resume`")

