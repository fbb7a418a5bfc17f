"""Compare the six schedulers by replaying learning curves on a simulated cluster.

    python benchmarks/schedulers.py [CURVES] [--workers 16] [--slots 6] [--seeds 20] [--live]

CURVES is anything `rltune simulate` reads (CSV, JSON, study directory). Without it the
benchmark uses tests/data/ppo_cartpole_curves.json when it exists (real PPO CartPole curves
recorded by `rltune`), else a seeded synthetic family of CartPole-like curves, and says so.
The talk's setting is 16 workers on 6 nodes; HyperTrick runs with N = 16, N_p = 5, r = 0.25.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rltune.schedulers import SCHEDULERS
from rltune.schedulers.hypertrick import hypertrick_expected_alpha
from rltune.simulate import (compare, load_curves, print_table, scheduler_factory, summarize,
                             synthetic_curves)

RECORDED = Path(__file__).resolve().parent.parent / "tests" / "data" / "ppo_cartpole_curves.json"

# ================================================================ SIMULATION


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curves", nargs="?", default=None,
                        help=f"curve file or study directory (default: {RECORDED.name} if "
                        "recorded, else synthetic curves)")
    parser.add_argument("--synthetic", action="store_true", help="use the synthetic family")
    parser.add_argument("--num-synthetic", type=int, default=48,
                        help="size of the synthetic family to sample workers from")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--slots", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--live", action="store_true",
                        help="also run real PPO CartPole studies: none vs HyperBand vs HyperTrick")
    parser.add_argument("--live-trials", type=int, default=16)
    parser.add_argument("--live-steps", type=int, default=150_000)
    args = parser.parse_args(argv)

    if args.curves and not args.synthetic:
        curves, source = load_curves(args.curves), str(args.curves)
    elif RECORDED.exists() and not args.synthetic:
        curves, source = load_curves(RECORDED), str(RECORDED)
    else:
        curves = synthetic_curves(args.num_synthetic, seed=0)
        source = (f"SYNTHETIC curve family ({len(curves)} CartPole-like curves, seed 0; "
                  "not real training runs)")
    workers = min(args.workers, len(curves))
    factories = {name: scheduler_factory(name) for name in SCHEDULERS}
    start = time.perf_counter()
    results = compare(curves, factories, args.slots, workers=workers, seeds=args.seeds)
    elapsed = time.perf_counter() - start

    print(f"curves: {source}")
    print(f"{workers} workers on {args.slots} slots, mean over {args.seeds} random samplings/"
          f"orderings; default parameters (hypertrick N={workers}, N_p=5, r=0.25: "
          f"E[alpha] = {hypertrick_expected_alpha(0.25, 5):.1%} on i.i.d. metrics)")
    print_table({name: summarize(runs) for name, runs in results.items()},
                title="scheduler comparison (simulated)")
    print(f"simulated {len(SCHEDULERS) * args.seeds} studies in {elapsed:.2f} s")
    if args.live:
        live(args.live_trials, args.live_steps)
    return 0


# ================================================================ LIVE STUDIES
LIVE_SCHEDULERS = {"none": "fifo", "hyperband": {"name": "hyperband", "reduction_factor": 3},
                   "hypertrick": {"name": "hypertrick", "num_phases": 5, "r": 0.25}}


def live_spec(label: str, trials: int, steps: int, parallel: int = 2, executor: str = "local"):
    """The live PPO CartPole-v1 study under scheduler `label` (a key of LIVE_SCHEDULERS); the
    sampler seed is fixed, so every scheduler sees the same configs."""
    from rltune.tune.spec import spec_from_dict

    return spec_from_dict({
        "name": f"live-{label}", "agent": "ppo", "env": "CartPole-v1", "budget_steps": steps,
        "search_space": {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "scale": "log"},
                         "ent_coef": {"type": "float", "low": 0.0, "high": 0.05}},
        "trials": trials, "parallel": parallel, "executor": executor, "sampler": {"name": "random", "seed": 3},
        "scheduler": LIVE_SCHEDULERS[label]})


def live(trials: int, steps: int) -> None:
    """The same real PPO CartPole-v1 study run with no early stopping, HyperBand and HyperTrick,
    2 trials at a time on this machine."""
    import tempfile

    from rltune.tune.study import run_study

    rows = {}
    for label in LIVE_SCHEDULERS:
        spec = live_spec(label, trials, steps)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = run_study(spec, Path(tmp) / "study", eval_episodes=20)
            wall = time.perf_counter() - start
        best = result.best
        used = sum(r.step or 0 for r in result.records)
        rows[label] = (wall, best.value if best else float("nan"), best.eval_mean if best else None,
                       used / (trials * steps), sum(r.state == "PRUNED" for r in result.records))
        print(f"live {label:>10}: wall {wall:6.1f} s | best reward {rows[label][1]:6.1f} | best trial's eval "
              f"{rows[label][2] if rows[label][2] is not None else float('nan'):6.1f} | alpha {rows[label][3]:.0%} | "
              f"stopped early {rows[label][4]}", flush=True)
    for label in ("hyperband", "hypertrick"):
        print(f"live ratio {label} / none wall time: {rows[label][0] / rows['none'][0]:.2f}")
    print(f"live ratio hypertrick / hyperband wall time: {rows['hypertrick'][0] / rows['hyperband'][0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
