"""a3c against a2c with the same number of environments: env steps/s and policy lag.

    python benchmarks/a3c_vs_a2c.py [--steps 200000] [--host-steps 100000]
    python benchmarks/a3c_vs_a2c.py --lag-sweep 0 1 2 4      # Pendulum-v1 under a fixed policy lag

Runs, each exactly what a user types (`python -m rltune train AGENT --env CartPole-v1 ...`):
  a2c --num-envs 8                      (one process, synchronous)
  a3c --num-actors 2 --num-envs 4       (2 actor processes x 4 envs, one learner)
on gymnax (compiled rollouts) and on Gymnasium (`--backend gymnasium`, host loop). Steps/s is
the median over a run's segments after the first (the runner's figure, compile time left out;
the first segment holds a3c's actor start-up), with the whole command's wall time next to it.
Also times what GA3C's batched prediction would replace: one local policy call on an actor's
4 observations against a round trip of those observations through a multiprocessing queue to
another process and back. Prints the load average: on shared cores wall times are upper bounds.

`--lag-sweep L...` trains a3c's learner in this process on Pendulum-v1 (benchmarks/onpolicy.py's
a3c-pendulum flags, 1M steps, `--seeds`, default 0) from one in-process actor that always acts
with the parameters of exactly L updates ago, and prints the mean return of the last 100
training episodes and the mean truncated importance weight: what a policy lag of L alone does
to learning, with each `--correction` (vtrace, none; default vtrace) and any flag changed by
`--set FIELD=VALUE`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = [  # (label, agent, extra flags)
    ("a2c 8 envs", "a2c", ["--num-envs", "8"]),
    ("a3c 2 actors x 4 envs", "a3c", ["--num-actors", "2", "--num-envs", "4"]),
]


def train(agent: str, flags: list[str], steps: int, out: str) -> float:
    cmd = [sys.executable, "-m", "rltune", "train", agent, "--env", "CartPole-v1", "--total-steps", str(steps),
           *flags, "--out", out, "--eval-episodes", "0"]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def _echo(inbox, outbox) -> None:
    while (item := inbox.get()) is not None:
        outbox.put(item)


def prediction_costs(repeats: int = 2000) -> tuple[float, float]:
    """Microseconds per local act call (4 CartPole observations) and per queue round trip."""
    import jax
    import numpy as np

    from rltune.agents import a3c
    from rltune.config import from_dict
    from rltune.envs import env_info

    config = from_dict(a3c.Config, {"env": "CartPole-v1"})
    act = a3c.policy_fn(config, env_info("CartPole-v1"))
    params = a3c.init(config).params
    obs = np.zeros((4, 4), np.float32)
    key = jax.random.PRNGKey(0)
    np.asarray(act(params, obs, key, False))  # compile
    start = time.perf_counter()
    for _ in range(repeats):
        np.asarray(act(params, obs, key, False))
    local = (time.perf_counter() - start) / repeats * 1e6
    ctx = mp.get_context("spawn")
    inbox, outbox = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_echo, args=(inbox, outbox), daemon=True)
    proc.start()
    inbox.put(obs)
    outbox.get()
    start = time.perf_counter()
    for _ in range(repeats):
        inbox.put(obs)
        outbox.get()
    trip = (time.perf_counter() - start) / repeats * 1e6
    inbox.put(None)
    proc.join()
    return local, trip


def lag_sweep(lags: list[int], corrections: list[str], seeds: list[int], overrides: list[str]) -> None:
    import collections

    from onpolicy import RUNS as ONPOLICY  # benchmarks/onpolicy.py, next to this script
    from rltune.agents import a3c
    from rltune.config import from_dict

    _, env, steps, _, flags = ONPOLICY["a3c-pendulum"]
    values = {k.replace("-", "_"): v for k, v in flags.items()
              if k not in ("num-actors", "queue-size", "max-policy-lag", "rollouts-per-update")}
    values.update(env=env, total_steps=steps, num_actors=1, num_envs=2 * flags["num-envs"])
    for key, value in (item.split("=", 1) for item in overrides):
        values[key.replace("-", "_")] = value
    for correction, lag, seed in ((c, lag, s) for c in corrections for lag in lags for s in seeds):
        # one actor with both actors' envs: a2c's batch
        config = from_dict(a3c.Config, {**values, "correction": correction, "seed": seed})
        start = time.perf_counter()
        actor, learner = a3c.Actor(config, 0), a3c.Learner(config, a3c.init(config))
        history = collections.deque([(0, learner.state.params)], maxlen=lag + 1)  # oldest first
        for _ in range(config.num_updates):
            version, params = history[0]
            learner.step([actor.collect(params, version)])
            history.append((learner.version, learner.state.params))
        metrics = learner.metrics()
        reward, weight = float(metrics["episode_return"]), float(metrics["importance_weight"])
        print(f"Pendulum-v1, correction {correction}, policy lag {lag} for every rollout, seed {seed}: training reward (last 100 episodes) "
              f"{reward:.1f} after {config.num_updates * config.steps_per_update} steps, mean importance weight "
              f"{weight:.3f} | "
              f"{time.perf_counter() - start:.0f} s (load avg {open('/proc/loadavg').read().split()[0]})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200_000, help="Env steps per gymnax run.")
    parser.add_argument("--host-steps", type=int, default=100_000, help="Env steps per Gymnasium run.")
    parser.add_argument("--out", default=None)
    parser.add_argument("--correction", nargs="+", default=["vtrace"], choices=("vtrace", "none"),
                        help="a3c's off-policy correction(s) for --lag-sweep.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="Seeds for --lag-sweep.")
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="Change a3c-pendulum's flags for --lag-sweep, e.g. bounded-mean=false.")
    parser.add_argument("--lag-sweep", type=int, nargs="+", default=None, metavar="LAG",
                        help="Only the fixed-lag Pendulum experiment, for these lags.")
    args = parser.parse_args()
    if args.lag_sweep is not None:
        return lag_sweep(args.lag_sweep, args.correction, args.seeds, args.set)
    root = args.out or tempfile.mkdtemp(prefix="rltune-a3c-vs-a2c-")
    for backend, steps in (("gymnax", args.steps), ("gymnasium", args.host_steps)):
        for label, agent, flags in RUNS:
            out = os.path.join(root, f"{agent}-{backend}")
            wall = train(agent, [*flags, "--backend", backend], steps, out)
            rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
            rate = statistics.median(r["steps_per_second"] for r in rows[1:] or rows)
            lag = ""
            if agent == "a3c":
                worst = max(r["policy_lag_max"] for r in rows)
                lag = f" | policy lag mean {statistics.mean(r['policy_lag_mean'] for r in rows):.2f}, max {worst:.0f}"
            load = open("/proc/loadavg").read().split()[0]
            print(f"CartPole-v1 {backend:9s} {label:22s}: {rate:8.0f} env steps/s (median segment), "
                  f"{steps} steps in {wall:.1f} s wall incl. start-up{lag} | final reward "
                  f"{rows[-1]['reward']:.1f} | load avg {load}", flush=True)
    local, trip = prediction_costs()
    print(f"prediction: local policy call on 4 obs {local:.0f} us; queue round trip to another process "
          f"{trip:.0f} us (load avg {open('/proc/loadavg').read().split()[0]})", flush=True)


if __name__ == "__main__":
    main()
