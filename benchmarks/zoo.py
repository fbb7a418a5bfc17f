"""Every shipped preset, trained as a user would (`rltune train AGENT --env X`), next to RL Zoo.

    python benchmarks/zoo.py                      # every preset, seeds 0-2
    python benchmarks/zoo.py --only dqn/CartPole-v1 --only ppo/Pendulum-v1 --seeds 0 1 2

Each run: `rltune.train(agent, env=env, seed=s)` (preset applied, nothing else), then 100
evaluation episodes (greedy actions) of the run's best checkpoint, the one `rltune eval RUN` uses
(picked by the periodic evaluation of `rltune train`), on the Gymnasium reference env where the
gymnax id has one, else in gymnax as trained (Breakout-MinAtar has no Gymnasium version).
Printed: our mean per seed, the reference score, whether ours is within 10 % of it (or better),
steps and wall time (an upper bound when the machine is shared: the load average is printed).

RL Zoo figures: DLR-RM/rl-baselines3-zoo `benchmark.md` ("Performance of trained agents": one
trained agent per row, deterministic evaluation over ~150k steps; not a multi-seed benchmark).
LunarLander there is v2 (we train v3, same task with fixed physics details); Breakout-MinAtar and
C2A2 have no RL Zoo entry. Breakout-MinAtar's reference is gymnax's README table (gymnax-blines
PPO, config agents/Breakout-MinAtar/ppo.yaml of RobertTLange/gymnax-blines: 10M steps); no
published DQN figure on it was found, so the dqn row is held against that PPO figure, labeled.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (agent, env) -> (mean reward, n_timesteps[, source]) from RL Zoo's benchmark.md unless a
# source says otherwise (see the docstring).
ZOO = {
    ("dqn", "CartPole-v1"): (500.0, 50_000),
    ("ppo", "CartPole-v1"): (500.0, 100_000),
    ("dqn", "Acrobot-v1"): (-76.6, 100_000),
    ("ppo", "Acrobot-v1"): (-73.5, 1_000_000),
    ("dqn", "MountainCar-v0"): (-100.8, 120_000),
    ("ppo", "MountainCar-v0"): (-110.4, 1_000_000),
    ("dqn", "LunarLander-v3"): (154.4, 100_000),  # zoo: LunarLander-v2
    ("ppo", "LunarLander-v3"): (242.1, 1_000_000),  # zoo: LunarLander-v2
    ("ppo", "Pendulum-v1"): (-172.2, 100_000),
    ("td3", "Pendulum-v1"): (-151.9, 20_000),
    ("ddpg", "Pendulum-v1"): (-152.1, 20_000),
    ("ppo", "MountainCarContinuous-v0"): (88.3, 20_000),
    ("td3", "MountainCarContinuous-v0"): (93.5, 300_000),
    ("ddpg", "MountainCarContinuous-v0"): (93.5, 300_000),
    ("td3", "BipedalWalker-v3"): (306.0, 1_000_000),
    ("ppo", "Breakout-MinAtar"): (28.0, 10_000_000, "gymnax-blines"),
    ("dqn", "Breakout-MinAtar"): (28.0, 10_000_000, "no DQN figure; gymnax-blines PPO"),
}


def steps_text(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 and n % 100_000 == 0 else f"{n // 1000}k"


def within(ours: float, zoo: float) -> bool:
    """Within 10 % of the zoo score, or better (scores may be negative)."""
    return ours >= zoo - 0.1 * abs(zoo)


def main() -> int:
    import rltune
    from rltune.agents import AGENTS
    from rltune.presets import presets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="AGENT/ENV", help="Run only these presets.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--out", help="Keep the run directories here (default: a temporary one).")
    args = parser.parse_args()

    todo = [(a, e) for a in AGENTS for e in presets(a)]
    if args.only:
        todo = [(a, e) for a, e in todo if f"{a}/{e}" in args.only]
        missing = set(args.only) - {f"{a}/{e}" for a, e in todo}
        if missing:
            parser.error(f"no preset for: {', '.join(sorted(missing))}")
    root = Path(args.out or tempfile.mkdtemp(prefix="rltune-zoo-"))
    print("| agent | env | steps | seeds: eval mean (100 ep.) | mean | reference (steps) | within 10 % | wall per seed | load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for agent, env in todo:
        evals, walls, steps = [], [], 0
        for seed in args.seeds:
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # the "preset applied" note, per run
                run = rltune.train(agent, env=env, seed=seed, eval_episodes=args.episodes,
                                   out=root / f"{agent}-{env.replace('/', '_')}-{seed}")
            walls.append(time.perf_counter() - start)
            evals.append(run.summary["eval"]["mean"])
            steps = run.config.total_steps
        mean = statistics.fmean(evals)
        zoo = ZOO.get((agent, env))
        zoo_text = (f"{zoo[0]:g} ({steps_text(zoo[1])}{', ' + zoo[2] if len(zoo) > 2 else ''})" if zoo
                    else "none")
        ok = ("yes" if within(mean, zoo[0]) else "no") if zoo else "-"
        load = os.getloadavg()[0]
        print(f"| {agent} | {env} | {steps_text(steps)} | {' / '.join(f'{e:.1f}' for e in evals)} | {mean:.1f} | "
              f"{zoo_text} | {ok} | {statistics.fmean(walls):.0f} s | {load:.1f} |", flush=True)
    print(f"run directories: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
