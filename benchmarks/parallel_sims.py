"""The simulators experiment: a2c and ppo with 1, 2, 4 and 8 parallel simulators (num_envs).

    python benchmarks/parallel_sims.py [--agents a2c ppo] [--envs CartPole-v1 Pendulum-v1]
                                       [--sims 1 2 4 8] [--seed 0] [--out docs/figures]

Each run is `rltune train AGENT --env ENV --num-envs K ...` (the flags of benchmarks/onpolicy.py
for a2c on Pendulum, PPO's Pendulum flags below, defaults otherwise); its metrics.jsonl gives
the moving average of the last 100 episode returns against env steps and against wall time
(compile included). One PNG per agent and env, two panels, one line per simulator count.
Hopper-v5 (Gymnasium host loop) is accepted but takes hours on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

STEPS = {"CartPole-v1": 500_000, "Pendulum-v1": 1_000_000, "Hopper-v5": 1_000_000}
FLAGS = {
    ("a2c", "Pendulum-v1"): {"t-max": 8, "gamma": 0.9, "gae-lambda": 0.9, "learning-rate": 2e-3, "ent-coef": 0.0,
                             "optimizer": "adam", "normalize-advantages": "true", "reward-scale": 0.1,
                             "max-grad-norm": 10.0},
    ("ppo", "Pendulum-v1"): {"num-steps": 1024, "gamma": 0.95, "update-epochs": 10, "num-minibatches": 32,
                             "ent-coef": 0.0, "learning-rate": 1e-3, "reward-scale": 0.1},
    ("ppo", "Hopper-v5"): {"num-steps": 512, "update-epochs": 10, "num-minibatches": 32, "ent-coef": 0.0,
                           "learning-rate": 3e-4, "normalize-obs": "true"},
    ("a2c", "Hopper-v5"): {"normalize-obs": "true", "reward-scale": 0.1},
}


def train(agent: str, env: str, sims: int, seed: int, run_dir: str) -> list[dict]:
    flags = [x for k, v in FLAGS.get((agent, env), {}).items() for x in (f"--{k}", str(v))]
    steps = STEPS.get(env, 1_000_000)
    cmd = [sys.executable, "-m", "rltune", "train", agent, "--env", env, "--num-envs", str(sims), "--seed", str(seed),
           "--total-steps", str(steps), *flags, "--segment-steps", str(steps // 50), "--out", run_dir,
           "--eval-episodes", "0"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def plot(agent: str, env: str, curves: dict[int, list[dict]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for sims, rows in sorted(curves.items()):
        rows = [r for r in rows if r.get("reward") is not None]
        for ax, key in zip(axes, ("step", "wall_time")):
            ax.plot([r[key] for r in rows], [r["reward"] for r in rows], label=f"{sims} simulator{'s' * (sims > 1)}")
    axes[0].set_xlabel("env steps")
    axes[1].set_xlabel("wall time (s, compile included)")
    axes[0].set_ylabel("mean return, last 100 episodes")
    axes[1].legend(loc="lower right")
    fig.suptitle(f"{agent} on {env}: parallel simulators (num_envs)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", nargs="+", default=["a2c", "ppo"])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Pendulum-v1"])
    parser.add_argument("--sims", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/figures")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    runs = tempfile.mkdtemp(prefix="rltune-sims-")
    for agent in args.agents:
        for env in args.envs:
            curves = {}
            for sims in args.sims:
                rows = train(agent, env, sims, args.seed, os.path.join(runs, f"{agent}-{env}-{sims}"))
                curves[sims] = rows
                last = rows[-1]
                load = open("/proc/loadavg").read().split()[0]
                print(f"{agent} {env} {sims} sims: final mean return {last['reward']} at {last['step']:,} steps, "
                      f"{last['wall_time']:.1f} s wall (load avg {load})", flush=True)
            path = os.path.join(args.out, f"parallel_sims_{agent}_{env}.png")
            plot(agent, env, curves, path)
            print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
