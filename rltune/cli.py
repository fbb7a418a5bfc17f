"""The `rltune` command: train | eval | tune | simulate | status | report | record.

Usage errors (unknown flag, wrong type, out-of-range value, malformed file) exit with status 2
and a message naming the field, before anything is written.
"""

from __future__ import annotations

import argparse
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
        p.add_argument("--out", help="Run directory (default runs/<env>-<agent>-<timestamp>).")
        p.add_argument("--resume", metavar="RUN_DIR", help="Continue a run from its last checkpoint.")
        p.add_argument("--eval-episodes", type=int, default=10,
                       help="Evaluation episodes at the end (Gymnasium reference env where one exists).")
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
    from rltune.config import config_from_args, from_dict, load_yaml
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
        config = config_from_args(module.Config, args, file_values, source=args.config or "flags")
        run_dir = Path(args.out or f"runs/{config.env.replace('/', '_')}-{args.agent}-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.eval_episodes < 0:
        raise UsageError("--eval-episodes", "must be >= 0")
    options = RunOptions(segment_steps=args.segment_steps, eval_episodes=args.eval_episodes,
                         progress=True)
    from rltune.envs import env_info

    env_info(config.env, config.backend)  # unknown env: a usage error before the run directory exists
    try:
        summary = train(args.agent, config, run_dir, options=options, resume=bool(args.resume))
    except TrialDiverged as exc:
        print(f"training diverged: {exc}", file=sys.stderr)
        return 1
    _print_summary(run_dir, summary)
    _capture_video(args, run_dir)
    return 0


def _capture_video(args, run_dir: Path) -> None:
    """`--capture-video`: before/after videos in the run directory (rltune.record)."""
    if not getattr(args, "capture_video", False):
        return
    from rltune.record import capture_run_videos

    for rec in capture_run_videos(run_dir):
        print(f"video: {rec.path} ({rec.frames} frames, return {sum(rec.returns):.1f})")


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
