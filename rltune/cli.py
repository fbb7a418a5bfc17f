"""The `rltune` command: train | eval | tune | simulate.

Usage errors (unknown flag, wrong type, out-of-range value, malformed file) exit with status 2
and a message naming the field, before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from rltune.errors import UsageError


def _train_parser(sub) -> None:
    from rltune.agents import AGENTS
    from rltune.config import add_config_flags

    train = sub.add_parser("train", help="Train one agent.")
    agents = train.add_subparsers(dest="agent", required=True, metavar="AGENT")
    for name, module in AGENTS.items():
        p = agents.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument("--config", help="YAML file of config fields; flags override it.")
        p.add_argument("--preset", choices=("auto", "none"), default="auto",
                       help="auto: start from the tuned preset of this agent and env "
                            "(rltune/presets/<agent>.yaml) when there is one; none: the bare defaults. "
                            "Order: defaults < preset < --config < flags.")
        p.add_argument("--out", help="Run directory (default runs/<env>-<agent>-<timestamp>).")
        p.add_argument("--resume", metavar="RUN_DIR", help="Continue a run from its last checkpoint.")
        p.add_argument("--eval-episodes", type=int, default=10,
                       help="Evaluation episodes at the end (Gymnasium reference env where one exists).")
        p.add_argument("--segment-steps", type=int, default=None,
                       help="Env steps per training segment (log/checkpoint interval).")
        add_config_flags(p, module.Config)


def _eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="Evaluate a checkpoint or run directory.")
    p.add_argument("path", help="Checkpoint file or run directory.")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--env", help="Evaluate on this env id instead (same spaces).")
    p.add_argument("--backend", choices=("gymnax", "gymnasium"),
                   help="Force the evaluation backend (default: Gymnasium where the env has a twin).")
    p.add_argument("--stochastic", action="store_true", help="Sample actions instead of the greedy action.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rltune", description="Deep RL training with hyperparameter tuning.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_parser(sub)
    _eval_parser(sub)
    for name, module_name, help_text in _OPTIONAL_COMMANDS:
        try:
            module = __import__(module_name, fromlist=["add_arguments"])
        except ImportError:
            continue
        p = sub.add_parser(name, help=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


_OPTIONAL_COMMANDS = [
    ("tune", "rltune.tune.cli", "Run a tuning study from a YAML spec."),
    ("simulate", "rltune.simulate", "Replay learning curves through early-termination schedulers."),
]


def cmd_train(args) -> int:
    from rltune import checkpoint
    from rltune.agents import get_agent
    from rltune.config import from_dict, load_yaml
    from rltune.presets import resolve_config
    from rltune.runner import RunOptions, TrialDiverged, train

    module = get_agent(args.agent)
    if args.resume:
        run_dir = Path(args.resume)
        payload = checkpoint.read(run_dir / "checkpoints" / checkpoint.FILE_NAME["last"])
        values = dict(payload["config"])
        values.update({k: v for k, v in vars(args).items() if k in values})
        config = from_dict(module.Config, values, source=str(run_dir))
    else:
        file_values = load_yaml(args.config) if args.config else {}
        # Run directories and best_config.yaml carry `agent:`; it must match.
        file_agent = file_values.pop("agent", args.agent)
        if file_agent != args.agent:
            raise UsageError("agent", f"{args.config} is a config for {file_agent!r}, not {args.agent!r}")
        flags = {k: v for k, v in vars(args).items() if k in {f.name for f in dataclasses.fields(module.Config)}}
        resolved = resolve_config(args.agent, flags, file_values, preset_mode=args.preset,
                                  source=args.config or "flags")
        config = resolved.config
        for note in resolved.notes:
            print(note)
        run_dir = Path(args.out or f"runs/{config.env.replace('/', '_')}-{args.agent}-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.eval_episodes < 0:
        raise UsageError("--eval-episodes", "must be >= 0")
    options = RunOptions(segment_steps=args.segment_steps, eval_episodes=args.eval_episodes,
                         progress=True)
    from rltune.envs import env_info

    env_info(config.env, config.backend)  # unknown env: a usage error before the run directory exists
    if not args.resume:
        print(f"config ({run_dir / 'config.yaml'}):")
        print(_config_text(config), end="")
    try:
        summary = train(args.agent, config, run_dir, options=options, resume=bool(args.resume))
    except TrialDiverged as exc:
        print(f"training diverged: {exc}", file=sys.stderr)
        return 1
    _print_summary(run_dir, summary)
    return 0


def _config_text(config) -> str:
    import yaml

    from rltune.config import to_dict

    return "".join(f"  {line}\n" for line in yaml.safe_dump(to_dict(config), sort_keys=False).splitlines())


def _print_summary(run_dir: Path, summary: dict) -> None:
    reward = summary.get("reward")
    line = (f"{summary['status']}: {summary['env_steps']:,} steps in {summary['wall_time']:.1f} s, "
            f"reward (last-100 mean) {reward:.1f}" if reward is not None else
            f"{summary['status']}: {summary['env_steps']:,} steps in {summary['wall_time']:.1f} s")
    print(line)
    if "eval" in summary:
        ev = summary["eval"]
        print(f"evaluation on {ev['env']} ({ev['backend']}), {ev['episodes']} episodes: "
              f"mean {ev['mean']:.1f} +- {ev['std']:.1f} (min {ev['min']:.0f}, max {ev['max']:.0f})")
    print(f"run directory: {run_dir}")


def cmd_eval(args) -> int:
    import jax

    from rltune.envs import resolve_backend
    from rltune.evaluate import eval_backend, evaluate
    from rltune.policy import load_agent

    if args.episodes < 1:
        raise UsageError("--episodes", "must be >= 1")
    agent = load_agent(args.path, args.checkpoint)
    env_id, backend = eval_backend(agent.config.env, agent.info.backend)
    if args.env:
        env_id = args.env
        backend = resolve_backend(env_id, args.backend or "auto")
    elif args.backend:
        backend = resolve_backend(env_id, args.backend)
    key = jax.random.PRNGKey(args.seed)
    result = evaluate(lambda obs: agent._act(agent.params, obs, key, not args.stochastic),
                      env_id, backend, args.episodes, args.seed)
    s = result.summary()
    print(f"{agent.path} on {env_id} ({backend}), {s['episodes']} episodes: mean {s['mean']:.2f} "
          f"std {s['std']:.2f} min {s['min']:.2f} max {s['max']:.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first `--` is an external trainer's command line, kept verbatim.
    trainer: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, trainer = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)
    args.trainer = trainer
    if trainer and args.command != "tune":
        parser.exit(2, f"rltune {args.command}: error: --: a trainer command is only accepted by `rltune tune`\n")
    handlers = {"train": cmd_train, "eval": cmd_eval}
    try:
        handler = handlers.get(args.command) or args._run
        return handler(args)
    except UsageError as exc:
        parser.exit(2, f"rltune {args.command}: error: {exc}\n")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
