"""The `rltune` command: train | eval | tune | simulate | status | report | record.

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


class _VideoFlag(argparse.Action):
    """--capture-video, refused at parse time (status 2, nothing written) without the video extra."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            import imageio  # noqa: F401
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            parser.error(f"{option_string}: needs the video extra: pip install 'rltune[video]'")
        setattr(namespace, self.dest, True)


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
        p.add_argument("--eval-every", type=int, default=None, metavar="STEPS",
                       help="Evaluate the greedy policy every STEPS env steps and at the end "
                            "(--eval-every-episodes episodes on the training env, compiled on gymnax ids); "
                            "the best evaluation's policy is the best checkpoint. Default: 20 evaluations "
                            "per run; 0: none (best checkpoint = best training reward).")
        p.add_argument("--eval-every-episodes", type=int, default=10, metavar="N",
                       help="Episodes per periodic evaluation.")
        p.add_argument("--segment-steps", type=int, default=None,
                       help="Env steps per training segment (log/checkpoint interval).")
        p.add_argument("--capture-video", action=_VideoFlag, nargs=0, default=False,
                       help="Record the agent before and after training: RUN_DIR/video/before.mp4, after.mp4.")
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
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="Do not use JAX's persistent compilation cache (~/.cache/rltune/jax; "
                        "RLTUNE_COMPILE_CACHE=0 does the same).")
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
    ("status", "rltune.status", "Show a running or finished study's progress (reads only)."),
    ("report", "rltune.report", "Write a self-contained HTML report of a study or a training run."),
    ("record", "rltune.record", "Record a video of an agent (after training, or --before)."),
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
        if args.config:
            raise UsageError("--config", "a resumed run keeps its own config; give changes as flags")
        if args.out and Path(args.out).resolve() != run_dir.resolve():
            raise UsageError("--out", f"a resumed run stays in {run_dir}; drop --out")
        payload = checkpoint.read(run_dir / "checkpoints" / checkpoint.FILE_NAME["last"])
        if payload["agent"] != args.agent:
            raise UsageError("agent", f"{run_dir} is a {payload['agent']!r} run, not {args.agent!r}")
        values = dict(payload["config"])
        given = {k: v for k, v in vars(args).items() if k in values}
        _refuse_static_changes(module.Config, values, given, run_dir)
        values.update(given)
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
        _check_new_run_dir(run_dir)
    if args.eval_episodes < 0:
        raise UsageError("--eval-episodes", "must be >= 0")
    check_periodic_eval(args.eval_every, args.eval_every_episodes, "--eval-every", "--eval-every-episodes")
    options = RunOptions(segment_steps=args.segment_steps, eval_episodes=args.eval_episodes,
                         eval_every=args.eval_every, eval_every_episodes=args.eval_every_episodes,
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
    _capture_video(args, run_dir)
    return 0


def check_periodic_eval(every, episodes, every_name: str, episodes_name: str) -> None:
    if every is not None and every < 0:
        raise UsageError(every_name, f"must be >= 0 (0: no periodic evaluation); got {every}")
    if episodes < 1:
        raise UsageError(episodes_name, f"must be >= 1; got {episodes}")


# Static fields a resumed run may still change: the length of training (the state's shapes do
# not depend on it). Every other static field fixes an array shape or the environment.
RESUME_MAY_CHANGE = ("total_steps",)


def _refuse_static_changes(cls, stored: dict, given: dict, run_dir: Path) -> None:
    """`train --resume RUN --hidden-size 16`: the checkpoint's arrays have the old shapes, so a
    changed static field is refused (before anything, config.yaml included, is written)."""
    from rltune.config import flag_name, from_dict, static_fields

    new = from_dict(cls, {**stored, **given}, source="flags")
    old = from_dict(cls, stored, source=str(run_dir))
    for name in sorted(static_fields(cls) - set(RESUME_MAY_CHANGE)):
        if name in given and getattr(new, name) != getattr(old, name):
            raise UsageError(flag_name(name), f"{name} is {getattr(old, name)!r} in the run being resumed "
                             f"({run_dir}) and fixes its network or environment; a resumed run keeps it. "
                             "Start a new run (another --out) to change it")


def _check_new_run_dir(run_dir: Path) -> None:
    """A new run never writes into another run's directory (it would mix two runs' metrics and
    checkpoints): an existing non-empty --out needs --resume."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError("--out", f"{run_dir} is a file, not a directory: choose another --out")
    for parent in run_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError("--out", f"{parent} is a file, not a directory: choose another --out")
            break
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise UsageError("--out", f"{run_dir} already holds a run; continue it with --resume {run_dir}, "
                         "or choose another --out")


def _capture_video(args, run_dir: Path) -> None:
    """`--capture-video`: before/after videos in the run directory (rltune.record)."""
    if not getattr(args, "capture_video", False):
        return
    from rltune.record import capture_run_videos

    for rec in capture_run_videos(run_dir):
        print(f"video: {rec.path} ({rec.frames} frames, return {sum(rec.returns):.1f})")


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
    argv = list(sys.argv[1:] if argv is None else argv)
    ours = argv[: argv.index("--") if "--" in argv else len(argv)]
    if "--no-compile-cache" in ours:  # accepted anywhere before `--`: rltune tune ... --no-compile-cache
        import os

        from rltune.compile_cache import ENV_SWITCH

        os.environ[ENV_SWITCH] = "0"  # before JAX compiles anything, here and in our workers
        ours.remove("--no-compile-cache")
        argv = ours + argv[len(ours) + 1:]
    parser = build_parser()
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
