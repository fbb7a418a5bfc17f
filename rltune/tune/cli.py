"""`rltune tune [SPEC.yaml] [options] [-- trainer command ...]`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from importlib import resources

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
    from rltune.tune.executors.base import EXECUTORS

    p.add_argument("--executor", choices=tuple(EXECUTORS),
                   help="; ".join(f"{name}: {help_}" for name, (_, _, help_) in EXECUTORS.items()) + ".")
    p.add_argument("--address", help="Ray cluster address for --executor ray: auto or HOST:PORT "
                   "(default: start a local Ray).")
    p.add_argument("--population-size", type=int,
                   help="Members trained at once by the population executor (default: from memory and trials).")
    p.add_argument("--no-video", dest="video", action="store_false",
                   help="Do not record a video of the best trial at the end (STUDY/best.mp4).")
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
    if args.address:
        overrides["address"] = args.address
    return dataclasses.replace(spec, **overrides) if overrides else spec


def run(args) -> int:
    from rltune.tune.checks import check_out_dir, check_resume_spec, check_study_db
    from rltune.tune.driver import StudyDriver
    from rltune.tune.resolve import prepare

    if args.eval_episodes < 0:
        raise UsageError("--eval-episodes", "must be >= 0")
    spec = prepare(load(args))
    if args.population_size is not None and args.population_size < 1:
        raise UsageError("--population-size", "must be >= 1")
    study_dir = check_out_dir(args.out or f"studies/{spec.name}")
    if args.resume and (study_dir / "spec.yaml").exists():
        # Before the driver writes spec.yaml again: a changed spec or a broken study.db is refused.
        check_resume_spec(study_dir, spec)
        if not (args.storage or spec.storage):
            check_study_db(study_dir / "study.db", spec.name)
    driver = StudyDriver(spec, study_dir, storage=args.storage, resume=args.resume,
                         live=sys.stdout.isatty(), eval_episodes=args.eval_episodes,
                         population_size=args.population_size)
    result = driver.run()
    print_result(driver, result)
    if result.interrupted:
        return 130
    if args.video and result.best is not None and spec.agent is not None:
        from rltune.record import record_best

        path = record_best(study_dir, result.best.number)
        if path is not None:
            print(f"video of the best trial: {path}")
    if result.records and not any(r.state in ("COMPLETE", "PRUNED") for r in result.records):
        print("every trial failed: see the reasons above and trials/<n>/ (error.txt, trainer.log)",
              file=sys.stderr)
        return 1  # as Ray Tune does: a study with no result is an error
    return 0


def print_result(driver, result) -> None:
    import shutil

    from rltune.tune.results import render_table

    spec = driver.spec
    width = min(100, shutil.get_terminal_size((80, 24)).columns)
    print(render_table(result.records, spec.space.names, spec.metric, goal=spec.goal, width=width,
                       title=f"study {spec.name}: {len(result.records)} trials"))
    if result.best:
        print(f"best config: {result.study_dir / 'best_config.yaml'}")
    print(f"trials table: {result.study_dir / 'trials.csv'}")
    print(f"storage: {driver.storage_url}")
    print(f"report: rltune report {result.study_dir}")
    if result.interrupted:
        print(f"interrupted: resume with `rltune tune <same spec> --out {result.study_dir} --resume`")
