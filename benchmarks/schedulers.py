"""Compare the six schedulers by replaying learning curves on a simulated cluster.

    python benchmarks/schedulers.py [CURVES] [--workers 16] [--slots 6] [--seeds 20]

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
