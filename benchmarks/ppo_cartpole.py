"""PPO on CartPole-v1 with default hyperparameters: wall time, steps/s, Gymnasium evaluation.

    python benchmarks/ppo_cartpole.py [--seeds 0 1 2 3 4] [--total-steps 500000] [--episodes 100]

Each seed runs in a fresh process so the compile time is measured as a user sees it.
Prints one line per seed and a summary: compile time, training time excluding compile, env
steps/s, and the mean return over 100 episodes of Gymnasium's CartPole-v1 (greedy policy).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import jax
from rltune.agents import ppo
from rltune.config import from_dict
from rltune.runner import evaluate_params
seed, total, episodes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
t_import = time.perf_counter()
config = from_dict(ppo.PPOConfig, {"seed": seed, "total_steps": total})
state = ppo.init(config)
jax.block_until_ready(state)
# First call compiles; a 1-update segment isolates compile time (the program is reused for any length).
t_c = time.perf_counter()
state, _ = ppo.train_segment(config, state, 1)
jax.block_until_ready(state)
t_compiled = time.perf_counter()
state, metrics = ppo.train_segment(config, state, config.num_updates - 1)
jax.block_until_ready(state)
t_trained = time.perf_counter()
ev = evaluate_params("ppo", config, state.params, episodes, 10_000)
t_eval = time.perf_counter()
print(json.dumps({"seed": seed, "steps": int(state.env_steps), "import_s": t_import - t0,
                  "init_compile_s": t_compiled - t_import, "train_s": t_trained - t_compiled,
                  "total_s": t_trained - t0, "eval_s": t_eval - t_trained,
                  "train_reward": float(metrics["episode_return"]), "eval_mean": ev["mean"],
                  "eval_std": ev["std"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--total-steps", type=int, default=500_000)
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        out = subprocess.run([sys.executable, "-c", CHILD, str(seed), str(args.total_steps), str(args.episodes)],
                             capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"seed {seed}: {row['steps']:,} steps | wall incl. import+compile {row['total_s']:.1f} s | "
              f"compile+init {row['init_compile_s']:.1f} s | train {row['train_s']:.1f} s "
              f"({row['steps'] / row['train_s']:,.0f} steps/s) | train reward {row['train_reward']:.1f} | "
              f"eval mean {row['eval_mean']:.1f} +- {row['eval_std']:.1f} ({args.episodes} episodes, gymnasium)",
              flush=True)
    solved = sum(r["eval_mean"] >= 475 for r in rows)
    mean = lambda k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    print(f"summary: {solved}/{len(rows)} seeds solved (eval mean >= 475); mean wall incl. compile "
          f"{mean('total_s'):.1f} s, compile+init {mean('init_compile_s'):.1f} s, train excl. compile "
          f"{mean('train_s'):.1f} s, {sum(r['steps'] for r in rows) / sum(r['train_s'] for r in rows):,.0f} env steps/s")


if __name__ == "__main__":
    main()
