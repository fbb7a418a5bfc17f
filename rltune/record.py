"""`rltune record RUN_DIR|CHECKPOINT [--before] --out FILE.mp4|.gif [--episodes N]`: a video of
an agent, rendered by Gymnasium (`render_mode="rgb_array"`).

A policy trained on gymnax plays in its Gymnasium twin (CartPole-v1, Pendulum-v1, ...), the same
simulator `rltune eval` uses; Box2D, Atari and MuJoCo envs play as trained. `--before` records
the untrained initial policy of the same config and seed. Videos are written with imageio
(GIF: Pillow; MP4: H.264 by the ffmpeg binary that the imageio-ffmpeg wheel ships), the
`video` extra; no system ffmpeg is needed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rltune.errors import UsageError

FORMATS = (".mp4", ".gif")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Record a video of a trained agent (or, with --before, of its untrained initial policy)."
    p.add_argument("path", metavar="RUN_DIR|CHECKPOINT", help="A run or trial directory, or a checkpoint file.")
    p.add_argument("--out", required=True, help="Video file: .mp4 or .gif.")
    p.add_argument("--before", action="store_true",
                   help="Record the untrained initial policy (same config and seed) instead.")
    p.add_argument("--episodes", type=int, default=1, help="Episodes to record, one after another.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the first episode's reset.")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--max-steps", type=int, default=2000, help="Steps per episode at most.")
    p.add_argument("--fps", type=int, help="Frames per second (default: the env's render_fps).")


def run(args) -> int:
    result = record(args.path, args.out, before=args.before, episodes=args.episodes, seed=args.seed,
                    which=args.checkpoint, max_steps=args.max_steps, fps=args.fps)
    returns = ", ".join(f"{r:.1f}" for r in result.returns)
    print(f"{result.path}: {result.frames} frames of {result.env_id}, episode returns {returns}")
    return 0


@dataclass(frozen=True)
class Recording:
    path: Path
    env_id: str
    frames: int
    returns: tuple[float, ...]
    lengths: tuple[int, ...]


def _check_out(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise UsageError("--out", f"the video must end in .mp4 or .gif (got {out.name})")
    return out


def _writer_available() -> None:
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise UsageError("record", "videos need the video extra: pip install 'rltune[video]'") from None


def record(path: str | Path, out: str | Path, *, before: bool = False, episodes: int = 1, seed: int = 0,
           which: str = "best", max_steps: int = 2000, fps: int | None = None) -> Recording:
    """Play `episodes` greedy episodes of the agent at `path` and write them to `out`."""
    out = _check_out(out)
    if episodes < 1:
        raise UsageError("--episodes", "must be >= 1")
    if max_steps < 1:
        raise UsageError("--max-steps", "must be >= 1")
    if fps is not None and fps < 1:
        raise UsageError("--fps", "must be >= 1")
    _writer_available()
    from rltune.policy import load_agent

    agent = load_agent(path, which)
    params = initial_params(agent.agent, agent.config) if before else agent.params
    return record_policy(agent, params, out, episodes=episodes, seed=seed, max_steps=max_steps, fps=fps)


def initial_params(agent_name: str, config):
    """The policy a run starts from: the agent's `init` with the run's own config and seed."""
    import jax

    from rltune.agents import get_agent

    state = get_agent(agent_name).init(config)
    host = getattr(state, "host", None)
    if host is not None and hasattr(host, "close"):
        host.close()  # a host-loop agent's envs: not needed to act
    return jax.tree.map(np.asarray, state.params)


def render_env_id(env_id: str, backend: str) -> str:
    """The Gymnasium env that shows an agent trained on (env_id, backend)."""
    from rltune.evaluate import eval_backend

    shown, shown_backend = eval_backend(env_id, backend)
    if shown_backend != "gymnasium":
        raise UsageError("path", f"{env_id} has no Gymnasium twin to render it (gymnax-only env); videos are "
                         "available for Gymnasium envs and gymnax envs with a twin (CartPole-v1, Pendulum-v1, ...)")
    return shown


def record_policy(agent, params, out: Path, *, episodes: int, seed: int, max_steps: int,
                  fps: int | None) -> Recording:
    import os

    import jax

    from rltune.envs.gym_vec import make_env

    # pygame (classic control, Box2D renderers) would look for a display and a sound card
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("MUJOCO_GL", "egl")  # MuJoCo: headless OpenGL (its default, glfw, needs a display)
    env_id = render_env_id(agent.config.env, agent.info.backend)
    env = make_env(env_id, render_mode="rgb_array")
    key = jax.random.PRNGKey(seed)
    frames, returns, lengths = [], [], []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            frames.append(env.render())
            total, steps, done = 0.0, 0, False
            while not done and steps < max_steps:
                action = np.asarray(agent._act(params, np.asarray(obs, np.float32)[None], key, True))[0]
                obs, reward, terminated, truncated, _ = env.step(action.item() if action.ndim == 0 else action)
                frames.append(env.render())
                total += float(reward)
                steps += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(steps)
        fps = fps or int(env.metadata.get("render_fps") or 30)
    finally:
        env.close()
    write_video(out, frames, fps)
    return Recording(out, env_id, len(frames), tuple(returns), tuple(lengths))


def write_video(out: Path, frames: list[np.ndarray], fps: int) -> None:
    import warnings

    import imageio.v2 as imageio

    out.parent.mkdir(parents=True, exist_ok=True)
    frames = [_even(np.asarray(f, np.uint8)) for f in frames]
    if out.suffix.lower() == ".gif":
        imageio.mimsave(out, frames, format="GIF", duration=1000 / fps, loop=0)
        return
    # H.264 in yuv420p plays in every browser; it needs even sides (padded above).
    with warnings.catch_warnings():
        # JAX warns on any fork; imageio-ffmpeg's Popen execs ffmpeg at once, which is safe.
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        with imageio.get_writer(out, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
                                macro_block_size=1, output_params=["-movflags", "+faststart"]) as writer:
            for frame in frames:
                writer.append_data(frame)


def _even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if h % 2 or w % 2 else frame


# ---------------------------------------------------------------- for train and tune
def capture_run_videos(run_dir: str | Path, *, episodes: int = 1, suffix: str = ".mp4") -> list[Recording]:
    """`rltune train --capture-video`: the untrained and the trained agent of a finished run,
    as RUN_DIR/video/before.mp4 and after.mp4."""
    _writer_available()
    from rltune.policy import load_agent

    run_dir = Path(run_dir)
    agent = load_agent(run_dir, "best")
    out = []
    for name, params in (("before", initial_params(agent.agent, agent.config)), ("after", agent.params)):
        out.append(record_policy(agent, params, run_dir / "video" / f"{name}{suffix}", episodes=episodes, seed=0,
                                 max_steps=2000, fps=None))
    return out


def record_best(study_dir: str | Path, best_number: int | None = None, *, suffix: str = ".mp4",
                episodes: int = 1) -> Path | None:
    """The best trial's agent as STUDY_DIR/best.mp4 (`rltune report` embeds it). Returns None,
    saying why, when it cannot be recorded: an external trainer (no rltune checkpoint), a
    gymnax-only env, or no finished trial."""
    study_dir = Path(study_dir)
    if best_number is None:
        import json

        summary = study_dir / "summary.json"
        best = json.loads(summary.read_text()).get("best") if summary.is_file() else None
        if best is None:
            print("no video of the best trial: no trial finished with a value")
            return None
        best_number = best["number"]
    trial_dir = study_dir / "trials" / str(best_number)
    if not (trial_dir / "checkpoints").is_dir():
        print(f"no video of the best trial: trial {best_number} has no rltune checkpoint (external trainer?)")
        return None
    try:
        rec = record(trial_dir, study_dir / f"best{suffix}", episodes=episodes)
    except UsageError as exc:
        print(f"no video of the best trial: {exc}")
        return None
    return rec.path
